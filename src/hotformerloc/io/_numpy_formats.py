"""Raw binary (KITTI, PointNetVLAD) and NumPy (.npy, .npz) point-cloud files (internal)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hotformerloc.io._common import describe, make_cloud
from hotformerloc.io.atomic import atomic_write
from hotformerloc.io.errors import PointCloudError
from hotformerloc.io.pointcloud import PointCloud

_NUMPY_ERRORS = (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_records(path: Path, dtype: str, columns: int, label: str) -> NDArray[np.floating]:
    size = path.stat().st_size
    row = np.dtype(dtype).itemsize * columns
    if size % row:
        raise PointCloudError(path, f"size {size} bytes is not a multiple of {row} ({label})")
    return np.fromfile(path, dtype=dtype).reshape(-1, columns)


def read_kitti(path: Path) -> PointCloud:
    """KITTI velodyne ``.bin``: little-endian float32 records (x, y, z, intensity)."""
    data = _read_records(path, "<f4", 4, "KITTI float32 x,y,z,intensity")
    return make_cloud(path, xyz=data[:, :3], intensity=data[:, 3])


def write_kitti(path: Path, cloud: PointCloud) -> None:
    """Write KITTI float32 (x, y, z, intensity); intensity 0 when the cloud has none."""
    data = np.zeros((len(cloud), 4), dtype="<f4")
    data[:, :3] = cloud.xyz
    if cloud.intensity is not None:
        data[:, 3] = cloud.intensity
    with atomic_write(path) as tmp:
        data.tofile(tmp)


def read_pnv(path: Path) -> PointCloud:
    """PointNetVLAD ``.bin``: little-endian float64 records (x, y, z)."""
    data = _read_records(path, "<f8", 3, "PointNetVLAD float64 x,y,z")
    return make_cloud(path, xyz=data)


def write_pnv(path: Path, cloud: PointCloud) -> None:
    """Write PointNetVLAD float64 (x, y, z)."""
    with atomic_write(path) as tmp:
        cloud.xyz.astype("<f8").tofile(tmp)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an ``.npy`` file, read without loading the data."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as e:
            raise PointCloudError(path, f"not a readable .npy file ({e})") from e
        return shape, dtype, f.tell()


def read_npy(path: Path) -> PointCloud:
    """``.npy`` float array (N, 3) x,y,z or (N, 4) x,y,z,intensity; never unpickles."""
    shape, dtype, offset = _npy_header(path)
    if dtype.hasobject:
        raise PointCloudError(
            path, f"array of dtype {dtype} holds Python objects (pickled data): refused"
        )
    if dtype.kind != "f" or len(shape) != 2 or shape[1] not in (3, 4):
        raise PointCloudError(
            path,
            f"expected a float array of shape (N, 3) or (N, 4) (x, y, z[, intensity]), "
            f"got {dtype} {shape}",
        )
    expected = shape[0] * shape[1] * dtype.itemsize
    found = path.stat().st_size - offset
    if found < expected:
        raise PointCloudError(
            path, f"truncated: header declares {shape} {dtype} ({expected} bytes), found {found}"
        )
    try:
        data = np.load(path, allow_pickle=False)
    except _NUMPY_ERRORS as e:
        raise PointCloudError(path, f"cannot load .npy data ({describe(e)})") from e
    return make_cloud(path, xyz=data[:, :3], intensity=data[:, 3] if shape[1] == 4 else None)


def write_npy(path: Path, cloud: PointCloud) -> None:
    """Write a float32 (N, 3) array, or (N, 4) with intensity as 4th column."""
    data = cloud.xyz
    if cloud.intensity is not None:
        data = np.column_stack([cloud.xyz, cloud.intensity])
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, data, allow_pickle=False)


def _scalar_str(path: Path, key: str, value: NDArray) -> str:
    if value.shape != () or value.dtype.kind != "U":
        raise PointCloudError(path, f"array {key!r} must be a 0-d string, got {value.dtype}")
    return str(value[()])


def read_npz(path: Path) -> PointCloud:
    """``.npz`` archive in the hotformerloc schema.

    Keys: ``xyz`` float (N, 3) metres (or ``xyz_mm`` integer (N, 3) millimetres), optional
    ``intensity`` (N,), ``pose`` (4, 4), ``timestamp`` scalar, ``source`` and ``sequence``
    0-d strings. Other keys are ignored. Never unpickles.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except _NUMPY_ERRORS as e:
        raise PointCloudError(path, f"not a readable .npz archive ({describe(e)})") from e
    if isinstance(archive, np.ndarray):
        raise PointCloudError(path, "is a single .npy array, not an .npz archive")
    with archive:
        keys = set(archive.files)

        def get(key: str) -> NDArray:
            try:
                return archive[key]
            except _NUMPY_ERRORS as e:
                raise PointCloudError(path, f"array {key!r}: {describe(e)}") from e

        if "xyz" in keys:
            xyz = get("xyz")
            if xyz.dtype.kind != "f":
                raise PointCloudError(path, f"array 'xyz' must be float metres, got {xyz.dtype}")
        elif "xyz_mm" in keys:
            xyz_mm = get("xyz_mm")
            if xyz_mm.dtype.kind not in "iu":
                raise PointCloudError(
                    path, f"array 'xyz_mm' must be integer millimetres, got {xyz_mm.dtype}"
                )
            xyz = xyz_mm.astype(np.float32) / np.float32(1000.0)
        else:
            raise PointCloudError(
                path,
                f"missing array 'xyz' (float (N, 3) metres) or 'xyz_mm' (integer millimetres); "
                f"found {sorted(keys)}",
            )
        fields: dict[str, object] = {"xyz": xyz}
        for key in ("intensity", "pose"):
            if key in keys:
                fields[key] = get(key)
        if "timestamp" in keys:
            stamp = get("timestamp")
            if stamp.shape != () or stamp.dtype.kind not in "iuf":
                raise PointCloudError(
                    path, f"array 'timestamp' must be a 0-d number, got {stamp.dtype} {stamp.shape}"
                )
            fields["timestamp"] = float(stamp)
        for key in ("source", "sequence"):
            if key in keys:
                fields[key] = _scalar_str(path, key, get(key))
    return make_cloud(path, **fields)


def write_npz(path: Path, cloud: PointCloud, *, compressed: bool = False) -> None:
    """Write every field of ``cloud`` (absent optionals are omitted) to an ``.npz``."""
    arrays: dict[str, NDArray] = {"xyz": cloud.xyz, "source": np.array(cloud.source)}
    if cloud.intensity is not None:
        arrays["intensity"] = cloud.intensity
    if cloud.pose is not None:
        arrays["pose"] = cloud.pose
    if cloud.timestamp is not None:
        arrays["timestamp"] = np.array(cloud.timestamp, dtype=np.float64)
    if cloud.sequence is not None:
        arrays["sequence"] = np.array(cloud.sequence)
    save = np.savez_compressed if compressed else np.savez
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        save(f, **arrays)  # type: ignore[arg-type]  # mypy: a key could be allow_pickle; none is
