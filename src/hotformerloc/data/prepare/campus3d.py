"""CS-Campus3D (CrossLoc3D, ICCV 2023; spec 4.2, 6).

``--root`` is ``benchmark_datasets_cs_campus3d/benchmark_datasets``: PointNetVLAD-style
``.bin`` submaps (4096 x 3 float64, in [-1, 1], 100 m diameter) at the relative paths the
pickles list. The dataset has no location CSVs: positions, splits and tuples come from the
provided pickles, which are therefore required (``--pickles DIR``, default ``--root``):

* ``train``: ``training_queries_umd_4096_v2.pickle`` (HOTFormerLoc's rewrite, tuples) or
  ``training_queries_umd_4096.pickle`` (CrossLoc3D's, with negatives: non-negatives = all
  ids minus the negatives); positions [northing, easting];
* ``campus3d.database``: ``umd_evaluation_database.pickle``, a list of databases; index 1
  is the aerial-only database, the only one scored;
* ``campus3d.query``: ``umd_evaluation_query_v2.pickle`` or ``umd_evaluation_query.pickle``
  (ground queries; a dict or a list of dicts).

Evaluation: every query set against database 1 only, ``skip_same_run = False``, true
positive <= 100 m (the pickles' neighbour lists are cross-checked against that radius).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hotformerloc.data.prepare.common import (
    Findings,
    PathIndex,
    PreparedBuild,
    PrepareOptions,
    check_pnv_file,
    path_key,
    pickle_role_files,
)
from hotformerloc.data.prepare.reference import (
    ReferencePickleError,
    RefItem,
    RefTrainingEntry,
    compare_neighbours,
    read_eval_pickle,
    read_training_pickle,
    tuples_from_reference,
)
from hotformerloc.data.prepared import EvalLocationSpec, EvalRunSpec, EvaluationSpec

WORLD = "campus3d"
THRESHOLD = 100.0
AERIAL_DATABASE = 1
PICKLES = {
    "train": ("training_queries_umd_4096_v2.pickle", "training_queries_umd_4096.pickle"),
    "campus3d.database": ("umd_evaluation_database.pickle",),
    "campus3d.query": ("umd_evaluation_query_v2.pickle", "umd_evaluation_query.pickle"),
}
#: Paths disagreeing by more than this between pickles are reported (m).
POSITION_TOLERANCE = 0.01


@dataclass(frozen=True, eq=False)
class _Campus3DScan:
    files: dict[str, Path]
    training: list[RefTrainingEntry]
    databases: list[list[RefItem]]
    queries: list[list[RefItem]]


def sequence_of(relpath: str) -> str:
    """Run name of a submap path: the folder above the cloud folder
    (``<top>/<run>/<cloud folder>/<file>``), else the cloud's folder."""
    parts = PurePosixPath(path_key(relpath)).parts
    if len(parts) >= 3:
        return parts[-3]
    return parts[-2] if len(parts) == 2 else "default"


