"""The one base class of the errors a user's input can cause.

Every error the library raises for bad input (a file, a folder, a config, an argument, a
model that does not fit) derives from :class:`HotformerlocError`; its message names the
input and the problem in one line. The CLI catches this class alone, prints the message
and exits with code 2. It is a :class:`ValueError`, so code that catches ``ValueError``
keeps working.
"""

from __future__ import annotations


class HotformerlocError(ValueError):
    """Bad input to hotformerloc: one line naming the input and the problem."""


__all__ = ["HotformerlocError"]
