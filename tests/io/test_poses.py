"""Pose geometry (quaternions scalar last, yaw) and the poses.csv table (hotformerloc.io.poses)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hotformerloc.errors import HotformerlocError
from hotformerloc.io import LayoutFileError, PointCloud, read_pointcloud, write_pointcloud
from hotformerloc.io.poses import (
    POSE_COLUMNS,
    poses_csv_text,
    quaternion_to_rotation,
    quaternion_yaw,
    read_poses_csv,
    rotation_to_quaternion,
    rotation_yaw,
    write_poses_csv,
)

HEADER = ",".join(POSE_COLUMNS) + "\n"


def _rz(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


# --------------------------------------------------------------------------- quaternions


def test_quaternion_conversions_match_scipy() -> None:
    rng = np.random.default_rng(1)
    for rot in Rotation.random(50, random_state=rng):
        x, y, z, w = rot.as_quat()  # scipy's order is ours: scalar last
        np.testing.assert_allclose(
            quaternion_to_rotation([x, y, z, w]), rot.as_matrix(), atol=1e-12
        )
        q = rotation_to_quaternion(rot.as_matrix())
        assert q[3] >= 0
        np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), rot.as_matrix(), atol=1e-12)
    # 180-degree turns exercise every branch of Shepperd's method
    for axis in np.eye(3):
        r = Rotation.from_rotvec(np.pi * axis).as_matrix()
        np.testing.assert_allclose(quaternion_to_rotation(rotation_to_quaternion(r)), r, atol=1e-12)


def test_quaternion_batches_and_scipy_normalisation() -> None:
    rng = np.random.default_rng(2)
    quats = rng.normal(size=(64, 4))  # not unit: normalised as scipy does
    mats = quaternion_to_rotation(quats)
    assert mats.shape == (64, 3, 3) and mats.dtype == np.float64
    np.testing.assert_allclose(mats, Rotation.from_quat(quats).as_matrix(), rtol=0, atol=1e-15)
    for q, m in zip(quats, mats, strict=True):  # one at a time = in a batch
        np.testing.assert_array_equal(quaternion_to_rotation(q), m)
    back = rotation_to_quaternion(mats)
    assert back.shape == (64, 4) and np.all(back[:, 3] >= 0)
    unit = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    np.testing.assert_allclose(back, unit * np.sign(unit[:, 3:]), atol=1e-12)  # the same up to sign
    np.testing.assert_allclose(quaternion_to_rotation(-quats), mats, atol=1e-15)
    assert rotation_to_quaternion(np.zeros((0, 3, 3))).shape == (0, 4)


def test_quaternion_sign_and_identity() -> None:
    np.testing.assert_array_equal(rotation_to_quaternion(np.eye(3)), [0, 0, 0, 1])
    np.testing.assert_array_equal(quaternion_to_rotation([0, 0, 0, 1]), np.eye(3))
    np.testing.assert_array_equal(quaternion_to_rotation([0, 0, 0, -2]), np.eye(3))
    # 270 degrees about z: w would be negative, the convention flips the sign
    q = rotation_to_quaternion(_rz(270))
    assert q[3] >= 0
    np.testing.assert_allclose(q, [0, 0, -math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)


@pytest.mark.parametrize("bad", [[0, 0, 0, 0], [np.nan, 0, 0, 1], [1e-13, 0, 0, 0]])
def test_quaternion_without_direction_raises(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="has no direction"):
        quaternion_to_rotation(bad)
    with pytest.raises(ValueError, match="has no direction"):
        quaternion_to_rotation([[0, 0, 0, 1], bad])
    with pytest.raises(ValueError, match="4 components"):
        quaternion_to_rotation([0, 0, 1])


@pytest.mark.parametrize("deg", [0.0, 90.0, -90.0, 180.0, 30.0, -135.0])
def test_yaw_known_values(deg: float) -> None:
    half = math.radians(deg) / 2
    q = [0.0, 0.0, math.sin(half), math.cos(half)]
    assert quaternion_yaw(q) == pytest.approx(math.radians(deg), abs=1e-12)
    assert rotation_yaw(_rz(deg)) == pytest.approx(math.radians(deg), abs=1e-12)
    pose = np.eye(4)
    pose[:3, :3] = _rz(deg)
    assert rotation_yaw(pose) == pytest.approx(math.radians(deg), abs=1e-12)


def test_yaw_exact_values_batches_and_tilt() -> None:
    assert quaternion_yaw([0, 0, 0, 1]) == 0.0
    assert quaternion_yaw([0, 0, 1, 0]) == math.pi
    assert quaternion_yaw([0, 0, math.sqrt(0.5), math.sqrt(0.5)]) == pytest.approx(math.pi / 2)
    assert quaternion_yaw([0, 0, -math.sqrt(0.5), math.sqrt(0.5)]) == pytest.approx(-math.pi / 2)
    # yaw of Rz(yaw) Ry(pitch) Rx(roll) is yaw, also with pitch and roll
    rots = Rotation.from_euler("ZYX", [[0.7, 0.2, -0.1], [-2.5, -0.3, 0.25]])
    got_q = quaternion_yaw(rots.as_quat())
    got_r = rotation_yaw(rots.as_matrix())
    assert isinstance(got_q, np.ndarray) and got_q.shape == (2,)
    np.testing.assert_allclose(got_q, [0.7, -2.5], atol=1e-12)
    np.testing.assert_allclose(got_r, [0.7, -2.5], atol=1e-12)


# --------------------------------------------------------------------------- poses.csv


def test_poses_csv_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rots = Rotation.random(5, random_state=rng).as_matrix()
    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[:, :3, :3] = rots
    poses[:, :3, 3] = rng.uniform(-500, 500, (5, 3))
    times = np.array([10.0, 10.5, 11.25, 12.0, 100.123456])
    path = tmp_path / "poses.csv"
    write_poses_csv(path, times, poses)
    lines = path.read_text().splitlines()
    assert lines[0] == "timestamp,x,y,z,qx,qy,qz,qw" and len(lines) == 6
    assert lines[1].split(",")[0] == "10.000000" and len(lines[1].split(",")[4]) >= 11
    table = read_poses_csv(path)
    assert len(table) == 5
    assert table.timestamps.dtype == np.float64 and table.timestamps.shape == (5,)
    assert table.poses.dtype == np.float64 and table.poses.shape == (5, 4, 4)
    assert table.quaternions.shape == (5, 4)
    np.testing.assert_array_equal(table.timestamps, times)
    np.testing.assert_allclose(table.poses, poses, atol=1e-6)  # 6 / 9 decimals
    np.testing.assert_array_equal(table.poses[:, 3], np.tile([0, 0, 0, 1.0], (5, 1)))
    write_poses_csv(tmp_path / "empty.csv", [], np.zeros((0, 4, 4)))
    assert (tmp_path / "empty.csv").read_text() == HEADER


def test_poses_csv_text_format() -> None:
    text = poses_csv_text([(1.5, (1, 2, 3), (0, 0, 0, 1))])
    assert (
        text
        == HEADER
        + "1.500000,1.000000,2.000000,3.000000,0.000000000,0.000000000,0.000000000,1.000000000\n"
    )


def test_read_poses_csv_is_lenient_with_layout(tmp_path: Path) -> None:
    path = tmp_path / "poses.csv"
    path.write_text(
        " qw, qx ,qy,qz,x,y,z,timestamp,note\n"
        "1,0,0,0,5,6,7,2.0,b\n"
        "2,0,0,0,1,2,3,1.0,a\n"  # not unit: normalised; rows come back sorted by time
    )
    table = read_poses_csv(path)
    np.testing.assert_array_equal(table.timestamps, [1.0, 2.0])
    np.testing.assert_array_equal(
        table.poses[0], [[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]
    )
    np.testing.assert_array_equal(table.quaternions[0], [0, 0, 0, 2])  # as written
    path.write_text(HEADER)
    assert len(read_poses_csv(path, allow_empty=True)) == 0


ROW = "1,0,0,0,0,0,0,1\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("timestamp,x,y,z,qx,qy,qz\n1,0,0,0,0,0,0\n", r"missing column\(s\) qw \(header: "),
        (HEADER + ROW + "2,0,0,zero,0,0,0,1\n", r"unparsable or non-finite numbers on line 3$"),
        (HEADER + ROW + "2,0,0,0,0,0,0\n", r"unparsable or non-finite numbers on line 3$"),
        (HEADER + ROW + "2,0,0,inf,0,0,0,1\n", r"non-finite numbers on line 3$"),
        (HEADER + ROW + "2,0,0,0,0,0,0,0\n", r"zero quaternion \(no rotation\) at timestamp 2\.0$"),
        (HEADER + ROW + ROW, r"duplicate timestamp\(s\) 1\.0$"),
        (HEADER, r"no pose rows$"),
        ("", r"missing column\(s\) timestamp, x, y, z, qx, qy, qz, qw"),
    ],
)
def test_read_poses_csv_errors_name_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "poses.csv"
    path.write_text(text)
    with pytest.raises(LayoutFileError, match=problem) as err:
        read_poses_csv(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert err.value.path == str(path) and isinstance(err.value, HotformerlocError)


def test_read_poses_csv_lists_the_first_bad_lines_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "poses.csv"
    path.write_text(HEADER + "".join(f"{i},0,0,0,0,0,0,x\n" for i in range(5)))
    with pytest.raises(LayoutFileError, match=r"on line 2, line 3, line 4 and 2 more$"):
        read_poses_csv(path)
    with pytest.raises(LayoutFileError, match=r"missing\.csv: cannot read \("):
        read_poses_csv(tmp_path / "missing.csv")


def test_layout_file_error_pickles_and_names_the_line() -> None:
    err = LayoutFileError("w/split.csv", "too few fields", 3)
    assert str(err) == "w/split.csv line 3: too few fields"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.problem, again.line, str(again)) == (
        "w/split.csv",
        "too few fields",
        3,
        str(err),
    )
    assert str(LayoutFileError("p.csv", "no pose rows")) == "p.csv: no pose rows"


def test_pcd_viewpoint_is_scalar_first(tmp_path: Path) -> None:
    """VIEWPOINT is ``tx ty tz qw qx qy qz``: the PCD code reorders our (x, y, z, w)."""
    pose = np.eye(4)
    pose[:3, :3] = _rz(90)
    pose[:3, 3] = (1, 2, 3)
    path = tmp_path / "c.pcd"
    write_pointcloud(path, PointCloud(np.zeros((3, 3), np.float32), pose=pose), compression="ascii")
    line = next(
        ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("VIEWPOINT")
    )
    values = [float(v) for v in line.split()[1:]]
    x, y, z, w = rotation_to_quaternion(pose[:3, :3])
    np.testing.assert_allclose(values, [1, 2, 3, w, x, y, z], atol=1e-12)
    read = read_pointcloud(path).pose
    assert read is not None
    np.testing.assert_allclose(read, pose, atol=1e-12)
