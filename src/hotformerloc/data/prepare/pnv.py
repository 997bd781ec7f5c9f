"""The PointNetVLAD benchmark: Oxford RobotCar and the In-house sets (spec 4.1, 6).

Expected tree (``--root`` = the ``benchmark_datasets`` folder)::

    oxford/<run>/pointcloud_20m_10overlap/<timestamp>.bin     training submaps
    oxford/<run>/pointcloud_locations_20m_10overlap.csv       timestamp,northing,easting
    oxford/<run>/pointcloud_20m/<timestamp>.bin               evaluation submaps
    oxford/<run>/pointcloud_locations_20m.csv
    inhouse_datasets/<run>/pointcloud_25m_25/<timestamp>.bin  In-house evaluation submaps
    inhouse_datasets/<run>/pointcloud_centroids_25.csv

Every ``.bin`` is 4096 x 3 float64, zero-mean, in [-1, 1], ground removed.

Rules (reference: PointNetVLAD's split scripts as used by MinkLoc3Dv2 and HOTFormerLoc):

* ``oxford`` training: every run folder but the last (sorted by name), training CSVs;
  submaps strictly inside the 300 m squares P1-P4 are excluded (split ``test``: the
  validation tuples of the reference); positives <= 10 m, non-negatives <= 50 m over all
  training runs together.
* ``oxford`` evaluation: the 23 runs at sorted indices 5, 6, 7, 9-19, 22, 24, 31-33, 38,
  39, 43, 44 with their ``pointcloud_20m`` submaps; every run is a database, the submaps
  inside P1-P4 are its queries; same-run pairs skipped; true positive <= 25 m.
* ``inhouse`` evaluation (test only): sorted runs 0-4 Business District (every submap is a
  query), 5-9 Residential Area (queries inside P8-P10), 10-14 University Sector (inside
  P5-P7). P5-P10 are not in the spec: they come from ``--regions`` or from the reference's
  evaluation query pickles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hotformerloc.data.prepare.common import (
    CsvTable,
    Findings,
    PathIndex,
    PreparedBuild,
    PrepareError,
    PrepareOptions,
    RowsBuilder,
    check_pnv_file,
    list_dirs,
    pickle_role_files,
    read_csv_table,
    sample_positions,
)
from hotformerloc.data.prepare.reference import (
    compare_sets,
    compare_tuples,
    eval_runs_from_pickles,
    match_rows,
    read_training_pickle,
    tuples_from_reference,
)
from hotformerloc.data.prepare.regions import LocationRegions, RegionsFile, Square, load_regions
from hotformerloc.data.prepared import EvalLocationSpec, EvalRunSpec, EvaluationSpec
from hotformerloc.data.tuples import build_tuples

OXFORD_DIR = "oxford"
INHOUSE_DIR = "inhouse_datasets"
TRAIN_FOLDER, TRAIN_CSV = "pointcloud_20m_10overlap", "pointcloud_locations_20m_10overlap.csv"
EVAL_FOLDER, EVAL_CSV = "pointcloud_20m", "pointcloud_locations_20m.csv"
INHOUSE_FOLDER, INHOUSE_CSV = "pointcloud_25m_25", "pointcloud_centroids_25.csv"
#: Sorted run indices of the Oxford evaluation set (23 runs).
OXFORD_EVAL_RUNS = (5, 6, 7, *range(9, 20), 22, 24, 31, 32, 33, 38, 39, 43, 44)
#: In-house locations and their sorted run indices.
INHOUSE_RUNS: Mapping[str, range] = {
    "business": range(0, 5),
    "residential": range(5, 10),
    "university": range(10, 15),
}
#: In-house squares the spec names but does not give (they come from --regions or pickles).
INHOUSE_SQUARES = {"university": "P5-P7", "residential": "P8-P10"}
#: Oxford test squares P1-P4 (spec 4.1): (northing, easting) UTM, +-150 m, open.
OXFORD_SQUARES_NE = {
    "P1": (5735712.768, 620084.402),
    "P2": (5735611.299, 620540.270),
    "P3": (5735237.358, 620543.094),
    "P4": (5734749.304, 619932.693),
}
HALF_SIZE = 150.0
POS_RADIUS, NEG_RADIUS, THRESHOLD = 10.0, 50.0, 25.0
#: Reference pickle names per role (looked up in --pickles).
OXFORD_PICKLES = {
    "train": ("training_queries_baseline2.pickle", "training_queries_baseline.pickle"),
    "val": ("test_queries_baseline2.pickle", "test_queries_baseline.pickle"),
    "oxford.database": ("oxford_evaluation_database.pickle",),
    "oxford.query": ("oxford_evaluation_query.pickle",),
}
INHOUSE_PICKLES = {
    f"{loc}.{kind}": (f"{loc}_evaluation_{kind}.pickle",)
    for loc in INHOUSE_RUNS
    for kind in ("database", "query")
}


def oxford_squares() -> LocationRegions:
    """P1-P4 as open squares in (easting, northing)."""
    return LocationRegions(
        squares=tuple(Square(n, (e, no), HALF_SIZE) for n, (no, e) in OXFORD_SQUARES_NE.items())
    )


@dataclass(frozen=True, eq=False)
class RunTable:
    """The submaps of one run listed in one CSV: ``timestamps`` (N,) str as written (the
    file stems), ``xy`` (N, 2) (easting, northing) m, ``relpaths`` (N,) str."""

    run: str
    index: int
    timestamps: np.ndarray
    xy: np.ndarray
    relpaths: list[str]


def _scan_table(
    root: Path,
    top: str,
    run: str,
    index: int,
    folder: str,
    csv_name: str,
    opts: PrepareOptions,
    findings: Findings,
) -> RunTable | None:
    """Check one run's CSV and cloud folder; return its table (``None`` if unusable)."""
    run_dir = root / top / run
    table: CsvTable | None = read_csv_table(
        run_dir / csv_name, ("timestamp", "northing", "easting"), findings, "location CSV"
    )
    if not (run_dir / folder).is_dir():
        findings.error(f"{run_dir / folder}: missing cloud folder", kind="missing cloud folders")
        return None
    if table is None:
        return None
    stamps = table.text["timestamp"]
    if len(set(stamps.tolist())) != len(stamps):
        findings.warning(f"{table.path}: repeated timestamps")
    on_disk = {p.name for p in (run_dir / folder).glob("*.bin")}
    listed = [f"{t}.bin" for t in stamps]
    extra = on_disk - set(listed)
    missing = [n for n in listed if n not in on_disk]
    if missing or extra:
        findings.add(
            "error" if missing else "warning",
            f"{run_dir}: {len(listed)} submaps in {csv_name} but {len(on_disk)} .bin files in "
            f"{folder}/ ({len(missing)} listed files missing, {len(extra)} not listed)",
            kind="CSV / cloud count mismatches",
        )
    read = set(sample_positions(len(listed), opts))
    for k, name in enumerate(listed):
        if name in on_disk:
            check_pnv_file(run_dir / folder / name, findings, read=k in read)
    xy = np.stack([table.values["easting"], table.values["northing"]], 1).reshape(-1, 2)
    rel = [f"{top}/{run}/{folder}/{n}" for n in listed]
    return RunTable(run, index, stamps, xy, rel)


