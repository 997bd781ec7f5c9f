"""Geometric verification and re-ranking (hotformerloc.index.rerank)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from hotformerloc.config import ConfigError, from_dict
from hotformerloc.data import Benchmark
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval.protocols import EvalRun, evaluate_pnv
from hotformerloc.index import rerank as rr
from hotformerloc.index.rerank import (
    RerankConfig,
    RerankInputError,
    RerankRetriever,
    Verification,
    prepare,
    rerank,
    verify,
    verify_prepared,
    yaw_of,
)
from hotformerloc.io import read_pointcloud
from hotformerloc.io.poses import read_poses_csv
from hotformerloc.synth.config import GeneratorConfig
from hotformerloc.synth.generate import generate

CFG = RerankConfig()


def _layout(seed: int, trees: int = 45, radius: float = 30.0) -> dict[str, np.ndarray]:
    """A random forest-and-walls scene: per tree (x, y, trunk height, trunk radius, crown
    radius), per wall (x0, y0, x1, y1, height)."""
    rng = np.random.default_rng(seed)
    r = radius * np.sqrt(rng.uniform(0, 1, trees))
    a = rng.uniform(0, 2 * math.pi, trees)
    tree = np.stack(
        [
            r * np.cos(a),
            r * np.sin(a),
            rng.uniform(2.5, 6.0, trees),
            rng.uniform(0.15, 0.4, trees),
            rng.uniform(1.2, 3.0, trees),
        ],
        1,
    )
    start = rng.uniform(-radius, radius, (3, 2)) * 0.7
    ang = rng.uniform(0, math.pi, 3)
    length = rng.uniform(6, 14, 3)
    end = start + length[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1)
    wall = np.concatenate([start, end, rng.uniform(2, 5, (3, 1))], 1)
    return {"tree": tree, "wall": wall}


def _sample(layout: dict[str, np.ndarray], seed: int, density: float = 1.0) -> np.ndarray:
    """Points on the scene's surfaces (an independent sampling per ``seed``), (N, 3)."""
    rng = np.random.default_rng(seed)
    parts = []
    for x, y, h, tr, cr in layout["tree"]:
        n = int(30 * h * density)
        t = rng.uniform(0, 2 * math.pi, n)
        parts.append(np.stack([x + tr * np.cos(t), y + tr * np.sin(t), rng.uniform(0, h, n)], 1))
        m = int(25 * cr * cr * density)
        d = rng.normal(size=(m, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        parts.append(np.array([x, y, h + 0.8 * cr]) + d * np.array([cr, cr, 0.8 * cr]))
    for x0, y0, x1, y1, h in layout["wall"]:
        n = int(4 * math.hypot(x1 - x0, y1 - y0) * h * density)
        s = rng.uniform(0, 1, n)
        parts.append(np.stack([x0 + s * (x1 - x0), y0 + s * (y1 - y0), rng.uniform(0, h, n)], 1))
    return np.concatenate(parts)


def _pose(yaw_deg: float, t: tuple[float, float, float], roll: float = 0.0, pitch: float = 0.0):
    y, r, p = (math.radians(v) for v in (yaw_deg, roll, pitch))
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    out = np.eye(4)
    out[:3, :3] = rz @ ry @ rx
    out[:3, 3] = t
    return out


def _apply(pose: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ pose[:3, :3].T + pose[:3, 3]


def _errors(est: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    err = np.linalg.inv(truth) @ est
    cos = np.clip((np.trace(err[:3, :3]) - 1) / 2, -1, 1)
    return float(np.linalg.norm(err[:3, 3])), math.degrees(math.acos(cos))


def _query_of(
    layout: dict[str, np.ndarray], truth: np.ndarray, seed: int, crop: float = 24.0
) -> np.ndarray:
    """The scene sampled anew, cropped to ``crop`` m around the query origin, expressed in
    the query frame (``truth`` maps query -> scene), with 2 cm noise."""
    pts = _sample(layout, seed)
    local = _apply(np.linalg.inv(truth), pts)
    local = local[np.hypot(local[:, 0], local[:, 1]) <= crop]
    return local + np.random.default_rng(seed).normal(0, 0.02, local.shape)


@pytest.fixture(scope="module")
def scene() -> tuple[dict[str, np.ndarray], np.ndarray]:
    layout = _layout(1)
    return layout, _sample(layout, 100)


@pytest.mark.parametrize(
    ("yaw", "t", "roll", "pitch"),
    [
        (180.0, (3.0, -2.0, 0.4), 0.0, 0.0),
        (-123.0, (-4.5, 1.5, -0.8), 2.0, -1.5),
        (37.0, (1.0, 5.0, 1.2), -1.0, 2.5),
    ],
)
def test_recovers_known_transform(scene, yaw, t, roll, pitch) -> None:
    layout, candidate = scene
    truth = _pose(yaw, t, roll, pitch)
    query = _query_of(layout, truth, seed=7)
    v = verify(query, candidate, CFG)
    terr, rerr = _errors(v.pose, truth)
    assert terr < 0.1 and rerr < 0.5, (terr, rerr)
    assert v.pose.dtype == np.float64 and v.pose.shape == (4, 4)
    assert v.yaw_deg == pytest.approx(yaw_of(truth), abs=0.5)
    assert v.fitness > 0.9
    assert 0 < v.rmse < 0.5  # independent samplings of the surfaces


def test_fitness_separates_right_from_unrelated(scene) -> None:
    layout, candidate = scene
    truth = _pose(75.0, (2.0, 3.0, 0.2))
    query = _query_of(layout, truth, seed=8)
    unrelated = _sample(_layout(2), 100)
    right = verify(query, candidate, CFG)
    wrong = verify(query, unrelated, CFG)
    assert right.fitness > 0.9
    assert wrong.fitness < 0.6
    assert right.fitness - wrong.fitness > 0.35
    assert right.rmse < wrong.rmse


def test_point_order_does_not_matter(scene) -> None:
    layout, candidate = scene
    query = _query_of(layout, _pose(-60.0, (1.0, -1.0, 0.0)), seed=9)
    rng = np.random.default_rng(0)
    a = verify(query, candidate, CFG)
    b = verify(query[rng.permutation(len(query))], candidate[rng.permutation(len(candidate))], CFG)
    np.testing.assert_allclose(b.pose, a.pose, atol=1e-6)
    assert b.fitness == pytest.approx(a.fitness, abs=1e-9)
    assert b.converged == a.converged


def test_yaw_is_in_half_open_interval() -> None:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[1, 0] = -0.0
    assert yaw_of(flip) == 180.0
    assert yaw_of(_pose(-179.0, (0, 0, 0))) == pytest.approx(-179.0)
    assert yaw_of(_pose(90.0, (0, 0, 0))) == pytest.approx(90.0)


def test_coarse_correlation_equals_brute_force(scene) -> None:
    """The FFT correlation peak equals a direct sum over every yaw and shift."""
    layout, candidate = scene
    cfg = RerankConfig(bev_radius=12.0, max_translation=6.0, yaw_step_deg=30.0)
    query = _query_of(layout, _pose(60.0, (2.0, -3.0, 0.0)), seed=3, crop=12.0)
    q, c = prepare(query, cfg), prepare(candidate, cfg)
    peak = rr._coarse(rr._query_spectra(q, cfg), c, cfg)[0]
    size = cfg.grid_size
    target = rr._bev_target(c.points, c.radius, cfg, cfg.bev_cell)
    best = (-np.inf, 0.0, 0.0, 0.0)
    for yaw in rr._yaws(cfg):
        image = rr._bev_queries(q.points, np.array([yaw]), cfg)[0]
        cells = np.argwhere(image > 0)
        for si in range(-6, 7):
            for sj in range(-6, 7):
                if si * si + sj * sj > 36:
                    continue
                score = target[(cells[:, 0] + si) % size, (cells[:, 1] + sj) % size].sum()
                if score > best[0] + 1e-6:
                    best = (score, float(yaw), float(si), float(sj))
    assert peak == pytest.approx(best[1:], abs=1e-9)


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.zeros((100, 2)), "shape (100, 2)"),
        (np.zeros(300), "shape (300,)"),
        (np.full((50, 3), np.nan), "NaN"),
        (np.array([["a", "b", "c"]]), "numeric"),
        (np.random.default_rng(0).uniform(0, 0.3, (500, 3)), "at least 20 needed"),
    ],
)
@pytest.mark.parametrize("role", ["query", "candidate"])
def test_bad_input_names_cloud_and_problem(scene, points, problem, role) -> None:
    _, good = scene
    args = (points, good) if role == "query" else (good, points)
    with pytest.raises(RerankInputError, match=role) as err:
        verify(*args, CFG)
    assert problem in str(err.value)
    assert isinstance(err.value, ValueError)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="gicp_distances"):
        RerankConfig(gicp_distances=(0.5, 1.0))
    with pytest.raises(ConfigError, match="yaw_step_deg"):
        RerankConfig(yaw_step_deg=0)
    with pytest.raises(ConfigError, match="min_points"):
        RerankConfig(min_points=3)


