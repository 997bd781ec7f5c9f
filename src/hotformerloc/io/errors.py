"""The single error type of :mod:`hotformerloc.io`."""

from __future__ import annotations

import os

from hotformerloc.errors import HotformerlocError


class PointCloudError(HotformerlocError):
    """A point-cloud file (or in-memory cloud) is missing, malformed or unusable.

    The message is always ``"<path>: <problem>"`` so that a log line alone says which file
    failed and why, e.g. ``"scan.bin: size 1234 bytes is not a multiple of 16 (KITTI float32
    x,y,z,intensity)"``. Errors raised by third-party parsers (pypcd4, laspy, numpy) are
    wrapped in this type and chained (``raise ... from e``).

    Attributes:
        path: the file path as given by the caller (or the cloud's name for in-memory checks).
        problem: what is wrong, without the path.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[PointCloudError], tuple[str, str]]:
        # Two-argument constructor: tell pickle (multiprocessing, DataLoader workers) how.
        return (type(self), (self.path, self.problem))
