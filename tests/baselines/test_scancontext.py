"""Scan Context baseline: descriptor bins, shift/yaw convention, distance, retrieval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hotformerloc.baselines import (
    ScanContextConfig,
    ScanContextRetriever,
    ring_key,
    sc_distance,
    sc_distance_pairs,
    scan_context,
    sector_key,
)


def rot_z(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 3) points counter-clockwise about +z by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return points @ m.T


def make_place(rng: np.random.Generator, n_objects: int = 14) -> np.ndarray:
    """A synthetic place: ground disk plus random cylinders (trees/poles) and boxes
    (buildings), points sampled inside the volumes. Sensor at the origin, ground at z=-1.7."""
    ground = np.column_stack(
        [
            *(rng.uniform(-60, 60, (2, 1500))),
            -1.7 + 0.05 * rng.standard_normal(1500),
        ]
    )
    parts = [ground]
    for i in range(n_objects):
        cx, cy = rng.uniform(-55, 55, 2)
        top = rng.uniform(2.0, 14.0)
        n = 200
        if i % 2 == 0:  # cylinder
            rad = rng.uniform(0.5, 3.0)
            a = rng.uniform(0, 2 * np.pi, n)
            r = rad * np.sqrt(rng.uniform(0, 1, n))
            xy = np.column_stack([cx + r * np.cos(a), cy + r * np.sin(a)])
        else:  # box
            half = rng.uniform(2.0, 8.0, 2)
            xy = np.array([cx, cy]) + rng.uniform(-1, 1, (n, 2)) * half
        z = rng.uniform(-1.7, top, n)
        parts.append(np.column_stack([xy, z]))
    return np.concatenate(parts)


# --------------------------------------------------------------------------- descriptor


def test_hand_built_cloud_exact_bins() -> None:
    # 4 rings of 2 m, 8 sectors of 45 degrees, heights z + 2
    cfg = ScanContextConfig(num_rings=4, num_sectors=8, max_radius=8.0, height_offset=2.0)
    a100 = math.radians(100.0)
    pts = np.array(
        [
            [1.0, 0.5, 1.0],  # r 1.12 -> ring 0; az 26.6 deg -> sector 0; h 3
            [1.0, 0.2, 3.0],  # same bin, h 5: the max wins
            [1.2, 0.1, 2.0],  # same bin, h 4 (< 5)
            [-3.0, 0.1, 0.0],  # r 3.0 -> ring 1; az 178 deg -> sector 3; h 2
            [0.0, -5.0, -1.0],  # r 5 -> ring 2; az 270 deg -> sector 6; h 1
            [7 * math.cos(a100), 7 * math.sin(a100), 0.5],  # ring 3, sector 2, h 2.5
            [3.0, 2.5, -5.0],  # ring 2, sector 0, h -3 -> clipped: bin stays 0
            [8.5, 0.0, 10.0],  # beyond max_radius: ignored
            [0.0, -8.2, 20.0],  # beyond max_radius: ignored
            [8.0, 0.0, 0.25],  # r == max_radius: last ring, sector 0, h 2.25
        ]
    )
    sc = scan_context(pts, cfg)
    assert sc.shape == (4, 8)
    assert sc.dtype == np.float32
    expected = np.zeros((4, 8), np.float32)
    expected[0, 0] = 5.0
    expected[1, 3] = 2.0
    expected[2, 6] = 1.0
    expected[3, 2] = 2.5
    expected[3, 0] = 2.25
    np.testing.assert_allclose(sc, expected, atol=1e-6)
    # ring key: occupancy ratio per ring; sector key: column means
    np.testing.assert_allclose(ring_key(sc), [1 / 8, 1 / 8, 1 / 8, 2 / 8])
    np.testing.assert_allclose(sector_key(sc), expected.mean(axis=0), atol=1e-6)


def test_height_reference_min_removes_z_origin() -> None:
    rng = np.random.default_rng(1)
    pts = make_place(rng)
    lifted = pts + np.array([0.0, 0.0, 37.5])  # an aerial frame with another z origin
    cfg = ScanContextConfig(height_reference="min", height_percentile=1.0)
    a, b = scan_context(pts, cfg), scan_context(lifted, cfg)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # the lowest in-range points sit near height_offset
    z_ref = np.percentile(pts[:, 2], 1.0)
    assert np.isclose(a.max(), pts[:, 2].max() - z_ref + cfg.height_offset, atol=1e-3)
    # "sensor" heights do move with the z origin
    s = ScanContextConfig()
    assert not np.allclose(scan_context(pts, s), scan_context(lifted, s))


def test_height_reference_min_exact_with_percentile_zero() -> None:
    cfg = ScanContextConfig(
        num_rings=2, num_sectors=4, max_radius=10.0, height_offset=0.5,
        height_reference="min", height_percentile=0.0,
    )  # fmt: skip
    pts = np.array([[1.0, 1.0, 100.0], [-1.0, 1.0, 103.0], [20.0, 0.0, 0.0]])  # last ignored
    sc = scan_context(pts, cfg)
    expected = np.zeros((2, 4), np.float32)
    expected[0, 0] = 0.5  # the minimum z -> height_offset
    expected[0, 1] = 3.5
    np.testing.assert_allclose(sc, expected, atol=1e-6)


def test_no_points_in_range_gives_zeros_and_distance_one() -> None:
    cfg = ScanContextConfig(max_radius=5.0)
    sc = scan_context(np.array([[10.0, 0.0, 1.0]]), cfg)
    assert not sc.any()
    other = scan_context(np.array([[1.0, 0.0, 1.0]]), cfg)
    d, shift, yaw = sc_distance(sc, other)
    assert (d, shift, yaw) == (1.0, 0, 0.0)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.array([[0.0, 1.0, np.nan]]), "NaN"),
        (np.array([[0.0, np.inf, 1.0]]), "NaN or inf"),
        (np.zeros((5, 2)), r"shape \(N, 3\)"),
        (np.zeros(3), r"shape \(N, 3\)"),
    ],
)
def test_bad_clouds_raise(points: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        scan_context(points)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_rings": 0}, "num_rings"),
        ({"num_sectors": 1}, "num_sectors"),
        ({"num_sectors": 6.0}, "num_sectors"),
        ({"max_radius": -1.0}, "max_radius"),
        ({"max_radius": float("inf")}, "max_radius"),
        ({"height_offset": float("nan")}, "height_offset"),
        ({"height_reference": "ground"}, "height_reference"),
        ({"height_percentile": 100.0}, "height_percentile"),
        ({"num_candidates": 0}, "num_candidates"),
        ({"search_ratio": 0.0}, "search_ratio"),
        ({"search_ratio": 1.5}, "search_ratio"),
    ],
)
def test_bad_config_raises(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ScanContextConfig(**kwargs)


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("m", [7, 1, 40, 59])
def test_rotation_by_sector_multiple_is_column_shift(m: int) -> None:
    cfg = ScanContextConfig()
    pts = make_place(np.random.default_rng(2))
    alpha = m * 2 * math.pi / cfg.num_sectors
    sc, sc_rot = scan_context(pts, cfg), scan_context(rot_z(pts, alpha), cfg)
    np.testing.assert_array_equal(sc_rot, np.roll(sc, m, axis=1))
    np.testing.assert_array_equal(ring_key(sc), ring_key(sc_rot))

    wrapped = math.remainder(alpha, 2 * math.pi)  # in [-pi, pi]
    # query = original, candidate = rotated: p_candidate = Rz(yaw) p_query -> yaw = +alpha
    d, shift, yaw = sc_distance(sc, sc_rot)
    assert d < 1e-6
    assert shift == m
    assert yaw == pytest.approx(wrapped, abs=1e-9)
    # swapped roles: the opposite yaw
    d2, shift2, yaw2 = sc_distance(sc_rot, sc)
    assert d2 < 1e-6
    assert shift2 == (-m) % cfg.num_sectors
    assert yaw2 == pytest.approx(-wrapped, abs=1e-9)


def test_rotation_by_non_multiple_angle_finds_nearest_shift() -> None:
    cfg = ScanContextConfig()
    rng = np.random.default_rng(3)
    pts = make_place(rng)
    other = scan_context(make_place(rng), cfg)
    sc = scan_context(pts, cfg)
    for frac in (10.3, 24.7):
        alpha = frac * 2 * math.pi / cfg.num_sectors
        d, shift, yaw = sc_distance(sc, scan_context(rot_z(pts, alpha), cfg))
        assert shift == round(frac)
        assert abs(yaw - alpha) <= 0.5 * 2 * math.pi / cfg.num_sectors + 1e-9
        d_other, _, _ = sc_distance(sc, other)
        assert d < 0.2
        assert d < 0.4 * d_other


def test_fast_alignment_window_finds_the_shift() -> None:
    cfg = ScanContextConfig()
    pts = make_place(np.random.default_rng(4))
    sc = scan_context(pts, cfg)
    sc_rot = scan_context(rot_z(pts, 13 * 2 * math.pi / 60), cfg)
    d, shift, _ = sc_distance(sc, sc_rot, search_ratio=0.1)  # 6 shifts searched
    assert shift == 13
    assert d < 1e-6


# --------------------------------------------------------------------------- distance


def ref_distance(a: np.ndarray, b: np.ndarray, search_ratio: float = 1.0) -> np.ndarray:
    """Literal definition: per shift s, mean over columns j non-empty in both of
    1 - cos(roll(a, s)[:, j], b[:, j]); 1 when no such column. Returns d per shift
    (inf outside the searched window)."""
    R, S = a.shape
    d = np.full(S, np.inf)
    shifts = list(range(S))
    if search_ratio < 1:
        ka, kb = a.mean(axis=0), b.mean(axis=0)
        err = [sum((ka[(j - s) % S] - kb[j]) ** 2 for j in range(S)) for s in range(S)]
        s0 = int(np.argmin(err))
        n = max(1, math.ceil(search_ratio * S))
        shifts = [(s0 + o - n // 2) % S for o in range(n)]
    for s in shifts:
        acc, cnt = 0.0, 0
        for j in range(S):
            col_a = np.array([a[r, (j - s) % S] for r in range(R)])
            col_b = b[:, j]
            na, nb = math.sqrt(col_a @ col_a), math.sqrt(col_b @ col_b)
            if na > 0 and nb > 0:
                acc += 1.0 - (col_a @ col_b) / (na * nb)
                cnt += 1
        d[s] = acc / cnt if cnt else 1.0
    return d


def random_descriptor(rng: np.random.Generator, R: int, S: int) -> np.ndarray:
    x = rng.uniform(0, 5, (R, S)) * (rng.random((R, S)) < 0.6)  # empty bins
    x[:, rng.random(S) < 0.25] = 0.0  # empty columns
    return x


@pytest.mark.parametrize("search_ratio", [1.0, 0.3])
def test_sc_distance_matches_literal_reference(search_ratio: float) -> None:
    rng = np.random.default_rng(5)
    R, S = 5, 12
    for _ in range(25):
        a, b = random_descriptor(rng, R, S), random_descriptor(rng, R, S)
        ref = ref_distance(a, b, search_ratio)
        d, shift, yaw = sc_distance(a, b, search_ratio=search_ratio)
        assert d == pytest.approx(ref.min(), abs=1e-12)
        assert ref[shift] == pytest.approx(ref.min(), abs=1e-12)  # ties: any best shift
        assert 0.0 <= d <= 1.0
        assert yaw == pytest.approx(math.remainder(shift * 2 * math.pi / S, 2 * math.pi))


def test_sc_distance_pairs_matches_single() -> None:
    rng = np.random.default_rng(6)
    q = random_descriptor(rng, 4, 10)
    cands = np.stack([random_descriptor(rng, 4, 10) for _ in range(7)])
    d, s, y = sc_distance_pairs(q, cands)
    for i in range(7):
        assert (d[i], s[i], y[i]) == pytest.approx(sc_distance(q, cands[i]))
    assert d.dtype == np.float64 and s.dtype == np.int64


def test_sc_distance_bad_input() -> None:
    a = np.ones((4, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        sc_distance(a, np.ones((4, 9)))
    with pytest.raises(ValueError, match=">= 0"):
        sc_distance(a, -a)
    with pytest.raises(ValueError, match="NaN"):
        sc_distance(a, np.full((4, 8), np.nan))


# --------------------------------------------------------------------------- retrieval


@pytest.fixture(scope="module")
def places() -> tuple[ScanContextRetriever, np.ndarray, np.ndarray, np.ndarray]:
    """6 places (database 0..5) re-observed rotated with noise (queries 6..11)."""
    rng = np.random.default_rng(7)
    base = [make_place(rng) for _ in range(6)]
    angles = rng.uniform(-math.pi, math.pi, 6)
    revisits = [
        rot_z(p, a) + 0.05 * rng.standard_normal(p.shape) for p, a in zip(base, angles, strict=True)
    ]
    ret = ScanContextRetriever.from_clouds(base + revisits, ScanContextConfig(num_candidates=4))
    return ret, np.arange(6, 12), np.arange(6), angles


def test_retriever_top1_is_own_place(places) -> None:
    ret, q, db, angles = places
    out = ret.rank(q, db, k=3)
    assert out.indices.shape == out.distances.shape == out.yaw.shape == (6, 3)
    assert out.indices.dtype == np.int64
    np.testing.assert_array_equal(out.indices[:, 0], np.arange(6))
    assert np.all(np.diff(out.distances, axis=1) >= 0)
    # yaw of the query relative to the candidate: query = Rz(a) base -> yaw = -a
    sector = 2 * math.pi / 60
    err = np.abs(np.remainder(out.yaw[:, 0] + angles + math.pi, 2 * math.pi) - math.pi)
    assert np.all(err <= 1.5 * sector)


def test_retriever_exclude_mask(places) -> None:
    ret, q, db, _ = places
    exclude = np.eye(6, dtype=bool)  # forbid the true match
    exclude[0, 3] = True
    out = ret.rank(q, db, k=6, exclude=exclude)
    for i in range(6):
        row = out.indices[i][out.indices[i] >= 0]
        assert not exclude[i, row].any()
        assert i not in row
    assert out.indices[0, 0] != 3
    # everything excluded: all padding
    out = ret.rank(q, db, k=2, exclude=np.ones((6, 6), bool))
    assert (out.indices == -1).all()
    assert np.isinf(out.distances).all()
    assert np.isnan(out.yaw).all()


def test_retriever_padding(places) -> None:
    ret, q, db, _ = places
    # shortlist of 4 < k = 10, and database of 6 < k
    out = ret.rank(q, db[:3], k=10)
    assert out.indices.shape == (6, 10)
    assert (out.indices[:, :3] >= 0).all()
    assert (out.indices[:, 3:] == -1).all()
    assert np.isinf(out.distances[:, 3:]).all()
    assert np.isfinite(out.distances[:, :3]).all()
    out = ret.rank(q, db, k=10)
    assert (out.indices[:, :4] >= 0).all() and (out.indices[:, 4:] == -1).all()
    # returned indices are positions into `database`, not global ids
    out = ret.rank(q[:2], np.array([11, 0, 10, 1]), k=1)
    np.testing.assert_array_equal(out.indices[:, 0], [1, 3])


def test_retriever_bad_input(places) -> None:
    ret, q, db, _ = places
    with pytest.raises(ValueError, match="exclude"):
        ret.rank(q, db, k=1, exclude=np.zeros((6, 5), bool))
    with pytest.raises(ValueError, match="k must be"):
        ret.rank(q, db, k=0)
    with pytest.raises(ValueError, match="indices must be in"):
        ret.rank(np.array([12]), db, k=1)
    with pytest.raises(ValueError, match=r"\(N, R, S\)"):
        ScanContextRetriever(np.zeros((4, 60)))
    with pytest.raises(ValueError, match="cfg asks for"):
        ScanContextRetriever(np.zeros((2, 10, 60)), ScanContextConfig())