def test_prepared_with_other_config_is_refused(scene) -> None:
    _, cloud = scene
    with pytest.raises(RerankInputError, match="another RerankConfig"):
        verify_prepared(prepare(cloud, CFG), prepare(cloud, CFG), RerankConfig(voxel=1.0))


def test_rerank_orders_by_fitness_stable_on_ties(scene) -> None:
    layout, candidate = scene
    truth = _pose(140.0, (-2.0, 2.0, 0.3))
    query = _query_of(layout, truth, seed=11)
    unrelated = _sample(_layout(3), 100)
    partial = candidate[candidate[:, 0] > 0.0]  # half of the place: fewer inliers
    res = rerank(query, [unrelated, partial, candidate, candidate.copy()], CFG)
    assert res.order == (2, 3, 1, 0)
    fit = [v.fitness for v in res.verifications]
    assert fit[2] == fit[3] > fit[1] > fit[0]
    assert res.best is res.verifications[2]
    terr, rerr = _errors(res.best.pose, truth)
    assert terr < 0.1 and rerr < 0.5
    with pytest.raises(RerankInputError, match=r"candidates\[1\]: empty"):
        rerank(query, [candidate, np.zeros((0, 3))], CFG)
    with pytest.raises(RerankInputError, match="no candidate"):
        rerank(query, [], CFG)


