"""Ray casting: analytic distances, occlusion, culling equal to brute force, porous media."""

import numpy as np
import pytest

from hotformerloc.synth.raycast import (
    cast_rays,
    cast_rays_bruteforce,
    cast_scan,
    scan_directions,
)
from hotformerloc.synth.scene import HeightField, Label, PrimitiveBuilder, Scene, Voxels

VLP16 = np.deg2rad(np.linspace(-15, 15, 16))


def flat(z: float = 0.0, size: float = 200.0) -> HeightField:
    return HeightField(-size / 2, -size / 2, 5.0, np.full((int(size / 5) + 1,) * 2, z))


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def random_scene(seed: int, porous: bool = True) -> Scene:
    rng = np.random.default_rng(seed)
    b = PrimitiveBuilder()
    for _ in range(40):
        x, y = rng.uniform(-40, 40, 2)
        b.cylinder(
            (x, y, 0),
            (x + rng.normal(0, 1), y, rng.uniform(3, 15)),
            rng.uniform(0.1, 0.6),
            Label.TRUNK,
        )
        dens = rng.uniform(0.3, 1.5) if porous else np.inf
        b.ellipsoid((x, y, rng.uniform(5, 15)), rng.uniform(1, 4, 3), Label.FOLIAGE, dens)
    for _ in range(15):
        b.box(
            (*rng.uniform(-40, 40, 2), rng.uniform(1, 5)),
            rng.uniform(0.2, 6, 3),
            rng.uniform(-np.pi, np.pi),
            Label.BUILDING,
        )
    slope = HeightField(-60, -60, 2.0, 0.05 * np.arange(61)[None, :] * 2 + np.zeros((61, 61)))
    return b.build(terrain=slope)


def test_distance_to_plane_is_exact():
    scene = Scene(terrain=flat(-1.8))
    origin = np.zeros(3)
    ret = cast_scan(scene, origin, np.eye(3), VLP16, 360, 100.0, np.random.default_rng(0))
    dirs = scan_directions(VLP16, 360)
    # analytic: downward beams hit z = -1.8 at t = 1.8 / -dz
    expected = 1.8 / -dirs[:, 2]
    down = np.flatnonzero((dirs[:, 2] < 0) & (expected < 100.0))
    assert set(ret.ray.tolist()) == set(down.tolist())
    np.testing.assert_allclose(ret.range, expected[ret.ray], rtol=1e-5, atol=1e-4)
    assert np.all(ret.label == Label.GROUND)


def test_distance_to_sphere_is_exact():
    b = PrimitiveBuilder()
    center = np.array([10.0, 0.0, 0.0])
    b.ellipsoid(center, (2.0, 2.0, 2.0), Label.BUILDING)
    scene = b.build()
    rng = np.random.default_rng(1)
    dirs = rng.normal(size=(5000, 3))
    dirs[:, 0] = np.abs(dirs[:, 0]) * 3
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    ret = cast_rays(scene, np.zeros(3), dirs, 50.0, rng)
    pts = ret.points(np.zeros(3), dirs)
    np.testing.assert_allclose(np.linalg.norm(pts - center, axis=1), 2.0, atol=1e-4)
    # rays hit iff their angle to the centre direction is below asin(2/10)
    ang = np.arccos(dirs[:, 0])
    should = np.flatnonzero(ang < np.arcsin(0.2) - 1e-6)
    assert set(should.tolist()) <= set(ret.ray.tolist())
    assert np.all(ang[ret.ray] <= np.arcsin(0.2) + 1e-6)


