"""Convert recordings into our benchmark layout (submaps, poses, splits, manifest).

Output (read by :class:`hotformerloc.data.Benchmark`)::

    <out>/<world>/split.csv                           sequence,timestamp,x,y,source,split
    <out>/<world>/<sequence>/clouds/<ts:.6f>.pcd      metric, submap frame (VIEWPOINT = pose)
    <out>/<world>/<sequence>/poses.csv                submap frame -> map, one row per submap
    <out>/<world>/test_regions.json                   only when test regions were given
    <out>/manifest.json                               counts, SHA-256s, config, protocol, scale

The output is built in a hidden folder beside ``out`` and renamed into place at the end,
so ``out`` is either absent, the previous output, or complete.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from hotformerloc import __version__
from hotformerloc.config import to_dict
from hotformerloc.data.benchmark import cloud_relpath
from hotformerloc.data.recordings.config import AerialConfig, RecordingConfig, TrajectoryConfig
from hotformerloc.data.recordings.layouts import (
    LAYOUTS,
    Finding,
    RecordedSequence,
    RecordingError,
    Report,
    discover,
)
from hotformerloc.io import (
    LayoutFileError,
    PointCloud,
    PointCloudError,
    Source,
    read_pointcloud,
    write_pointcloud,
)
from hotformerloc.io.atomic import atomic_write_text, sha256_file
from hotformerloc.io.poses import POSES_FILE, write_poses_csv
from hotformerloc.io.splits import (
    REGIONS_FILE,
    SPLIT_FILE,
    assign_splits,
    read_regions_json,
    write_regions_json,
    write_split_csv,
)
from hotformerloc.submaps import SubmapConfig, process_submap, voxel_downsample

#: (stage, done, total) progress callback, as in :mod:`hotformerloc.synth.generate`.
Progress = Callable[[str, int, int], None]

MANIFEST = "manifest.json"
#: Slack on spacing/window comparisons (m, s or scans): float noise of arc lengths and of
#: large epoch timestamps (~2e-7 s at 1.6e9 s).
EPS = 1e-6
#: An aerial submap's origin sits at this percentile of its crop's heights (about the ground).
AERIAL_Z_PERCENTILE = 1.0
#: An accumulated aerial scan map is compacted (voxel ``aerial.map_voxel``) above this size.
MAX_HELD_POINTS = 4_000_000
#: Errors listed in a RecordingError before "and N more".
MAX_ERRORS = 5


# --------------------------------------------------------------------------- planning


def trajectory_coordinate(positions: np.ndarray, timestamps: np.ndarray, by: str) -> np.ndarray:
    """(N,) non-decreasing float64 coordinate of each scan along the trajectory:
    ``distance``: 3D arc length (m) of ``positions`` (N, 3); ``time``: ``timestamps`` (s);
    ``scan``: the scan index."""
    if by == "distance":
        steps = np.linalg.norm(np.diff(np.asarray(positions, np.float64), axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(steps)])
    if by == "time":
        return np.asarray(timestamps, np.float64)
    if by == "scan":
        return np.arange(len(timestamps), dtype=np.float64)
    raise ValueError(f"unknown trajectory coordinate {by!r} (distance, time or scan)")


def plan_centres(coord: np.ndarray, spacing: float) -> np.ndarray:
    """(K,) int64 indices of the submap centre scans: the first scan, then each first scan
    whose ``coord`` is at least ``spacing`` beyond the previous centre's (``coord``
    non-decreasing; empty for an empty trajectory)."""
    out: list[int] = []
    last = -math.inf
    for i, c in enumerate(np.asarray(coord, np.float64)):
        if c - last >= spacing - EPS:
            out.append(i)
            last = c
    return np.asarray(out, np.int64)


def window_bounds(coord: np.ndarray, centre: int, window: float) -> tuple[int, int]:
    """Half-open index range ``[lo, hi)`` of the scans with ``|coord - coord[centre]| <=
    window / 2`` (``coord`` non-decreasing)."""
    c = coord[centre]
    lo = int(np.searchsorted(coord, c - window / 2 - EPS, side="left"))
    hi = int(np.searchsorted(coord, c + window / 2 + EPS, side="right"))
    return lo, hi


def grid_axis(lo: float, hi: float, radius: float, grid: float) -> np.ndarray:
    """Multiples of ``grid`` within ``[lo + radius, hi - radius]``; the middle of that
    interval (or of ``[lo, hi]`` when it is empty) if no multiple falls inside."""
    a, b = lo + radius, hi - radius
    if a > b:
        return np.array([(lo + hi) / 2])
    first, last = math.ceil(a / grid - 1e-9), math.floor(b / grid + 1e-9)
    if first > last:
        return np.array([(a + b) / 2])
    return np.arange(first, last + 1, dtype=np.float64) * grid


def aerial_grid(xy_min: np.ndarray, xy_max: np.ndarray, radius: float, grid: float) -> np.ndarray:
    """(K, 2) aerial submap centres, row-major (y outer, x inner), see :func:`grid_axis`."""
    xs = grid_axis(float(xy_min[0]), float(xy_max[0]), radius, grid)
    ys = grid_axis(float(xy_min[1]), float(xy_max[1]), radius, grid)
    return np.array([(x, y) for y in ys for x in xs], np.float64).reshape(-1, 2)


# --------------------------------------------------------------------------- splits


def read_regions(path: Path) -> list[np.ndarray]:
    """Test polygons of a JSON file ``{"regions": [[[x, y], ...], ...]}`` (other keys
    ignored; :func:`hotformerloc.io.splits.read_regions_json`), each (V >= 3, 2) float64
    in map xy.

    Raises:
        RecordingError: missing or unreadable file, bad JSON, bad polygons (names the file
            and the polygon).
    """
    try:
        return list(read_regions_json(path).regions)
    except LayoutFileError as e:
        raise RecordingError(str(e)) from e


# --------------------------------------------------------------------------- submaps


@dataclass(frozen=True)
class SubmapRecord:
    """A written submap: ``pose`` (4, 4) submap frame -> map, ``points`` after processing."""

    sequence: str
    source: Source
    timestamp: float
    pose: np.ndarray
    points: int


class _Writer:
    """Writes submap clouds under ``<folder>/<sequence>/clouds/`` and records them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.records: list[SubmapRecord] = []

    def __call__(
        self, seq: str, source: Source, ts: float, pose: np.ndarray, pts: np.ndarray
    ) -> None:
        path = self.folder / cloud_relpath(seq, ts)
        path.parent.mkdir(parents=True, exist_ok=True)
        cloud = PointCloud(pts, pose=pose, source=source, timestamp=ts, sequence=seq)
        write_pointcloud(path, cloud, format="pcd", compression="binary_compressed")
        self.records.append(SubmapRecord(seq, source, ts, pose, len(pts)))


