"""Write -> read round trips for every writable format, and reader features on crafted files."""

from pathlib import Path
from typing import Any

import laspy
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hotformerloc.io import (
    FORMATS,
    LAS_SCALE,
    PointCloud,
    PointCloudError,
    read_pointcloud,
    write_pointcloud,
)

LAS_TOL = LAS_SCALE / 2 + 1e-5  # rounding to the 1 mm grid + float32 of the local coordinates


def make_cloud(n: int = 200, pose: bool = True) -> PointCloud:
    rng = np.random.default_rng(42)
    # Mostly a 0.25 m lattice (LZF-compressible, as real scans are) plus arbitrary floats.
    lattice = rng.integers(-200, 200, (n - n // 4, 3)) * 0.25
    transform = np.eye(4)
    transform[:3, :3] = Rotation.from_rotvec([0.1, -0.2, 2.5]).as_matrix()
    transform[:3, 3] = [12.5, -7.25, 1.5]
    return PointCloud(
        xyz=np.concatenate([lattice, rng.uniform(-50, 50, (n // 4, 3))]),
        intensity=rng.random(n),
        pose=transform if pose else None,
        source="aerial",
        timestamp=1234.5,
        sequence="run_01",
    )


# (file name, format, write options, intensity kept, pose kept, coordinate tolerance)
CASES: list[tuple[str, str | None, dict[str, Any], bool, bool, float]] = [
    ("c.bin", None, {}, True, False, 0.0),
    ("c.bin", "pnv", {}, False, False, 0.0),
    ("c.pcd", None, {"compression": "binary_compressed"}, True, True, 0.0),
    ("c.pcd", None, {"compression": "binary"}, True, True, 0.0),
    ("c.pcd", None, {"compression": "ascii"}, True, True, 1e-10),  # 10 decimal places
    ("c.ply", None, {"encoding": "binary_little_endian"}, True, False, 0.0),
    ("c.ply", None, {"encoding": "ascii"}, True, False, 0.0),
    ("c.npy", None, {}, True, False, 0.0),
    ("c.npz", None, {}, True, True, 0.0),
    ("c.npz", None, {"compressed": True}, True, True, 0.0),
]


def test_every_writable_format_is_covered() -> None:
    by_ext = {ext: spec.name for spec in FORMATS.values() for ext in spec.extensions}
    covered = {fmt or by_ext[Path(name).suffix] for name, fmt, *_ in CASES} | {"las", "laz"}
    assert covered == {name for name, spec in FORMATS.items() if spec.writable}


@pytest.mark.parametrize(("name", "fmt", "options", "keeps_i", "keeps_pose", "tol"), CASES)
def test_round_trip(
    tmp_path: Path,
    name: str,
    fmt: str | None,
    options: dict[str, Any],
    keeps_i: bool,
    keeps_pose: bool,
    tol: float,
) -> None:
    cloud = make_cloud()
    path = tmp_path / name
    write_pointcloud(path, cloud, fmt, **options)
    back = read_pointcloud(path, fmt)
    assert back.xyz.dtype == np.float32 and back.xyz.shape == cloud.xyz.shape
    np.testing.assert_allclose(back.xyz, cloud.xyz, rtol=0, atol=tol)
    if keeps_i:
        np.testing.assert_allclose(back.intensity, cloud.intensity, rtol=0, atol=tol)
    else:
        assert back.intensity is None
    if keeps_pose:
        np.testing.assert_allclose(back.pose, cloud.pose, rtol=0, atol=1e-12)
    else:
        assert back.pose is None
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_pcd_compression_and_viewpoint_written(tmp_path: Path) -> None:
    cloud = make_cloud()
    for compression in ("ascii", "binary", "binary_compressed"):
        path = tmp_path / f"{compression}.pcd"
        write_pointcloud(path, cloud, compression=compression)
        header, _, body = path.read_bytes().partition(b"\nDATA ")
        assert body.startswith(f"{compression}\n".encode())
        lines = header.decode().splitlines()
        viewpoint = next(ln for ln in lines if ln.startswith("VIEWPOINT"))
        values = [float(v) for v in viewpoint.split()[1:]]
        assert values[:3] == [12.5, -7.25, 1.5]
    write_pointcloud(tmp_path / "nopose.pcd", make_cloud(pose=False))
    assert b"VIEWPOINT 0.0 0.0 0.0 1.0 0.0 0.0 0.0\n" in (tmp_path / "nopose.pcd").read_bytes()
    assert read_pointcloud(tmp_path / "nopose.pcd").pose is None


def test_npz_keeps_every_field(tmp_path: Path) -> None:
    cloud = make_cloud()
    write_pointcloud(tmp_path / "c.npz", cloud)
    back = read_pointcloud(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.pose, cloud.pose)
    assert (back.source, back.timestamp, back.sequence) == ("aerial", 1234.5, "run_01")
    write_pointcloud(tmp_path / "d.npz", PointCloud(np.ones((2, 3))))
    back = read_pointcloud(tmp_path / "d.npz")
    assert (back.intensity, back.pose, back.timestamp, back.sequence) == (None, None, None, None)


@pytest.mark.parametrize("name", ["c.las", "c.laz"])
def test_las_round_trip_small_coordinates(tmp_path: Path, name: str) -> None:
    cloud = make_cloud()
    intensity_u16 = np.rint(cloud.intensity.astype(np.float64) * 65535)
    write_pointcloud(tmp_path / name, cloud, intensity_scale=65535)
    back = read_pointcloud(tmp_path / name)
    assert back.pose is None  # world coordinates are small: stored as they are
    np.testing.assert_allclose(back.xyz, cloud.world_xyz(), rtol=0, atol=LAS_TOL)
    np.testing.assert_array_equal(back.intensity, intensity_u16)
    las = laspy.read(tmp_path / name)
    assert las.header.are_points_compressed == name.endswith(".laz")
    np.testing.assert_array_equal(las.header.scales, [LAS_SCALE] * 3)


@pytest.mark.parametrize("name", ["utm.las", "utm.laz"])
def test_las_georeferenced_coordinates_go_to_pose(tmp_path: Path, name: str) -> None:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0, 0, 0.8]).as_matrix()
    pose[:3, 3] = [507726.0, 6942450.0, 68.4967]
    cloud = PointCloud(make_cloud().xyz, intensity=np.arange(200) * 300.0, pose=pose)
    write_pointcloud(tmp_path / name, cloud)
    back = read_pointcloud(tmp_path / name)
    world = cloud.world_xyz()
    expected_origin = [*np.floor(world[:, :2].min(axis=0)), 0.0]  # z is small: not shifted
    np.testing.assert_array_equal(back.pose[:3, 3], expected_origin)
    np.testing.assert_array_equal(back.pose[:3, :3], np.eye(3))
    assert np.abs(back.xyz).max() < 200  # local coordinates keep float32 precise
    np.testing.assert_allclose(back.world_xyz(), world, rtol=0, atol=LAS_TOL)
    np.testing.assert_array_equal(back.intensity, cloud.intensity)


def test_las_writer_rejects_unstorable_data(tmp_path: Path) -> None:
    with pytest.raises(PointCloudError, match=r"nan\.las: LAS cannot store non-finite"):
        write_pointcloud(tmp_path / "nan.las", PointCloud([[0, 0, np.nan]]))
    with pytest.raises(PointCloudError, match=r"wide\.las: extent .* int32 range"):
        write_pointcloud(tmp_path / "wide.las", PointCloud([[0, 0, 0], [3e6, 0, 0]]))
    assert list(tmp_path.iterdir()) == []


def test_las_intensity_scale_clips(tmp_path: Path) -> None:
    cloud = PointCloud(np.zeros((4, 3)), intensity=[-5.0, np.nan, 0.4, 1e9])
    write_pointcloud(tmp_path / "i.las", cloud)
    np.testing.assert_array_equal(read_pointcloud(tmp_path / "i.las").intensity, [0, 0, 0, 65535])


@pytest.mark.parametrize(
    ("name", "fmt", "options"),
    [(n, f, o) for n, f, o, *_ in CASES] + [("c.las", None, {}), ("c.laz", None, {})],
)
def test_empty_round_trip(tmp_path: Path, name: str, fmt: str | None, options: dict) -> None:
    path = tmp_path / name
    write_pointcloud(path, PointCloud(np.zeros((0, 3))), fmt, **options)
    assert len(read_pointcloud(path, fmt, allow_empty=True)) == 0
    with pytest.raises(PointCloudError, match=f"{name}: .*(no points|empty)"):
        read_pointcloud(path, fmt)


def test_missing_intensity_defaults(tmp_path: Path) -> None:
    cloud = PointCloud(make_cloud().xyz)
    write_pointcloud(tmp_path / "c.bin", cloud)
    np.testing.assert_array_equal(read_pointcloud(tmp_path / "c.bin").intensity, np.zeros(200))
    for name in ("c.pcd", "c.ply", "c.npy"):
        write_pointcloud(tmp_path / name, cloud)
        assert read_pointcloud(tmp_path / name).intensity is None


def test_format_selection(tmp_path: Path) -> None:
    cloud = make_cloud()
    write_pointcloud(tmp_path / "UPPER.PCD", cloud)
    assert len(read_pointcloud(tmp_path / "UPPER.PCD")) == 200
    write_pointcloud(tmp_path / "scan.dat", cloud, format="KITTI")
    assert len(read_pointcloud(tmp_path / "scan.dat", format="kitti")) == 200
    assert (
        read_pointcloud(tmp_path / "scan.dat", format="kitti", source="aerial").source == "aerial"
    )
    with pytest.raises(TypeError, match="compression"):
        write_pointcloud(tmp_path / "x.bin", cloud, compression="ascii")
    with pytest.raises(ValueError, match="compression must be one of"):
        write_pointcloud(tmp_path / "x.pcd", cloud, compression="zip")
    with pytest.raises(ValueError, match="encoding must be one of"):
        write_pointcloud(tmp_path / "x.ply", cloud, encoding="binary_big_endian")
    with pytest.raises(TypeError, match="PointCloud"):
        write_pointcloud(tmp_path / "x.bin", cloud.xyz)  # type: ignore[arg-type]


def test_nonfinite_policies(tmp_path: Path) -> None:
    xyz = np.arange(15, dtype=np.float32).reshape(5, 3)
    xyz[1, 0], xyz[3, 2] = np.nan, np.inf
    path = tmp_path / "nan.pcd"
    write_pointcloud(path, PointCloud(xyz, intensity=np.arange(5)))
    with pytest.raises(PointCloudError, match=r"nan\.pcd: 2 of 5 points have non-finite"):
        read_pointcloud(path)
    dropped = read_pointcloud(path, drop_nonfinite=True)
    np.testing.assert_array_equal(dropped.intensity, [0, 2, 4])
    np.testing.assert_array_equal(dropped.xyz, xyz[[0, 2, 4]])
    assert len(read_pointcloud(path, allow_nonfinite=True)) == 5
    with pytest.raises(ValueError, match="mutually exclusive"):
        read_pointcloud(path, allow_nonfinite=True, drop_nonfinite=True)
    all_nan = tmp_path / "allnan.bin"
    write_pointcloud(all_nan, PointCloud(np.full((3, 3), np.nan)))
    with pytest.raises(PointCloudError, match=r"allnan\.bin: no points"):
        read_pointcloud(all_nan, drop_nonfinite=True)


PCD_TEMPLATE = """# .PCD v0.7 - hand made
VERSION 0.7
FIELDS {fields}
SIZE {size}
TYPE {type}
COUNT {count}
WIDTH {width}
HEIGHT {height}
VIEWPOINT {viewpoint}
POINTS {points}
DATA {data}
"""


def pcd_header(**kw: object) -> bytes:
    values: dict[str, object] = {
        "fields": "x y z",
        "size": "4 4 4",
        "type": "F F F",
        "count": "1 1 1",
        "width": 2,
        "height": 1,
        "viewpoint": "0 0 0 1 0 0 0",
        "points": 2,
        "data": "binary",
    }
    values.update(kw)
    return PCD_TEMPLATE.format(**values).encode()


def test_pcd_float64_fields_i_intensity_rgb_and_viewpoint(tmp_path: Path) -> None:
    dtype = np.dtype([("rgb", "<f4"), ("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("i", "<u2")])
    rows = np.array([(1.5, 1.0, 2.0, 3.0, 7), (2.5, 4.0, 5.0, 6.0, 9)], dtype=dtype)
    qw, qx, qy, qz = 0.807625, 0.0142545, 0.0142172, -0.589352  # 6 digits, not unit norm
    header = pcd_header(
        fields="rgb x y z i",
        size="4 8 8 8 2",
        type="F F F F U",
        count="1 1 1 1 1",
        viewpoint=f"507726 6.94245e+06 68.4967 {qw} {qx} {qy} {qz}",
    )
    path = tmp_path / "f64.pcd"
    path.write_bytes(header + rows.tobytes())
    cloud = read_pointcloud(path)
    np.testing.assert_array_equal(cloud.xyz, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.intensity, [7, 9])
    np.testing.assert_array_equal(cloud.pose[:3, 3], [507726.0, 6942450.0, 68.4967])
    expected = Rotation.from_quat([qx, qy, qz, qw]).as_matrix()  # scipy normalises too
    np.testing.assert_allclose(cloud.pose[:3, :3], expected, atol=1e-12)


def test_pcd_organized_ascii_single_point_and_no_viewpoint(tmp_path: Path) -> None:
    organized = pcd_header(width=2, height=2, points=4, data="ascii")
    organized += b"0 0 0\n1 1 1\nnan nan nan\n3 3 3\n"
    (tmp_path / "org.pcd").write_bytes(organized)
    assert len(read_pointcloud(tmp_path / "org.pcd", drop_nonfinite=True)) == 3
    single = pcd_header(width=1, points=1, data="ascii").replace(b"VIEWPOINT 0 0 0 1 0 0 0\n", b"")
    (tmp_path / "one.pcd").write_bytes(single + b"1.5 2.5 3.5\n")
    cloud = read_pointcloud(tmp_path / "one.pcd")
    np.testing.assert_array_equal(cloud.xyz, [[1.5, 2.5, 3.5]])
    assert cloud.pose is None


def ply_bytes(header_lines: list[str], body: bytes) -> bytes:
    return ("\n".join(["ply", *header_lines, "end_header"]) + "\n").encode() + body


@pytest.mark.parametrize("order", ["<", ">"])
def test_ply_binary_property_types_extra_properties_and_faces(tmp_path: Path, order: str) -> None:
    encoding = "binary_little_endian" if order == "<" else "binary_big_endian"
    dtype = np.dtype(
        [("x", order + "f8"), ("y", order + "f8"), ("z", order + "f8"),
         ("red", "u1"), ("scalar_Intensity", order + "u2"), ("label", order + "i4")]
    )  # fmt: skip
    rows = np.array([(1, 2, 3, 255, 100, -1), (4, 5, 6, 0, 65535, 7)], dtype=dtype)
    header = [
        f"format {encoding} 1.0",
        "comment made by hand",
        "obj_info nothing",
        "element vertex 2",
        "property double x",
        "property double y",
        "property double z",
        "property uchar red",
        "property ushort scalar_Intensity",
        "property int label",
        "element face 1",
        "property list uchar int vertex_indices",
    ]
    face = b"\x03" + np.array([0, 1, 0], dtype=order + "i4").tobytes()
    (tmp_path / "m.ply").write_bytes(ply_bytes(header, rows.tobytes() + face))
    cloud = read_pointcloud(tmp_path / "m.ply")
    np.testing.assert_array_equal(cloud.xyz, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.intensity, [100, 65535])


def test_ply_ascii_with_crlf_and_faces(tmp_path: Path) -> None:
    header = ["format ascii 1.0", "element vertex 2", "property float x", "property float y",
              "property float z", "property uchar intensity", "element face 1",
              "property list uchar int vertex_indices"]  # fmt: skip
    data = ply_bytes(header, b"0.5 1 2 10\n3 4 5 20\n3 0 1 0\n").replace(b"\n", b"\r\n")
    (tmp_path / "a.ply").write_bytes(data)
    cloud = read_pointcloud(tmp_path / "a.ply")
    np.testing.assert_array_equal(cloud.xyz, [[0.5, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(cloud.intensity, [10, 20])


def test_npy_float64_and_xyz_only(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(9, dtype=np.float64).reshape(3, 3))
    cloud = read_pointcloud(tmp_path / "a.npy")
    assert cloud.intensity is None and cloud.xyz.dtype == np.float32


def test_npz_millimetre_schema(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "mm.npz",
        xyz_mm=np.array([[682959, 9973, 1841], [-1, 0, 2]], dtype=np.int32),
        intensity=np.array([38, 235], dtype=np.uint16),
        origin_ft=np.zeros(3),
    )
    cloud = read_pointcloud(tmp_path / "mm.npz", source="aerial")
    np.testing.assert_allclose(cloud.xyz, [[682.959, 9.973, 1.841], [-0.001, 0, 0.002]], rtol=1e-7)
    np.testing.assert_array_equal(cloud.intensity, [38, 235])
    assert cloud.source == "aerial"
