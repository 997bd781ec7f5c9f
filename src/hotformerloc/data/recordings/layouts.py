"""Finding and validating recordings on disk: the ``sequence`` and ``kitti`` layouts.

Both layouts are read into :class:`RecordedSequence` objects (scan files in time order with
one sensor -> map pose each, or an aerial map cloud). Every problem found on the way is a
finding ``(severity, message)`` collected by a :class:`Report`; the message names the file,
line or sequence. Nothing here raises for a malformed folder.

Frames. ``sequence`` layout: ``poses.csv`` gives each scan's sensor -> map pose. ``kitti``
layout: ``poses/NN.txt`` gives camera-0 poses ``P_i`` (camera 0 of scan i -> camera 0 of
scan 0) and ``calib.txt``'s ``Tr`` maps velodyne -> camera 0, so the lidar pose in the
velodyne frame of scan 0 (the map frame, z up) is ``inv(Tr) @ P_i @ Tr``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from hotformerloc.data.recordings.config import RecordingConfig
from hotformerloc.errors import HotformerlocError
from hotformerloc.io import FORMATS, LayoutFileError, PointCloudError, Source, read_pointcloud
from hotformerloc.io.pointcloud import check_rigid
from hotformerloc.io.poses import POSES_FILE
from hotformerloc.io.poses import read_poses_csv as read_pose_table

Severity = Literal["error", "warning", "info"]
Finding = tuple[str, str]

LAYOUTS = ("sequence", "kitti")
TIMES_FILE = "times.txt"
SOURCE_FILE = "source.txt"
MAP_STEM = "map"
SCAN_SUBFOLDER = "clouds"
#: Point-cloud file extensions recognised as scans (those of :data:`hotformerloc.io.FORMATS`).
SCAN_EXTENSIONS = tuple(sorted({e for spec in FORMATS.values() for e in spec.extensions}))
#: Items listed in one finding before "and N more".
MAX_LISTED = 3
#: A quaternion whose norm is further than this from 1 is reported (then normalised).
QUATERNION_TOL = 1e-3
#: Timestamps above this many seconds (year ~5138) are probably nanoseconds.
NANOSECOND_HINT = 1e11


class RecordingError(HotformerlocError):
    """The recordings or the output folder are unusable; the message names the file,
    folder or sequence and the problem (several problems are listed)."""


@dataclass
class Report:
    """Findings collected while reading a recording tree."""

    findings: list[Finding] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.findings.append(("error", message))

    def warning(self, message: str) -> None:
        self.findings.append(("warning", message))

    def info(self, message: str) -> None:
        self.findings.append(("info", message))

    @property
    def errors(self) -> list[str]:
        return [m for s, m in self.findings if s == "error"]

    @property
    def warnings(self) -> list[str]:
        return [m for s, m in self.findings if s == "warning"]


@dataclass(frozen=True, eq=False)
class RecordedSequence:
    """One sequence ready to be converted.

    * ``scans``: (N,) scan files in time order (empty for a map-only aerial sequence);
    * ``timestamps``: (N,) float64 seconds, strictly increasing;
    * ``poses``: (N, 4, 4) float64 rigid sensor -> map transforms;
    * ``scan_format``: format name passed to :func:`~hotformerloc.io.read_pointcloud`
      (None: by extension);
    * ``map_file``: an aerial map cloud in the map frame, or None;
    * ``reader``: where the scans are not files (a robot log), ``reader(i)`` gives scan
      ``i``'s (M, 3) points in the sensor frame (``scans`` is then empty).
    """

    name: str
    source: Source
    scans: tuple[Path, ...]
    timestamps: np.ndarray
    poses: np.ndarray
    scan_format: str | None = None
    map_file: Path | None = None
    reader: Callable[[int], np.ndarray] | None = None


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _subfolders(folder: Path, report: Report) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        report.error(f"{folder}: cannot list folder ({e.strerror or e})")
        return []


def _files(folder: Path, report: Report) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as e:
        report.error(f"{folder}: cannot list folder ({e.strerror or e})")
        return []


def _read_text(path: Path, report: Report) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        report.error(f"{path}: cannot read ({e})")
        return None


def _numbers(text: str) -> list[float] | None:
    """The whitespace-separated numbers of ``text`` (None if one is not a finite number)."""
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def check_clouds(
    paths: list[Path], scan_format: str | None, report: Report, scans: bool = True
) -> None:
    """Read every file (any problem becomes an error naming it); for ``scans``, warn once
    when some carry their own pose, which is ignored (the poses file gives the sensor pose)."""
    with_pose = []
    for path in paths:
        try:
            cloud = read_pointcloud(path, scan_format)
        except PointCloudError as e:
            hint = "; drop_nonfinite=true drops them" if "non-finite" in e.problem else ""
            report.error(f"{e}{hint}")
            continue
        if scans and cloud.pose is not None:
            with_pose.append(path.name)
    if with_pose:
        report.warning(
            f"{paths[0].parent}: {len(with_pose)} scan(s) carry their own pose "
            f"({_listed(with_pose)}); it is ignored: the poses file gives the sensor pose"
        )


# --------------------------------------------------------------------------- poses.csv


def read_poses_csv(path: Path, report: Report) -> tuple[np.ndarray, np.ndarray] | None:
    """(timestamps (M,) ascending, poses (M, 4, 4)) from a ``poses.csv``
    (:func:`hotformerloc.io.poses.read_poses_csv`: columns timestamp,x,y,z,qx,qy,qz,qw,
    others ignored; quaternions normalised), or None after reporting the problem. A
    quaternion whose norm is off 1 by more than :data:`QUATERNION_TOL` is a warning."""
    try:
        table = read_pose_table(path)
    except LayoutFileError as e:
        report.error(str(e))
        return None
    norms = np.linalg.norm(table.quaternions, axis=1)
    off = np.flatnonzero(np.abs(norms - 1) > QUATERNION_TOL)
    if len(off):
        report.warning(
            f"{path}: {len(off)} quaternion(s) are not unit (norm {norms[off[0]]:.4f} at "
            f"timestamp {float(table.timestamps[off[0]])!r}); normalised"
        )
    return table.timestamps, table.poses


def match_poses(
    scan_times: np.ndarray,
    pose_times: np.ndarray,
    poses: np.ndarray,
    tolerance: float,
    max_gap: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Pose of each scan: the pose within ``tolerance`` s, else interpolated (linear
    position, slerp rotation) between the poses around it when they are at most
    ``max_gap`` s apart. Returns ((N, 4, 4) poses, (N,) bool found); unfound rows are
    identity. ``pose_times`` must be strictly increasing."""
    n = len(scan_times)
    out = np.tile(np.eye(4), (n, 1, 1))
    found = np.zeros(n, bool)
    if not len(pose_times) or not n:
        return out, found
    right = np.searchsorted(pose_times, scan_times)
    left = np.clip(right - 1, 0, len(pose_times) - 1)
    rclip = np.clip(right, 0, len(pose_times) - 1)
    nearest = np.where(
        np.abs(pose_times[left] - scan_times) <= np.abs(pose_times[rclip] - scan_times),
        left,
        rclip,
    )
    exact = np.abs(pose_times[nearest] - scan_times) <= tolerance
    out[exact] = poses[nearest[exact]]
    found |= exact
    between = (
        ~exact
        & (right > 0)
        & (right < len(pose_times))
        & (pose_times[rclip] - pose_times[left] <= max_gap)
    )
    if between.any() and len(pose_times) >= 2:
        t = scan_times[between]
        slerp = Slerp(pose_times, Rotation.from_matrix(poses[:, :3, :3]))
        out[between, :3, :3] = slerp(t).as_matrix()
        for k in range(3):
            out[between, k, 3] = np.interp(t, pose_times, poses[:, k, 3])
        found |= between
    return out, found