def _read(path: Path, fmt: str | None, drop: bool, what: str) -> PointCloud:
    try:
        return read_pointcloud(path, fmt, drop_nonfinite=drop)
    except PointCloudError as e:
        raise RecordingError(f"{what}: {e}") from e


def transform_points(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """``pose`` (4, 4) applied to ``points`` (N, 3): (N, 3) float64. An einsum loop, not a
    threaded BLAS product, whose cost for (N, 3) @ (3, 3) varied from 1 to 95 ms for 120k
    points on a busy 2-core machine (einsum: 2 to 10 ms)."""
    return np.einsum("ij,kj->ik", np.asarray(points, np.float64), pose[:3, :3]) + pose[:3, 3]


def _scan_in_map(seq: RecordedSequence, i: int, drop: bool) -> np.ndarray:
    """(M, 3) float64 points of scan ``i`` in the map frame (its file's own pose ignored)."""
    if seq.reader is not None:
        return transform_points(seq.reader(i), seq.poses[i])
    cloud = _read(seq.scans[i], seq.scan_format, drop, f"sequence {seq.name!r}")
    return transform_points(cloud.xyz, seq.poses[i])


def ground_submaps(
    seq: RecordedSequence,
    cfg: TrajectoryConfig,
    write: _Writer,
    drop_nonfinite: bool = False,
    progress: Progress | None = None,
) -> int:
    """Write the submaps of a trajectory (see :class:`TrajectoryConfig`); each scan file is
    read once. Returns the number discarded (fewer than ``submap.min_points`` points)."""
    coord = trajectory_coordinate(seq.poses[:, :3, 3], seq.timestamps, cfg.by)
    centres = plan_centres(coord, cfg.spacing)
    cache: dict[int, np.ndarray] = {}
    discarded = 0
    for k, c in enumerate(centres):
        lo, hi = window_bounds(coord, int(c), cfg.window)
        for j in [j for j in cache if j < lo]:
            del cache[j]
        for j in range(lo, hi):
            if j not in cache:
                cache[j] = _scan_in_map(seq, j, drop_nonfinite)
        pts = np.concatenate([cache[j] for j in range(lo, hi)])
        local = process_submap(pts, seq.poses[c], cfg.submap)
        if local is None:
            discarded += 1
        else:
            write(seq.name, seq.source, round(float(seq.timestamps[c]), 6), seq.poses[c], local)
        if progress:
            progress(f"submaps {seq.name}", k + 1, len(centres))
    return discarded


def aerial_map(seq: RecordedSequence, cfg: AerialConfig, drop_nonfinite: bool) -> np.ndarray:
    """(M, 3) float64 map-frame points of an aerial sequence: its map cloud (own pose
    applied), or its scans accumulated (compacted to ``cfg.map_voxel`` when large)."""
    if seq.map_file is not None:
        what = f"sequence {seq.name!r} map"
        return _read(seq.map_file, None, drop_nonfinite, what).world_xyz()
    origin = seq.poses[0, :3, 3]
    held: list[np.ndarray] = []
    count = 0
    for i in range(len(seq.scans)):
        pts = _scan_in_map(seq, i, drop_nonfinite) - origin
        held.append(pts)
        count += len(pts)
        if count > MAX_HELD_POINTS and cfg.map_voxel > 0:
            compact = voxel_downsample(np.concatenate(held), cfg.map_voxel)
            held, count = [compact.astype(np.float64)], len(compact)
    return np.concatenate(held) + origin


def aerial_submaps(
    seq: RecordedSequence,
    points: np.ndarray,
    cfg: AerialConfig,
    write: _Writer,
    progress: Progress | None = None,
) -> int:
    """Write the grid submaps of an aerial map ``points`` (M, 3) float64. The pose of the
    submap at grid point k is a translation to (x, y, 1st-percentile height of its crop),
    its timestamp k. Returns the number discarded."""
    sub: SubmapConfig = cfg.submap
    centres = aerial_grid(points[:, :2].min(0), points[:, :2].max(0), sub.radius, cfg.grid)
    tree = cKDTree(points[:, :2])
    discarded = 0
    for k, xy in enumerate(centres):
        idx = np.sort(np.asarray(tree.query_ball_point(xy, sub.radius), np.int64))
        local = None
        if len(idx) >= sub.min_points:
            pose = np.eye(4)
            pose[:3, 3] = (*xy, np.percentile(points[idx, 2], AERIAL_Z_PERCENTILE))
            local = process_submap(points[idx], pose, sub)
        if local is None:
            discarded += 1
        else:
            write(seq.name, "aerial", float(k), pose, local)
        if progress:
            progress(f"submaps {seq.name}", k + 1, len(centres))
    return discarded


# --------------------------------------------------------------------------- outputs


def _protocol(layout: str, cfg: RecordingConfig, sources: set[str], grounds: int) -> dict:
    loop = {
        "name": "loop_closure",
        "function": "hotformerloc.eval.evaluate_loop_closure",
        "per": "sequence",
        "threshold": cfg.loop_closure.threshold,
        "skip_time": cfg.loop_closure.skip_time,
        "k": 1,
    }
    if layout == "kitti":
        return loop
    return {
        "name": "benchmark",
        "function": "hotformerloc.eval.benchmark.evaluate_retriever",
        "ground_to_ground": grounds >= 2,
        "ground_to_aerial": "aerial" in sources and grounds >= 1,
        "loop_closure": loop,
    }


def _submap_configs(
    layout: str, cfg: RecordingConfig, seqs: list[RecordedSequence]
) -> list[SubmapConfig]:
    if layout == "kitti":
        return [cfg.kitti.submap]
    used = []
    if any(s.source == "ground" for s in seqs):
        used.append(cfg.ground.submap)
    if any(s.source == "aerial" for s in seqs):
        used.append(cfg.aerial.submap)
    return used


def _build(
    layout: str,
    root: Path,
    folder: Path,
    world: str,
    seqs: list[RecordedSequence],
    cfg: RecordingConfig,
    regions: list[np.ndarray],
    warnings: list[str],
    progress: Progress | None,
) -> dict:
    """Write everything of the benchmark into ``folder``; returns the manifest."""
    write = _Writer(folder / world)
    trajectory = cfg.kitti if layout == "kitti" else cfg.ground
    discarded: dict[str, int] = {}
    for seq in seqs:
        (folder / world / seq.name / "clouds").mkdir(parents=True, exist_ok=True)
        if seq.source == "aerial":
            pts = aerial_map(seq, cfg.aerial, cfg.drop_nonfinite)
            discarded[seq.name] = aerial_submaps(seq, pts, cfg.aerial, write, progress)
        else:
            discarded[seq.name] = ground_submaps(
                seq, trajectory, write, cfg.drop_nonfinite, progress
            )
    recs = sorted(write.records, key=lambda r: (r.sequence, r.timestamp))
    if not recs:
        raise RecordingError(
            f"{root}: every submap had fewer than min_points points after processing "
            "(lower submap.min_points or check the scans' units)"
        )
    xy = np.array([r.pose[:2, 3] for r in recs], np.float64).reshape(-1, 2)
    is_ground = np.array([r.source == "ground" for r in recs])
    if regions:
        split = assign_splits(xy, is_ground, regions, cfg.split.buffer)
    else:
        split = np.full(len(recs), "test")
    base = folder / world
    for seq in seqs:
        mine = [r for r in recs if r.sequence == seq.name]
        write_poses_csv(
            base / seq.name / POSES_FILE, [r.timestamp for r in mine], [r.pose for r in mine]
        )
    write_split_csv(
        base / SPLIT_FILE,
        (
            (r.sequence, r.timestamp, x, y, r.source, s)
            for r, (x, y), s in zip(recs, xy, split, strict=True)
        ),
    )
    if regions:
        write_regions_json(base / REGIONS_FILE, regions, cfg.split.buffer)
    per_seq: dict[str, dict[str, object]] = {}
    totals: dict[str, int] = {}
    for seq in seqs:
        mask = np.array([r.sequence == seq.name for r in recs])
        entry: dict[str, object] = {
            "source": seq.source,
            "scans": len(seq.scans),
            "submaps": int(mask.sum()),
            "discarded": discarded[seq.name],
        }
        for s in ("test", "buffer", "train"):
            n = int(np.sum(mask & (split == s)))
            entry[s] = n
            totals[f"{seq.source}_{s}"] = totals.get(f"{seq.source}_{s}", 0) + n
        per_seq[seq.name] = entry
    used = _submap_configs(layout, cfg, seqs)
    normalised, radius = used[0].normalise, max(c.radius for c in used)
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "format": "hotformerloc.recordings",
        "version": __version__,
        "layout": layout,
        "source_root": str(root.resolve()),
        "config": to_dict(cfg),
        "protocol": _protocol(
            layout, cfg, {s.source for s in seqs}, sum(s.source == "ground" for s in seqs)
        ),
        "scale": None if normalised else 1.0 / radius,
        "counts": {
            world: {"submaps": len(recs), **dict(sorted(totals.items())), "sequences": per_seq}
        },
        "warnings": warnings,
        "files": files,
    }
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _check_out(root: Path, out: Path, force: bool) -> None:
    r, o = root.resolve(), out.resolve()
    if o == r or r in o.parents:
        raise RecordingError(f"{out}: the output folder must not be inside the recordings {root}")
    if o in r.parents:
        raise RecordingError(f"{out}: the output folder must not contain the recordings {root}")
    if out.exists() and not force:
        raise RecordingError(f"{out}: already exists; pass force=True (--force) to replace it")
    if out.exists() and not out.is_dir():
        raise RecordingError(f"{out}: exists and is not a folder")


