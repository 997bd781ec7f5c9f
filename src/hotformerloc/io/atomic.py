"""Atomic file writes: a reader never sees a half-written file under the final name.

The content goes to a temporary file in the destination directory (same filesystem), which
is flushed to disk (``fsync``) and then renamed over the destination with ``os.replace``
(atomic on POSIX and Windows). On any exception the temporary file is removed and the
destination is left untouched (old content, or absent).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Infix of the temporary files: ``<name>.tmp-<12 hex digits>``.
TMP_MARK = ".tmp-"
_TMP_NAME = re.compile(r".+\.tmp-[0-9a-f]{12}$")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left
    anywhere under ``folder``; returns how many. Call it only when no writer is running."""
    n = 0
    for p in Path(folder).rglob(f"*{TMP_MARK}*"):
        if p.is_file() and _TMP_NAME.fullmatch(p.name):
            p.unlink()
            n += 1
    return n


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success move it onto ``path``.

    The temporary file ``<name>.tmp-<random hex>`` already exists (empty, created
    exclusively) when yielded; the caller writes it completely and closes it inside the
    ``with`` block. Note that its suffix is not the destination's: pass explicit format
    options to libraries that infer them from the file name.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{secrets.token_hex(6)}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Atomically replace ``path`` with ``text`` encoded as ``encoding`` (newlines as given)."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding=encoding, newline="") as f:
        f.write(text)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