# --------------------------------------------------------------------------- sequence layout


def _scan_files(folder: Path, report: Report) -> tuple[Path, list[Path], list[Path]]:
    """(scan folder, scan files, ignored files) of a sequence folder."""
    sub = folder / SCAN_SUBFOLDER
    scan_dir = sub if sub.is_dir() else folder
    scans, ignored = [], []
    for p in _files(scan_dir, report):
        if scan_dir == folder and p.stem == MAP_STEM:
            continue
        if p.suffix.lower() in SCAN_EXTENSIONS:
            scans.append(p)
        elif p.name not in (POSES_FILE, TIMES_FILE, SOURCE_FILE):
            ignored.append(p)
    return scan_dir, scans, ignored


def _scan_timestamps(folder: Path, scans: list[Path], report: Report) -> np.ndarray | None:
    """Timestamps of ``scans`` from their stems (seconds) or, with a ``times.txt``, from
    the line given by the stem as an index."""
    times_path = folder / TIMES_FILE
    if times_path.is_file():
        text = _read_text(times_path, report)
        if text is None:
            return None
        lines = [ln for ln in text.splitlines() if ln.strip()]
        times = []
        for i, ln in enumerate(lines, start=1):
            v = _numbers(ln)
            if v is None or len(v) != 1:
                report.error(f"{times_path} line {i}: expected one number, got {ln.strip()!r}")
                return None
            times.append(v[0])
        not_index = [p.name for p in scans if not p.stem.isdigit()]
        if not_index:
            report.error(
                f"{folder}: with {TIMES_FILE}, scan file names must be indices; not: "
                f"{_listed(not_index)}"
            )
            return None
        beyond = [p.name for p in scans if int(p.stem) >= len(times)]
        if beyond:
            report.error(
                f"{times_path}: {len(times)} lines, but scan index beyond them: {_listed(beyond)}"
            )
            return None
        return np.array([times[int(p.stem)] for p in scans], np.float64)
    stamps, bad = [], []
    for p in scans:
        v = _numbers(p.stem)
        if v is None or len(v) != 1:
            bad.append(p.name)
        else:
            stamps.append(v[0])
    if bad:
        report.error(
            f"{folder}: scan file names must be timestamps in seconds (or indices with a "
            f"{TIMES_FILE}); not: {_listed(bad)}"
        )
        return None
    return np.array(stamps, np.float64)