def test_no_return_from_behind_a_wall():
    b = PrimitiveBuilder()
    b.box((10, 0, 0), (0.25, 20, 10), 0.0, Label.WALL)  # wall x in [9.75, 10.25]
    b.ellipsoid((20, 0, 0), (3, 3, 3), Label.CAR)  # hidden behind the wall
    b.ellipsoid((-20, 0, 0), (3, 3, 3), Label.CAR)  # visible on the other side
    scene = b.build(terrain=flat(-1.5))
    ret = cast_scan(scene, np.zeros(3), np.eye(3), VLP16, 720, 100.0, np.random.default_rng(0))
    pts = ret.points(np.zeros(3), scan_directions(VLP16, 720))
    far = pts[pts[:, 0] > 9.75]
    # where the ray from the origin crosses the wall's front face x = 9.75
    at_wall = far * (9.75 / far[:, 0:1])
    shadowed = (np.abs(at_wall[:, 1]) < 20) & (np.abs(at_wall[:, 2]) < 10)
    assert np.all(far[shadowed, 0] <= 9.75 + 1e-3), "return from behind the wall"
    assert np.any(ret.label == Label.WALL)
    assert np.any((ret.label == Label.CAR) & (pts[:, 0] < 0))
    assert not np.any((ret.label == Label.CAR) & (pts[:, 0] > 0))


@pytest.mark.parametrize("seed", [0, 1])
def test_scan_culling_equals_bruteforce(seed):
    scene = random_scene(seed)
    origin = np.array([1.0, -2.0, 1.5])
    rot = rot_z(0.7) @ rot_x(0.08)  # tilted handheld sensor
    dirs = scan_directions(VLP16, 180, rot)
    a = cast_scan(scene, origin, rot, VLP16, 180, 60.0, np.random.default_rng(seed))
    b = cast_rays_bruteforce(scene, origin, dirs, 60.0, np.random.default_rng(seed))
    np.testing.assert_array_equal(a.ray, b.ray)
    np.testing.assert_allclose(a.range, b.range, rtol=1e-6)
    np.testing.assert_array_equal(a.label, b.label)
    assert len(a) > 1000


def test_aerial_culling_equals_bruteforce_with_multiple_returns():
    scene = random_scene(3)
    rng = np.random.default_rng(0)
    n = 3000
    origins = np.stack([rng.uniform(-40, 40, n), rng.uniform(-40, 40, n), np.full(n, 80.0)], 1)
    ang = rng.uniform(-0.3, 0.3, n)
    dirs = np.stack([np.sin(ang), np.zeros(n), -np.cos(ang)], 1)
    kw = dict(max_returns=4, min_separation=1.0)
    a = cast_rays(scene, origins, dirs, 200.0, np.random.default_rng(5), **kw)
    b = cast_rays_bruteforce(scene, origins, dirs, 200.0, np.random.default_rng(5), **kw)
    np.testing.assert_array_equal(a.ray, b.ray)
    np.testing.assert_allclose(a.range, b.range, rtol=1e-6)
    np.testing.assert_array_equal(a.number, b.number)
    assert a.number.max() >= 1, "expected multi-return pulses"
    # returns of a pulse are ordered and separated
    same = a.ray[1:] == a.ray[:-1]
    assert np.all(np.diff(a.range)[same] >= 1.0 - 1e-9)


def test_porous_crown_transmission_follows_beer_lambert():
    dens = 0.4
    b = PrimitiveBuilder()
    b.box((0, 0, 20), (50, 50, 2.5), 0.0, Label.FOLIAGE, dens)  # 5 m slab of foliage
    scene = b.build(terrain=flat(0.0))
    n = 20000
    origins = np.stack([np.zeros(n), np.zeros(n), np.full(n, 60.0)], 1)
    dirs = np.tile([0.0, 0.0, -1.0], (n, 1))
    ret = cast_rays(scene, origins, dirs, 100.0, np.random.default_rng(0))
    ground = np.mean(ret.label == Label.GROUND)
    assert abs(ground - np.exp(-dens * 5.0)) < 0.02
    depth = ret.range[ret.label == Label.FOLIAGE] - (60.0 - 22.5)
    # truncated exponential mean of the hit depth inside the slab
    lam = dens
    expected = 1 / lam - 5.0 * np.exp(-lam * 5) / (1 - np.exp(-lam * 5))
    assert abs(depth.mean() - expected) < 0.05