@pytest.fixture(scope="module")
def toy() -> tuple[list[np.ndarray], np.ndarray]:
    """Items: 0 the query, 1 and 3 unrelated places, 2 the query's place; descriptors
    that rank 1 before 2 before 3 for the query."""
    layout = _layout(4)
    query = _query_of(layout, _pose(100.0, (2.0, 1.0, 0.0)), seed=12)
    clouds = [query, _sample(_layout(5), 1), _sample(layout, 2), _sample(_layout(6), 3)]
    desc = np.array([[0.0], [1.0], [2.0], [3.0]])
    return clouds, desc


def test_retriever_reorders_top_k(toy) -> None:
    clouds, desc = toy
    base = DescriptorRetriever(desc)
    retr = RerankRetriever(base, clouds, top_k=3)
    r = retr.rank(np.array([0]), np.array([1, 2, 3]), 3)
    assert r.indices[0, 0] == 1  # the database position of item 2
    assert sorted(r.indices[0, 1:].tolist()) == [0, 2]
    fit = [retr.verification(0, int(i)).fitness for i in np.array([1, 2, 3])[r.indices[0]]]
    np.testing.assert_allclose(r.distances[0], 1.0 - np.array(fit))
    assert np.all(np.diff(r.distances[0]) >= 0)
    assert set(retr.verified_pairs) == {(0, 1), (0, 2), (0, 3)}
    # only the top-2 are verified; the tail keeps base order with distances > 1
    r2 = RerankRetriever(base, clouds, top_k=2).rank(np.array([0]), np.array([3, 1, 2]), 3)
    assert r2.indices.tolist() == [[2, 1, 0]]
    assert r2.distances[0, 2] == 1.0 and r2.distances[0, 1] < 1.0
    # exclusion is honoured and short databases are padded
    excl = np.array([[False, True, False]])
    r3 = retr.rank(np.array([0]), np.array([1, 2, 3]), 4, exclude=excl)
    assert sorted(r3.indices[0, :2].tolist()) == [0, 2]
    assert r3.indices[0, 2:].tolist() == [-1, -1]
    assert np.isinf(r3.distances[0, 2:]).all()


def test_retriever_through_protocol(toy) -> None:
    """The place of item 2 is the query's: re-ranking turns AR@1 from 0 to 100 %."""
    clouds, desc = toy
    runs = [
        EvalRun("q", np.array([0]), np.array([[0.0, 0.0]]), is_query=np.array([True])),
        EvalRun("db", np.array([1, 2, 3]), np.array([[100.0, 0.0], [1.0, 0.0], [200.0, 0.0]])),
    ]
    base = DescriptorRetriever(desc)
    before = evaluate_pnv(base, runs, threshold=5.0, k=3, database_runs=["db"])
    after = evaluate_pnv(RerankRetriever(base, clouds, 3), runs, 5.0, k=3, database_runs=["db"])
    assert before.r1 == 0.0 and after.r1 == 100.0


