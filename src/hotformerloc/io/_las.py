"""LAS / LAZ files through ``laspy`` (LAZ via the ``lazrs`` backend) (internal).

LAS stores georeferenced *world* coordinates as int32 multiples of a scale plus an offset.
Reading keeps float32 precise by moving large coordinates into the pose; writing applies
the pose and stores world coordinates at 1 mm resolution.
"""

from __future__ import annotations

import struct
from pathlib import Path

import laspy
import numpy as np

from hotformerloc.io._common import describe, make_cloud
from hotformerloc.io.atomic import atomic_write
from hotformerloc.io.errors import PointCloudError
from hotformerloc.io.pointcloud import PointCloud

#: Coordinate resolution of written files, metres.
LAS_SCALE = 0.001
#: An axis whose largest absolute coordinate exceeds this (metres) is re-centred on read.
LOCAL_FRAME_THRESHOLD = 1e5
# What laspy / lazrs raise on malformed input (lazrs.LazrsError is a RuntimeError).
_LAS_ERRORS = (laspy.LaspyException, RuntimeError, ValueError, OSError, EOFError, struct.error)


def read_las(path: Path) -> PointCloud:
    """LAS 1.0-1.4 / LAZ, any point format: scaled x, y, z and intensity (uint16 as float32).

    float32 keeps only ~7 significant digits, so for each axis whose largest absolute world
    coordinate exceeds 1e5 m the reader subtracts ``floor(min)`` of that axis and returns
    the shift as a translation-only pose: ``world = pose @ local`` (pose is None when no axis
    was shifted). Compression is detected from the content, not the extension.
    """
    try:
        reader = laspy.open(path)
    except _LAS_ERRORS as e:
        raise PointCloudError(path, f"corrupt LAS/LAZ header ({describe(e)})") from e
    with reader:
        header = reader.header
        size = path.stat().st_size
        need = header.offset_to_point_data + header.point_count * header.point_format.size
        if not header.are_points_compressed and size < need:
            raise PointCloudError(
                path, f"truncated LAS: {header.point_count} points need {need} bytes, found {size}"
            )
        try:
            las = reader.read()
            xyz = np.column_stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)])
            intensity = np.asarray(las.intensity)
        except _LAS_ERRORS as e:
            raise PointCloudError(path, f"truncated or corrupt LAS/LAZ ({describe(e)})") from e
    if len(xyz) != header.point_count:
        raise PointCloudError(
            path, f"truncated LAS: header declares {header.point_count} points, found {len(xyz)}"
        )
    origin = np.zeros(3)
    if len(xyz):
        big = np.abs(xyz).max(axis=0) > LOCAL_FRAME_THRESHOLD
        origin[big] = np.floor(xyz[:, big].min(axis=0))
    pose = None
    if origin.any():
        xyz -= origin
        pose = np.eye(4)
        pose[:3, 3] = origin
    return make_cloud(path, xyz=xyz, intensity=intensity, pose=pose)


def write_las(
    path: Path, cloud: PointCloud, *, compress: bool, intensity_scale: float = 1.0
) -> None:
    """Write world coordinates (pose applied) as LAS 1.2 point format 0, scale 1 mm.

    Offsets are ``floor(min)`` of the world coordinates per axis; the extent must fit the
    int32 range (2147 km). Intensity is stored as
    ``uint16(clip(round(intensity * intensity_scale), 0, 65535))`` (NaN -> 0), e.g.
    ``intensity_scale=65535`` for reflectances in [0, 1]; 0 when the cloud has none.
    ``compress=True`` writes LAZ.
    """
    world = cloud.world_xyz()
    if not np.isfinite(world).all():
        raise PointCloudError(path, "LAS cannot store non-finite coordinates")
    offsets = np.floor(world.min(axis=0)) if len(world) else np.zeros(3)
    if len(world):
        span = world.max(axis=0) - offsets
        if (span / LAS_SCALE > np.iinfo(np.int32).max).any():
            raise PointCloudError(
                path,
                f"extent {span.tolist()} m exceeds the LAS int32 range at scale {LAS_SCALE} m",
            )
    header = laspy.LasHeader(point_format=0, version="1.2")
    header.scales = np.full(3, LAS_SCALE)
    header.offsets = offsets
    las = laspy.LasData(header)
    las.x, las.y, las.z = world[:, 0], world[:, 1], world[:, 2]
    if cloud.intensity is not None:
        scaled = np.nan_to_num(cloud.intensity.astype(np.float64) * intensity_scale)
        las.intensity = np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        las.write(f, do_compress=compress)