def _scan_top(root: Path, top: str, findings: Findings) -> list[str] | None:
    """Run folders of ``root/top`` (sorted); non-folder entries are reported since the
    reference indexes ``sorted(os.listdir())``, where they would shift the run indices."""
    if not root.is_dir():
        findings.error(f"{root}: dataset folder does not exist or is not a folder")
        return None
    if not (root / top).is_dir():
        findings.error(f"{root / top}: missing (expected the PointNetVLAD benchmark_datasets tree)")
        return None
    runs = list_dirs(root / top)
    others = sorted(p.name for p in (root / top).iterdir() if p.name not in runs)
    if others:
        findings.warning(
            f"{root / top}: non-run entries {others[:5]}: the reference indexes runs by "
            f"position in sorted(os.listdir()), where these would shift the run indices; "
            f"remove them before using the reference's scripts"
        )
    return runs


def _load_regions(opts: PrepareOptions, known: Sequence[str]) -> RegionsFile | None:
    return None if opts.regions is None else load_regions(opts.regions, known)


# --------------------------------------------------------------------------- oxford


@dataclass(frozen=True, eq=False)
class _OxfordScan:
    runs: list[str]
    train: list[RunTable]
    evaluation: list[RunTable]
    pickles: dict[str, Path]


def _scan_oxford(root: Path, opts: PrepareOptions, findings: Findings) -> _OxfordScan | None:
    runs = _scan_top(root, OXFORD_DIR, findings)
    if runs is None:
        return None
    findings.detected["layout"] = "PointNetVLAD benchmark_datasets (oxford)"
    findings.detected["oxford_runs"] = str(len(runs))
    need = max(OXFORD_EVAL_RUNS) + 1
    if len(runs) < need:
        findings.error(
            f"{root / OXFORD_DIR}: {len(runs)} run folders; the evaluation uses sorted run "
            f"indices up to {need - 1} ({len(OXFORD_EVAL_RUNS)} runs), so at least {need} "
            f"are needed"
        )
        return None
    if len(runs) != need:
        findings.warning(
            f"{root / OXFORD_DIR}: {len(runs)} run folders (the benchmark has {need}); "
            f"training uses all but the last, evaluation the sorted indices "
            f"{list(OXFORD_EVAL_RUNS)}"
        )
    train = [
        t
        for i, r in enumerate(runs[:-1])
        if (t := _scan_table(root, OXFORD_DIR, r, i, TRAIN_FOLDER, TRAIN_CSV, opts, findings))
    ]
    evaluation = [
        t
        for i in OXFORD_EVAL_RUNS
        if (t := _scan_table(root, OXFORD_DIR, runs[i], i, EVAL_FOLDER, EVAL_CSV, opts, findings))
    ]
    pickles = pickle_role_files(opts, OXFORD_PICKLES, findings)
    findings.info(
        f"{len(runs) - 1} training runs ({sum(len(t.relpaths) for t in train)} submaps), "
        f"{len(evaluation)} evaluation runs ({sum(len(t.relpaths) for t in evaluation)} "
        f"submaps); reference pickles: {', '.join(sorted(pickles)) or 'none'}"
    )
    return _OxfordScan(runs, train, evaluation, pickles)