def test_same_rng_same_returns_and_seed_changes_porous():
    scene = random_scene(4)
    args = (scene, np.array([0, 0, 1.5]), np.eye(3), VLP16, 90, 50.0)
    a = cast_scan(*args, np.random.default_rng(7))
    b = cast_scan(*args, np.random.default_rng(7))
    c = cast_scan(*args, np.random.default_rng(8))
    np.testing.assert_array_equal(a.range, b.range)
    assert len(a) != len(c) or not np.array_equal(a.range, c.range)


def test_voxel_wall_occludes_and_distance_within_quarter_voxel():
    size = 0.5
    # wall of voxels at x in [10, 10.5), y in [-10, 10), z in [-2, 6)
    j, k = np.meshgrid(np.arange(-20, 20), np.arange(-4, 12), indexing="ij")
    ijk = np.stack([np.full(j.size, 20), j.ravel(), k.ravel()], 1).astype(np.int32)
    behind = np.array([[40, 0, 0]], np.int32)  # x = 20 m, hidden
    vox = Voxels(np.zeros(3), size, np.concatenate([ijk, behind]))
    scene = Scene(terrain=flat(-1.8), voxels=vox)
    ret = cast_scan(scene, np.zeros(3), np.eye(3), VLP16, 720, 100.0, np.random.default_rng(0))
    pts = ret.points(np.zeros(3), scan_directions(VLP16, 720))
    wall = ret.label == Label.OCCUPIED
    assert wall.sum() > 50
    np.testing.assert_allclose(pts[wall, 0], 10.0, atol=1e-5)  # exact entry into the wall
    assert not np.any(wall & (pts[:, 0] > 10.5)), "the hidden voxel at x = 20 m was hit"
    far = pts[pts[:, 0] > 10.0]
    at_wall = far * (10.0 / far[:, 0:1])
    shadowed = (np.abs(at_wall[:, 1]) < 9.9) & (at_wall[:, 2] > -1.9) & (at_wall[:, 2] < 5.9)
    assert np.all(far[shadowed, 0] <= 10.0 + size / 4 + 1e-6)


def test_bad_rays_rejected():
    with pytest.raises(ValueError, match="dirs"):
        cast_rays(Scene(), np.zeros(3), np.zeros((3, 2)), 10.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite"):
        cast_rays(Scene(), np.zeros(3), np.array([[np.nan, 0, 1]]), 10.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="increasing"):
        cast_scan(Scene(), np.zeros(3), np.eye(3), VLP16[::-1], 10, 10.0, np.random.default_rng(0))


def test_voxel_dda_equals_a_fine_march_reference():
    rng = np.random.default_rng(3)
    size = 0.5
    ijk = np.unique(rng.integers(-12, 12, (300, 3)), axis=0).astype(np.int32)
    scene = Scene(voxels=Voxels(np.array([0.1, -0.2, 0.05]), size, ijk))
    n = 400
    origins = rng.uniform(-1, 1, (n, 3))
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    ret = cast_rays(scene, origins, dirs, 20.0, rng)
    got = np.full(n, np.inf)
    got[ret.ray] = ret.range

    def key(c: np.ndarray) -> np.ndarray:
        return ((c[..., 0] + 100) * 1000 + c[..., 1] + 100) * 1000 + c[..., 2] + 100

    occupied = key(ijk.astype(np.int64))
    h = size / 400
    ts = np.arange(0, 20.0, h)
    for r in range(n):
        p = origins[r] + dirs[r] * ts[:, None]
        cells = np.floor((p - scene.voxels.origin) / size).astype(np.int64)
        hit = np.flatnonzero(np.isin(key(cells), occupied))
        expected = ts[hit[0]] if len(hit) else np.inf
        if np.isfinite(expected):
            assert abs(got[r] - expected) <= h + 1e-6, r
        else:
            assert not np.isfinite(got[r]) or got[r] > 20.0 - h
