"""CS-Wild-Places (HOTFormerLoc, CVPR 2025; spec 4.4, 6): ground queries, aerial databases.

Expected tree (``--root`` = a released variant, e.g.
``postproc_voxel_0.80m_rmground_normalised``)::

    <Forest>/<sequence folder with "ground" or "aerial" in its name>/
        clouds/<timestamp>.pcd      0.8 m voxel, ground removed; normalised or metric
        poses.csv                   timestamp,x,y,z,qx,qy,qz,qw (x = easting, y = northing, UTM)

Forests: Karawatha and Venman (``--subset baseline``: training + the Baseline evaluation set),
QCAT and Samford (``--subset unseen``: the Unseen evaluation set, no training).

Rules:

* test regions: Karawatha / Venman use the Wild-Places test polygons transformed to UTM
  (not in the spec: ``--regions`` in UTM, or the reference's evaluation query pickles);
  QCAT / Samford: one polygon over the whole area, so every ground submap is a query;
* split: ``test`` inside a test region (ground or aerial), ``buffer`` within 30 m
  (inclusive) of a ground test query, else ``train`` (ground and aerial);
* training tuples: positives <= 15 m, non-negatives <= 60 m, any modality pair, per forest;
* evaluation (cross-source): per forest, every ground sequence's test submaps query the
  forest's aerial database (all its aerial submaps); ground-to-ground is never scored;
  true positive <= 30 m; Baseline = mean of Karawatha and Venman, Unseen = QCAT and Samford.

``--variant normalised`` (the paper's: clouds PNV-normalised into [-1, 1], scale 1) or
``metric`` (metres, scale 1/30); the variant is verified on the clouds read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from hotformerloc.data.prepare.common import (
    Findings,
    PathIndex,
    PreparedBuild,
    PrepareError,
    PrepareOptions,
    RowsBuilder,
    list_dirs,
    match_timestamps,
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
from hotformerloc.data.prepare.regions import load_regions
from hotformerloc.data.prepared import EvalLocationSpec, EvalRunSpec, EvaluationSpec
from hotformerloc.data.tuples import build_tuples
from hotformerloc.io import PointCloud, PointCloudError, read_pointcloud
from hotformerloc.io.poses import POSE_COLUMNS
from hotformerloc.submaps import METRIC_SCALE

SUBSETS = {"baseline": ("karawatha", "venman"), "unseen": ("qcat", "samford")}
GROUPS = {"baseline": "Baseline", "unseen": "Unseen"}
FOREST_NAMES = {"karawatha": "Karawatha", "venman": "Venman", "qcat": "QCAT", "samford": "Samford"}
#: Forests whose test region is the whole area (every ground submap is a query).
WHOLE_AREA = ("qcat", "samford")
VARIANTS = {"normalised": 1.0, "metric": METRIC_SCALE}
CLOUDS, POSES = "clouds", "poses.csv"
POS_RADIUS, NEG_RADIUS, THRESHOLD, BUFFER = 15.0, 60.0, 30.0, 30.0
#: A normalised cloud lies in [-1, 1]; this slack absorbs float32 rounding.
NORMALISED_LIMIT = 1.0 + 1e-5
#: A PCD VIEWPOINT farther than this from the poses.csv position is reported (m).
VIEWPOINT_TOLERANCE = 1.0
PICKLES = {
    "train": ("training_queries_cswildplaces_baseline*.pickle",),
    **{
        f"{f}.{kind}": (f"*{f}*evaluation_{kind}*.pickle",)
        for f in FOREST_NAMES
        for kind in ("database", "query")
    },
}


def read_submap(path: Path) -> PointCloud:
    """One CS-Wild-Places submap: float32 (N, 3) points in the submap frame as released
    (normalised or metric), with the PCD ``VIEWPOINT`` as ``pose`` (submap -> UTM) when the
    file carries one.

    Raises:
        PointCloudError: missing, unreadable, empty or non-finite cloud (names the file).
    """
    return read_pointcloud(path, "pcd")


@dataclass(frozen=True, eq=False)
class SequenceScan:
    """One sequence folder: cloud file names (by time), positions (N, 2) (easting,
    northing), timestamps, whether it is aerial, and the largest |coordinate| of the clouds
    read (``None`` when none was read)."""

    forest: str
    folder: str
    name: str
    aerial: bool
    files: list[str]
    xy: np.ndarray
    timestamp: np.ndarray
    max_abs: float | None


def _scan_sequence(
    root: Path, forest: str, name: str, opts: PrepareOptions, findings: Findings
) -> SequenceScan | None:
    folder = FOREST_NAMES[forest]
    seq_dir = root / folder / name
    aerial = "aerial" in name.lower()
    if not (seq_dir / CLOUDS).is_dir():
        findings.error(f"{seq_dir / CLOUDS}: missing cloud folder", kind="missing cloud folders")
        return None
    files = [p.name for p in (seq_dir / CLOUDS).iterdir() if p.suffix.lower() == ".pcd"]
    if not files:
        findings.error(f"{seq_dir / CLOUDS}: no .pcd clouds", kind="empty cloud folders")
        return None
    table = read_csv_table(seq_dir / POSES, POSE_COLUMNS, findings, "pose CSV")
    if table is None:
        return None
    stems = [Path(f).stem for f in files]
    rows, unmatched = match_timestamps(stems, table.values["timestamp"])
    if unmatched:
        findings.error(
            f"{seq_dir}: {len(unmatched)} of {len(files)} clouds have no pose in {POSES} "
            f"(e.g. {unmatched[0]}.pcd; cloud names must be the pose timestamps)",
            kind="clouds without a pose",
        )
        return None
    if len(table) != len(files):
        findings.warning(
            f"{seq_dir}: {len(table)} poses but {len(files)} clouds (poses of discarded "
            f"submaps are ignored)",
            kind="pose / cloud count mismatches",
        )
    order = np.argsort([float(s) for s in stems], kind="stable")
    files = [files[k] for k in order]
    rows = rows[order]
    xy = np.stack([table.values["x"][rows], table.values["y"][rows]], 1).reshape(-1, 2)
    stamps = table.values["timestamp"][rows]
    limit = NORMALISED_LIMIT if opts.variant == "normalised" else None
    max_abs = None
    for k in sample_positions(len(files), opts):
        path = seq_dir / CLOUDS / files[k]
        try:
            cloud = read_submap(path)
        except PointCloudError as e:
            findings.error(str(e), kind="unreadable clouds")
            continue
        extent = float(np.abs(cloud.xyz).max())
        max_abs = extent if max_abs is None else max(max_abs, extent)
        if limit is not None and extent > limit:
            findings.error(
                f"{path}: points outside [-1, 1] (max |coordinate| {extent:.3f}) but --variant "
                f"normalised",
                kind="clouds outside [-1, 1]",
            )
        if cloud.pose is not None:
            d = float(np.hypot(*(cloud.pose[:2, 3] - xy[k])))
            if d > VIEWPOINT_TOLERANCE:
                findings.warning(
                    f"{path}: VIEWPOINT is {d:.1f} m from its {POSES} position",
                    kind="VIEWPOINT / poses.csv disagreements",
                )
    return SequenceScan(forest, folder, name, aerial, files, xy, stamps, max_abs)


@dataclass(frozen=True, eq=False)
class _Scan:
    forests: tuple[str, ...]
    sequences: dict[str, list[SequenceScan]]
    pickles: dict[str, Path]


def _scan(root: Path, opts: PrepareOptions, findings: Findings) -> _Scan | None:
    if not root.is_dir():
        findings.error(f"{root}: dataset folder does not exist or is not a folder")
        return None
    present = {name.lower(): name for name in list_dirs(root)}
    found = [f for f in FOREST_NAMES if f in present]
    findings.detected["forests"] = ", ".join(FOREST_NAMES[f] for f in found) or "none"
    if "normalised" in root.name.lower() or "normalized" in root.name.lower():
        findings.detected["variant (folder name)"] = "normalised"
    elif "postproc" in root.name.lower():
        findings.detected["variant (folder name)"] = "metric"
    wanted = SUBSETS[opts.subset] if opts.subset in SUBSETS else tuple(found)
    if not wanted:
        findings.error(f"{root}: none of the forests {list(FOREST_NAMES.values())} found")
        return None
    sequences: dict[str, list[SequenceScan]] = {}
    for forest in wanted:
        if forest not in present:
            findings.error(
                f"{root / FOREST_NAMES[forest]}: missing forest folder (needed by --set "
                f"{opts.subset})"
            )
            continue
        names = list_dirs(root / present[forest])
        names = [n for n in names if "ground" in n.lower() or "aerial" in n.lower()]
        if not any("ground" in n.lower() for n in names):
            findings.error(f"{root / present[forest]}: no ground sequence folder")
        if not any("aerial" in n.lower() for n in names):
            findings.error(f"{root / present[forest]}: no aerial sequence folder")
        if present[forest] != FOREST_NAMES[forest]:
            findings.error(
                f"{root / present[forest]}: expected the folder name {FOREST_NAMES[forest]}"
            )
            continue
        sequences[forest] = [
            s for n in names if (s := _scan_sequence(root, forest, n, opts, findings)) is not None
        ]
    extents = [s.max_abs for seqs in sequences.values() for s in seqs if s.max_abs is not None]
    if extents:
        m = max(extents)
        findings.detected["variant (data)"] = (
            f"{'normalised' if m <= NORMALISED_LIMIT else 'metric'} (max |coordinate| {m:.3f})"
        )
        if opts.variant == "metric" and m <= NORMALISED_LIMIT:
            findings.error(
                f"{root}: --variant metric, but every cloud read lies in [-1, 1] "
                f"(max |coordinate| {m:.3f}): this is the normalised variant"
            )
    pickles = pickle_role_files(opts, PICKLES, findings)
    n = sum(len(s.files) for seqs in sequences.values() for s in seqs)
    findings.info(f"{n} submaps in {len(sequences)} forest(s)")
    return _Scan(tuple(wanted), sequences, pickles)


def check_cs_wild_places(root: Path, opts: PrepareOptions, findings: Findings) -> None:
    """Scan a CS-Wild-Places variant folder into ``findings`` (never raises)."""
    _scan(root, opts, findings)


def build_cs_wild_places(root: Path, opts: PrepareOptions, findings: Findings) -> PreparedBuild:
    """Rows, training tuples (baseline) and the cross-source evaluation set (module doc).

    Raises:
        PrepareError: unknown ``--set`` / ``--variant``, folder errors, or the Karawatha /
            Venman test polygons neither in ``--regions`` nor in the reference pickles.
    """
    if opts.subset not in SUBSETS:
        raise PrepareError(f"cs-wild-places: --set must be baseline or unseen, got {opts.subset!r}")
    if opts.variant not in VARIANTS:
        raise PrepareError(
            f"cs-wild-places: --variant must be normalised or metric, got {opts.variant!r}"
        )
    scan = _scan(root, opts, findings)
    findings.raise_errors("cs-wild-places", root)
    assert scan is not None
    regions = load_regions(opts.regions, list(FOREST_NAMES)) if opts.regions is not None else None
    for forest in scan.forests:
        if forest in WHOLE_AREA:
            continue
        if regions is not None and regions.get(forest) is not None:
            continue
        if f"{forest}.query" not in scan.pickles:
            raise PrepareError(
                f"cs-wild-places {forest}: the test polygons (Wild-Places polygons in UTM) are "
                f"not in the spec: pass --regions FILE with location {forest!r} (UTM) or "
                f"--pickles DIR with the reference's {FOREST_NAMES[forest]} evaluation query "
                f"pickle"
            )
        if "train" not in scan.pickles:
            findings.warning(
                f"cs-wild-places {forest}: queries from the reference pickle but no test "
                f"polygons: aerial submaps inside the polygons cannot be excluded from "
                f"training (pass --regions, or the reference's training pickle)"
            )
    rb = RowsBuilder()
    ground_runs: dict[str, list[EvalRunSpec]] = {}
    aerial_rows: dict[str, list[np.ndarray]] = {}
    for forest in scan.forests:
        ground_runs[forest], aerial_rows[forest] = [], []
        reg = regions.get(forest) if regions is not None else None
        for s in scan.sequences.get(forest, []):
            if forest in WHOLE_AREA:
                in_test = np.ones(len(s.xy), bool)
            else:
                in_test = reg.in_test(s.xy) if reg is not None else np.zeros(len(s.xy), bool)
            rows = rb.extend(
                world=forest,
                sequence=s.name,
                timestamp=s.timestamp,
                xy=s.xy,
                source="aerial" if s.aerial else "ground",
                split=np.where(in_test, "test", "train").tolist(),
                relpath=[f"{s.folder}/{s.name}/{CLOUDS}/{f}" for f in s.files],
            )
            if s.aerial:
                aerial_rows[forest].append(rows)
            else:
                ground_runs[forest].append(EvalRunSpec(s.name, rows, rows[in_test]))
    cols = rb.columns()
    relpath = cols["relpath"].astype(str)
    index = PathIndex(relpath.tolist())
    checks: list[dict[str, Any]] = []
    locations = []
    for forest in scan.forests:
        runs = ground_runs[forest]
        replaced = eval_runs_from_pickles(
            forest,
            None,
            scan.pickles.get(f"{forest}.query"),
            runs,
            cols["xy"],
            index,
            relpath,
            THRESHOLD,
            findings,
            checks,
            have_queries=forest in WHOLE_AREA
            or (regions is not None and regions.get(forest) is not None),
        )
        runs = replaced or runs
        for r in runs:
            cols["split"][r.queries] = "test"
        a = np.sort(np.concatenate(aerial_rows[forest])) if aerial_rows[forest] else None
        if a is None:
            raise PrepareError(f"cs-wild-places {forest}: no aerial submaps")
        aerial = EvalRunSpec("aerial", a, a[:0])
        locations.append(EvalLocationSpec(forest, tuple(runs), aerial=aerial))
    world = cols["world"].astype(str)
    source = cols["source"].astype(str)
    queries = np.concatenate([r.queries for loc in locations for r in loc.runs])
    for forest in scan.forests:
        members = np.flatnonzero(world == forest)
        q = queries[world[queries] == forest]
        if q.size:
            d, _ = cKDTree(cols["xy"][q]).query(cols["xy"][members], k=1)
            near = members[(d <= BUFFER) & (cols["split"][members] != "test")]
            cols["split"][near] = "buffer"
    computed = np.flatnonzero(cols["split"] == "train")
    tuples = build_tuples(cols["xy"][computed], world[computed], POS_RADIUS, NEG_RADIUS)
    train_index, tuple_source = computed, "computed (15 m / 60 m, any modality, per forest)"
    if opts.subset == "baseline" and "train" in scan.pickles:
        entries = read_training_pickle(scan.pickles["train"])
        ref_rows = match_rows([e.path for e in entries], index, str(scan.pickles["train"]))
        checks.append(compare_sets("training set", computed, ref_rows, relpath, findings))
        ref_index, ref_tuples = tuples_from_reference(entries, ref_rows)
        if np.array_equal(ref_index, computed):
            checks.append(compare_tuples("training tuples", tuples, ref_tuples, findings))
        cols["split"][computed] = "buffer"
        cols["split"][ref_index] = "train"
        train_index, tuples = ref_index, ref_tuples
        tuple_source = f"reference pickle {scan.pickles['train'].name}"
    counts = {f: int(((world == f) & (source == "ground")).sum()) for f in scan.forests}
    findings.info(f"ground submaps per forest: {counts}")
    return PreparedBuild(
        dataset="cs-wild-places",
        source_root=root,
        cloud_format="pcd",
        scale=VARIANTS[opts.variant],
        train_index=train_index,
        tuples=tuples,
        evaluation=EvaluationSpec(
            "cross_source",
            THRESHOLD,
            True,
            25,
            tuple(locations),
            {GROUPS[opts.subset]: tuple(loc.name for loc in locations)},
        ),
        info={
            "detected": dict(findings.detected),
            "set": opts.subset,
            "variant": opts.variant,
            "regions": {
                f: "whole area (spec 4.4)"
                if f in WHOLE_AREA
                else loc_reg.describe()
                if regions is not None and (loc_reg := regions.get(f)) is not None
                else "reference pickle"
                for f in scan.forests
            },
            "tuples": {"source": tuple_source, "pos_radius": POS_RADIUS, "neg_radius": NEG_RADIUS},
            "reference_check": checks,
        },
        **cols,
    )