def check_oxford(root: Path, opts: PrepareOptions, findings: Findings) -> None:
    """Scan an Oxford tree into ``findings`` (never raises for a malformed folder)."""
    _scan_oxford(root, opts, findings)


def build_oxford(root: Path, opts: PrepareOptions, findings: Findings) -> PreparedBuild:
    """Training rows + tuples and the Oxford evaluation set (module doc).

    Raises:
        PrepareError: the folder has errors (the first is named), a bad regions file or
            reference pickle.
    """
    scan = _scan_oxford(root, opts, findings)
    findings.raise_errors("oxford", root)
    assert scan is not None
    regions_file = _load_regions(opts, ["oxford"])
    given = regions_file.get("oxford") if regions_file else None
    regions = given or oxford_squares()
    regions_source = str(opts.regions) if given else "spec 4.1 (P1-P4)"
    rb = RowsBuilder()
    train_rows = []
    for t in scan.train:
        rows = rb.extend(
            world="oxford",
            sequence=t.run,
            timestamp=t.timestamps.astype(np.float64),
            xy=t.xy,
            source="ground",
            split=np.where(regions.in_test(t.xy), "test", "train").tolist(),
            relpath=t.relpaths,
        )
        train_rows.append(rows)
    eval_runs = []
    for t in scan.evaluation:
        rows = rb.extend(
            world="oxford",
            sequence=t.run,
            timestamp=t.timestamps.astype(np.float64),
            xy=t.xy,
            source="ground",
            split="test",
            relpath=t.relpaths,
        )
        eval_runs.append(EvalRunSpec(t.run, rows, rows[regions.in_test(t.xy)]))
    cols = rb.columns()
    train_file_rows = np.concatenate(train_rows) if train_rows else np.zeros(0, np.int64)
    checks: list[dict[str, Any]] = []
    index = PathIndex(cols["relpath"].astype(str).tolist())
    relpath = cols["relpath"].astype(str)
    computed = train_file_rows[cols["split"][train_file_rows] == "train"]
    tuples = build_tuples(
        cols["xy"][computed], cols["world"][computed].astype(str), POS_RADIUS, NEG_RADIUS
    )
    train_index, tuple_source = computed, "computed (10 m / 50 m)"
    if "train" in scan.pickles:
        entries = read_training_pickle(scan.pickles["train"])
        ref_rows = match_rows([e.path for e in entries], index, str(scan.pickles["train"]))
        checks.append(compare_sets("training set", computed, ref_rows, relpath, findings))
        ref_index, ref_tuples = tuples_from_reference(entries, ref_rows)
        if np.array_equal(ref_index, computed):
            checks.append(compare_tuples("training tuples", tuples, ref_tuples, findings))
        cols["split"][train_file_rows] = "test"
        cols["split"][ref_index] = "train"
        train_index, tuples = ref_index, ref_tuples
        tuple_source = f"reference pickle {scan.pickles['train'].name}"
    if "val" in scan.pickles:
        entries = read_training_pickle(scan.pickles["val"])
        val_rows = match_rows([e.path for e in entries], index, str(scan.pickles["val"]))
        ours_val = train_file_rows[cols["split"][train_file_rows] == "test"]
        checks.append(compare_sets("validation set", ours_val, val_rows, relpath, findings))
    replaced = eval_runs_from_pickles(
        "oxford",
        scan.pickles.get("oxford.database"),
        scan.pickles.get("oxford.query"),
        eval_runs,
        cols["xy"],
        index,
        relpath,
        THRESHOLD,
        findings,
        checks,
        have_queries=True,
    )
    evaluation = EvaluationSpec(
        protocol="pnv",
        threshold=THRESHOLD,
        skip_same_run=True,
        k=25,
        locations=(EvalLocationSpec("oxford", tuple(replaced or eval_runs)),),
    )
    return PreparedBuild(
        dataset="oxford",
        source_root=root,
        cloud_format="pnv",
        scale=1.0,
        train_index=train_index,
        tuples=tuples,
        evaluation=evaluation,
        info={
            "detected": dict(findings.detected),
            "regions": {"oxford": regions.describe(), "source": regions_source},
            "tuples": {
                "source": tuple_source,
                "pos_radius": POS_RADIUS,
                "neg_radius": NEG_RADIUS,
            },
            "reference_check": checks,
            "eval_run_indices": list(OXFORD_EVAL_RUNS),
        },
        **cols,
    )


