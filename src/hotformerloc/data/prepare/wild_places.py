"""Wild-Places (ICRA 2023; spec 4.3, 6), both releases, chosen explicitly.

Expected tree (``--root`` = the release's ``data`` folder)::

    Venman/V-01 .. V-04/    Karawatha/K-01 .. K-04/    each holding
        Clouds_downsampled/<timestamp>.pcd|.bin   0.8 m voxel submaps, metric, sensor frame
        poses_aligned.csv                         timestamp,x,y,z,qx,qy,qz,qw (forest frame)

* ``--release pcd``: the older ``.pcd`` release the paper used. Its pose timestamps are
  broken; the fix the reference applies is reproduced: pose row k belongs to the k-th cloud
  file in sorted name order (so the counts must agree). A ``poses_aligned_fixed.csv`` made
  by the reference's fix script is used as is (timestamps matched to the file names).
* ``--release v3``: ``.bin`` N x 4 float32 (x, y, z, intensity) clouds with corrected
  poses, matched by timestamp; trajectories differ, so numbers are not comparable to the
  paper's.

Rules: training = the first two sequences of each forest (V-01, V-02, K-01, K-02) outside
the test polygons and the 30 m buffer circles; positives <= 3 m, non-negatives <= 50 m,
per forest (the reference shifts Karawatha by +2000 m in x so the forests never mix; we
group by forest instead). Evaluation (inter-sequence): per forest every ordered pair of
distinct sequences, queries = submaps inside the forest's test polygons, database = all
submaps of the other sequence, true positive <= 3 m; means over pairs, then forests.

The polygons and circles are not in the spec: they come from ``--regions`` (aligned-pose
frame of each forest, no Karawatha shift) or from the reference's pickles
(``training_wild-places.pickle`` for the training set, ``<Forest>_evaluation_query.pickle``
for the queries).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hotformerloc.data.prepare.common import (
    Findings,
    PathIndex,
    PreparedBuild,
    PrepareError,
    PrepareOptions,
    RowsBuilder,
    check_cloud_file,
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
from hotformerloc.data.prepare.regions import RegionsFile, load_regions
from hotformerloc.data.prepared import EvalLocationSpec, EvalRunSpec, EvaluationSpec
from hotformerloc.data.tuples import build_tuples
from hotformerloc.io.poses import POSE_COLUMNS
from hotformerloc.submaps import METRIC_SCALE

FORESTS = {"venman": "Venman", "karawatha": "Karawatha"}
SEQUENCES = {
    "venman": ("V-01", "V-02", "V-03", "V-04"),
    "karawatha": ("K-01", "K-02", "K-03", "K-04"),
}
TRAIN_SEQUENCES = 2
RELEASES = {"pcd": (".pcd", "pcd"), "v3": (".bin", "kitti")}
CLOUD_FOLDERS = ("Clouds_downsampled", "Clouds")
POSES, POSES_FIXED = "poses_aligned.csv", "poses_aligned_fixed.csv"
POS_RADIUS, NEG_RADIUS, THRESHOLD = 3.0, 50.0, 3.0
#: Submaps of about 30 m radius: 1/30 maps them roughly into [-1, 1].
SCALE = METRIC_SCALE
PICKLES = {
    "train": ("training_wild-places.pickle",),
    **{
        f"{loc}.{kind}": (f"{name}_evaluation_{kind}.pickle",)
        for loc, name in FORESTS.items()
        for kind in ("database", "query")
    },
}


@dataclass(frozen=True, eq=False)
class SequenceScan:
    """One sequence: cloud file names (sorted), their (N, 2) positions, timestamps."""

    forest: str
    folder: str
    name: str
    cloud_folder: str
    files: list[str]
    xy: np.ndarray
    timestamp: np.ndarray


def _release_of(seq_dir: Path) -> tuple[str | None, str | None]:
    """(release, cloud folder) detected in one sequence folder."""
    for folder in CLOUD_FOLDERS:
        d = seq_dir / folder
        if not d.is_dir():
            continue
        kinds = {p.suffix.lower() for p in d.iterdir() if p.suffix.lower() in (".pcd", ".bin")}
        if kinds == {".pcd"}:
            return "pcd", folder
        if kinds == {".bin"}:
            return "v3", folder
        if kinds:
            return "mixed", folder
    return None, None


def _scan_sequence(
    root: Path, forest: str, seq: str, release: str, opts: PrepareOptions, findings: Findings
) -> SequenceScan | None:
    folder = FORESTS[forest]
    seq_dir = root / folder / seq
    detected, cloud_folder = _release_of(seq_dir)
    if cloud_folder is None:
        findings.error(
            f"{seq_dir}: no {' or '.join(CLOUD_FOLDERS)} folder with .pcd or .bin clouds",
            kind="sequences without clouds",
        )
        return None
    if detected != release:
        findings.error(f"{seq_dir / cloud_folder}: holds {detected} clouds, not {release}")
        return None
    ext, fmt = RELEASES[release]
    files = sorted(p.name for p in (seq_dir / cloud_folder).iterdir() if p.suffix.lower() == ext)
    fixed = seq_dir / POSES_FIXED
    use_fixed = release == "pcd" and fixed.is_file()
    table = read_csv_table(
        fixed if use_fixed else seq_dir / POSES, POSE_COLUMNS, findings, "pose CSV"
    )
    if table is None:
        return None
    stems = [Path(f).stem for f in files]
    pose_t = table.values["timestamp"]
    xy_all = np.stack([table.values["x"], table.values["y"]], 1).reshape(-1, 2)
    if release == "pcd" and not use_fixed:
        rows, unmatched = match_timestamps(stems, pose_t)
        findings.info(
            f"{seq_dir / POSES}: {len(stems) - len(unmatched)} of {len(stems)} pose timestamps "
            f"match cloud names; poses are assigned by sorted file order (the .pcd release fix)"
        )
        if len(table) != len(files):
            findings.error(
                f"{seq_dir}: {len(table)} poses in {POSES} but {len(files)} clouds in "
                f"{cloud_folder}/: the timestamp fix pairs them by order, counts must agree",
                kind="pose / cloud count mismatches",
            )
            return None
        xy = xy_all
    else:
        rows, unmatched = match_timestamps(stems, pose_t)
        if unmatched:
            findings.error(
                f"{seq_dir}: {len(unmatched)} cloud(s) without a pose in {table.path.name} "
                f"(e.g. {unmatched[0]}{ext})",
                kind="clouds without a pose",
            )
            return None
        if len(table) != len(files):
            findings.warning(
                f"{seq_dir}: {len(table)} poses but {len(files)} clouds",
                kind="pose / cloud count mismatches",
            )
        xy = xy_all[rows]
    for k in sample_positions(len(files), opts):
        check_cloud_file(seq_dir / cloud_folder / files[k], fmt, findings)
    try:
        stamps = np.array([float(s) for s in stems], np.float64)
    except ValueError:
        findings.error(f"{seq_dir / cloud_folder}: cloud names must be timestamps (<seconds>{ext})")
        return None
    return SequenceScan(forest, folder, seq, cloud_folder, files, xy, stamps)


@dataclass(frozen=True, eq=False)
class _Scan:
    release: str
    sequences: dict[str, list[SequenceScan]]
    pickles: dict[str, Path]


def _detect(root: Path, findings: Findings) -> str | None:
    """Release found on disk (``pcd``, ``v3``; ``None`` if none or mixed), into detected."""
    found: set[str] = set()
    for folder in FORESTS.values():
        if not (root / folder).is_dir():
            continue
        for seq in list_dirs(root / folder):
            rel, _ = _release_of(root / folder / seq)
            if rel is not None:
                found.add(rel)
    label = {"pcd": "pcd (older .pcd release, the paper's)", "v3": "v3 (.bin N x 4 float32)"}
    if len(found) == 1 and (r := next(iter(found))) in label:
        findings.detected["release"] = label[r]
        return r
    findings.detected["release"] = "unknown" if not found else "mixed: " + ", ".join(sorted(found))
    return None


def _scan(
    root: Path, opts: PrepareOptions, findings: Findings, release: str | None
) -> _Scan | None:
    if not root.is_dir():
        findings.error(f"{root}: dataset folder does not exist or is not a folder")
        return None
    detected = _detect(root, findings)
    release = release or detected
    if release is None:
        findings.error(
            f"{root}: no Wild-Places release recognised (expected Venman/V-0x and "
            f"Karawatha/K-0x folders with Clouds_downsampled/*.pcd or *.bin)"
        )
        return None
    sequences: dict[str, list[SequenceScan]] = {}
    for forest, folder in FORESTS.items():
        if not (root / folder).is_dir():
            findings.error(f"{root / folder}: missing forest folder")
            continue
        present = list_dirs(root / folder)
        missing = [s for s in SEQUENCES[forest] if s not in present]
        for s in missing:
            findings.error(f"{root / folder / s}: missing sequence", kind="missing sequences")
        sequences[forest] = [
            found
            for seq in SEQUENCES[forest]
            if seq in present
            and (found := _scan_sequence(root, forest, seq, release, opts, findings))
        ]
    pickles = pickle_role_files(opts, PICKLES, findings)
    total = sum(len(s.files) for seqs in sequences.values() for s in seqs)
    findings.info(f"{total} submaps; reference pickles: {', '.join(sorted(pickles)) or 'none'}")
    return _Scan(release, sequences, pickles)


def check_wild_places(root: Path, opts: PrepareOptions, findings: Findings) -> None:
    """Scan a Wild-Places tree (release detected, or ``opts.release``) into ``findings``."""
    _scan(root, opts, findings, opts.release)


def build_wild_places(root: Path, opts: PrepareOptions, findings: Findings) -> PreparedBuild:
    """Training rows + tuples and the inter-sequence evaluation sets (module doc).

    Raises:
        PrepareError: no or an unknown ``--release``, a release not matching the folder,
            folder errors, or neither regions nor reference pickles for the test polygons.
    """
    if opts.release not in RELEASES:
        detected = _detect(root, Findings()) if root.is_dir() else None
        raise PrepareError(
            "wild-places: choose the release explicitly: --release pcd (the older .pcd "
            "release the paper used; pose timestamps fixed by file order) or --release v3 "
            "(.bin N x 4 float32, different trajectories: numbers not comparable); this "
            f"folder looks like: {detected or 'neither'}"
        )
    scan = _scan(root, opts, findings, opts.release)
    findings.raise_errors("wild-places", root)
    assert scan is not None
    regions: RegionsFile | None = (
        load_regions(opts.regions, list(FORESTS)) if opts.regions is not None else None
    )
    for forest in FORESTS:
        has_regions = regions is not None and regions.get(forest) is not None
        if not has_regions and not ("train" in scan.pickles and f"{forest}.query" in scan.pickles):
            raise PrepareError(
                f"wild-places {forest}: the test polygons and 30 m buffer circles are not in "
                f"the spec: pass --regions FILE with location {forest!r} (polygons and buffers "
                f"in the aligned-pose frame) or --pickles DIR with training_wild-places.pickle "
                f"and {FORESTS[forest]}_evaluation_query.pickle"
            )
    rb = RowsBuilder()
    runs: dict[str, list[EvalRunSpec]] = {}
    train_seq_rows: list[np.ndarray] = []
    for forest, seqs in scan.sequences.items():
        reg = regions.get(forest) if regions is not None else None
        runs[forest] = []
        for k, s in enumerate(seqs):
            in_test = reg.in_test(s.xy) if reg is not None else np.zeros(len(s.xy), bool)
            split = np.full(len(s.xy), "test", dtype=object)
            if k < TRAIN_SEQUENCES:
                in_buffer = reg.in_buffer(s.xy) if reg is not None else np.zeros(len(s.xy), bool)
                split[:] = "train"
                split[in_buffer] = "buffer"
                split[in_test] = "test"
            rows = rb.extend(
                world=forest,
                sequence=s.name,
                timestamp=s.timestamp,
                xy=s.xy,
                source="ground",
                split=split.tolist(),
                relpath=[f"{s.folder}/{s.name}/{s.cloud_folder}/{f}" for f in s.files],
            )
            if k < TRAIN_SEQUENCES:
                train_seq_rows.append(rows)
            runs[forest].append(EvalRunSpec(s.name, rows, rows[in_test]))
    cols = rb.columns()
    relpath = cols["relpath"].astype(str)
    index = PathIndex(relpath.tolist())
    checks: list[dict[str, Any]] = []
    computed = np.flatnonzero(cols["split"] == "train")
    world = cols["world"].astype(str)
    tuples = build_tuples(cols["xy"][computed], world[computed], POS_RADIUS, NEG_RADIUS)
    train_index, tuple_source = computed, "computed (3 m / 50 m, per forest)"
    if "train" in scan.pickles:
        entries = read_training_pickle(scan.pickles["train"])
        ref_rows = match_rows([e.path for e in entries], index, str(scan.pickles["train"]))
        if regions is not None:
            checks.append(compare_sets("training set", computed, ref_rows, relpath, findings))
        ref_index, ref_tuples = tuples_from_reference(entries, ref_rows)
        if np.array_equal(ref_index, computed):
            checks.append(compare_tuples("training tuples", tuples, ref_tuples, findings))
        seq_rows = np.concatenate(train_seq_rows) if train_seq_rows else np.zeros(0, np.int64)
        cols["split"][seq_rows[cols["split"][seq_rows] == "train"]] = "buffer"
        cols["split"][ref_index] = "train"
        train_index, tuples = ref_index, ref_tuples
        tuple_source = f"reference pickle {scan.pickles['train'].name}"
    locations = []
    for forest in FORESTS:
        if forest not in runs:
            continue
        replaced = eval_runs_from_pickles(
            forest,
            scan.pickles.get(f"{forest}.database"),
            scan.pickles.get(f"{forest}.query"),
            runs[forest],
            cols["xy"],
            index,
            relpath,
            THRESHOLD,
            findings,
            checks,
            have_queries=regions is not None and regions.get(forest) is not None,
        )
        final = replaced or runs[forest]
        if replaced is not None:  # pickle queries of training sequences are not training
            for r in final:
                q = r.queries[cols["split"][r.queries] != "train"]
                cols["split"][q] = "test"
        locations.append(EvalLocationSpec(forest, tuple(final)))
    return PreparedBuild(
        dataset="wild-places",
        source_root=root,
        cloud_format=RELEASES[scan.release][1],
        scale=SCALE,
        train_index=train_index,
        tuples=tuples,
        evaluation=EvaluationSpec("wild_places_inter", THRESHOLD, True, 25, tuple(locations)),
        info={
            "detected": dict(findings.detected),
            "release": scan.release,
            "regions": {
                f: (
                    loc_reg.describe()
                    if regions and (loc_reg := regions.get(f))
                    else "reference pickles"
                )
                for f in FORESTS
            },
            "tuples": {"source": tuple_source, "pos_radius": POS_RADIUS, "neg_radius": NEG_RADIUS},
            "reference_check": checks,
        },
        **cols,
    )
