"""Bad files: every failure is a PointCloudError naming the file and the problem."""

import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hotformerloc.io import PointCloud, PointCloudError, read_pointcloud, write_pointcloud


def expect_error(path: Path, pattern: str, fmt: str | None = None, **kw: object) -> PointCloudError:
    """Read ``path``; assert a PointCloudError whose message names the file and matches."""
    with pytest.raises(PointCloudError) as info:
        read_pointcloud(path, fmt, **kw)
    err = info.value
    assert path.name in str(err) and str(err).startswith(str(path))
    assert err.path == str(path)
    assert re.search(pattern, err.problem), err.problem
    return err


def small_cloud() -> PointCloud:
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3) * 0.5
    return PointCloud(xyz, intensity=np.linspace(0, 1, 10))


def test_truncated_kitti_and_pnv(tmp_path: Path) -> None:
    path = tmp_path / "scan.bin"
    path.write_bytes(b"\0" * 1234)
    err = expect_error(path, r"^size 1234 bytes is not a multiple of 16 \(KITTI float32")
    assert str(err) == (
        f"{path}: size 1234 bytes is not a multiple of 16 (KITTI float32 x,y,z,intensity)"
    )
    path.write_bytes(b"\0" * 32)
    expect_error(path, r"size 32 bytes is not a multiple of 24 \(PointNetVLAD", "pnv")


@pytest.mark.parametrize("name", ["e.bin", "e.pcd", "e.las", "e.laz", "e.ply", "e.npy", "e.npz"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    expect_error(tmp_path / name, r"file is empty \(0 bytes\)")


def test_empty_raw_file_allowed_on_request(tmp_path: Path) -> None:
    (tmp_path / "e.bin").write_bytes(b"")
    assert len(read_pointcloud(tmp_path / "e.bin", allow_empty=True)) == 0


def test_missing_file_directory_and_unknown_format(tmp_path: Path) -> None:
    expect_error(tmp_path / "missing.pcd", "file not found")
    (tmp_path / "dir.pcd").mkdir()
    expect_error(tmp_path / "dir.pcd", "not a regular file")
    (tmp_path / "scan.xyz").write_text("1 2 3\n")
    expect_error(tmp_path / "scan.xyz", r"unknown point-cloud extension '\.xyz'.*format=")
    expect_error(tmp_path / "scan.xyz", "unknown point-cloud format 'xyz'", "xyz")
    (tmp_path / "noext").write_text("1 2 3\n")
    expect_error(tmp_path / "noext", r"unknown point-cloud extension '\(none\)'")
    with pytest.raises(PointCloudError, match=r"out\.txt: unknown point-cloud extension"):
        write_pointcloud(tmp_path / "out.txt", small_cloud())


HEADER = (
    "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
    "WIDTH 4\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA binary\n"
)


@pytest.mark.parametrize(
    ("header", "pattern"),
    [
        ("garbage\x00\xff\n" + HEADER, r"corrupt PCD header: unexpected line"),
        (HEADER.replace("FIELDS x y z\n", ""), "corrupt PCD header: missing FIELDS"),
        (HEADER.replace("SIZE 4 4 4", "SIZE 4 4"), "FIELDS has 3 entries but SIZE has 2"),
        (HEADER.replace("WIDTH 4", "WIDTH four"), "corrupt PCD header: bad number"),
        (HEADER.replace("WIDTH 4", "WIDTH 4 5"), "WIDTH needs one value"),
        (HEADER.replace("POINTS 4", "POINTS 5"), "inconsistent POINTS 5 / WIDTH 4"),
        (HEADER.replace("TYPE F F F", "TYPE F F Q"), "unsupported TYPE Q SIZE 4"),
        (HEADER.replace("DATA binary", "DATA zipped"), "DATA must be one of"),
        (HEADER.replace("0 0 0 1 0 0 0", "0 0 0 1 0 0"), "VIEWPOINT needs 7 numbers"),
        (HEADER.replace("0 0 0 1 0 0 0", "1 2 3 0 0 0 0"), "VIEWPOINT quaternion"),
        (HEADER.replace("HEIGHT 1\n", "HEIGHT 1\nHEIGHT 1\n"), "duplicate HEIGHT line"),
        (HEADER.replace("DATA binary\n", ""), "end of file before the DATA line"),
        (HEADER.replace("FIELDS x y z", "FIELDS x y w"), r"no scalar 'z' field"),
        ("# comment\n" * 70, "no DATA line within the first 64 lines"),
    ],
)
def test_corrupt_pcd_header(tmp_path: Path, header: str, pattern: str) -> None:
    path = tmp_path / "bad.pcd"
    path.write_bytes(header.encode("latin1") + (b"\0" * 48 if "DATA" in header else b""))
    expect_error(path, pattern)


def test_truncated_pcd(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcd"
    path.write_bytes(HEADER.encode() + b"\0" * 40)
    expect_error(path, r"truncated binary PCD: 4 points need 48 bytes of data, found 40")

    write_pointcloud(path, small_cloud(), compression="binary_compressed")
    data = path.read_bytes()
    assert b"DATA binary_compressed\n" in data
    path.write_bytes(data[:-10])
    expect_error(path, r"truncated binary_compressed PCD: \d+ compressed bytes declared")
    header_end = data.index(b"binary_compressed\n") + len(b"binary_compressed\n")
    path.write_bytes(data[: header_end + 5])
    expect_error(path, "truncated binary_compressed PCD: no size words")
    compressed, _ = struct.unpack("<II", data[header_end : header_end + 8])
    path.write_bytes(
        data[:header_end] + struct.pack("<II", compressed, 999) + data[header_end + 8 :]
    )
    expect_error(path, "999 uncompressed bytes declared, 10 points need 160")
    garbage = data[:header_end] + data[header_end : header_end + 8] + b"\xff" * compressed
    path.write_bytes(garbage)
    err = expect_error(path, r"cannot decode binary_compressed PCD data \(")
    assert err.__cause__ is not None  # the pypcd4/lzf error is chained, not lost

    write_pointcloud(path, small_cloud(), compression="ascii")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]))
    expect_error(path, "truncated PCD: header declares 10 points, found 7")
    path.write_bytes(b"".join(lines[:-1]) + b"1.0 2.0\n")
    expect_error(path, r"cannot decode ascii PCD data")


