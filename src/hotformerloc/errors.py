"""The one base class of the errors a user's input can cause.

Every error the library raises for bad input (a file, a folder, a config, an argument, a
model that does not fit) derives from :class:`HotformerlocError`; its message names the
input and the problem in one line. The CLI catches this class alone, prints the message
and exits with code 2. It is a :class:`ValueError`, so code that catches ``ValueError``
keeps working.
"""

from __future__ import annotations

import os


class HotformerlocError(ValueError):
    """Bad input to hotformerloc: one line naming the input and the problem."""


class PathError(HotformerlocError):
    """Bad input named by a path: the message is ``"<path>: <problem>"``.

    Attributes:
        path: the path as given by the caller (``os.fspath``).
        problem: what is wrong, without the path.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[PathError], tuple[str, str]]:
        # Two-argument constructor: tell pickle (multiprocessing, DataLoader workers) how.
        return (type(self), (self.path, self.problem))


__all__ = ["HotformerlocError", "PathError"]
