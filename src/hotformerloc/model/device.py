"""The one device resolver of the package (every ``--device`` option and ``device=``
argument goes through it)."""

from __future__ import annotations

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


__all__ = ["DeviceError", "resolve_device"]
