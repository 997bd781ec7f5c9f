"""ROS 1 / ROS 2 bags written with rosbags' own writers read back exactly (hotformerloc.io.bags)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from cli_helpers import run_cli
from hotformerloc.io import read_pointcloud
from hotformerloc.io.bags import (
    BagError,
    PoseStream,
    bag_info,
    decode_pointcloud2,
    read_poses,
    read_scans,
)
from hotformerloc.io.poses import rotation_to_quaternion

KINDS = ("ros1", "ros2-sqlite3", "ros2-mcap")
PC2 = "sensor_msgs/msg/PointCloud2"
F32, F64, U16 = 7, 8, 4  # PointField datatypes
NAN = float("nan")

#: A message to write: (topic, message type, builder(typestore) -> message, stamp in seconds).
Entry = tuple[str, str, Callable[[Typestore], Any], float]


# --------------------------------------------------------------------------- builders


def header(ts: Typestore, stamp: float, frame: str) -> Any:
    sec = math.floor(stamp)
    time = ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((stamp - sec) * 1e9))
    hdr = ts.types["std_msgs/msg/Header"]
    extra = {"seq": 0} if "seq" in hdr.__dataclass_fields__ else {}
    return hdr(stamp=time, frame_id=frame, **extra)


def cloud_msg(
    fields: list[tuple[str, int, int]],
    rows: list[bytes],
    width: int,
    point_step: int,
    row_step: int,
    *,
    bigendian: bool = False,
    stamp: float = 100.0,
    frame: str = "lidar",
) -> Callable[[Typestore], Any]:
    """A PointCloud2 builder; ``fields`` are (name, offset, datatype); ``rows`` raw bytes."""

    def build(ts: Typestore) -> Any:
        field = ts.types["sensor_msgs/msg/PointField"]
        return ts.types[PC2](
            header=header(ts, stamp, frame),
            height=len(rows),
            width=width,
            fields=[field(name=n, offset=o, datatype=d, count=1) for n, o, d in fields],
            is_bigendian=bigendian,
            point_step=point_step,
            row_step=row_step,
            data=np.frombuffer(b"".join(rows), np.uint8),
            is_dense=False,
        )

    return build


def packed(
    columns: dict[str, NDArray[Any]], offsets: dict[str, int], point_step: int, order: str
) -> bytes:
    """Points as bytes: each column at its offset in a ``point_step``-byte record."""
    dtype = np.dtype(
        {
            "names": list(columns),
            "formats": [c.dtype.newbyteorder(order) for c in columns.values()],
            "offsets": [offsets[n] for n in columns],
            "itemsize": point_step,
        }
    )
    n = len(next(iter(columns.values())))
    rec = np.zeros(n, dtype)
    for name, col in columns.items():
        rec[name] = col
    return rec.tobytes()


XYZ = np.array([[1.5, -2.25, 3.0], [0.0, 0.5, -1.0], [100.125, 7.0, 0.25]], np.float32)
INTENSITY = np.array([10.0, 0.5, 255.0], np.float32)


def scan_entries() -> list[Entry]:
    """Four PointCloud2 layouts on /points (stamps 100.0 .. 100.3) and an organised one."""
    x, y, z = (XYZ[:, i] for i in range(3))
    plain = packed(
        {"x": x, "y": y, "z": z, "intensity": INTENSITY}, dict(x=0, y=4, z=8, intensity=12), 16, "<"
    )
    # shuffled field order, 't' and 'ring' fields and padding: point_step 24
    ring = np.array([1, 2, 3], np.uint16)
    t = np.array([0.0, 0.01, 0.02], np.float32)
    padded = packed(
        {"y": y, "z": z, "x": x, "ring": ring, "t": t}, dict(y=0, z=4, x=12, ring=16, t=18), 24, "<"
    )
    big32 = packed(
        {"x": x, "y": y, "z": z, "intensity": INTENSITY.astype(np.uint16)},
        dict(x=0, y=4, z=8, intensity=12),
        14,
        ">",
    )
    big64 = packed(
        {"x": x.astype(np.float64), "y": y.astype(np.float64), "z": z.astype(np.float64)},
        dict(x=0, y=8, z=16),
        24,
        ">",
    )
    # organised 2 x 3, NaN/inf points, 8 bytes of row padding (row_step 56 = 3 * 16 + 8)
    grid = np.array(
        [[[1, 2, 3], [NAN, 0, 0], [4, 5, 6]], [[7, 8, 9], [10, 11, 12], [0, float("inf"), 0]]],
        np.float32,
    )
    inten = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    rows = [
        packed(
            {"x": g[:, 0], "y": g[:, 1], "z": g[:, 2], "intensity": i},
            dict(x=0, y=4, z=8, intensity=12),
            16,
            "<",
        )
        + b"\xab" * 8
        for g, i in zip(grid, inten, strict=True)
    ]
    xyzi = [("x", 0, F32), ("y", 4, F32), ("z", 8, F32)]
    return [
        ("/points", PC2, cloud_msg([*xyzi, ("intensity", 12, F32)], [plain], 3, 16, 48), 100.0),
        (
            "/points",
            PC2,
            cloud_msg(
                [("y", 0, F32), ("z", 4, F32), ("x", 12, F32), ("ring", 16, U16), ("t", 18, F32)],
                [padded],
                3,
                24,
                72,
                stamp=100.1,
            ),
            100.1,
        ),
        (
            "/points",
            PC2,
            cloud_msg(
                [*xyzi, ("intensity", 12, U16)], [big32], 3, 14, 42, bigendian=True, stamp=100.2
            ),
            100.2,
        ),
        (
            "/points",
            PC2,
            cloud_msg(
                [("x", 0, F64), ("y", 8, F64), ("z", 16, F64)],
                [big64],
                3,
                24,
                72,
                bigendian=True,
                stamp=100.3,
            ),
            100.3,
        ),
        (
            "/organised",
            PC2,
            cloud_msg([*xyzi, ("intensity", 12, F32)], rows, 3, 16, 56, stamp=100.4),
            100.4,
        ),
        ("/no_z", PC2, cloud_msg([("x", 0, F32), ("y", 4, F32)], [plain], 3, 16, 48), 100.0),
    ]


def rot_z(deg: float) -> NDArray[np.float64]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)


def pose(deg: float, t: tuple[float, float, float]) -> NDArray[np.float64]:
    m = np.eye(4)
    m[:3, :3] = rot_z(deg)
    m[:3, 3] = t
    return m


def pose_fields(ts: Typestore, m: NDArray[np.float64]) -> tuple[Any, Any, Any]:
    """(Point, Vector3, Quaternion) of a 4x4 pose."""
    qx, qy, qz, qw = rotation_to_quaternion(m[:3, :3]).tolist()
    x, y, z = m[:3, 3].tolist()
    return (
        ts.types["geometry_msgs/msg/Point"](x=x, y=y, z=z),
        ts.types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
        ts.types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
    )


def odom(m: NDArray[np.float64], stamp: float) -> Callable[[Typestore], Any]:
    def build(ts: Typestore) -> Any:
        point, vec, quat = pose_fields(ts, m)
        g = ts.types
        p = g["geometry_msgs/msg/Pose"](position=point, orientation=quat)
        twist = g["geometry_msgs/msg/Twist"](linear=vec, angular=vec)
        return g["nav_msgs/msg/Odometry"](
            header=header(ts, stamp, "odom"),
            child_frame_id="base_link",
            pose=g["geometry_msgs/msg/PoseWithCovariance"](pose=p, covariance=np.zeros(36)),
            twist=g["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
        )

    return build


def pose_stamped(m: NDArray[np.float64], stamp: float) -> Callable[[Typestore], Any]:
    def build(ts: Typestore) -> Any:
        point, _, quat = pose_fields(ts, m)
        p = ts.types["geometry_msgs/msg/Pose"](position=point, orientation=quat)
        return ts.types["geometry_msgs/msg/PoseStamped"](header=header(ts, stamp, "map"), pose=p)

    return build


def tf(
    edges: list[tuple[str, str, NDArray[np.float64]]], stamp: float
) -> Callable[[Typestore], Any]:
    def build(ts: Typestore) -> Any:
        g = ts.types
        transforms = []
        for parent, child, m in edges:
            _, vec, quat = pose_fields(ts, m)
            transforms.append(
                g["geometry_msgs/msg/TransformStamped"](
                    header=header(ts, stamp, parent),
                    child_frame_id=child,
                    transform=g["geometry_msgs/msg/Transform"](translation=vec, rotation=quat),
                )
            )
        return g["tf2_msgs/msg/TFMessage"](transforms=transforms)

    return build


ODOM = "nav_msgs/msg/Odometry"
TFM = "tf2_msgs/msg/TFMessage"
T_MAP_ODOM = pose(0, (10.0, 0.0, 0.0))
T_BASE_LIDAR = pose(90, (0.5, 0.0, 1.0))


def pose_entries() -> list[Entry]:
    return [
        ("/odom", ODOM, odom(pose(0, (0, 0, 0)), 99.0), 99.0),
        ("/odom", ODOM, odom(pose(90, (2, 0, 0)), 101.0), 101.0),
        ("/pose", "geometry_msgs/msg/PoseStamped", pose_stamped(pose(30, (1, 2, 3)), 100.0), 100.0),
        (
            "/tf_static",
            TFM,
            tf([("map", "odom", T_MAP_ODOM), ("base_link", "lidar", T_BASE_LIDAR)], 99.0),
            99.0,
        ),
        ("/tf", TFM, tf([("odom", "base_link", pose(0, (0, 0, 0)))], 99.0), 99.0),
        ("/tf", TFM, tf([("odom", "base_link", pose(90, (2, 0, 0)))], 101.0), 101.0),
    ]


def write_bag(kind: str, path: Path, entries: list[Entry]) -> Path:
    """Write ``entries`` with rosbags' writer for ``kind``; returns the bag path."""
    if kind == "ros1":
        ts = get_typestore(Stores.ROS1_NOETIC)
        if TFM not in ts.types:  # not in rosbags' noetic store: register its definition
            ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", TFM))
        path = path.with_suffix(".bag")
        with Writer1(path) as w1:
            conns1: dict[str, Any] = {}
            for topic, msgtype, build, stamp in entries:
                if topic not in conns1:
                    conns1[topic] = w1.add_connection(topic, msgtype, typestore=ts)
                w1.write(conns1[topic], round(stamp * 1e9), ts.serialize_ros1(build(ts), msgtype))
        return path
    ts = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if kind == "ros2-mcap" else StoragePlugin.SQLITE3
    with Writer2(path, version=9, storage_plugin=plugin) as w2:
        conns2: dict[str, Any] = {}
        for topic, msgtype, build, stamp in entries:
            if topic not in conns2:
                conns2[topic] = w2.add_connection(topic, msgtype, typestore=ts)
            w2.write(conns2[topic], round(stamp * 1e9), ts.serialize_cdr(build(ts), msgtype))
    return path


