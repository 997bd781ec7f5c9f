"""The one device resolver of the package (every ``--device`` option and ``device=``
argument goes through it), and the CPU allocator setting of the command line."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import torch

from hotformerloc.errors import HotformerlocError


class DeviceError(HotformerlocError):
    """An unknown device name, or CUDA asked for where there is none."""


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> ``cuda`` when CUDA is available, else ``cpu``; any other name (``cpu``,
    ``cuda``, ``cuda:1``, ...) as :class:`torch.device`.

    Raises:
        DeviceError: an unknown name, or a CUDA device while CUDA is not available.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"device {name!r}: not a device name (auto, cpu, cuda, cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r}: CUDA is not available on this machine")
    return device


#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def retain_freed_memory(limit: int = 1 << 30) -> bool:
    """Have glibc's malloc keep freed memory for reuse: blocks up to ``limit`` bytes come
    from the heap instead of fresh ``mmap`` s, and up to ``2 * limit`` free bytes stay
    mapped. Process-wide; the command line calls it at start.

    Why: a forward's temporaries of a few MB are otherwise unmapped when freed and
    page-faulted in again on every allocation (measured: about 10,000-50,000 page faults
    per CS-Wild-Places forward; with this, none after the first). Cost: the resident
    memory stays near its peak instead of shrinking between forwards.

    Returns:
        True when applied; False (nothing done) off glibc or when the user set
        ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, which glibc then follows.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _MALLOC_ENV):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * limit)
    )


__all__ = ["DeviceError", "resolve_device", "retain_freed_memory"]
