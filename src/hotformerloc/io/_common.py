"""Helpers shared by the format modules (internal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hotformerloc.io.errors import PointCloudError
from hotformerloc.io.pointcloud import PointCloud


def describe(e: BaseException, limit: int = 200) -> str:
    """``"TypeName: first line of the message"``, at most ``limit`` characters."""
    text = str(e).strip().splitlines()
    line = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def make_cloud(path: Path, **fields: Any) -> PointCloud:
    """Build a :class:`PointCloud`, turning a contract violation into a ``PointCloudError``."""
    try:
        return PointCloud(**fields)
    except ValueError as e:
        raise PointCloudError(path, f"invalid content: {e}") from e
