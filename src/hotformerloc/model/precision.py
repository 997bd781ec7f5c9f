"""Inference precision: fp32 everywhere, bf16 only where the hardware computes it natively.

bf16 autocast on a CPU without native bf16 instructions is emulated and several times slower
than fp32 (measured: 7.1 s against 0.9 s on an AVX2-only EPYC), so asking for bf16 there
falls back to fp32 with one warning line. Native means CUDA with bf16 support, or a CPU that
reports ``avx512_bf16`` or ``amx_bf16`` (x86) or ``bf16`` (aarch64) in ``/proc/cpuinfo``.

Typical use::

    choice = resolve_precision("bf16", device)
    with autocast(choice.dtype, device):
        desc = model(octree)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from hotformerloc.errors import HotformerlocError

#: Accepted ``precision`` values (``--precision``).
PRECISIONS = ("fp32", "bf16")
#: CPU feature flags (``/proc/cpuinfo``) that mean native bf16 arithmetic.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
#: Lowest cosine between a bf16 descriptor and its fp32 twin that is accepted.
MIN_BF16_COSINE = 0.999
CPUINFO = Path("/proc/cpuinfo")


class PrecisionError(HotformerlocError):
    """An unknown precision name."""


class PrecisionWarning(UserWarning):
    """A bf16 request runs in fp32 (no native bf16, or its descriptors strayed from fp32)."""


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``flags`` / ``Features`` lines of ``/proc/cpuinfo``); empty
    where that file is absent or unreadable."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA with bf16 support, or a CPU with one
    of :data:`NATIVE_BF16_FLAGS`)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return bool(cpu_flags() & NATIVE_BF16_FLAGS)
    return False


@dataclass(frozen=True)
class PrecisionChoice:
    """What :func:`resolve_precision` decided: ``dtype`` (``torch.float32`` or
    ``torch.bfloat16``), the ``requested`` name, and ``note``: a one-line explanation when
    the request was not granted (None otherwise)."""

    dtype: torch.dtype
    requested: str
    note: str | None = None

    @property
    def name(self) -> str:
        """``bf16`` or ``fp32``: the precision actually used."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"


def resolve_precision(precision: str, device: torch.device) -> PrecisionChoice:
    """``fp32`` -> float32; ``bf16`` -> bfloat16 where :func:`native_bf16`, else float32
    with a ``note`` saying why.

    Raises:
        PrecisionError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r}: not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return PrecisionChoice(torch.float32, precision)
    if native_bf16(device):
        return PrecisionChoice(torch.bfloat16, precision)
    where = (
        "this CPU has none of avx512_bf16/amx_bf16/bf16"
        if device.type == "cpu"
        else (f"{device} has no native bf16")
    )
    return PrecisionChoice(
        torch.float32, precision, f"bf16 asked but {where}: running in fp32 (faster here)"
    )


@contextlib.contextmanager
def autocast(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``dtype`` is bfloat16; nothing for float32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def bf16_cosine(model: torch.nn.Module, octree: object) -> float:
    """Lowest cosine, over the batch, between ``model(octree)`` in bf16 autocast and in fp32
    (the check that bf16 descriptors can stand in for fp32 ones)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        ref: Tensor = model(octree).float()
        with autocast(torch.bfloat16, device):
            low: Tensor = model(octree).float()
    return float(F.cosine_similarity(ref, low, dim=1).min())


__all__ = [
    "MIN_BF16_COSINE",
    "PRECISIONS",
    "PrecisionChoice",
    "PrecisionError",
    "PrecisionWarning",
    "autocast",
    "bf16_cosine",
    "cpu_flags",
    "native_bf16",
    "resolve_precision",
]