def prepare_recordings(
    layout: str,
    root: Path,
    out: Path,
    *,
    config: RecordingConfig | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Convert the recordings under ``root`` (``layout`` ``"sequence"`` or ``"kitti"``)
    into a benchmark folder ``out`` (see ``docs/own-data.md``); returns the manifest dict.

    Args:
        layout: ``"sequence"`` (``<root>/<sequence>/`` scans + ``poses.csv``, or an
            aerial map) or ``"kitti"`` (KITTI odometry tree).
        root: the recordings folder.
        out: the benchmark folder to create (world ``config.world``, default the root's
            name, or ``kitti``).
        config: knobs (default :class:`RecordingConfig`).
        force: replace an existing ``out``.
        progress: optional ``(stage, done, total)`` callback.

    Raises:
        RecordingError: unknown layout; ``out`` exists (without ``force``) or is nested
            with ``root``; malformed recordings (the first problems are listed: run
            :func:`check_recordings` for all); an unreadable scan; bad test regions;
            normalised and metric submaps mixed; no submap kept.
    """
    cfg = config if config is not None else RecordingConfig()
    if layout not in LAYOUTS:
        raise RecordingError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    root, out = Path(root), Path(out)
    _check_out(root, out, force)
    report = Report()
    seqs = discover(layout, root, cfg, report)
    if report.errors:
        errs = report.errors
        more = f"; and {len(errs) - MAX_ERRORS} more" if len(errs) > MAX_ERRORS else ""
        raise RecordingError(
            f"{root}: {len(errs)} problem(s): {'; '.join(errs[:MAX_ERRORS])}{more} "
            "(check_recordings / 'hotformerloc dataset check' lists every finding)"
        )
    return prepare_sequences(layout, root, out, seqs, cfg, report.warnings, progress, force)


def prepare_sequences(
    layout: str,
    root: Path,
    out: Path,
    seqs: list[RecordedSequence],
    cfg: RecordingConfig,
    warnings: list[str],
    progress: Progress | None = None,
    force: bool = False,
) -> dict:
    """The benchmark folder ``out`` of sequences already read (``root``: where they came
    from, for messages and the world's default name); as :func:`prepare_recordings`."""
    if not seqs:
        raise RecordingError(f"{root}: no sequence to convert")
    if len({c.normalise for c in _submap_configs(layout, cfg, seqs)}) > 1:
        raise RecordingError(
            "ground.submap.normalise and aerial.submap.normalise differ: a benchmark mixes "
            "metric and normalised submaps"
        )
    regions = read_regions(Path(cfg.split.regions)) if cfg.split.regions else []
    world = cfg.world or ("kitti" if layout == "kitti" else root.resolve().name or "recordings")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        manifest = _build(layout, root, tmp, world, seqs, cfg, regions, warnings, progress)
        if out.exists():
            _check_out(root, out, force)
            old = out.parent / f".{out.name}.old-{tag}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_recordings(layout: str, root: Path) -> list[Finding]:
    """Every finding about the recordings under ``root`` in ``layout``, reading every
    cloud file: ``(severity, message)`` with severity ``"error"`` (prevents conversion),
    ``"warning"`` or ``"info"`` (what was detected); messages name the file, line or
    sequence. Never raises for a malformed folder. Uses the default config (aerial
    sequences are those marked by ``source.txt`` or holding only a map cloud)."""
    report = Report()
    root = Path(root)
    seqs = discover(layout, root, RecordingConfig(), report, deep=True)
    if seqs:
        report.info(
            f"{root}: {len(seqs)} sequence(s) can be converted: "
            + ", ".join(f"{s.name} ({s.source})" for s in seqs)
        )
    if not report.errors:
        report.info(f"{root}: no errors")
    return report.findings
