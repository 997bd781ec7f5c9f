"""A robot log as a recorded sequence: the scans of a PointCloud2 topic with their poses
(an odometry / PoseStamped topic or a ``tf:PARENT->CHILD`` chain, interpolated at the scan
stamps), fed to the recordings path (accumulate, crop, remove ground, voxelise) without
exporting any file (``docs/robot-logs.md``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from hotformerloc.data.recordings.build import Progress, _check_out, prepare_sequences
from hotformerloc.data.recordings.config import RecordingConfig
from hotformerloc.data.recordings.layouts import RecordedSequence, RecordingError
from hotformerloc.io.bags import BagError, Scan, read_poses, read_scans
from hotformerloc.io.pointcloud import Source

__all__ = ["BagScans", "bag_sequence", "prepare_bag"]


class BagScans:
    """Scan ``i`` of a bag topic as (M, 3) float64 points in the sensor frame, decoded when
    asked. Reading in increasing order decodes each message once; asking for an earlier
    scan than the last one restarts the bag."""

    def __init__(self, path: str | os.PathLike[str], topic: str) -> None:
        self.path, self.topic = path, topic
        self._it: Iterator[Scan] | None = None
        self._next = 0

    def stamps(self) -> np.ndarray:
        """(N,) float64 header stamps of every scan, in bag order."""
        return np.array([s.stamp for s in read_scans(self.path, self.topic)], np.float64)

    def __call__(self, i: int) -> np.ndarray:
        if self._it is None or i < self._next:
            self._it, self._next = read_scans(self.path, self.topic), 0
        for scan in self._it:
            self._next += 1
            if self._next - 1 == i:
                return scan.cloud.xyz.astype(np.float64)
        raise BagError(self.path, f"{self.topic}: no scan {i}")


def bag_sequence(
    path: str | os.PathLike[str],
    points: str,
    poses: str,
    name: str | None = None,
    source: Source = "ground",
) -> RecordedSequence:
    """The sequence of the ``points`` topic of the log at ``path``, posed by ``poses``
    (a topic or ``tf:PARENT->CHILD``; see :func:`hotformerloc.io.bags.read_poses`).

    Raises:
        BagError: an unreadable log, a missing or mistyped topic, or poses that do not
            cover the scans (named).
        RecordingError: no scans, or scan stamps that do not increase.
    """
    scans = BagScans(path, points)
    stamps = scans.stamps()
    if stamps.size == 0:
        raise RecordingError(f"{os.fspath(path)}: {points} has no scans")
    if np.any(np.diff(stamps) <= 0):
        i = int(np.flatnonzero(np.diff(stamps) <= 0)[0]) + 1
        raise RecordingError(
            f"{os.fspath(path)}: {points} stamps must increase (message {i} at {stamps[i]:.6f} s)"
        )
    pose = read_poses(path, poses).at(stamps)
    seq_name = name or Path(path).stem or "bag"
    return RecordedSequence(seq_name, source, (), stamps, pose, reader=scans)


def prepare_bag(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    points: str,
    poses: str,
    *,
    config: RecordingConfig | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict:
    """The benchmark folder ``out`` of one log (as ``prepare_recordings("sequence", ...)``
    for a folder of scans): ground submaps along the trajectory of ``points`` posed by
    ``poses``, world and sequence named after the log's file; returns the manifest.

    Raises:
        BagError, RecordingError: as :func:`bag_sequence`; ``out`` exists (without
            ``force``); no submap kept.
    """
    cfg = config if config is not None else RecordingConfig()
    root, dest = Path(path), Path(out)
    if not cfg.world:  # the world is named after the log (its file name without suffix)
        cfg = replace(cfg, world=root.stem or "bag")
    _check_out(root, dest, force)
    seq = bag_sequence(path, points, poses)
    return prepare_sequences("sequence", root, dest, [seq], cfg, [], progress, force)
