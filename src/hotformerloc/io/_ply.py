"""Minimal PLY (Stanford polygon format) point clouds, no third-party code (internal).

Reads the ``vertex`` element (which must come first) of ascii, binary_little_endian and
binary_big_endian files: x, y, z and an optional ``intensity`` / ``scalar_intensity``
property, any scalar property type. Other vertex properties and all later elements (faces,
...) are ignored. Writes float32 x, y, z (+ intensity) as ascii or binary_little_endian.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hotformerloc.io._common import describe, make_cloud
from hotformerloc.io.atomic import atomic_write
from hotformerloc.io.errors import PointCloudError
from hotformerloc.io.pointcloud import PointCloud

PlyEncoding = Literal["ascii", "binary_little_endian"]
PLY_ENCODINGS: tuple[str, ...] = ("ascii", "binary_little_endian")

_BYTE_ORDER = {"ascii": "<", "binary_little_endian": "<", "binary_big_endian": ">"}
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_INTENSITY_NAMES = ("intensity", "scalar_intensity")


@dataclass
class _Element:
    name: str
    count: int
    properties: list[tuple[str, str]] = field(default_factory=list)  # (name, numpy code)
    list_property: str | None = None


def _corrupt(path: Path, problem: str) -> PointCloudError:
    return PointCloudError(path, f"corrupt PLY header: {problem}")


def _parse_header(path: Path, data: bytes) -> tuple[str, _Element, int]:
    """(encoding, vertex element, byte offset of the body)."""
    if data.split(b"\n", 1)[0].strip() != b"ply":
        raise PointCloudError(path, "not a PLY file (no 'ply' magic line)")
    end = data.find(b"end_header")
    if end < 0:
        raise _corrupt(path, "no end_header line")
    offset = end + len(b"end_header")
    offset += 2 if data[offset : offset + 2] == b"\r\n" else 1
    encoding: str | None = None
    elements: list[_Element] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3 and words[1] in _BYTE_ORDER:
            encoding = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2])))
        elif words[0] == "property" and elements and len(words) == 5 and words[1] == "list":
            elements[-1].list_property = words[4]
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _TYPES:
            elements[-1].properties.append((words[2], _TYPES[words[1]]))
        else:
            raise _corrupt(path, f"unexpected line {line[:40]!r}")
    if encoding is None:
        raise _corrupt(path, "no valid 'format' line")
    if not elements or elements[0].name != "vertex":
        first = elements[0].name if elements else "none"
        raise PointCloudError(path, f"PLY: the first element must be 'vertex', found {first!r}")
    vertex = elements[0]
    if vertex.list_property is not None:
        raise PointCloudError(
            path, f"PLY: list property {vertex.list_property!r} in vertex is not supported"
        )
    names = [name for name, _ in vertex.properties]
    if len(set(names)) != len(names):
        raise _corrupt(path, f"duplicate vertex property names {names}")
    missing = [axis for axis in "xyz" if axis not in names]
    if missing:
        raise PointCloudError(path, f"PLY vertex element has no {', '.join(missing)} property")
    return encoding, vertex, offset


def _read_ascii(path: Path, body: bytes, vertex: _Element) -> dict[str, NDArray]:
    width = len(vertex.properties)
    if vertex.count == 0:
        rows = np.empty((0, width))
    else:
        try:
            text = io.StringIO(body.decode("ascii"))
            rows = np.loadtxt(text, dtype=np.float64, max_rows=vertex.count, ndmin=2)
        except (ValueError, UnicodeDecodeError) as e:
            raise PointCloudError(path, f"corrupt ascii PLY vertex data ({describe(e)})") from e
    if rows.shape[0] != vertex.count or (len(rows) and rows.shape[1] != width):
        raise PointCloudError(
            path,
            f"truncated or corrupt ascii PLY: expected {vertex.count} vertex rows of {width} "
            f"values, found {rows.shape[0]} rows of {rows.shape[1]}",
        )
    return {name: rows[:, i] for i, (name, _) in enumerate(vertex.properties)}


def read_ply(path: Path) -> PointCloud:
    """PLY point cloud (see module docstring); no pose (PLY has none)."""
    data = path.read_bytes()
    encoding, vertex, offset = _parse_header(path, data)
    if encoding == "ascii":
        columns = _read_ascii(path, data[offset:], vertex)
    else:
        order = _BYTE_ORDER[encoding]
        dtype = np.dtype([(name, order + code) for name, code in vertex.properties])
        need, available = vertex.count * dtype.itemsize, len(data) - offset
        if available < need:
            raise PointCloudError(
                path,
                f"truncated binary PLY: {vertex.count} vertices need {need} bytes, "
                f"found {available}",
            )
        records = np.frombuffer(data, dtype=dtype, count=vertex.count, offset=offset)
        columns = {name: records[name] for name, _ in vertex.properties}
    intensity = next(
        (v for k, v in columns.items() if k.lower() in _INTENSITY_NAMES),
        None,
    )
    return make_cloud(
        path,
        xyz=np.column_stack([columns["x"], columns["y"], columns["z"]]),
        intensity=intensity,
    )


def write_ply(
    path: Path, cloud: PointCloud, *, encoding: PlyEncoding = "binary_little_endian"
) -> None:
    """Write float32 vertex x, y, z (+ intensity); ascii uses 9 significant digits (exact)."""
    if encoding not in PLY_ENCODINGS:
        raise ValueError(f"encoding must be one of {PLY_ENCODINGS}, got {encoding!r}")
    columns = {"x": cloud.xyz[:, 0], "y": cloud.xyz[:, 1], "z": cloud.xyz[:, 2]}
    if cloud.intensity is not None:
        columns["intensity"] = cloud.intensity
    header = (
        f"ply\nformat {encoding} 1.0\ncomment written by hotformerloc\n"
        f"element vertex {len(cloud)}\n"
        + "".join(f"property float {name}\n" for name in columns)
        + "end_header\n"
    )
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        if encoding == "ascii":
            np.savetxt(f, np.column_stack(list(columns.values())), fmt="%.9g")
        else:
            records = np.empty(len(cloud), dtype=[(name, "<f4") for name in columns])
            for name, values in columns.items():
                records[name] = values
            f.write(records.tobytes())