# --------------------------------------------------------------------------- in-house


@dataclass(frozen=True, eq=False)
class _InhouseScan:
    runs: list[str]
    tables: dict[str, list[RunTable]]
    pickles: dict[str, Path]


def _scan_inhouse(root: Path, opts: PrepareOptions, findings: Findings) -> _InhouseScan | None:
    runs = _scan_top(root, INHOUSE_DIR, findings)
    if runs is None:
        return None
    findings.detected["layout"] = "PointNetVLAD benchmark_datasets (inhouse_datasets)"
    findings.detected["inhouse_runs"] = str(len(runs))
    if len(runs) < 15:
        findings.error(
            f"{root / INHOUSE_DIR}: {len(runs)} run folders; the In-house sets use sorted "
            f"runs 0-4 (business), 5-9 (residential), 10-14 (university): 15 are needed"
        )
        return None
    tables: dict[str, list[RunTable]] = {}
    for loc, idx in INHOUSE_RUNS.items():
        tables[loc] = []
        for i in idx:
            if loc not in runs[i].lower():
                findings.warning(
                    f"{root / INHOUSE_DIR / runs[i]}: sorted run {i} is used as {loc} but its "
                    f"name does not say so (folder order as in the reference)"
                )
            t = _scan_table(
                root, INHOUSE_DIR, runs[i], i, INHOUSE_FOLDER, INHOUSE_CSV, opts, findings
            )
            if t is not None:
                tables[loc].append(t)
    pickles = pickle_role_files(opts, INHOUSE_PICKLES, findings)
    try:
        regions = _load_regions(opts, list(INHOUSE_RUNS))
    except PrepareError as e:
        findings.error(str(e))
        regions = None
    for loc, names in INHOUSE_SQUARES.items():
        have = (regions is not None and regions.get(loc) is not None) or f"{loc}.query" in pickles
        if not have:
            findings.warning(
                f"{loc}: the test squares {names} are not in the spec; prepare needs them in "
                f"--regions FILE or the reference's {loc}_evaluation_query.pickle (--pickles)"
            )
    return _InhouseScan(runs, tables, pickles)