def _source_of(
    folder: Path, has_scans: bool, map_file: Path | None, cfg: RecordingConfig, report: Report
) -> Source | None:
    marker = folder / SOURCE_FILE
    declared = None
    if marker.is_file():
        text = _read_text(marker, report)
        if text is None:
            return None
        declared = text.strip().lower()
        if declared not in ("ground", "aerial"):
            report.error(f"{marker}: must contain 'ground' or 'aerial', got {text.strip()!r}")
            return None
    listed = folder.name in cfg.aerial.sequences
    if declared == "ground" and listed:
        report.error(
            f"sequence {folder.name!r}: {marker} says ground but aerial.sequences lists it"
        )
        return None
    if declared == "aerial" or listed or (map_file is not None and not has_scans):
        return "aerial"
    return "ground"


def read_sequence_folder(
    folder: Path, cfg: RecordingConfig, report: Report, deep: bool
) -> RecordedSequence | None:
    """One ``<root>/<sequence>/`` folder (see ``docs/own-data.md``), or None after
    reporting why it cannot be used. ``deep``: also read every cloud file."""
    name = folder.name
    scan_dir, scans, ignored = _scan_files(folder, report)
    maps = [
        p
        for p in _files(folder, report)
        if p.stem == MAP_STEM and p.suffix.lower() in SCAN_EXTENSIONS
    ]
    if len(maps) > 1:
        report.error(f"sequence {name!r}: several map clouds ({_listed([p.name for p in maps])})")
        return None
    map_file = maps[0] if maps else None
    if ignored:
        report.info(
            f"sequence {name!r}: ignored {len(ignored)} file(s) that are not point clouds "
            f"({_listed([p.name for p in ignored])})"
        )
    source = _source_of(folder, bool(scans), map_file, cfg, report)
    if source is None:
        return None
    if deep:
        check_clouds(scans, None, report)
        if map_file is not None:
            check_clouds([map_file], None, report, scans=False)
    empty = np.zeros(0), np.zeros((0, 4, 4))
    if map_file is not None:
        if source == "ground":
            report.error(
                f"sequence {name!r}: {map_file.name} is a map cloud, used only by aerial "
                f"sequences (mark it aerial: {SOURCE_FILE} or aerial.sequences)"
            )
            return None
        if scans:
            report.warning(f"sequence {name!r}: {len(scans)} scan(s) ignored: the map is used")
        report.info(f"sequence {name!r}: aerial, map cloud {map_file.name}")
        return RecordedSequence(name, "aerial", (), *empty, map_file=map_file)
    if not scans:
        report.error(
            f"sequence {name!r}: no scan files ({' '.join(SCAN_EXTENSIONS)}) in {scan_dir}"
        )
        return None
    times = _scan_timestamps(folder, scans, report)
    if times is None:
        return None
    order = np.argsort(times, kind="stable")
    times, scans = times[order], [scans[i] for i in order]
    rounded = np.round(times, 6)
    dup = np.flatnonzero(np.diff(rounded) == 0)
    if len(dup):
        pairs = [f"{scans[i].name} = {scans[i + 1].name}" for i in dup]
        report.error(f"sequence {name!r}: scans with the same timestamp: {_listed(pairs)}")
        return None
    if times.max() > NANOSECOND_HINT:
        report.warning(
            f"sequence {name!r}: timestamps up to {times.max():.6g} look like nanoseconds; "
            "they must be seconds"
        )
    poses_path = folder / POSES_FILE
    if not poses_path.is_file():
        report.error(f"sequence {name!r}: {poses_path} is missing (sensor -> map poses)")
        return None
    parsed = read_poses_csv(poses_path, report)
    if parsed is None:
        return None
    pose_times, pose_mats = parsed
    if len(pose_times) != len(scans):
        report.warning(
            f"sequence {name!r}: {poses_path.name} has {len(pose_times)} rows for "
            f"{len(scans)} scans (matched by timestamp)"
        )
    poses, found = match_poses(times, pose_times, pose_mats, cfg.poses.tolerance, cfg.poses.max_gap)
    if not found.all():
        lost = [f"{scans[i].name} (t={times[i]:.6f})" for i in np.flatnonzero(~found)]
        what = (
            f"sequence {name!r}: {len(lost)} of {len(scans)} scans have no pose in "
            f"{poses_path.name} within {cfg.poses.tolerance} s or between poses at most "
            f"{cfg.poses.max_gap} s apart: {_listed(lost)}"
        )
        if not cfg.poses.skip_unposed:
            report.error(what)
            return None
        report.warning(f"{what}; skipped")
        keep = np.flatnonzero(found)
        if not len(keep):
            return None
        times, poses, scans = times[keep], poses[keep], [scans[i] for i in keep]
    travel = float(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum())
    report.info(
        f"sequence {name!r}: {source}, {len(scans)} scans "
        f"({', '.join(sorted({p.suffix.lower() for p in scans}))}), {travel:.1f} m travelled "
        f"over {times[-1] - times[0]:.1f} s"
    )
    return RecordedSequence(name, source, tuple(scans), times, poses)


