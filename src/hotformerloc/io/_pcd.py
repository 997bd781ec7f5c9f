"""PCD (Point Cloud Library) files through ``pypcd4``, with VIEWPOINT <-> pose (internal).

The quaternion maths is :mod:`hotformerloc.io.poses` (scalar last); VIEWPOINT is scalar
first (``tx ty tz qw qx qy qz``) and is reordered here.

The header is checked here first (clear errors for corrupt headers and truncated data);
``pypcd4`` then decodes the data section (ascii, binary, binary_compressed/LZF).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray
from pypcd4 import Encoding
from pypcd4 import PointCloud as PcdCloud

from hotformerloc.io._common import describe, make_cloud
from hotformerloc.io.atomic import atomic_write
from hotformerloc.io.errors import PointCloudError
from hotformerloc.io.pointcloud import PointCloud
from hotformerloc.io.poses import quaternion_to_rotation, rotation_to_quaternion

PcdCompression = Literal["ascii", "binary", "binary_compressed"]
PCD_COMPRESSIONS: tuple[str, ...] = ("ascii", "binary", "binary_compressed")

_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS")
_REQUIRED = ("FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "POINTS")
_TYPES = {"F": (4, 8), "U": (1, 2, 4, 8), "I": (1, 2, 4, 8)}
_MAX_HEADER_LINES = 64
_IDENTITY_VIEWPOINT = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
_INTENSITY_FIELDS = ("intensity", "i")
# What pypcd4 / lzf / pydantic raise on malformed input (pydantic errors are ValueErrors).
_DECODE_ERRORS = (ValueError, KeyError, IndexError, TypeError, RuntimeError, struct.error)


@dataclass(frozen=True)
class _Header:
    fields: list[str]
    sizes: list[int]
    counts: list[int]
    points: int
    data: str
    viewpoint: tuple[float, ...]
    data_offset: int

    @property
    def row_bytes(self) -> int:
        return sum(s * c for s, c in zip(self.sizes, self.counts, strict=True))


def _corrupt(path: Path, problem: str) -> PointCloudError:
    return PointCloudError(path, f"corrupt PCD header: {problem}")


def _read_header(path: Path, f: BinaryIO) -> _Header:
    entries: dict[str, list[str]] = {}
    for _ in range(_MAX_HEADER_LINES):
        raw = f.readline(4096)
        if not raw:
            raise _corrupt(path, "end of file before the DATA line")
        text = raw.decode("ascii", errors="replace").strip()
        if not text or text.startswith("#"):
            continue
        key, *values = text.split()
        key = key.upper()
        if key == "DATA":
            entries[key] = values
            break
        if key not in _KEYS:
            raise _corrupt(path, f"unexpected line {text[:40]!r}")
        if key in entries:
            raise _corrupt(path, f"duplicate {key} line")
        entries[key] = values
    else:
        raise _corrupt(path, f"no DATA line within the first {_MAX_HEADER_LINES} lines")
    missing = [k for k in _REQUIRED if k not in entries]
    if missing:
        raise _corrupt(path, f"missing {', '.join(missing)}")
    fields, types = entries["FIELDS"], entries["TYPE"]

    def single_int(key: str, default: str | None = None) -> int:
        values = entries.get(key, [] if default is None else [default])
        if len(values) != 1:
            raise ValueError(f"{key} needs one value, got {len(values)}")
        return int(values[0])

    try:
        sizes = [int(v) for v in entries["SIZE"]]
        counts = [int(v) for v in entries["COUNT"]]
        width, height, points = single_int("WIDTH"), single_int("HEIGHT", "1"), single_int("POINTS")
        viewpoint = tuple(float(v) for v in entries.get("VIEWPOINT", _IDENTITY_VIEWPOINT))
    except ValueError as e:
        raise _corrupt(path, f"bad number ({e})") from e
    for key, n in (("SIZE", len(sizes)), ("TYPE", len(types)), ("COUNT", len(counts))):
        if n != len(fields):
            raise _corrupt(path, f"FIELDS has {len(fields)} entries but {key} has {n}")
    for name, t, s in zip(fields, types, sizes, strict=True):
        if s not in _TYPES.get(t, ()):
            raise _corrupt(path, f"field {name!r} has unsupported TYPE {t} SIZE {s}")
    if min(counts, default=1) < 1 or width < 0 or height < 1 or points != width * height:
        raise _corrupt(path, f"inconsistent POINTS {points} / WIDTH {width} / HEIGHT {height}")
    if len(viewpoint) != 7:
        raise _corrupt(path, f"VIEWPOINT needs 7 numbers, got {len(viewpoint)}")
    data = entries["DATA"][0].lower() if entries["DATA"] else ""
    if data not in PCD_COMPRESSIONS:
        raise _corrupt(path, f"DATA must be one of {PCD_COMPRESSIONS}, got {data!r}")
    for axis in "xyz":
        if axis not in fields or counts[fields.index(axis)] != 1:
            raise PointCloudError(path, f"PCD has no scalar {axis!r} field (FIELDS {fields})")
    return _Header(fields, sizes, counts, points, data, viewpoint, f.tell())


def _check_data_size(path: Path, f: BinaryIO, header: _Header) -> None:
    """Detect truncated binary data before decoding (ascii is checked after parsing)."""
    available = path.stat().st_size - header.data_offset
    expected = header.points * header.row_bytes
    if header.data == "binary" and available < expected:
        raise PointCloudError(
            path,
            f"truncated binary PCD: {header.points} points need {expected} bytes of data, "
            f"found {available}",
        )
    if header.data == "binary_compressed" and header.points > 0:
        if available < 8:
            raise PointCloudError(path, "truncated binary_compressed PCD: no size words")
        compressed, uncompressed = struct.unpack("<II", f.read(8))
        if available - 8 < compressed:
            raise PointCloudError(
                path,
                f"truncated binary_compressed PCD: {compressed} compressed bytes declared, "
                f"found {available - 8}",
            )
        if uncompressed != expected:
            raise PointCloudError(
                path,
                f"corrupt binary_compressed PCD: {uncompressed} uncompressed bytes declared, "
                f"{header.points} points need {expected}",
            )


def _viewpoint_to_pose(path: Path, viewpoint: tuple[float, ...]) -> NDArray[np.float64] | None:
    if viewpoint == _IDENTITY_VIEWPOINT:
        return None
    pose = np.eye(4)
    pose[:3, 3] = viewpoint[:3]
    qw, qx, qy, qz = viewpoint[3:]  # VIEWPOINT is scalar first; our quaternions scalar last
    try:
        pose[:3, :3] = quaternion_to_rotation((qx, qy, qz, qw))
    except ValueError as e:
        raise _corrupt(path, f"VIEWPOINT quaternion {list(viewpoint[3:])} has no direction") from e
    return pose


def _pose_to_viewpoint(pose: NDArray[np.float64] | None) -> tuple[float, ...]:
    if pose is None:
        return _IDENTITY_VIEWPOINT
    qx, qy, qz, qw = rotation_to_quaternion(pose[:3, :3])
    return tuple(float(v) for v in (*pose[:3, 3], qw, qx, qy, qz))  # VIEWPOINT: scalar first


def read_pcd(path: Path) -> PointCloud:
    """PCD v0.7 (ascii/binary/binary_compressed): fields x y z (+ ``intensity`` or ``i``).

    Other fields (rgb, normals, ...) are ignored. ``VIEWPOINT tx ty tz qw qx qy qz`` becomes
    the pose (quaternion normalised); an identity or absent VIEWPOINT gives ``pose=None``.
    """
    with open(path, "rb") as f:
        header = _read_header(path, f)
        _check_data_size(path, f, header)
        f.seek(0)
        try:
            pcd = PcdCloud.from_fileobj(f)
        except _DECODE_ERRORS as e:
            raise PointCloudError(
                path, f"cannot decode {header.data} PCD data ({describe(e)})"
            ) from e
    data = np.atleast_1d(pcd.pc_data)  # a single ascii point comes back 0-d
    if len(data) != header.points:
        raise PointCloudError(
            path, f"truncated PCD: header declares {header.points} points, found {len(data)}"
        )
    intensity_field = next((n for n in _INTENSITY_FIELDS if n in header.fields), None)
    return make_cloud(
        path,
        xyz=np.column_stack([data["x"], data["y"], data["z"]]),
        intensity=None if intensity_field is None else data[intensity_field],
        pose=_viewpoint_to_pose(path, header.viewpoint),
    )


def write_pcd(
    path: Path, cloud: PointCloud, *, compression: PcdCompression = "binary_compressed"
) -> None:
    """Write float32 fields x y z (+ intensity) and the pose as VIEWPOINT.

    ``compression``: ``"binary_compressed"`` (LZF, default; pypcd4 falls back to
    ``binary`` when LZF cannot shrink the data), ``"binary"`` or ``"ascii"`` (10 decimal
    places). No pose is written as the identity VIEWPOINT.
    """
    if compression not in PCD_COMPRESSIONS:
        raise ValueError(f"compression must be one of {PCD_COMPRESSIONS}, got {compression!r}")
    columns = [cloud.xyz[:, 0], cloud.xyz[:, 1], cloud.xyz[:, 2]]
    fields = ["x", "y", "z"]
    if cloud.intensity is not None:
        columns.append(cloud.intensity)
        fields.append("intensity")
    pcd = PcdCloud.from_points(columns, fields, [np.float32] * len(fields))
    pcd.metadata = pcd.metadata.derive(viewpoint=_pose_to_viewpoint(cloud.pose))
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        pcd.save(f, encoding=Encoding(compression))
