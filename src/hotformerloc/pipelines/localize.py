"""Online localisation of a drive against a place database: each submap is retrieved and
re-ranked (:class:`hotformerloc.index.Localizer`), its verified candidates become map-pose
candidates (confidence = verification fitness), and the temporal filter
(:func:`hotformerloc.index.track.filter_track`) keeps the track consistent with the
odometry between submaps (``docs/robot-logs.md``).

The drive is a folder of submap clouds named by their timestamps with a ``poses.csv`` of
odometry poses (submap -> odometry frame), the layout ``db build`` reads, or a benchmark
sequence (``clouds/`` + ``poses.csv``, as ``dataset prepare sequence`` writes from a log);
:func:`localize_log` writes the submaps of a robot log first.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotformerloc.index import Entry, Localizer, SearchFilter, scan_places
from hotformerloc.index.pipeline import DataFolderError, _folder_places
from hotformerloc.index.track import MapCandidate, TrackConfig, TrackPoint, filter_track
from hotformerloc.io import read_pointcloud
from hotformerloc.io.atomic import atomic_write_text
from hotformerloc.io.poses import POSES_FILE, csv_text, rotation_to_quaternion

__all__ = [
    "TRAJECTORY_COLUMNS",
    "LocalizedSubmap",
    "localize_drive",
    "localize_log",
    "localize_scans",
    "track_html",
    "trajectory_csv",
    "write_outputs",
]

#: Columns of the trajectory CSV (map pose as x y z + quaternion x y z w; empty while the
#: track is not initialised).
TRAJECTORY_COLUMNS = (
    "timestamp",
    "submap",
    "status",
    "confidence",
    "x",
    "y",
    "z",
    "qx",
    "qy",
    "qz",
    "qw",
    "place",
)


@dataclass(frozen=True)
class LocalizedSubmap:
    """One submap of the drive: its ``entry`` (path, timestamp, odometry pose), the
    filtered ``point`` (pose, confidence, status, place), its verified ``candidates`` and
    the single-shot ``best`` of them without the filter (None when nothing was verified)."""

    entry: Entry
    point: TrackPoint
    candidates: tuple[MapCandidate, ...]

    @property
    def best(self) -> MapCandidate | None:
        """The most confident candidate (first on ties), None without candidates."""
        return max(self.candidates, key=lambda m: m.confidence) if self.candidates else None


def localize_drive(
    loc: Localizer,
    drive: str | Path,
    k: int = 25,
    where: SearchFilter | None = None,
    config: TrackConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[LocalizedSubmap]:
    """Localise every submap of the folder ``drive`` (see the module docstring) in
    ``loc``'s database: top-``k`` retrieval among the entries passing ``where``, all ``k``
    re-ranked, the refined candidates with a map pose as the filter's candidates.

    Raises:
        DataFolderError: ``drive`` is not a folder of clouds with a ``poses.csv`` covering
            every cloud (named).
        PointCloudError, OctreeInputError, QueryError: a submap or a candidate is unusable.
    """
    folder = Path(drive)
    if (folder / "clouds").is_dir() and (folder / POSES_FILE).is_file():
        # a benchmark sequence (clouds/ + poses.csv), e.g. from dataset prepare --bag
        name = folder.resolve().name
        world = folder.resolve().parent.name
        entries = _folder_places(folder / "clouds", "ground", world, name, folder / POSES_FILE)
    else:
        entries = scan_places(folder, "ground")
    if not entries or any(e.pose is None for e in entries):
        raise DataFolderError(f"{drive}: a drive needs odometry poses (poses.csv) for its clouds")
    entries.sort(key=lambda e: (e.timestamp is None, e.timestamp))
    candidates: list[list[MapCandidate]] = []
    for i, e in enumerate(entries):
        assert e.path is not None  # folder entries always have their file
        res = loc.query(read_pointcloud(e.path).xyz, e.path, k, where, rerank=True)
        candidates.append(
            [
                MapCandidate(c.map_pose, float(c.verification.fitness), c.id)
                for c in res.candidates
                if c.map_pose is not None and c.verification is not None and c.verification.refined
            ]
        )
        if progress is not None:
            progress(i + 1, len(entries))
    odometry = np.stack([np.asarray(e.pose) for e in entries])
    track = filter_track(odometry, candidates, config)
    return [
        LocalizedSubmap(e, p, tuple(c)) for e, p, c in zip(entries, track, candidates, strict=True)
    ]


def trajectory_csv(run: Sequence[LocalizedSubmap]) -> str:
    """The trajectory as CSV text (:data:`TRAJECTORY_COLUMNS`, one row per submap)."""
    rows = []
    for s in run:
        p = s.point
        pose: list[str] = [""] * 7
        if p.pose is not None:
            q = rotation_to_quaternion(p.pose[:3, :3])
            pose = [f"{v:.4f}" for v in p.pose[:3, 3]] + [f"{v:.6f}" for v in q]
        ts = "" if s.entry.timestamp is None else f"{s.entry.timestamp:.6f}"
        name = Path(s.entry.path or s.entry.id).name
        rows.append([ts, name, p.status, f"{p.confidence:.4f}", *pose, p.place or ""])
    return csv_text(TRAJECTORY_COLUMNS, rows)


def _colour(confidence: float) -> str:
    """Red (0) -> yellow -> green (1)."""
    c = min(max(confidence, 0.0), 1.0)
    r, g = (255, int(510 * c)) if c < 0.5 else (int(510 * (1 - c)), 255)
    return f"rgb({r},{g},60)"


def track_html(run: Sequence[LocalizedSubmap], places: Sequence[Entry], title: str) -> str:
    """A self-contained HTML page: the map's places (grey) and the track over them, each
    submap a dot coloured by confidence (hollow: predicted by odometry)."""
    pts = [s.point.pose[:2, 3] for s in run if s.point.pose is not None]
    ref = [np.asarray(e.pose)[:2, 3] for e in places if e.pose is not None]
    xy = np.array(pts + ref) if pts or ref else np.zeros((1, 2))
    lo, hi = xy.min(0) - 10.0, xy.max(0) + 10.0
    scale = 800.0 / max(float((hi - lo).max()), 1e-6)

    def px(p: np.ndarray) -> tuple[float, float]:
        return (p[0] - lo[0]) * scale, (hi[1] - p[1]) * scale

    parts = []
    for p in ref:
        x, y = px(p)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#bbb"/>')
    for s in run:
        if s.point.pose is None:
            continue
        x, y = px(s.point.pose[:2, 3])
        col = _colour(s.point.confidence)
        fill = "none" if s.point.status == "predicted" else col
        tip = html.escape(
            f"{Path(s.entry.path or s.entry.id).name}: {s.point.status}, "
            f"confidence {s.point.confidence:.2f}, place {s.point.place}"
        )
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}" stroke="{col}" '
            f'stroke-width="2"><title>{tip}</title></circle>'
        )
    w, h = (hi - lo) * scale
    matched = sum(s.point.status == "matched" for s in run)
    predicted = sum(s.point.status == "predicted" for s in run)
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{len(run)} submaps: {matched} matched, {predicted} "
        f"predicted by odometry, {len(run) - matched - predicted} not localised. Grey: the "
        "map's places; dots: the track coloured by confidence (red 0, green 1), hollow where "
        "predicted.</p>"
        f'<svg width="{w:.0f}" height="{h:.0f}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts)
        + "</svg>"
    )


def write_outputs(run: Sequence[LocalizedSubmap], places: Sequence[Entry], out: Path) -> None:
    """``out/trajectory.csv`` and ``out/track.html`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "trajectory.csv", trajectory_csv(run))
    atomic_write_text(out / "track.html", track_html(run, places, f"Localisation of {out.name}"))


def localize_log(
    loc: Localizer,
    log: str | Path,
    points: str,
    poses: str,
    submaps: str | Path,
    k: int = 25,
    where: SearchFilter | None = None,
    config: TrackConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[LocalizedSubmap]:
    """:func:`localize_drive` of the ground submaps of a robot log (the ``points`` topic
    posed by ``poses``, a topic or ``tf:PARENT->CHILD``), first written as the benchmark
    folder ``submaps`` with the recordings path's defaults
    (:func:`hotformerloc.data.recordings.bag.prepare_bag`; an existing folder is replaced).

    Raises:
        BagError, RecordingError: as ``prepare_bag``; then as :func:`localize_drive`.
    """
    from hotformerloc.data.recordings.bag import prepare_bag

    prepare_bag(log, submaps, points, poses, force=True)
    stem = Path(log).stem or "bag"
    return localize_drive(loc, Path(submaps) / stem / stem, k, where, config, progress)


def localize_scans(
    loc: Localizer,
    scans: str | Path,
    submaps: str | Path,
    k: int = 25,
    where: SearchFilter | None = None,
    config: TrackConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[LocalizedSubmap]:
    """:func:`localize_drive` of a folder of single scans with their ``poses.csv`` (one
    sequence folder of the ``sequence`` recordings layout, ``docs/own-data.md``): its ground
    submaps are first written as the benchmark folder ``submaps`` with the recordings
    path's defaults (an existing folder is replaced).

    Raises:
        RecordingError: the folder is not a usable sequence (its first problems named).
    """
    from hotformerloc.data.recordings import RecordingConfig, RecordingError
    from hotformerloc.data.recordings.build import _check_out, prepare_sequences
    from hotformerloc.data.recordings.layouts import Report, read_sequence_folder

    folder, dest = Path(scans), Path(submaps)
    _check_out(folder, dest, True)
    report = Report()
    seq = read_sequence_folder(folder, RecordingConfig(), report, False)
    if seq is None or report.errors:
        raise RecordingError(f"{folder}: {'; '.join(report.errors[:3]) or 'not a sequence'}")
    world = folder.resolve().name
    cfg = RecordingConfig(world=world)
    prepare_sequences("sequence", folder, dest, [seq], cfg, report.warnings, None, True)
    return localize_drive(loc, dest / world / seq.name, k, where, config, progress)