def discover_sequence_layout(
    root: Path, cfg: RecordingConfig, report: Report, deep: bool = False
) -> list[RecordedSequence]:
    """Every usable sequence of a ``sequence``-layout tree (problems go to ``report``)."""
    if not root.is_dir():
        report.error(f"{root}: recordings folder does not exist or is not a folder")
        return []
    if (root / "sequences").is_dir() and (root / "poses").is_dir():
        report.error(f"{root}: looks like a KITTI odometry tree (sequences/, poses/): use 'kitti'")
        return []
    folders = _subfolders(root, report)
    names = [p.name for p in folders]
    for key, wanted in (("sequences", cfg.sequences), ("aerial.sequences", cfg.aerial.sequences)):
        unknown = [s for s in wanted if s not in names]
        if unknown:
            report.error(f"{root}: {key} names unknown sequence(s) {_listed(unknown)}")
    if cfg.sequences:
        folders = [p for p in folders if p.name in cfg.sequences]
    if not folders:
        report.error(f"{root}: no sequence folders")
        return []
    report.info(f"{root}: layout 'sequence', {len(folders)} sequence folder(s): {names}")
    out = [read_sequence_folder(p, cfg, report, deep) for p in folders]
    return [s for s in out if s is not None]


# --------------------------------------------------------------------------- KITTI layout

_KITTI_SCAN = re.compile(r"^\d{6}$")