def test_truncated_and_corrupt_las(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cloud = PointCloud(rng.uniform(0, 100, (5000, 3)), intensity=rng.uniform(0, 1000, 5000))
    for name, pattern in [
        ("cut.laz", r"truncated or corrupt LAS/LAZ \(LazrsError: "),
        ("cut.las", r"truncated LAS: 5000 points need 100227 bytes, found 66818"),
    ]:
        path = tmp_path / name
        write_pointcloud(path, cloud)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        err = expect_error(path, pattern)
        assert name == "cut.las" or err.__cause__ is not None
        path.write_bytes(data[:200])
        expect_error(path, r"corrupt LAS/LAZ header \(")
    (tmp_path / "junk.las").write_bytes(b"not a las file at all" * 20)
    expect_error(tmp_path / "junk.las", r"corrupt LAS/LAZ header \(LaspyException: Invalid file")


def test_nan_coordinates(tmp_path: Path) -> None:
    xyz = np.zeros((4, 4), dtype=np.float32)
    xyz[2, 1] = np.nan
    (tmp_path / "nan.bin").write_bytes(xyz.tobytes())
    expect_error(tmp_path / "nan.bin", r"1 of 4 points have non-finite.*drop_nonfinite=True")
    assert len(read_pointcloud(tmp_path / "nan.bin", drop_nonfinite=True)) == 3


def test_zero_points_in_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "zero.pcd"
    write_pointcloud(path, PointCloud(np.zeros((0, 3))))
    expect_error(path, r"no points \(pass allow_empty=True")


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda p: np.save(p, np.zeros((4, 5), np.float32)),
            r"shape \(N, 3\) or \(N, 4\).*\(4, 5\)",
        ),
        (lambda p: np.save(p, np.zeros(12, np.float32)), r"got float32 \(12,\)"),
        (lambda p: np.save(p, np.zeros((4, 3), np.int64)), r"float array.*got int64"),
        (
            lambda p: np.save(p, np.array([[1, 2, 3]], dtype=object), allow_pickle=True),
            r"holds Python objects \(pickled data\): refused",
        ),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), r"not a readable \.npy file"),
        (lambda p: np.savez(p.with_suffix(".npz"), xyz=np.zeros((2, 3))), r"not a readable \.npy"),
    ],
)
def test_bad_npy(tmp_path: Path, make: Callable[[Path], object], pattern: str) -> None:
    path = tmp_path / "bad.npy"
    make(path)
    if not path.exists():  # np.savez appended ".npz": rename to the tested name
        path.with_suffix(".npz").rename(path)
    expect_error(path, pattern)


