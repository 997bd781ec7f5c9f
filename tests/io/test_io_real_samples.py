"""Every real third-party sample in ../shared/data loads with the documented result."""

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hotformerloc.io import read_pointcloud


def header_values(path: Path, key: str) -> list[str]:
    """The values of one PCD header line, parsed independently of the library."""
    with open(path, "rb") as f:
        for raw in f:
            words = raw.decode("ascii").split()
            if words and words[0] == key:
                return words[1:]
            if words and words[0] == "DATA":
                break
    raise AssertionError(f"{path}: no {key} line")


def test_cs_wild_places_submap(shared_data: Path) -> None:
    path = shared_data / "cs_wild_places_ground_submap_sample" / "karawatha_submap_gnd_2.pcd"
    assert header_values(path, "DATA") == ["binary_compressed"]
    cloud = read_pointcloud(path)
    assert len(cloud) == 293_430 == int(header_values(path, "POINTS")[0])
    assert cloud.xyz.dtype == np.float32 and cloud.intensity is None
    tx, ty, tz, qw, qx, qy, qz = (float(v) for v in header_values(path, "VIEWPOINT"))
    assert cloud.pose is not None
    assert cloud.pose[:3, 3].tolist() == [tx, ty, tz]
    np.testing.assert_allclose(
        cloud.pose[:3, :3], Rotation.from_quat([qx, qy, qz, qw]).as_matrix(), atol=1e-12
    )
    extent = cloud.xyz.max(axis=0) - cloud.xyz.min(axis=0)  # ~60 m x 59 m x 22 m
    np.testing.assert_allclose(extent, [60, 59, 22], atol=1.5)
    world = cloud.world_xyz()
    assert np.abs(world.mean(axis=0)[:2] - [tx, ty]).max() < 50


def test_hilti_scans(shared_data: Path) -> None:
    paths = sorted((shared_data / "hilti2023_fragment_sova" / "clouds").glob("*.pcd"))
    assert len(paths) == 30
    for path in paths:
        assert header_values(path, "FIELDS") == ["x", "y", "z", "rgb"]
        cloud = read_pointcloud(path)
        assert len(cloud) == int(header_values(path, "POINTS")[0]), path.name
        assert cloud.pose is None and cloud.intensity is None  # identity VIEWPOINT, rgb ignored


def test_autzen_aerial_survey(shared_data: Path) -> None:
    path = shared_data / "autzen_2010_als" / "autzen_2010_points.npz"
    cloud = read_pointcloud(path, source="aerial")
    assert len(cloud) == 10_653_336
    assert cloud.source == "aerial" and cloud.pose is None
    assert cloud.xyz.dtype == np.float32 and cloud.intensity is not None
    # first point: xyz_mm (682959, 9973, 1841), intensity 38 (see the folder README)
    np.testing.assert_allclose(cloud.xyz[0], [682.959, 9.973, 1.841], rtol=1e-7)
    assert cloud.intensity[0] == 38
    extent = cloud.xyz.max(axis=0) - cloud.xyz.min(axis=0)  # ~1.04 km x 1.42 km
    assert 1000 < extent[0] < 1100 and 1380 < extent[1] < 1450


def test_reference_bench_clouds(shared_data: Path) -> None:
    for name, n in (("forest_28000.npy", 28_000), ("urban_4096.npy", 4_096)):
        cloud = read_pointcloud(shared_data / "reference_bench" / name)
        assert len(cloud) == n and cloud.intensity is None
        assert np.abs(cloud.xyz).max() <= 0.99 + 1e-6