def check_inhouse(root: Path, opts: PrepareOptions, findings: Findings) -> None:
    """Scan an In-house tree into ``findings`` (never raises for a malformed folder)."""
    _scan_inhouse(root, opts, findings)


def build_inhouse(root: Path, opts: PrepareOptions, findings: Findings) -> PreparedBuild:
    """The In-house evaluation sets U.S., R.A., B.D. (test only, no training rows).

    Raises:
        PrepareError: folder errors; the squares of University/Residential neither in
            ``--regions`` nor in the reference's query pickles (names what to pass).
    """
    scan = _scan_inhouse(root, opts, findings)
    findings.raise_errors("inhouse", root)
    assert scan is not None
    regions_file = _load_regions(opts, list(INHOUSE_RUNS))
    for loc, names in INHOUSE_SQUARES.items():
        if (regions_file is None or regions_file.get(loc) is None) and (
            f"{loc}.query" not in scan.pickles
        ):
            raise PrepareError(
                f"{loc}: the In-house test squares {names} are not in the spec and were not "
                f"given: pass --regions FILE with location {loc!r} (squares, half_size 150 in "
                f"the PNV code) or --pickles DIR holding {loc}_evaluation_query.pickle"
            )
    rb = RowsBuilder()
    per_loc: dict[str, list[tuple[RunTable, np.ndarray]]] = {}
    for loc, tables in scan.tables.items():
        per_loc[loc] = []
        for t in tables:
            rows = rb.extend(
                world=loc,
                sequence=t.run,
                timestamp=t.timestamps.astype(np.float64),
                xy=t.xy,
                source="ground",
                split="test",
                relpath=t.relpaths,
            )
            per_loc[loc].append((t, rows))
    cols = rb.columns()
    relpath = cols["relpath"].astype(str)
    index = PathIndex(relpath.tolist())
    checks: list[dict[str, Any]] = []
    locations = []
    regions_used: dict[str, Any] = {}
    for loc, items in per_loc.items():
        regions = regions_file.get(loc) if regions_file else None
        runs = []
        for t, rows in items:
            if loc == "business":
                queries = rows
            elif regions is not None:
                queries = rows[regions.in_test(t.xy)]
            else:
                queries = np.zeros(0, np.int64)
            runs.append(EvalRunSpec(t.run, rows, queries))
        regions_used[loc] = (
            "all submaps (spec 4.1)"
            if loc == "business"
            else regions.describe()
            if regions is not None
            else f"reference pickle {scan.pickles[f'{loc}.query'].name}"
        )
        replaced = eval_runs_from_pickles(
            loc,
            scan.pickles.get(f"{loc}.database"),
            scan.pickles.get(f"{loc}.query"),
            runs,
            cols["xy"],
            index,
            relpath,
            THRESHOLD,
            findings,
            checks,
            have_queries=loc == "business" or regions is not None,
        )
        if replaced is not None and regions is not None and loc != "business":
            findings.info(f"{loc}: queries taken from the reference pickle (regions compared)")
        locations.append(EvalLocationSpec(loc, tuple(replaced or runs)))
    order = {"university": 0, "residential": 1, "business": 2}
    locations.sort(key=lambda loc: order[loc.name])
    return PreparedBuild(
        dataset="inhouse",
        source_root=root,
        cloud_format="pnv",
        scale=1.0,
        train_index=np.zeros(0, np.int64),
        tuples=build_tuples(np.zeros((0, 2)), np.zeros(0, str), POS_RADIUS, NEG_RADIUS),
        evaluation=EvaluationSpec("pnv", THRESHOLD, True, 25, tuple(locations)),
        info={
            "detected": dict(findings.detected),
            "regions": regions_used,
            "reference_check": checks,
        },
        **cols,
    )
