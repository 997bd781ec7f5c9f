"""PointCloud contract, geometry helpers and the PointCloudError type."""

import dataclasses
import pickle

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hotformerloc.io import PointCloud, PointCloudError


def rigid(rotvec: tuple[float, float, float], t: tuple[float, float, float]) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    pose[:3, 3] = t
    return pose


def test_converts_dtypes_and_layout() -> None:
    xyz = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(4, 3))
    cloud = PointCloud(xyz, intensity=[1, 2, 3, 4], pose=np.eye(4, dtype=np.float32))
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.flags.c_contiguous
    assert cloud.intensity is not None and cloud.intensity.dtype == np.float32
    assert cloud.pose is not None and cloud.pose.dtype == np.float64
    assert len(cloud) == 4 and cloud.source == "ground"
    np.testing.assert_array_equal(cloud.xyz, xyz)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"xyz": np.zeros((3, 4))}, r"xyz must have shape \(N, 3\)"),
        ({"xyz": np.zeros(3)}, r"xyz must have shape \(N, 3\)"),
        ({"intensity": np.zeros(2)}, r"intensity must have shape \(3,\)"),
        ({"pose": np.eye(3)}, r"pose must have shape \(4, 4\)"),
        ({"pose": np.full((4, 4), np.nan)}, "non-finite"),
        ({"pose": np.eye(4) + np.diag([0, 0, 0, 1.0])}, "last row"),
        ({"pose": np.diag([1.0, 1.0, 1.1, 1.0])}, "not a proper rotation"),
        ({"pose": np.diag([1.0, 1.0, -1.0, 1.0])}, "not a proper rotation"),
        ({"source": "satellite"}, "source must be one of"),
        ({"timestamp": float("nan")}, "timestamp must be finite"),
        ({"sequence": 3}, "sequence must be a str"),
    ],
)
def test_rejects_invalid_fields(kwargs: dict, match: str) -> None:
    fields = {"xyz": np.zeros((3, 3)), **kwargs}
    with pytest.raises(ValueError, match=match):
        PointCloud(**fields)


def test_frozen_and_replace_revalidates() -> None:
    cloud = PointCloud(np.zeros((2, 3)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cloud.source = "aerial"  # type: ignore[misc]
    with pytest.raises(ValueError, match="source"):
        dataclasses.replace(cloud, source="space")


def test_nan_allowed_at_construction_but_not_by_validate_finite() -> None:
    cloud = PointCloud([[0, 0, 0], [np.nan, 0, 0], [0, np.inf, 0]])
    with pytest.raises(PointCloudError, match=r"scan7: 2 of 3 points .* \(first at index 1\)"):
        cloud.validate_finite("scan7")
    with pytest.raises(PointCloudError, match="scan8: point cloud is empty"):
        PointCloud(np.zeros((0, 3))).validate_finite("scan8")
    PointCloud(np.ones((2, 3))).validate_finite("ok")


def test_transformed_keeps_world_coordinates() -> None:
    rng = np.random.default_rng(0)
    cloud = PointCloud(
        rng.uniform(-20, 20, (50, 3)),
        intensity=rng.random(50),
        pose=rigid((0.1, 0.2, 1.0), (5, -3, 2)),
    )
    t = rigid((0.0, 0.0, 0.7), (1, 2, 3))
    moved = cloud.transformed(t)
    expected = cloud.xyz.astype(np.float64) @ t[:3, :3].T + t[:3, 3]
    np.testing.assert_allclose(moved.xyz, expected, atol=1e-5)
    np.testing.assert_allclose(moved.world_xyz(), cloud.world_xyz(), atol=1e-4)
    np.testing.assert_array_equal(moved.intensity, cloud.intensity)
    assert PointCloud(cloud.xyz).transformed(t).pose is None
    with pytest.raises(ValueError, match="transform"):
        cloud.transformed(np.diag([2.0, 2.0, 2.0, 1.0]))


def test_to_world_and_world_xyz() -> None:
    pose = rigid((0.0, 0.0, np.pi / 2), (507726.0, 6942450.0, 68.5))
    cloud = PointCloud([[1.0, 0.0, 0.0], [0.0, 2.0, 0.5]], pose=pose)
    world = cloud.world_xyz()
    assert world.dtype == np.float64
    np.testing.assert_allclose(world, [[507726.0, 6942451.0, 68.5], [507724.0, 6942450.0, 69.0]])
    flat = cloud.to_world()
    np.testing.assert_array_equal(flat.pose, np.eye(4))
    np.testing.assert_array_equal(flat.xyz, world.astype(np.float32))
    no_pose = PointCloud(cloud.xyz)
    assert no_pose.to_world() is no_pose
    np.testing.assert_array_equal(no_pose.world_xyz(), cloud.xyz)


def test_subset_keeps_metadata() -> None:
    cloud = PointCloud(
        np.arange(12).reshape(4, 3), intensity=[0, 1, 2, 3], source="aerial", sequence="s1"
    )
    sub = cloud.subset([True, False, True, False])
    np.testing.assert_array_equal(sub.xyz, [[0, 1, 2], [6, 7, 8]])
    np.testing.assert_array_equal(sub.intensity, [0, 2])
    assert (sub.source, sub.sequence) == ("aerial", "s1")
    assert "n=2" in repr(sub)


def test_error_type_names_path_and_pickles() -> None:
    err = PointCloudError("dir/scan.bin", "size 1234 bytes is not a multiple of 16")
    assert isinstance(err, ValueError)
    assert str(err) == "dir/scan.bin: size 1234 bytes is not a multiple of 16"
    assert (err.path, err.problem) == ("dir/scan.bin", "size 1234 bytes is not a multiple of 16")
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy), copy.path) == (PointCloudError, str(err), err.path)