def test_retriever_names_bad_item(toy) -> None:
    clouds, desc = toy
    bad = [*clouds[:3], np.full((10, 3), np.nan)]
    retr = RerankRetriever(DescriptorRetriever(desc), lambda i: bad[i], top_k=3)
    with pytest.raises(RerankInputError, match="item 3: 10 point"):
        retr.rank(np.array([0]), np.array([1, 2, 3]), 3)


def test_verification_is_frozen(scene) -> None:
    layout, candidate = scene
    v = verify(_query_of(layout, _pose(0.0, (0, 0, 0)), seed=5), candidate, CFG)
    assert isinstance(v, Verification)
    with pytest.raises(AttributeError):
        v.fitness = 0.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Frames on generated data: poses.csv maps submap frame -> world, so the query -> candidate
# transform is inv(T_candidate) @ T_query.

TINY = {
    "seed": 3,
    "ground": {
        "spacing": 40.0,
        "window": 2.0,
        "scans": 2,
        "submap": {"radius": 25.0, "min_points": 200},
    },
    "aerial": {
        "grid": 40.0,
        "sensor": {"pulse_density": 2.0, "max_returns": 3},
        "submap": {"radius": 25.0, "min_points": 200},
    },
    "split": {"regions": 1, "region_size": 60.0, "buffer": 20.0},
    "worlds": [
        {
            "name": "forest",
            "kind": "forest",
            "params": {
                "size_x": 110.0,
                "size_y": 110.0,
                "route_length": 200.0,
                "route_margin": 30.0,
            },
            "traversals": [
                {"name": "ground_a", "sensor": {"beams": 16, "columns": 360}},
                {
                    "name": "ground_b",
                    "reverse": True,
                    "lateral_offset": 2.0,
                    "sensor": {"beams": 16, "columns": 360},
                },
            ],
        }
    ],
}


def _poses_csv(path: Path) -> dict[str, np.ndarray]:
    table = read_poses_csv(path)
    return {f"{t:.6f}": p for t, p in zip(table.timestamps.tolist(), table.poses, strict=True)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Benchmark, np.ndarray]:
    """A tiny generated benchmark and each row's pose from its poses.csv."""
    root = tmp_path_factory.mktemp("bench")
    generate(from_dict(GeneratorConfig, TINY), root, workers=1)
    bench = Benchmark.load(root)
    poses = np.stack(
        [
            _poses_csv(root / bench.world[i] / bench.sequence[i] / "poses.csv")[
                f"{bench.timestamp[i]:.6f}"
            ]
            for i in range(len(bench))
        ]
    )
    return bench, poses


def _overlap(query: np.ndarray, candidate: np.ndarray, pose: np.ndarray) -> float:
    d, _ = cKDTree(candidate).query(_apply(pose, query), distance_upper_bound=1.0)
    return float(np.isfinite(d).mean())


def test_true_transform_of_generated_pairs(generated) -> None:
    """inv(T_c) @ T_q lays a query onto its nearest revisit (ground and aerial) while the
    reversed composition does not; verification recovers it on ground-ground pairs."""
    bench, poses = generated
    ground, aerial = bench.select(source="ground"), bench.select(source="aerial")
    assert len(ground) >= 6 and len(aerial) >= 1
    checked = 0
    for i in ground:
        query = bench.load_cloud(i)
        np.testing.assert_allclose(read_pointcloud(bench.path(i)).pose, poses[i], atol=1e-5)
        other = ground[bench.sequence[ground] != bench.sequence[i]]
        for pool in (aerial, other):
            j = pool[np.argmin(np.linalg.norm(bench.xy[pool] - bench.xy[i], axis=1))]
            cand = bench.load_cloud(j)
            truth = np.linalg.inv(poses[j]) @ poses[i]
            wrong = np.linalg.inv(poses[i]) @ poses[j]
            assert _overlap(query, cand, truth) > 0.15 + _overlap(query, cand, wrong)
        j = other[np.argmin(np.linalg.norm(bench.xy[other] - bench.xy[i], axis=1))]
        truth = np.linalg.inv(poses[j]) @ poses[i]
        v = verify(query, bench.load_cloud(j), CFG)
        terr, rerr = _errors(v.pose, truth)
        assert terr < 1.0 and rerr < 2.0, (i, j, terr, rerr)
        checked += 1
    assert checked == len(ground)


@pytest.fixture(scope="module")
def lineup(scene) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """A query of the scene's place, and 5 candidates: 3 unrelated places, half of the
    place, the place (best)."""
    layout, candidate = scene
    truth = _pose(-70.0, (3.0, -1.0, 0.2))
    query = _query_of(layout, truth, seed=21)
    cands = [_sample(_layout(30 + i), 40 + i) for i in range(3)]
    cands += [candidate[candidate[:, 1] > 0.0], candidate]
    return query, cands, truth