@pytest.fixture(scope="module", params=KINDS)
def bag(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    kind = request.param
    return write_bag(kind, tmp_path_factory.mktemp(kind) / "run", scan_entries() + pose_entries())


# --------------------------------------------------------------------------- tests


def test_bag_info(bag: Path) -> None:
    info = bag_info(bag)
    expected_kind = {".bag": "ros1"}.get(bag.suffix) or (
        "ros2-mcap" if any(bag.glob("*.mcap")) else "ros2-sqlite3"
    )
    assert info.storage == expected_kind
    counts = {t.name: (t.msgtype, t.count) for t in info.topics}
    assert counts == {
        "/points": (PC2, 4),
        "/organised": (PC2, 1),
        "/no_z": (PC2, 1),
        "/odom": (ODOM, 2),
        "/pose": ("geometry_msgs/msg/PoseStamped", 1),
        "/tf": (TFM, 2),
        "/tf_static": (TFM, 1),
    }
    assert info.message_count == 12
    assert info.start == pytest.approx(99.0) and info.end is not None and info.end >= 101.0
    assert info.duration == pytest.approx(info.end - info.start)


def test_bare_mcap_file(tmp_path: Path) -> None:
    folder = write_bag("ros2-mcap", tmp_path / "run", scan_entries())
    (mcap,) = folder.glob("*.mcap")
    info = bag_info(mcap)
    assert info.storage == "mcap"
    assert {t.name: t.count for t in info.topics} == {"/points": 4, "/organised": 1, "/no_z": 1}
    scans = list(read_scans(mcap, "/points"))
    assert len(scans) == 4
    np.testing.assert_array_equal(scans[3].cloud.xyz, XYZ)


def test_read_scans_layouts(bag: Path) -> None:
    scans = list(read_scans(bag, "/points"))
    assert [s.stamp for s in scans] == pytest.approx([100.0, 100.1, 100.2, 100.3], abs=1e-9)
    assert {s.frame_id for s in scans} == {"lidar"}
    for s in scans:
        np.testing.assert_array_equal(s.cloud.xyz, XYZ)
        assert s.cloud.timestamp == s.stamp
    assert scans[0].cloud.intensity is not None  # float32 little-endian
    np.testing.assert_array_equal(scans[0].cloud.intensity, INTENSITY)
    assert scans[2].cloud.intensity is not None  # uint16 big-endian
    np.testing.assert_array_equal(scans[2].cloud.intensity, [10, 0, 255])
    assert scans[1].cloud.intensity is None and scans[3].cloud.intensity is None


def test_read_scans_organised_drops_nan(bag: Path) -> None:
    (scan,) = read_scans(bag, "/organised")
    np.testing.assert_array_equal(scan.cloud.xyz, [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    assert scan.cloud.intensity is not None
    np.testing.assert_array_equal(scan.cloud.intensity, [1, 3, 4, 5])


def test_read_poses_odometry_and_pose_stamped(bag: Path) -> None:
    odo = read_poses(bag, "/odom")
    assert odo.stamps.tolist() == [99.0, 101.0]
    np.testing.assert_allclose(odo.poses[1], pose(90, (2, 0, 0)), atol=1e-12)
    # mid stamp: translation halfway, rotation halfway (45 degrees about z)
    c = math.sqrt(0.5)
    mid = np.array([[c, -c, 0, 1], [c, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(odo.at([100.0])[0], mid, atol=1e-12)
    np.testing.assert_allclose(odo.at([101.04])[0], odo.poses[1], atol=1e-12)  # tolerance
    ps = read_poses(bag, "/pose")
    assert ps.stamps.tolist() == [100.0]
    np.testing.assert_allclose(ps.poses[0], pose(30, (1, 2, 3)), atol=1e-12)


def test_read_poses_tf_chain(bag: Path) -> None:
    direct = read_poses(bag, "tf:odom->base_link")
    np.testing.assert_allclose(direct.poses, [pose(0, (0, 0, 0)), pose(90, (2, 0, 0))], atol=1e-12)
    # static map->odom, dynamic odom->base_link, static base_link->lidar
    chain = read_poses(bag, "tf:map->lidar")
    assert chain.stamps.tolist() == [99.0, 101.0]
    expected_mid = T_MAP_ODOM @ pose(45, (1, 0, 0)) @ T_BASE_LIDAR
    # by hand: lidar origin = (10, 0, 0) + (1, 0, 0) + Rz(45) (0.5, 0, 1); heading 45 + 90
    h = 0.5 * math.sqrt(0.5)
    assert expected_mid[:3, 3] == pytest.approx([11 + h, h, 1.0])
    np.testing.assert_allclose(chain.at([100.0])[0], expected_mid, atol=1e-12)
    np.testing.assert_allclose(chain.at([100.0])[0][:3, :3], rot_z(135), atol=1e-12)
    # the other direction is the inverse; a static-only chain is valid at any time
    back = read_poses(bag, "tf:lidar->odom")
    np.testing.assert_allclose(chain.at([100.0])[0] @ back.at([100.0])[0], T_MAP_ODOM, atol=1e-12)
    static = read_poses(bag, "tf:map->odom")
    assert static.static
    np.testing.assert_allclose(static.at([5.0, 500.0]), [T_MAP_ODOM, T_MAP_ODOM], atol=1e-12)


def test_poses_not_covering_scans(bag: Path) -> None:
    odo = read_poses(bag, "/odom")
    with pytest.raises(BagError, match=r"poses of /odom cover 99\.000\.\.101\.000 s but 1 of 2"):
        odo.at([100.0, 101.5])
    with pytest.raises(BagError, match=r"first 98\.000"):
        odo.at([98.0], tolerance=0.5)


def test_pose_stream_interpolates_slerp() -> None:
    stream = PoseStream(
        np.array([0.0, 2.0]), np.stack([pose(-60, (0, 0, 0)), pose(60, (4, 2, 0))]), "x", "s"
    )
    got = stream.at([0.5, 1.0, 1.5])
    for t, g in zip((0.5, 1.0, 1.5), got, strict=True):
        np.testing.assert_allclose(g, pose(-60 + 60 * t, (2 * t, t, 0)), atol=1e-12)


def test_errors(bag: Path, tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"unknown topic '/lidar' \(available: /no_z, /odom, "):
        list(read_scans(bag, "/lidar"))
    with pytest.raises(
        BagError, match="topic '/odom' has message type nav_msgs/msg/Odometry, expected sensor_msgs"
    ):
        list(read_scans(bag, "/odom"))
    with pytest.raises(BagError, match="expected nav_msgs/msg/Odometry or geometry_msgs"):
        read_poses(bag, "/points")
    with pytest.raises(BagError, match=r"PointCloud2 has no z field \(fields: x, y\)"):
        list(read_scans(bag, "/no_z"))
    with pytest.raises(BagError, match="no tf path from 'map' to 'camera'"):
        read_poses(bag, "tf:map->camera")
    with pytest.raises(BagError, match="must be 'tf:PARENT->CHILD'"):
        read_poses(bag, "tf:map")
    with pytest.raises(BagError, match="no such file or folder"):
        bag_info(tmp_path / "missing.bag")


def test_truncated_and_corrupt(tmp_path: Path) -> None:
    entries = scan_entries()
    for kind in KINDS:
        for keep in (0.5, 0.9):
            path = write_bag(kind, tmp_path / f"{kind}{keep * 10:.0f}", entries)
            files = [path] if path.is_file() else [*path.glob("*.db3"), *path.glob("*.mcap")]
            for f in files:
                data = f.read_bytes()
                f.write_bytes(data[: int(len(data) * keep)])  # truncated
            with pytest.raises(
                BagError, match=r"cannot (open|read) bag \(truncated or corrupt\?\)"
            ):
                list(read_scans(path, "/points"))
            if keep == 0.5:
                with pytest.raises(BagError, match=r"cannot open bag \(truncated or corrupt\?\)"):
                    bag_info(path)
    garbage = tmp_path / "garbage.bag"
    garbage.write_bytes(b"#ROSBAG V2.0\n" + bytes(range(256)) * 4)
    with pytest.raises(BagError, match=r"garbage\.bag: cannot open bag"):
        bag_info(garbage)
    mcap = tmp_path / "garbage.mcap"
    mcap.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(BagError, match=r"garbage\.mcap: cannot open bag"):
        bag_info(mcap)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BagError, match=r"unrecognised bag suffix '\.txt'"):
        bag_info(tmp_path / "notes.txt")
    with pytest.raises(BagError, match="not a ROS 2 bag"):
        bag_info(tmp_path)


def test_decode_rejects_short_data() -> None:
    ts = get_typestore(Stores.ROS2_HUMBLE)
    msg = cloud_msg([("x", 0, F32), ("y", 4, F32), ("z", 8, F32)], [b"\0" * 20], 2, 12, 24)(ts)
    with pytest.raises(BagError, match="data has 20 bytes"):
        decode_pointcloud2(msg, "m")


def test_cli_bag_info(bag: Path) -> None:
    code, out, err = run_cli("bag", "info", bag, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {t["name"]: t["count"] for t in data["topics"]}["/points"] == 4
    assert data["message_count"] == 12
    code, out, _ = run_cli("bag", "info", bag)
    assert code == 0 and "/tf_static" in out and "tf2_msgs/msg/TFMessage" in out


def test_cli_bag_info_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bag"
    bad.write_bytes(b"not a bag at all")
    code, out, err = run_cli("bag", "info", bad)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.bag" in lines[0]


def test_hilti_scans_roundtrip(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "hilti2023_fragment_sova"
    entries: list[Entry] = []
    clouds, poses = [], []
    for i in range(3):
        cloud = read_pointcloud(folder / "clouds" / f"{i}.pcd")
        m = np.loadtxt(folder / "poses" / f"{i}.txt")
        stamp = 1000.0 + i
        x, y, z = (cloud.xyz[:, k] for k in range(3))
        data = packed({"x": x, "y": y, "z": z}, dict(x=0, y=4, z=8), 16, "<")
        n = len(cloud)
        fields = [("x", 0, F32), ("y", 4, F32), ("z", 8, F32)]
        entries.append(
            ("/hesai/points", PC2, cloud_msg(fields, [data], n, 16, 16 * n, stamp=stamp), stamp)
        )
        entries.append(("/pose", "geometry_msgs/msg/PoseStamped", pose_stamped(m, stamp), stamp))
        clouds.append(cloud)
        poses.append(m)
    bag = write_bag("ros2-mcap", tmp_path / "hilti", entries)
    scans = list(read_scans(bag, "/hesai/points"))
    assert len(scans) == 3
    for scan, cloud in zip(scans, clouds, strict=True):
        np.testing.assert_array_equal(scan.cloud.xyz, cloud.xyz[np.isfinite(cloud.xyz).all(axis=1)])
    stream = read_poses(bag, "/pose")
    np.testing.assert_allclose(stream.at([s.stamp for s in scans]), poses, atol=1e-9)


# --------------------------------------------------------------------------- log -> benchmark


def _scene() -> NDArray[np.float64]:
    """A 100 m street of posts and walls, metric (map frame)."""
    rng = np.random.default_rng(7)
    posts = []
    for x, y in zip(rng.uniform(-10, 110, 80), rng.choice([-8.0, 8.0], 80), strict=True):
        a = rng.uniform(0, 2 * np.pi, 80)
        posts.append(np.c_[x + 0.3 * np.cos(a), y + 0.3 * np.sin(a), rng.uniform(0, 6, 80)])
    ground = np.c_[rng.uniform(-10, 110, 4000), rng.uniform(-12, 12, 4000), np.zeros(4000)]
    return np.concatenate([ground, *posts])


def drive_entries() -> tuple[list[Entry], list[float], list[NDArray[np.float64]]]:
    """Scans every 0.5 s while driving +x at 4 m/s (sensor 1.8 m up), odometry at 10 Hz."""
    scene = _scene()
    entries: list[Entry] = []
    stamps, poses = [], []
    for k in range(24):
        t = 200.0 + 0.5 * k
        m = pose(0.0, (4.0 * (t - 200.0), 0.0, 1.8))
        local = (scene - m[:3, 3]) @ m[:3, :3]  # map -> sensor (rotation is identity)
        local = local[np.linalg.norm(local[:, :2], axis=1) < 30.0].astype(np.float32)
        data = packed({"x": local[:, 0], "y": local[:, 1], "z": local[:, 2]}, XYZ_OFF, 16, "<")
        entries.append(
            (
                "/points",
                PC2,
                cloud_msg(XYZ_FIELDS, [data], len(local), 16, 16 * len(local), stamp=t),
                t,
            )
        )
        stamps.append(t)
        poses.append(m)
    for k in range(-2, 122):
        t = 200.0 + 0.1 * k
        entries.append(("/odom", ODOM, odom(pose(0.0, (4.0 * (t - 200.0), 0.0, 1.8)), t), t))
    return entries, stamps, poses


XYZ_FIELDS = [("x", 0, F32), ("y", 4, F32), ("z", 8, F32)]
XYZ_OFF = {"x": 0, "y": 4, "z": 8}


@pytest.mark.parametrize("kind", ["ros1", "ros2-mcap"])
def test_prepare_sequence_from_a_bag(kind: str, tmp_path: Path) -> None:
    """A log becomes a benchmark folder in one command: ground submaps along the drive,
    each posed at its centre scan (poses interpolated from 10 Hz odometry)."""
    from hotformerloc.io.poses import read_poses_csv

    entries, stamps, poses = drive_entries()
    path = write_bag(kind, tmp_path / "drive", entries)
    out = tmp_path / "bench"
    code, _, err = run_cli(
        "dataset", "prepare", "sequence", "--bag", path, "--points", "/points",
        "--poses", "/odom", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    world = out / "drive"
    table = read_poses_csv(world / "drive" / "poses.csv")
    assert 10 <= len(table.timestamps) <= 24  # a submap every 3 m of the 46 m drive
    truth = dict(zip(stamps, poses, strict=True))
    for t, m in zip(table.timestamps, table.poses, strict=True):
        np.testing.assert_allclose(m, truth[round(float(t), 6)], atol=1e-6)
    clouds = sorted((world / "drive" / "clouds").iterdir())
    assert len(clouds) == len(table.timestamps)
    pts = read_pointcloud(clouds[0]).xyz
    assert len(pts) > 100 and np.abs(pts[:, :2]).max() <= 30.0  # cropped, own frame
    code, _, err = run_cli(
        "dataset", "prepare", "sequence", "--bag", path, "--points", "/points",
        "--poses", "/nope", "--out", tmp_path / "b2",
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "/nope" in err
    assert not (tmp_path / "b2").exists()
    code, _, err = run_cli("dataset", "prepare", "sequence", "--bag", path, "--out", out)
    assert code == 2 and "--bag needs --points TOPIC and --poses" in err


def test_localize_a_bag_against_a_database_of_its_own_submaps(tmp_path: Path) -> None:
    """localize --bag: the log's submaps are made (OUT/submaps) and each, after the first,
    matches its own place in a database built from the same log, at its own pose."""
    from hotformerloc.io.poses import read_poses_csv

    entries, _, _ = drive_entries()
    path = write_bag("ros2-sqlite3", tmp_path / "drive", entries)
    bench, db, out = tmp_path / "bench", tmp_path / "db", tmp_path / "out"
    args = ["--points", "/points", "--poses", "/odom"]
    assert run_cli("dataset", "prepare", "sequence", "--bag", path, *args, "--out", bench)[0] == 0
    code, _, err = run_cli(
        "db", "build", "-m", "hotformerloc-tiny", "--bag", path, *args, "--out", db
    )
    assert code == 0, err  # db build --bag: the same submaps, kept beside the database
    kept = sorted((tmp_path / "db.submaps" / "drive" / "drive" / "clouds").iterdir())
    made = sorted((bench / "drive" / "drive" / "clouds").iterdir())
    assert [p.name for p in kept] == [p.name for p in made]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(kept, made, strict=True))
    code, stdout, err = run_cli(
        "localize", "--db", db, "--bag", path, *args, "--out", out, "-k", "3"
    )
    assert code == 0, err
    truth = read_poses_csv(bench / "drive" / "drive" / "poses.csv")
    n = len(truth.timestamps)
    assert f"{n} submaps: {n - 1} matched" in stdout
    rows = [r.split(",") for r in (out / "trajectory.csv").read_text().splitlines()[1:]]
    for row, m in zip(rows[1:], truth.poses[1:], strict=True):
        assert row[2] == "matched" and row[11].startswith("drive/drive/")
        np.testing.assert_allclose([float(v) for v in row[4:7]], m[:3, 3], atol=0.05)
    assert sorted(p.name for p in (out / "submaps" / "drive" / "drive" / "clouds").iterdir())
    code, _, err = run_cli("localize", "--db", db, "--bag", path, "--out", out)
    assert code == 2 and "--bag needs --points TOPIC and --poses" in err


def test_localize_a_folder_of_single_scans(tmp_path: Path) -> None:
    """localize --scans: the same drive as single scan files + poses.csv gives the submaps
    the log gives, each matching its place in the log's database."""
    from hotformerloc.io import PointCloud, write_pointcloud
    from hotformerloc.io.poses import write_poses_csv

    entries, stamps, poses = drive_entries()
    path = write_bag("ros2-mcap", tmp_path / "drive", entries)
    db = tmp_path / "db"
    args = ["--points", "/points", "--poses", "/odom"]
    assert (
        run_cli("db", "build", "-m", "hotformerloc-tiny", "--bag", path, *args, "--out", db)[0] == 0
    )
    scans = tmp_path / "rec" / "drive"
    scans.mkdir(parents=True)
    scene = _scene()
    for t, m in zip(stamps, poses, strict=True):
        local = (scene - m[:3, 3]) @ m[:3, :3]
        local = local[np.linalg.norm(local[:, :2], axis=1) < 30.0].astype(np.float32)
        write_pointcloud(scans / f"{t:.6f}.pcd", PointCloud(local))
    write_poses_csv(scans / "poses.csv", stamps, np.stack(poses))
    out = tmp_path / "out"
    code, stdout, err = run_cli("localize", "--db", db, "--scans", scans, "--out", out, "-k", "3")
    assert code == 0, err
    made = sorted(p.name for p in (out / "submaps" / "drive" / "drive" / "clouds").iterdir())
    kept = sorted(
        p.name for p in (tmp_path / "db.submaps" / "drive" / "drive" / "clouds").iterdir()
    )
    assert made == kept
    assert f"{len(made)} submaps: {len(made) - 1} matched" in stdout
    code, _, err = run_cli("localize", "--db", db, "--scans", scans, "--bag", path, "--out", out)
    assert code == 2 and "give one of --data DRIVE, --scans DIR or --bag FILE" in err
