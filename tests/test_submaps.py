"""Submap post-processing: crop, ground removal, voxel downsampling, normalisation."""

import numpy as np

from hotformerloc.submaps import (
    SubmapConfig,
    crop_radius,
    pnv_normalise,
    process_submap,
    remove_ground,
    to_local,
    voxel_downsample,
)


def sloped_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground on a 10 % slope, a 30 x 20 m flat-roofed building (12 m), a car, a trunk."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-30, 30, (20000, 2))
    z = 0.1 * xy[:, 0] + rng.normal(0, 0.03, len(xy))
    roof = (np.abs(xy[:, 0] - 5) < 15) & (np.abs(xy[:, 1] - 5) < 10)
    z[roof] = 0.1 * 20 + 12.0  # roof above the highest ground under it
    car = (np.abs(xy[:, 0] + 15) < 2.2) & (np.abs(xy[:, 1] + 15) < 0.9)
    z[car] = 0.1 * xy[car, 0] + 1.5
    trunk = np.column_stack([np.full(300, -20.0), np.full(300, 10.0), rng.uniform(-2, 8, 300)])
    pts = np.vstack([np.column_stack([xy, z]), trunk])
    truth = np.concatenate([roof | car, np.ones(300, bool)])
    truth[-300:] = trunk[:, 2] > -2 + 0.5  # trunk points near its foot count as ground level
    return pts.astype(np.float32), truth


def test_ground_removal_keeps_wide_roofs_and_removes_sloped_ground():
    pts, truth = sloped_scene()
    keep = remove_ground(pts)
    ground = ~truth
    assert keep[ground].mean() < 0.01, "sloped ground left in"
    roof = pts[:, 2] > 10
    assert keep[roof].mean() > 0.99, "a 30 m roof was taken for ground"
    car = truth[:20000] & (pts[:20000, 2] < 5)
    assert keep[:20000][car].mean() > 0.95


def test_voxel_downsample_equals_a_loop_reference():
    rng = np.random.default_rng(1)
    pts = rng.uniform(-5, 5, (3000, 3)).astype(np.float32)
    out = voxel_downsample(pts, 0.8)
    groups: dict[tuple[int, int, int], list[np.ndarray]] = {}
    for p in pts.astype(np.float64):
        groups.setdefault(tuple(np.floor(p / 0.8).astype(int)), []).append(p)
    ref = np.array([np.mean(groups[k], axis=0) for k in sorted(groups)])
    assert len(out) == len(ref)
    got = out[np.lexsort(np.floor(out / 0.8).T[::-1])]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # order of input points does not matter
    np.testing.assert_array_equal(voxel_downsample(pts[rng.permutation(len(pts))], 0.8), out)


def test_crop_and_local_frame():
    pts = np.array([[10, 0, 0], [0, 29.9, 5], [0, 30.1, 0], [25, 25, 0]], np.float32)
    np.testing.assert_array_equal(crop_radius(pts, np.zeros(3), 30.0), [True, True, False, False])
    pose = np.eye(4)
    pose[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # yaw 90 degrees
    pose[:3, 3] = [10, 0, 0]
    np.testing.assert_allclose(to_local(pts[:1], pose), [[0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(to_local(np.array([[10, 1, 2]]), pose), [[1, 0, 2]], atol=1e-6)


def test_pnv_normalise_mean_distance():
    rng = np.random.default_rng(2)
    pts = rng.normal(0, 5, (5000, 3)) + 100
    out = pnv_normalise(pts)
    assert np.all(np.abs(out) <= 1)
    full = (pts - pts.mean(0)) * 0.5 / np.linalg.norm(pts - pts.mean(0), axis=1).mean()
    assert len(out) == np.sum(np.all(np.abs(full) <= 1, axis=1))


def test_process_submap_discards_sparse_submaps():
    pts, _ = sloped_scene()
    cfg = SubmapConfig(radius=30.0, min_points=100000)
    assert process_submap(pts, np.eye(4), cfg) is None
    kept = process_submap(pts, np.eye(4), SubmapConfig(radius=30.0, min_points=10))
    assert kept is not None and np.all(np.hypot(kept[:, 0], kept[:, 1]) <= 30.0)