def kitti_lidar_poses(camera_poses: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Lidar poses (N, 4, 4) in the velodyne frame of scan 0: ``inv(Tr) @ P_i @ Tr``.

    ``camera_poses`` (N, 4, 4): camera-0 pose of scan i in the camera-0 frame of scan 0
    (``poses/NN.txt``); ``tr`` (4, 4): velodyne -> camera 0 (``calib.txt`` ``Tr``).
    """
    inv = np.eye(4)
    inv[:3, :3] = tr[:3, :3].T
    inv[:3, 3] = -tr[:3, :3].T @ tr[:3, 3]
    out = inv @ camera_poses @ tr
    out[:, 3] = (0.0, 0.0, 0.0, 1.0)
    return out


def _as_pose(values: list[float]) -> np.ndarray:
    pose = np.eye(4)
    pose[:3] = np.asarray(values, np.float64).reshape(3, 4)
    return pose


def read_kitti_calib(path: Path, report: Report) -> np.ndarray | None:
    """The (4, 4) velodyne -> camera-0 transform (``Tr:`` line of ``calib.txt``)."""
    text = _read_text(path, report)
    if text is None:
        return None
    entries = {}
    for i, ln in enumerate(text.splitlines(), start=1):
        key, sep, rest = ln.partition(":")
        if not ln.strip():
            continue
        if not sep:
            report.error(f"{path} line {i}: expected 'KEY: numbers', got {ln.strip()[:40]!r}")
            return None
        entries[key.strip()] = (i, rest)
    if "Tr" not in entries:
        report.error(f"{path}: no 'Tr:' line (velodyne -> camera 0, 12 numbers)")
        return None
    line, rest = entries["Tr"]
    values = _numbers(rest)
    if values is None or len(values) != 12:
        got = "non-numbers" if values is None else f"{len(values)} numbers"
        report.error(f"{path} line {line}: Tr must hold 12 finite numbers, got {got}")
        return None
    try:
        return check_rigid(_as_pose(values), "Tr")
    except ValueError as e:
        report.error(f"{path} line {line}: {e}")
        return None


def read_kitti_poses(path: Path, report: Report) -> np.ndarray | None:
    """(N, 4, 4) camera-0 poses of ``poses/NN.txt`` (12 numbers per line, row-major 3x4)."""
    text = _read_text(path, report)
    if text is None:
        return None
    poses, bad, nonrigid = [], [], []
    for i, ln in enumerate(text.splitlines(), start=1):
        if not ln.strip():
            continue
        values = _numbers(ln)
        if values is None or len(values) != 12:
            bad.append(f"line {i}")
            continue
        try:
            poses.append(check_rigid(_as_pose(values), f"line {i}"))
        except ValueError as e:
            nonrigid.append(str(e))
    if bad:
        report.error(f"{path}: expected 12 finite numbers per line; not on {_listed(bad)}")
    if nonrigid:
        report.error(f"{path}: non-rigid pose(s): {_listed(nonrigid)}")
    if bad or nonrigid:
        return None
    if not poses:
        report.error(f"{path}: no poses")
        return None
    return np.stack(poses)


def read_kitti_sequence(
    root: Path, name: str, required: bool, report: Report, deep: bool
) -> RecordedSequence | None:
    """KITTI sequence ``name`` (``sequences/<name>/`` and ``poses/<name>.txt``)."""
    folder = root / "sequences" / name
    velodyne = folder / "velodyne"
    if not velodyne.is_dir():
        report.error(f"sequence {name!r}: {velodyne} is missing")
        return None
    scans = [p for p in _files(velodyne, report) if p.suffix.lower() == ".bin"]
    if not scans:
        report.error(f"sequence {name!r}: no .bin scans in {velodyne}")
        return None
    not_index = [p.name for p in scans if not p.stem.isdigit()]
    if not_index:
        report.error(f"sequence {name!r}: scan names must be 6-digit indices: {_listed(not_index)}")
        return None
    odd = [p.name for p in scans if not _KITTI_SCAN.match(p.stem)]
    if odd:
        report.warning(f"sequence {name!r}: scan names not of 6 digits: {_listed(odd)}")
    scans.sort(key=lambda p: int(p.stem))
    index = [int(p.stem) for p in scans]
    if index != list(range(len(scans))):
        missing = sorted(set(range(max(index) + 1)) - set(index))
        report.error(
            f"sequence {name!r}: scans must be numbered 0..{len(scans) - 1}; missing "
            f"{_listed([f'{i:06d}.bin' for i in missing])}"
            if missing
            else f"sequence {name!r}: duplicate scan indices in {velodyne}"
        )
        return None
    if deep:
        check_clouds(scans, "kitti", report)
    calib = folder / "calib.txt"
    tr = read_kitti_calib(calib, report) if calib.is_file() else None
    if not calib.is_file():
        report.error(f"sequence {name!r}: {calib} is missing")
    times_path = folder / TIMES_FILE
    times = None
    if not times_path.is_file():
        report.error(f"sequence {name!r}: {times_path} is missing")
    else:
        text = _read_text(times_path, report)
        values = _numbers(text) if text is not None else None
        if text is not None and values is None:
            report.error(f"{times_path}: not a list of finite numbers")
        elif values is not None and len(values) != len(scans):
            report.error(f"{times_path}: {len(values)} timestamps for {len(scans)} scans")
        elif values is not None and np.any(np.diff(np.round(values, 6)) <= 0):
            report.error(f"{times_path}: timestamps are not strictly increasing")
        elif values is not None:
            times = np.asarray(values, np.float64)
    poses_path = root / "poses" / f"{name}.txt"
    if not poses_path.is_file():
        if required:
            report.error(f"sequence {name!r}: {poses_path} is missing (ground-truth poses)")
        else:
            report.info(f"sequence {name!r}: no ground-truth poses ({poses_path}); skipped")
        return None
    camera = read_kitti_poses(poses_path, report)
    if camera is not None and len(camera) != len(scans):
        report.error(f"{poses_path}: {len(camera)} poses for {len(scans)} scans in {velodyne}")
        return None
    if camera is None or tr is None or times is None:
        return None
    poses = kitti_lidar_poses(camera, tr)
    travel = float(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum())
    report.info(
        f"sequence {name!r}: {len(scans)} scans, {travel:.1f} m travelled over "
        f"{times[-1] - times[0]:.1f} s"
    )
    return RecordedSequence(name, "ground", tuple(scans), times, poses, scan_format="kitti")


def discover_kitti_layout(
    root: Path, cfg: RecordingConfig, report: Report, deep: bool = False
) -> list[RecordedSequence]:
    """Every KITTI sequence with ground-truth poses (or those of ``cfg.sequences``)."""
    if not root.is_dir():
        report.error(f"{root}: KITTI folder does not exist or is not a folder")
        return []
    seq_root = root / "sequences"
    if not seq_root.is_dir():
        report.error(f"{root}: no sequences/ folder (expected sequences/<NN>/velodyne/*.bin)")
        return []
    if not (root / "poses").is_dir():
        report.error(f"{root}: no poses/ folder (expected poses/<NN>.txt ground truth)")
    names = [p.name for p in _subfolders(seq_root, report)]
    unknown = [s for s in cfg.sequences if s not in names]
    if unknown:
        report.error(f"{seq_root}: sequences names unknown sequence(s) {_listed(unknown)}")
    if cfg.aerial.sequences:
        report.error("aerial.sequences: the kitti layout has no aerial sequences")
    chosen = [n for n in names if not cfg.sequences or n in cfg.sequences]
    if not chosen:
        report.error(f"{seq_root}: no sequence folders")
        return []
    report.info(f"{root}: layout 'kitti', {len(chosen)} sequence folder(s): {chosen}")
    out = [read_kitti_sequence(root, n, bool(cfg.sequences), report, deep) for n in chosen]
    return [s for s in out if s is not None]


def discover(
    layout: str, root: Path, cfg: RecordingConfig, report: Report, deep: bool = False
) -> list[RecordedSequence]:
    """Sequences of ``root`` in ``layout`` (``"sequence"`` or ``"kitti"``)."""
    if layout == "sequence":
        return discover_sequence_layout(root, cfg, report, deep)
    if layout == "kitti":
        return discover_kitti_layout(root, cfg, report, deep)
    report.error(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    return []