def _scan(root: Path, opts: PrepareOptions, findings: Findings) -> _Campus3DScan | None:
    if not root.is_dir():
        findings.error(f"{root}: dataset folder does not exist or is not a folder")
        return None
    findings.detected["layout"] = "CS-Campus3D (PNV .bin + CrossLoc3D pickles)"
    if opts.pickles is None and not opts.pickle_files:
        opts = replace(opts, pickles=root)
    files = pickle_role_files(opts, PICKLES, findings)
    missing = [r for r in PICKLES if r not in files]
    if missing:
        wanted = "; ".join(f"{r}: {' or '.join(PICKLES[r])}" for r in missing)
        findings.error(
            f"CS-Campus3D positions and splits come from its pickles; missing {wanted} "
            f"(looked in {opts.pickles}; pass --pickles DIR or --pickle ROLE=FILE)"
        )
        return None
    try:
        training = read_training_pickle(files["train"])
        databases = read_eval_pickle(files["campus3d.database"])
        queries = read_eval_pickle(files["campus3d.query"])
    except ReferencePickleError as e:
        findings.error(str(e))
        return None
    if len(databases) <= AERIAL_DATABASE:
        findings.error(
            f"{files['campus3d.database']}: {len(databases)} database set(s); the protocol "
            f"scores database index {AERIAL_DATABASE} (aerial-only), so at least 2 are needed"
        )
        return None
    for entry in training:
        if entry.position is None:
            findings.error(
                f"{files['train']}: entry {entry.id} has no position", kind="training positions"
            )
    for what, runs in (("database", databases), ("query", queries)):
        for r, items in enumerate(runs):
            for it in items:
                if it.en is None:
                    findings.error(
                        f"{files[f'campus3d.{what}']} run {r}: {it.path} has no northing/easting",
                        kind=f"{what} positions",
                    )
    paths = sorted(
        {path_key(p) for p in (e.path for e in training)}
        | {path_key(it.path) for runs in (databases, queries) for items in runs for it in items}
    )
    step = max(1, len(paths) // max(1, opts.sample * 10)) if not opts.full else 1
    for k, rel in enumerate(paths):
        check_pnv_file(root / rel, findings, read=k % step == 0)
    findings.detected["pickles"] = ", ".join(f"{r}={p.name}" for r, p in sorted(files.items()))
    findings.info(
        f"{len(training)} training submaps, {len(databases)} databases "
        f"({', '.join(str(len(d)) for d in databases)} submaps), "
        f"{sum(len(q) for q in queries)} queries in {len(queries)} set(s)"
    )
    return _Campus3DScan(files, training, databases, queries)


def check_campus3d(root: Path, opts: PrepareOptions, findings: Findings) -> None:
    """Scan a CS-Campus3D folder and its pickles into ``findings`` (never raises)."""
    _scan(root, opts, findings)


def build_campus3d(root: Path, opts: PrepareOptions, findings: Findings) -> PreparedBuild:
    """Rows, tuples and the evaluation set of CS-Campus3D from its pickles (module doc).

    Raises:
        PrepareError: missing/unreadable pickles, missing or malformed ``.bin`` files.
    """
    scan = _scan(root, opts, findings)
    findings.raise_errors("cs-campus3d", root)
    assert scan is not None
    positions: dict[str, tuple[float, float]] = {}
    conflicts = 0

    def put(rel: str, en: tuple[float, float]) -> None:
        nonlocal conflicts
        key = path_key(rel)
        old = positions.setdefault(key, en)
        if max(abs(old[0] - en[0]), abs(old[1] - en[1])) > POSITION_TOLERANCE:
            conflicts += 1

    for e in scan.training:
        assert e.position is not None
        put(e.path, (float(e.position[1]), float(e.position[0])))  # [northing, easting]
    for run_sets in (scan.databases, scan.queries):
        for items in run_sets:
            for it in items:
                assert it.en is not None
                put(it.path, it.en)
    if conflicts:
        findings.warning(
            f"{conflicts} submap(s) have different positions in different pickles "
            f"(the first one read is used)"
        )
    relpaths = list(positions)
    index = PathIndex(relpaths)
    aerial_db = {path_key(it.path) for it in scan.databases[AERIAL_DATABASE]}
    train_keys = {path_key(e.path) for e in scan.training}
    n = len(relpaths)
    stems = [PurePosixPath(p).stem for p in relpaths]
    timestamp = np.array(
        [float(s) if s.replace(".", "", 1).isdigit() else float(i) for i, s in enumerate(stems)]
    )
    cols = {
        "world": np.full(n, WORLD, dtype=object),
        "sequence": np.array([sequence_of(p) for p in relpaths], dtype=object),
        "timestamp": timestamp,
        "xy": np.array([positions[p] for p in relpaths], np.float64).reshape(n, 2),
        "source": np.array(
            ["aerial" if p in aerial_db or "aerial" in p.lower() else "ground" for p in relpaths],
            dtype=object,
        ),
        "split": np.array(["train" if p in train_keys else "test" for p in relpaths], object),
        "relpath": np.array(relpaths, dtype=object),
    }
    train_rows = np.array([index.find(e.path) for e in scan.training], np.int64)
    train_index, tuples = tuples_from_reference(scan.training, train_rows)
    runs = []
    checks: list[dict[str, Any]] = []
    for i, items in enumerate(scan.databases):
        rows = np.unique(np.array([index.find(it.path) for it in items], np.int64))
        runs.append(EvalRunSpec(f"database_{i}", rows, np.zeros(0, np.int64)))
    db_order = np.array(
        [index.find(it.path) for it in scan.databases[AERIAL_DATABASE]], np.int64
    ).reshape(-1)
    for j, items in enumerate(scan.queries):
        rows_in_order = np.array([index.find(it.path) for it in items], np.int64).reshape(-1)
        rows = np.unique(rows_in_order)
        runs.append(EvalRunSpec(f"query_{j}", rows, rows))
        if any(AERIAL_DATABASE in it.neighbours for it in items):
            checks.append(
                compare_neighbours(
                    f"true neighbours query_{j} -> database_{AERIAL_DATABASE}",
                    cols["xy"][rows_in_order],
                    items,
                    AERIAL_DATABASE,
                    cols["xy"][db_order],
                    THRESHOLD,
                    findings,
                )
            )
    location = EvalLocationSpec(
        WORLD, tuple(runs), database_runs=(f"database_{AERIAL_DATABASE}",), aerial=None
    )
    return PreparedBuild(
        dataset="cs-campus3d",
        source_root=root,
        cloud_format="pnv",
        scale=1.0,
        train_index=train_index,
        tuples=tuples,
        evaluation=EvaluationSpec("pnv", THRESHOLD, False, 25, (location,)),
        info={
            "detected": dict(findings.detected),
            "tuples": {"source": f"reference pickle {scan.files['train'].name}"},
            "reference_check": checks,
        },
        **cols,
    )
