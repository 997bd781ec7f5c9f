"""Worlds of the synthetic benchmark: determinism, routes, per-visit changes, real geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotformerloc.synth.scene import Label, Scene
from hotformerloc.synth.worlds import (
    Epoch,
    ForestConfig,
    ForestWorld,
    RealConfig,
    RealWorld,
    UrbanConfig,
    UrbanWorld,
    World,
    build_world,
)
from hotformerloc.synth.worlds.terrain import (
    FootprintIndex,
    distance_to_segments,
    resample_polyline,
    segments,
)

FOREST = ForestConfig(size_x=160.0, size_y=150.0, route_length=320.0)
URBAN = UrbanConfig(size_x=220.0, size_y=220.0, route_length=500.0)
# A loop over the lawns west of the Autzen offices, inside a 200 m x 200 m crop.
REAL_CROP = (70.0, 1060.0, 270.0, 1260.0)
REAL_ROUTE = (
    (124, 1108), (190, 1114), (212, 1112), (224, 1116), (222, 1126), (186, 1162),
    (166, 1182), (150, 1172), (148, 1136), (134, 1118), (124, 1108),
)  # fmt: skip


@pytest.fixture(scope="module")
def forest() -> ForestWorld:
    return ForestWorld(FOREST, seed=3)


@pytest.fixture(scope="module")
def urban() -> UrbanWorld:
    return UrbanWorld(URBAN, seed=5)


@pytest.fixture(scope="module")
def real(shared_data: Path) -> RealWorld:
    src = shared_data / "autzen_2010_als" / "autzen_2010_points.npz"
    return RealWorld(RealConfig(source=str(src), crop=REAL_CROP, route=REAL_ROUTE), seed=0)


def _arrays(scene: Scene) -> list[np.ndarray]:
    out = [scene.terrain.heights] if scene.terrain is not None else []
    for prims in (scene.cylinders, scene.ellipsoids, scene.boxes):
        out += [np.asarray(v) for v in vars(prims).values()]
    if scene.voxels is not None:
        out += [scene.voxels.origin, scene.voxels.ijk]
    return out


def _same(a: Scene, b: Scene) -> bool:
    xa, xb = _arrays(a), _arrays(b)
    return len(xa) == len(xb) and all(
        u.shape == v.shape and np.array_equal(u, v) for u, v in zip(xa, xb, strict=True)
    )


@pytest.mark.parametrize(
    ("cls", "cfg"), [(ForestWorld, FOREST), (UrbanWorld, URBAN)], ids=["forest", "urban"]
)
def test_scene_deterministic_in_seed(cls: type, cfg: object) -> None:
    ep = Epoch(growth_years=2.0, seed=4)
    a, b, c = cls(cfg, seed=11), cls(cfg, seed=11), cls(cfg, seed=12)
    assert _same(a.scene(ep), b.scene(ep))
    assert np.array_equal(a.route(), b.route())
    assert not _same(a.scene(ep), c.scene(ep))


@pytest.mark.parametrize("which", ["forest", "urban", "real"])
def test_route_closed_inside_spaced_and_free(which: str, request: pytest.FixtureRequest) -> None:
    world: World = request.getfixturevalue(which)
    r = world.route()
    assert r.ndim == 2 and r.shape[1] == 2 and len(r) > 10
    assert np.array_equal(r[0], r[-1])
    x0, y0, x1, y1 = world.extent
    assert (r >= np.array([x0, y0]) + 40 - 1e-6).all()
    assert (r <= np.array([x1, y1]) - 40 + 1e-6).all()
    assert np.linalg.norm(np.diff(r, axis=0), axis=1).max() <= 5.0
    assert world.free_mask(r, 1.0).all()


def test_forest_route_length_reaches_target() -> None:
    world = ForestWorld(ForestConfig(), seed=1)
    length = np.linalg.norm(np.diff(world.route(), axis=0), axis=1).sum()
    assert abs(length - 900.0) < 30.0


def _trunks(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    cyl = scene.cylinders
    m = cyl.label == Label.TRUNK
    return cyl.p0[m, :2].astype(np.float64), cyl.radius[m].astype(np.float64)


def test_forest_tracks_and_clearings_are_treeless(forest: ForestWorld) -> None:
    xy, radius = _trunks(forest.scene(Epoch()))
    a, b = segments(forest.tracks)
    assert (distance_to_segments(xy, a, b) - radius >= FOREST.track_width / 2).all()
    logs = forest.logs
    for end in (logs.p0, logs.p1):
        gap = distance_to_segments(end[:, :2], a, b) - logs.radius
        assert (gap >= FOREST.track_width / 2).all()
    assert len(forest.clearings) == FOREST.n_clearings
    for cx, cy, r, amp2, amp3, _, _ in forest.clearings:
        inner = r * (1 - amp2 - amp3)
        assert (np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) >= inner).all()
    assert not forest.in_clearing(xy).any()
    assert not forest.free_mask(xy, 0.0).any()  # trunks are obstacles


def test_forest_species_mix(forest: ForestWorld) -> None:
    trees = forest.trees
    assert set(np.unique(trees.species)) == {0, 1, 2}
    crowns_per_tree = np.bincount(trees.crown_tree, minlength=len(trees))
    assert len(set(crowns_per_tree)) >= 3  # cone layers, round crown + lobes, clumps
    assert trees.deciduous.any() and not trees.deciduous.all()
    assert len(forest.scene(Epoch()).ellipsoids) > len(trees.crown_tree)  # + shrubs


def test_forest_leaf_off_only_thins_deciduous(forest: ForestWorld) -> None:
    ref = forest.scene(Epoch()).ellipsoids.density.astype(np.float64)
    off = forest.scene(Epoch(leaf_off=True)).ellipsoids.density.astype(np.float64)
    dec = forest.trees.crown_deciduous
    n = len(dec)
    assert off[:n][dec].sum() < ref[:n][dec].sum()
    np.testing.assert_allclose(off[:n][dec], FOREST.leaf_off_factor * ref[:n][dec], rtol=1e-6)
    assert np.array_equal(off[:n][~dec], ref[:n][~dec])
    assert np.array_equal(off[n:], ref[n:])  # understory unchanged


def test_forest_foliage_scales_porous_density(forest: ForestWorld) -> None:
    ref, thin = forest.scene(Epoch()), forest.scene(Epoch(foliage=0.4))
    np.testing.assert_allclose(thin.ellipsoids.density, 0.4 * ref.ellipsoids.density, rtol=1e-6)
    assert np.isfinite(ref.ellipsoids.density).all()
    assert np.isinf(thin.cylinders.density).all()
    assert np.array_equal(thin.cylinders.p1, ref.cylinders.p1)


def test_forest_growth_taller_and_saplings(forest: ForestWorld) -> None:
    ref, grown = forest.scene(Epoch()), forest.scene(Epoch(growth_years=6.0))

    def top(s: Scene) -> float:
        return float((s.ellipsoids.center[:, 2] + s.ellipsoids.radii[:, 2]).max())

    assert top(grown) > top(ref) + 0.1
    area_ha = FOREST.size_x * FOREST.size_y / 1e4
    expected = int(np.floor(FOREST.sapling_rate * area_ha * 6.0))
    assert expected > 0
    assert len(_trunks(grown)[0]) == len(_trunks(ref)[0]) + expected
    sap_xy = forest.saplings.base[:expected, :2]
    a, b = segments(forest.tracks)
    assert (distance_to_segments(sap_xy, a, b) >= FOREST.track_width / 2).all()


def test_urban_buildings_off_roads(urban: UrbanWorld) -> None:
    bld = urban.scene(Epoch()).boxes
    bld_m = bld.label == Label.BUILDING
    assert bld_m.sum() >= 5
    c, h, yaw = bld.center[bld_m], bld.half[bld_m], bld.yaw[bld_m]
    t = np.linspace(-1, 1, 41)
    local = np.concatenate([np.stack([t, s * np.ones_like(t)], 1) for s in (-1, 1)])
    local = np.concatenate([local, local[:, ::-1]])  # all four edges
    lx = local[None, :, 0] * h[:, None, 0]
    ly = local[None, :, 1] * h[:, None, 1]
    cs, sn = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    pts = np.stack([c[:, None, 0] + cs * lx - sn * ly, c[:, None, 1] + sn * lx + cs * ly], -1)
    pts = pts.reshape(-1, 2).astype(np.float64)
    for a, b, w in zip(urban.road_a, urban.road_b, urban.road_width, strict=True):
        gap = distance_to_segments(pts, a[None], b[None]) - w / 2
        assert gap.min() > URBAN.sidewalk_width
    assert len(urban.road_a) >= 5  # grid plus the diagonal


def _cars(scene: Scene) -> np.ndarray:
    boxes = scene.boxes
    m = boxes.label == Label.CAR
    return np.column_stack([boxes.center[m], boxes.half[m], boxes.yaw[m]])


def test_urban_cars_resampled_per_visit(urban: UrbanWorld) -> None:
    s1, s1b, s2 = (urban.scene(Epoch(seed=k)) for k in (1, 1, 2))
    assert _same(s1, s1b)
    c1, c2 = _cars(s1), _cars(s2)
    assert len(c1) > 10
    assert c1.shape != c2.shape or not np.array_equal(c1, c2)
    m1, m2 = s1.boxes.label != Label.CAR, s2.boxes.label != Label.CAR
    assert np.array_equal(s1.boxes.center[m1], s2.boxes.center[m2])
    assert np.array_equal(s1.boxes.half[m1], s2.boxes.half[m2])
    n_slots = len(urban.car_slots)
    n_cars = (c1[:, 5] > 0.3).sum()  # bodies (cabins are thinner)
    assert 0.3 * n_slots < n_cars <= n_slots


def test_urban_leaf_off_and_growth(urban: UrbanWorld) -> None:
    ref = urban.scene(Epoch())
    off = urban.scene(Epoch(leaf_off=True, growth_years=3.0))
    assert off.ellipsoids.density.sum() < 0.5 * ref.ellipsoids.density.sum()
    assert off.ellipsoids.radii[:, 0].max() > ref.ellipsoids.radii[:, 0].max()


def test_real_world(real: RealWorld) -> None:
    pts = real.aerial_points()
    assert pts.dtype == np.float32 and len(pts) > 100_000
    x0, y0, x1, y1 = real.extent
    assert (x1 - x0, y1 - y0) == (200.0, 200.0)
    assert (pts[:, :2] >= [x0, y0]).all() and (pts[:, 0] < x1).all() and (pts[:, 1] < y1).all()
    np.testing.assert_allclose(real.shift, [REAL_CROP[0], REAL_CROP[1], 0.0])
    scene = real.scene(Epoch())
    assert scene.voxels is not None and len(scene.voxels) > 1000
    assert _same(scene, real.scene(Epoch(leaf_off=True, growth_years=3.0, seed=9)))
    # Ground-ish points: the lowest 5% of each 1 m cell lie on the DTM.
    cell = np.floor(pts[:, 1]).astype(np.int64) * 100_000 + np.floor(pts[:, 0]).astype(np.int64)
    order = np.lexsort((pts[:, 2], cell))
    cs = cell[order]
    start = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    count = np.diff(np.r_[start, len(cs)])
    rank = np.arange(len(cs)) - np.repeat(start, count)
    low = order[rank < np.maximum(1, np.ceil(0.05 * np.repeat(count, count)))]
    dz = pts[low, 2] - real.ground_height(pts[low, 0], pts[low, 1])
    assert abs(np.median(dz)) < 0.5
    # Voxels are above the DTM by at least min_height (up to the voxel size).
    v = scene.voxels
    top = v.origin + (v.ijk + 1.0) * v.size
    half = v.size / 2
    assert (top[:, 2] - real.ground_height(top[:, 0] - half, top[:, 1] - half) > 0.0).all()


@pytest.mark.slow
def test_real_default_autzen_world(shared_data: Path) -> None:
    src = shared_data / "autzen_2010_als" / "autzen_2010_points.npz"
    world = RealWorld(RealConfig(source=str(src)), seed=0)
    assert world.extent == (0.0, 0.0, 500.0, 500.0)
    r = world.route()
    assert np.array_equal(r[0], r[-1])
    assert np.linalg.norm(np.diff(r, axis=0), axis=1).max() <= 5.0
    assert (r >= 40).all() and (r <= 460).all()
    assert world.free_mask(r, 1.0).all()


def test_real_default_route_needs_its_crop(shared_data: Path) -> None:
    src = shared_data / "autzen_2010_als" / "autzen_2010_points.npz"
    with pytest.raises(ValueError, match="leaves the crop"):
        RealWorld(RealConfig(source=str(src), crop=REAL_CROP), seed=0)


def test_build_world_from_dict() -> None:
    w = build_world("forest", {"size_x": 130, "size_y": 130, "clearing_radius": [5, 8]}, 1, "f1")
    assert isinstance(w, ForestWorld) and w.name == "f1" and w.kind == "forest"
    assert w.cfg.clearing_radius == (5.0, 8.0) and w.extent == (0.0, 0.0, 130.0, 130.0)
    with pytest.raises(ValueError, match="tree_density") as err:
        build_world("forest", {"tree_density": 3.0}, 1, "f")
    assert "tree_area" in str(err.value)
    with pytest.raises(ValueError, match="diagonal_road"):
        build_world("urban", {"diagonal_road": "yes"}, 1, "u")
    with pytest.raises(ValueError, match="crop"):
        build_world("real", {"crop": [0, 0, 10]}, 1, "r")
    with pytest.raises(ValueError, match="n_clearings"):
        build_world("forest", {"n_clearings": 2.5}, 1, "f")
    with pytest.raises(ValueError, match="unknown world kind"):
        build_world("desert", {}, 1, "d")


def test_polyline_and_footprint_helpers() -> None:
    poly = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 3.0]])
    r = resample_polyline(poly, 2.0)
    assert np.linalg.norm(np.diff(r, axis=0), axis=1).max() <= 2.0 + 1e-12
    assert all((r == p).all(1).any() for p in poly)
    fp = FootprintIndex(
        discs=np.array([[0.0, 0.0, 0.5]]), boxes=np.array([[10.0, 0.0, 2.0, 0.5, np.pi / 2]])
    )
    q = np.array([[0.0, 1.4], [0.0, 1.6], [10.0, 1.9], [10.0, 3.1], [11.4, 0.0], [11.6, 0.0]])
    assert fp.free(q, 1.0).tolist() == [False, True, False, True, False, True]
