"""Point-cloud file formats: :func:`read_pointcloud`, :func:`write_pointcloud`, :data:`FORMATS`.

The format is chosen by the explicit ``format`` name or else by the file extension
(case-insensitive). Every failure to produce a valid cloud from a file raises
:class:`~hotformerloc.io.errors.PointCloudError` naming the file and the problem. Every
writer is atomic (:mod:`hotformerloc.io.atomic`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from hotformerloc.io._common import describe
from hotformerloc.io._las import LAS_SCALE as LAS_SCALE  # re-exported: the LAS grid (m)
from hotformerloc.io._las import read_las, write_las
from hotformerloc.io._numpy_formats import (
    read_kitti,
    read_npy,
    read_npz,
    read_pnv,
    write_kitti,
    write_npy,
    write_npz,
    write_pnv,
)
from hotformerloc.io._pcd import read_pcd, write_pcd
from hotformerloc.io._ply import read_ply, write_ply
from hotformerloc.io.errors import PointCloudError
from hotformerloc.io.pointcloud import PointCloud, Source, nonfinite_message


@dataclass(frozen=True)
class FormatSpec:
    """What a format is and carries.

    ``extensions`` are those that select it automatically (``pnv`` has none: ``.bin``
    means ``kitti`` unless ``format="pnv"`` is given).
    """

    name: str
    extensions: tuple[str, ...]
    writable: bool
    intensity: bool
    pose: bool
    description: str


_Reader = Callable[[Path], PointCloud]
_Writer = Callable[..., None]

_ENTRIES: list[tuple[FormatSpec, _Reader, _Writer]] = [
    (
        FormatSpec("kitti", (".bin",), True, True, False, "float32 x,y,z,intensity records"),
        read_kitti,
        write_kitti,
    ),
    (
        FormatSpec("pnv", (), True, False, False, "PointNetVLAD float64 x,y,z records"),
        read_pnv,
        write_pnv,
    ),
    (
        FormatSpec("pcd", (".pcd",), True, True, True, "PCL PCD v0.7, pose in VIEWPOINT"),
        read_pcd,
        write_pcd,
    ),
    (
        FormatSpec("las", (".las",), True, True, True, "ASPRS LAS, world coords at 1 mm"),
        read_las,
        partial(write_las, compress=False),
    ),
    (
        FormatSpec("laz", (".laz",), True, True, True, "LAS compressed with LAZ (lazrs)"),
        read_las,
        partial(write_las, compress=True),
    ),
    (
        FormatSpec("ply", (".ply",), True, True, False, "PLY vertex x,y,z[,intensity]"),
        read_ply,
        write_ply,
    ),
    (
        FormatSpec("npy", (".npy",), True, True, False, "float array (N,3) or (N,4)"),
        read_npy,
        write_npy,
    ),
    (
        FormatSpec("npz", (".npz",), True, True, True, "all PointCloud fields, named"),
        read_npz,
        write_npz,
    ),
]
_REGISTRY: dict[str, tuple[FormatSpec, _Reader, _Writer]] = {e[0].name: e for e in _ENTRIES}

#: Every supported format by name (read-only mapping).
FORMATS: Mapping[str, FormatSpec] = MappingProxyType(
    {name: spec for name, (spec, _, _) in _REGISTRY.items()}
)
_BY_EXTENSION = {ext: spec.name for spec in FORMATS.values() for ext in spec.extensions}


def _resolve(path: Path, format: str | None) -> str:
    if format is not None:
        if format.lower() not in _REGISTRY:
            raise PointCloudError(
                path, f"unknown point-cloud format {format!r} (known: {', '.join(FORMATS)})"
            )
        return format.lower()
    ext = path.suffix.lower()
    if ext not in _BY_EXTENSION:
        raise PointCloudError(
            path,
            f"unknown point-cloud extension {ext or '(none)'!r} "
            f"(known: {', '.join(_BY_EXTENSION)}); pass format= explicitly",
        )
    return _BY_EXTENSION[ext]


def read_pointcloud(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    allow_empty: bool = False,
    allow_nonfinite: bool = False,
    drop_nonfinite: bool = False,
    source: Source | None = None,
) -> PointCloud:
    """Read a point cloud file into a :class:`PointCloud`.

    Args:
        path: the file.
        format: a name from :data:`FORMATS`; default: from the extension.
        allow_empty: return a 0-point cloud (and accept a 0-byte raw file) instead of raising.
        allow_nonfinite: keep points with NaN/inf coordinates instead of raising.
        drop_nonfinite: silently drop those points instead (exclusive with allow_nonfinite).
        source: override the cloud's ``source`` (e.g. ``"aerial"`` for airborne LAS).

    Raises:
        PointCloudError: missing or unreadable file, unknown format/extension, empty file,
            no points, truncated data, corrupt header, wrong array shape or dtype,
            non-finite coordinates; third-party parser errors are wrapped (chained).
        ValueError: contradictory options or an invalid ``source``.
    """
    if allow_nonfinite and drop_nonfinite:
        raise ValueError("allow_nonfinite and drop_nonfinite are mutually exclusive")
    path = Path(path)
    name = _resolve(path, format)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PointCloudError(path, "file not found") from None
    except OSError as e:
        raise PointCloudError(path, f"cannot access file ({describe(e)})") from e
    if not stat.S_ISREG(info.st_mode):
        raise PointCloudError(path, "not a regular file")
    if info.st_size == 0 and not allow_empty:
        raise PointCloudError(path, "file is empty (0 bytes)")
    try:
        cloud = _REGISTRY[name][1](path)
    except OSError as e:
        raise PointCloudError(path, f"cannot read file ({describe(e)})") from e
    if source is not None:
        cloud = replace(cloud, source=source)
    # numpy stubs: all(axis=1) of an (N, 3) array is an (N,) array, not maybe a scalar
    finite = cast("NDArray[np.bool_]", np.isfinite(cloud.xyz).all(axis=1))
    if not finite.all():
        if drop_nonfinite:
            cloud = cloud.subset(finite)
        elif not allow_nonfinite:
            raise PointCloudError(
                path,
                f"{nonfinite_message(finite)}; pass drop_nonfinite=True to drop those points",
            )
    if len(cloud) == 0 and not allow_empty:
        raise PointCloudError(path, "no points (pass allow_empty=True to accept empty clouds)")
    return cloud


def write_pointcloud(
    path: str | os.PathLike[str],
    cloud: PointCloud,
    format: str | None = None,
    **options: Any,
) -> None:
    """Write ``cloud`` atomically (temp file, fsync, rename) in ``format`` or by extension.

    Format options: ``pcd``: ``compression="binary_compressed"|"binary"|"ascii"``;
    ``ply``: ``encoding="binary_little_endian"|"ascii"``; ``las``/``laz``:
    ``intensity_scale=1.0``; ``npz``: ``compressed=False``. Fields a format cannot carry
    (see :data:`FORMATS`) are dropped; LAS/LAZ store world coordinates (pose applied).

    Raises:
        PointCloudError: unknown format/extension, or data the format cannot store.
        TypeError: ``cloud`` is not a PointCloud, or an option the format does not take.
        OSError: the file system refused (missing directory, permissions, disk full).
    """
    if not isinstance(cloud, PointCloud):
        raise TypeError(f"cloud must be a PointCloud, got {type(cloud).__name__}")
    path = Path(path)
    _REGISTRY[_resolve(path, format)][2](path, cloud, **options)