def test_fast_path_matches_reference_on_refined(lineup) -> None:
    """The pyramid search + pruning refines the same hypotheses as the reference (every
    yaw at full resolution, every candidate refined): same poses and fitness."""
    query, cands, truth = lineup
    fast, ref = RerankConfig(refine_top=2), RerankConfig().reference
    assert ref.coarse_factor == 1 and ref.refine_top == 0
    vf = rr.verify_many(prepare(query, fast), [prepare(c, fast) for c in cands], fast)
    vr = rr.verify_many(prepare(query, ref), [prepare(c, ref) for c in cands], ref)
    assert all(v.refined for v in vr)
    assert [v.refined for v in vf].count(True) == 2
    for a, b in zip(vf, vr, strict=True):
        if a.refined:
            np.testing.assert_allclose(a.pose, b.pose, atol=1e-9)
            assert a.fitness == b.fitness and a.rmse == b.rmse
        else:
            assert a.rmse == math.inf and not a.converged and 0 <= a.fitness <= 1
    assert rr.order_of(vf)[0] == rr.order_of(vr)[0] == 4
    terr, rerr = _errors(vf[4].pose, truth)
    assert terr < 0.1 and rerr < 0.5


@pytest.mark.parametrize("refine_top", [1, 2])
def test_pruning_keeps_the_best_candidate(lineup, refine_top) -> None:
    """The candidate the reference finds best is always refined; unrefined ones rank
    after every refined one, by coarse fitness."""
    query, cands, _ = lineup
    cfg = RerankConfig(refine_top=refine_top)
    res = rerank(query, cands, cfg)
    ref = rerank(query, cands, cfg.reference)
    assert res.order[0] == ref.order[0] == 4 and res.best.refined
    refined = [i for i in res.order if res.verifications[i].refined]
    assert list(res.order[: len(refined)]) == refined and len(refined) == refine_top
    rest = [res.verifications[i].fitness for i in res.order[refine_top:]]
    assert rest == sorted(rest, reverse=True)


def test_results_do_not_depend_on_threads(lineup) -> None:
    """One thread or several: the same verifications, bit for bit (threaded FFTs split
    the yaws; GICP's iterations stay on one thread), and torch's thread count is restored."""
    query, cands, _ = lineup
    before = torch.get_num_threads()
    runs = []
    for threads in (1, 2, 3):
        cfg = RerankConfig(num_threads=threads, refine_top=0)
        runs.append(rr.verify_many(prepare(query, cfg), [prepare(c, cfg) for c in cands], cfg))
        assert torch.get_num_threads() == before
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a.pose, b.pose)
            assert (a.fitness, a.rmse, a.converged) == (b.fitness, b.rmse, b.converged)


def test_batched_coarse_yaws_match_per_candidate(lineup) -> None:
    """The batched coarse-level pass gives each candidate the yaws a pass on that
    candidate alone gives (batch size and chunking do not matter)."""
    query, cands, _ = lineup
    cfg = replace(CFG, coarse_factor=2)
    q = prepare(query, cfg)
    cs = [prepare(c, cfg) for c in cands] * 2  # 10 candidates: two chunks
    spec = rr._query_spectra(q, cfg, cfg.bev_cell * cfg.coarse_factor)
    together = rr._coarse_yaws(spec, cs, cfg)
    for c, ys in zip(cs, together, strict=True):
        np.testing.assert_array_equal(ys, rr._coarse_yaws(spec, [c], cfg)[0])


def test_retriever_puts_unrefined_after_refined(lineup) -> None:
    query, cands, _ = lineup
    clouds = [query, *cands]
    desc = np.arange(len(clouds), dtype=np.float64)[:, None]
    retr = RerankRetriever(DescriptorRetriever(desc), clouds, 5, RerankConfig(refine_top=2))
    r = retr.rank(np.array([0]), np.arange(1, 6), 5)
    assert r.indices[0, 0] == 4
    assert r.distances[0, 0] < r.distances[0, 1] < 1.0
    assert (r.distances[0, 2:] == 1.0).all()
    # the same list again: the same (memoised) verifications
    again = retr.rank(np.array([0]), np.arange(1, 6), 5)
    np.testing.assert_array_equal(again.indices, r.indices)
    pruned = int(np.arange(1, 6)[r.indices[0, 4]])
    assert not retr._memo[(0, pruned)].refined
    assert retr.verification(0, pruned).refined  # asked alone: verified again, refined
