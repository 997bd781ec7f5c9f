"""The error types of :mod:`hotformerloc.io`: point-cloud files and layout tables."""

from __future__ import annotations

import os

from hotformerloc.errors import HotformerlocError, PathError


class PointCloudError(PathError):
    """A point-cloud file (or in-memory cloud) is missing, malformed or unusable.

    The message is always ``"<path>: <problem>"`` so that a log line alone says which file
    failed and why, e.g. ``"scan.bin: size 1234 bytes is not a multiple of 16 (KITTI float32
    x,y,z,intensity)"``. Errors raised by third-party parsers (pypcd4, laspy, numpy) are
    wrapped in this type and chained (``raise ... from e``).

    Attributes:
        path: the file path as given by the caller (or the cloud's name for in-memory checks).
        problem: what is wrong, without the path.
    """


class LayoutFileError(HotformerlocError):
    """A table of the benchmark layout (``poses.csv``, ``split.csv``, ``test_regions.json``)
    is missing or malformed.

    The message is ``"<path>: <problem>"``, or ``"<path> line <n>: <problem>"`` for a
    problem on one line, e.g. ``"w/split.csv line 3: timestamp 'oops' is not a number"``.
    Readers of a layout (:class:`~hotformerloc.data.Benchmark`, the place database, the
    recordings checker) re-raise or collect it as their own error type with this message.

    Attributes:
        path: the file path as given by the caller.
        problem: what is wrong, without the path and line.
        line: the 1-based line number of the problem, or None.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str, line: int | None = None) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.line = line
        where = self.path if line is None else f"{self.path} line {line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[type[LayoutFileError], tuple[str, str, int | None]]:
        return (type(self), (self.path, self.problem, self.line))