def test_truncated_npy(tmp_path: Path) -> None:
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((100, 3), np.float32))
    path.write_bytes(path.read_bytes()[:-7])
    expect_error(path, r"truncated: header declares \(100, 3\) float32 \(1200 bytes\), found 1193")


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"points": np.zeros((3, 3))}, r"missing array 'xyz'.*found \['points'\]"),
        ({"xyz": np.zeros((3, 3), np.int32)}, "array 'xyz' must be float metres"),
        ({"xyz_mm": np.zeros((3, 3))}, "array 'xyz_mm' must be integer millimetres"),
        ({"xyz": np.zeros((3, 4))}, r"invalid content: xyz must have shape \(N, 3\)"),
        ({"xyz": np.zeros((3, 3)), "pose": np.zeros((4, 4))}, "invalid content: pose last row"),
        ({"xyz": np.zeros((3, 3)), "source": np.array("space")}, "source must be one of"),
        ({"xyz": np.zeros((3, 3)), "sequence": np.array(5)}, "'sequence' must be a 0-d string"),
        ({"xyz": np.zeros((3, 3)), "timestamp": np.zeros(2)}, "'timestamp' must be a 0-d number"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict[str, np.ndarray], pattern: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    expect_error(path, pattern)


def test_npz_object_member_and_non_archives(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, xyz=np.array([[1, 2, 3]], dtype=object))
    err = expect_error(path, r"array 'xyz': ValueError: Object arrays cannot be loaded")
    assert err.__cause__ is not None
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated zip")
    expect_error(tmp_path / "junk.npz", r"not a readable \.npz archive")
    np.save(tmp_path / "arr.npy", np.zeros((2, 3)))
    expect_error(tmp_path / "arr.npy", r"single \.npy array, not an \.npz archive", "npz")


PLY_HEAD = "ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
PLY_XYZ = "property float x\nproperty float y\nproperty float z\n"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("solid cube\n", r"not a PLY file"),
        (PLY_HEAD + PLY_XYZ, "corrupt PLY header: no end_header line"),
        (PLY_HEAD.replace("binary_little", "binary_middle") + PLY_XYZ + "end_header\n", "format"),
        (PLY_HEAD + PLY_XYZ + "property quad w\nend_header\n", "unexpected line 'property quad w'"),
        (
            "ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int v\n"
            "element vertex 3\n" + PLY_XYZ + "end_header\n",
            "first element must be 'vertex', found 'face'",
        ),
        (PLY_HEAD + PLY_XYZ + "property list uchar int n\nend_header\n", "list property 'n'"),
        (PLY_HEAD + "property float x\nproperty float y\nend_header\n", "no z property"),
        (PLY_HEAD + PLY_XYZ + "property float x\nend_header\n", "duplicate vertex property"),
        (
            PLY_HEAD + PLY_XYZ + "end_header\n" + "\0" * 30,
            "truncated binary PLY: 3 vertices need 36",
        ),
        (
            "ply\nformat ascii 1.0\nelement vertex 3\n" + PLY_XYZ + "end_header\n1 2 3\n4 5 6\n",
            "truncated or corrupt ascii PLY: expected 3 vertex rows of 3 values, found 2",
        ),
        (
            "ply\nformat ascii 1.0\nelement vertex 2\n" + PLY_XYZ + "end_header\n1 2 3\n4 five 6\n",
            "corrupt ascii PLY vertex data",
        ),
    ],
)
def test_bad_ply(tmp_path: Path, text: str, pattern: str) -> None:
    path = tmp_path / "bad.ply"
    path.write_bytes(text.encode())
    expect_error(path, pattern)
