"""build_octree against a plain-Python dense-grid reference; batching; order invariance; keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hotformerloc.octree import (
    MAX_DEPTH,
    Octree,
    build_octree,
    compute_neighbours,
    morton_decode,
    morton_encode,
)

OFFSETS = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)]


def key_of(x: int, y: int, z: int, depth: int) -> int:
    """Morton key by a plain bit loop (x most significant in each 3-bit group)."""
    key = 0
    for i in range(depth):
        key |= (
            ((x >> i) & 1) << (3 * i + 2)
            | ((y >> i) & 1) << (3 * i + 1)
            | ((z >> i) & 1) << (3 * i)
        )
    return key


def reference_octree(
    samples: list[np.ndarray], depth: int, unit_edge: str = "clamp"
) -> dict[str, dict[int, np.ndarray]]:
    """Dense-grid reference: per depth sorted non-empty cells per sample, tables by dict lookup.

    Cells follow ocnn: trunc((p + 1) * 2^(depth-1)) in float32, then the overflowing cell
    2^depth is clamped to the last cell ("clamp") or wrapped to 0 ("wrap", ocnn); the cell at
    depth d is the leaf cell >> (depth - d). Leaf points average the points as given.
    """
    out: dict[str, dict[int, list]] = {
        name: {d: [] for d in range(depth + 1)}
        for name in ("keys", "batch", "neigh", "children", "parent")
    }
    points: list[np.ndarray] = []
    offset = dict.fromkeys(range(depth + 1), 0)
    for b, pts in enumerate(samples):
        scaled = (pts.astype(np.float32) + np.float32(1)) * np.float32(2 ** (depth - 1))
        leaf_cells = np.trunc(scaled).astype(np.int64)
        if unit_edge == "wrap":
            leaf_cells = np.where(leaf_cells == 2**depth, 0, leaf_cells)
        else:
            leaf_cells = np.clip(leaf_cells, 0, 2**depth - 1)
        index: dict[int, dict[tuple[int, int, int], int]] = {}
        cells_at: dict[int, list[tuple[int, int, int]]] = {}
        for d in range(depth + 1):
            occupied = np.zeros((2**d,) * 3, dtype=bool)
            for x, y, z in leaf_cells >> (depth - d):
                occupied[x, y, z] = True
            cells = [tuple(int(v) for v in c) for c in np.argwhere(occupied)]
            cells.sort(key=lambda c, d=d: key_of(*c, d))
            cells_at[d] = cells
            index[d] = {c: i for i, c in enumerate(cells)}
        for d in range(depth + 1):
            base = offset[d]
            for x, y, z in cells_at[d]:
                out["keys"][d].append(key_of(x, y, z, d))
                out["batch"][d].append(b)
                row = []
                for dx, dy, dz in OFFSETS:
                    j = index[d].get((x + dx, y + dy, z + dz))
                    row.append(-1 if j is None else j + base)
                out["neigh"][d].append(row)
                if d < depth:
                    kids = []
                    for slot in range(8):
                        cx, cy, cz = (
                            2 * x + (slot >> 2),
                            2 * y + ((slot >> 1) & 1),
                            2 * z + (slot & 1),
                        )
                        j = index[d + 1].get((cx, cy, cz))
                        kids.append(-1 if j is None else j + offset[d + 1])
                    out["children"][d].append(kids)
                if d >= 1:
                    out["parent"][d].append(index[d - 1][(x >> 1, y >> 1, z >> 1)] + offset[d - 1])
        sums = {}
        for p, c in zip(pts.astype(np.float64), leaf_cells, strict=True):
            s = sums.setdefault(tuple(int(v) for v in c), [np.zeros(3), 0])
            s[0] += p
            s[1] += 1
        points.extend(sums[c][0] / sums[c][1] for c in cells_at[depth])
        for d in range(depth + 1):
            offset[d] += len(cells_at[d])
    ref = {
        name: {d: np.asarray(v, dtype=np.int64) for d, v in tables.items()}
        for name, tables in out.items()
    }
    ref["points"] = {depth: np.asarray(points)}
    return ref


def assert_matches_reference(
    octree: Octree, samples: list[np.ndarray], depth: int, unit_edge: str = "clamp"
) -> None:
    ref = reference_octree(samples, depth, unit_edge)
    b = len(samples)
    assert octree.depth == depth and octree.batch_size == b
    for d in range(depth + 1):
        np.testing.assert_array_equal(octree.keys[d].numpy(), ref["keys"][d])
        np.testing.assert_array_equal(octree.batch_id[d].numpy(), ref["batch"][d])
        np.testing.assert_array_equal(
            octree.counts[d].numpy(), np.bincount(ref["batch"][d], minlength=b)
        )
        np.testing.assert_array_equal(octree.neighbours[d].numpy(), ref["neigh"][d])
        if d < depth:
            np.testing.assert_array_equal(octree.children[d].numpy(), ref["children"][d])
        if d >= 1:
            np.testing.assert_array_equal(octree.parent[d].numpy(), ref["parent"][d])
        for t in (octree.keys[d], octree.batch_id[d], octree.counts[d], octree.neighbours[d]):
            assert t.dtype == torch.int64
    assert octree.points.dtype == torch.float32
    np.testing.assert_allclose(octree.points.numpy(), ref["points"][depth], atol=2e-7, rtol=0)


def random_cloud(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-1, 1, (n, 3)).astype(np.float32)


def lidar_like(rng: np.random.Generator, n: int = 1500) -> np.ndarray:
    """A ground plane plus a few vertical cylinders (trunks/poles), in [-0.99, 0.99]."""
    ground = np.column_stack(
        [
            rng.uniform(-0.99, 0.99, n // 2),
            rng.uniform(-0.99, 0.99, n // 2),
            rng.normal(-0.8, 0.01, n // 2),
        ]
    )
    parts = [ground]
    for cx, cy, r in [(0.3, 0.2, 0.05), (-0.5, 0.6, 0.08), (0.7, -0.6, 0.03)]:
        m = n // 6
        theta = rng.uniform(0, 2 * np.pi, m)
        parts.append(
            np.column_stack(
                [cx + r * np.cos(theta), cy + r * np.sin(theta), rng.uniform(-0.8, 0.9, m)]
            )
        )
    return np.clip(np.concatenate(parts), -0.99, 0.99).astype(np.float32)


@pytest.mark.parametrize("depth", [1, 2, 4, 6])
def test_random_cloud_matches_dense_reference(depth: int) -> None:
    pts = random_cloud(np.random.default_rng(depth), 400)
    assert_matches_reference(build_octree(torch.from_numpy(pts), depth), [pts], depth)


@pytest.mark.parametrize("depth", [3, 5, 7])
def test_lidar_like_cloud_matches_dense_reference(depth: int) -> None:
    pts = lidar_like(np.random.default_rng(10 + depth))
    assert_matches_reference(build_octree(torch.from_numpy(pts), depth), [pts], depth)


def test_batch_matches_dense_reference_and_float64_input() -> None:
    rng = np.random.default_rng(3)
    samples = [random_cloud(rng, 200), lidar_like(rng, 600), random_cloud(rng, 5)]
    octree = build_octree([torch.from_numpy(s).double() for s in samples], 5)
    assert_matches_reference(octree, samples, 5)


def test_sample_inside_batch_equals_sample_alone() -> None:
    rng = np.random.default_rng(4)
    samples = [
        torch.from_numpy(lidar_like(rng, 900)),
        torch.from_numpy(random_cloud(rng, 300)),
        torch.from_numpy(lidar_like(rng, 300)),
    ]
    depth = 6
    batch = build_octree(samples, depth)
    for b, s in enumerate(samples):
        alone = build_octree(s, depth)
        assert alone.batch_size == 1
        ptr = [batch.ptr(d) for d in range(depth + 1)]
        for d in range(depth + 1):
            lo, hi = int(ptr[d][b]), int(ptr[d][b + 1])
            assert int(batch.counts[d][b]) == alone.num_nodes(d)
            assert torch.equal(batch.keys[d][lo:hi], alone.keys[d])
            assert torch.equal(batch.batch_id[d][lo:hi], torch.full_like(alone.keys[d], b))
            n = alone.neighbours[d]
            assert torch.equal(batch.neighbours[d][lo:hi], torch.where(n >= 0, n + lo, n))
            if d < depth:
                c = alone.children[d]
                assert torch.equal(
                    batch.children[d][lo:hi], torch.where(c >= 0, c + ptr[d + 1][b], c)
                )
            if d >= 1:
                assert torch.equal(batch.parent[d][lo:hi], alone.parent[d] + ptr[d - 1][b])
        lo, hi = int(ptr[depth][b]), int(ptr[depth][b + 1])
        torch.testing.assert_close(batch.points[lo:hi], alone.points, atol=1e-6, rtol=0)


def test_point_order_does_not_matter() -> None:
    rng = np.random.default_rng(5)
    pts = torch.from_numpy(lidar_like(rng, 2000))
    a = build_octree(pts, 7)
    b = build_octree(pts[torch.from_numpy(rng.permutation(pts.shape[0]))], 7)
    for d in range(8):
        assert torch.equal(a.keys[d], b.keys[d])
        assert torch.equal(a.neighbours[d], b.neighbours[d])
        if d < 7:
            assert torch.equal(a.children[d], b.children[d])
        if d >= 1:
            assert torch.equal(a.parent[d], b.parent[d])
    torch.testing.assert_close(a.points, b.points, atol=1e-6, rtol=0)


def test_morton_keys_by_hand() -> None:
    cells = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    assert morton_encode(cells, 1).tolist() == [4, 2, 1, 7]
    # Depth 2: x bit 1 -> key bit 5, y bit 1 -> bit 4, z bit 1 -> bit 3.
    cells = torch.tensor([[2, 0, 0], [0, 2, 0], [0, 0, 2], [3, 3, 3], [2, 1, 0]])
    assert morton_encode(cells, 2).tolist() == [32, 16, 8, 63, 32 + 2]


@pytest.mark.parametrize("depth", [0, 1, 5, 8, 9, 16, 21])
def test_morton_round_trip(depth: int) -> None:
    gen = torch.Generator().manual_seed(depth)
    cells = torch.randint(0, 2**depth, (500, 3), generator=gen)
    keys = morton_encode(cells, depth)
    assert keys.dtype == torch.int64 and bool((keys >= 0).all())
    assert bool((keys >> (3 * depth) == 0).all())  # keys < 8**depth
    assert keys.tolist() == [key_of(*c, depth) for c in cells.tolist()]
    assert torch.equal(morton_decode(keys, depth), cells)


def test_keys_are_z_order_and_decode_to_cells() -> None:
    octree = build_octree(torch.from_numpy(random_cloud(np.random.default_rng(6), 300)), 5)
    for d in range(6):
        assert bool((torch.diff(octree.keys[d]) > 0).all())
        assert torch.equal(octree.coords(d), morton_decode(octree.keys[d], d))
        assert octree.coords(d) is octree.coords(d)  # cached


def test_neighbour_subset_and_later_completion() -> None:
    pts = torch.from_numpy(lidar_like(np.random.default_rng(7), 800))
    full = build_octree(pts, 6)
    part = build_octree(pts, 6, neighbours=[5, 3])
    assert sorted(part.neighbours) == [3, 5]
    assert all(torch.equal(part.neighbours[d], full.neighbours[d]) for d in (3, 5))
    none = build_octree(pts, 6, neighbours=False)
    assert none.neighbours == {}
    compute_neighbours(none, [6])
    assert sorted(none.neighbours) == [6] and torch.equal(none.neighbours[6], full.neighbours[6])


def test_boundary_values_are_clamped_into_the_grid() -> None:
    pts = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, 0.0]])
    octree = build_octree(pts, 3)
    assert octree.coords(3).tolist() == [[0, 0, 0], [7, 0, 4], [7, 7, 7]]


def test_max_depth_and_octree_to() -> None:
    pts = torch.tensor(
        [[0.1, -0.2, 0.3], [0.1000001, -0.2, 0.3], [-0.9, 0.9, 0.0]], dtype=torch.float64
    )
    octree = build_octree(pts, MAX_DEPTH)
    expected = torch.clamp(((pts + 1) * 2 ** (MAX_DEPTH - 1)).long(), 0, 2**MAX_DEPTH - 1)
    assert [tuple(c) for c in octree.coords(MAX_DEPTH).tolist()] == sorted(
        set(map(tuple, expected.tolist())), key=lambda c: key_of(*c, MAX_DEPTH)
    )
    moved = octree.to("cpu")
    assert moved is not octree and torch.equal(moved.neighbours[5], octree.neighbours[5])
    assert moved.coord_cache.keys() == octree.coord_cache.keys()


def assert_same_octree(a: Octree, b: Octree) -> None:
    assert (a.depth, a.full_depth, a.batch_size) == (b.depth, b.full_depth, b.batch_size)
    for d in range(a.depth + 1):
        for field in ("keys", "batch_id", "counts"):
            assert torch.equal(getattr(a, field)[d], getattr(b, field)[d])
    for field in ("neighbours", "children", "parent"):
        ta, tb = getattr(a, field), getattr(b, field)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[d], tb[d]) for d in ta)
    assert torch.equal(a.points, b.points)


def edge_cloud(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random points, a third of them with one or more coordinates snapped to +1 or -1."""
    pts = random_cloud(rng, n)
    snap = rng.random((n, 3)) < 0.12
    pts[snap] = np.sign(pts[snap])
    assert (pts == 1).any(0).all()
    return pts


@pytest.mark.parametrize("unit_edge", ["wrap", "clamp"])
def test_edge_cloud_batch_matches_dense_reference(unit_edge: str) -> None:
    """Keys, neighbours, children, parents and leaf means with edge points, batched (a wrapped
    cell must not leak into the sample bits above the key)."""
    rng = np.random.default_rng(11)
    samples = [edge_cloud(rng, 300), lidar_like(rng, 400), edge_cloud(rng, 50)]
    octree = build_octree([torch.from_numpy(s) for s in samples], 4, unit_edge=unit_edge)
    assert_matches_reference(octree, samples, 4, unit_edge)
    for b, s in enumerate(samples):
        alone = build_octree(torch.from_numpy(s), 4, unit_edge=unit_edge)
        lo, hi = (int(v) for v in octree.ptr(4)[b : b + 2])
        assert torch.equal(octree.keys[4][lo:hi], alone.keys[4])


@pytest.mark.parametrize("depth", [2, 6, 9])
def test_without_edge_points_both_modes_give_identical_octrees(depth: int) -> None:
    rng = np.random.default_rng(depth)
    pts = lidar_like(rng, 1200)
    pts[0] = [-1.0, -1.0, -1.0]  # -1 is no edge case
    pts[1] = [0.9999998, -1.0, 0.9999998]  # float32 1 - 3 * 2^-24: + 1 stays below 2
    assert not (pts == 1).any()
    samples = [torch.from_numpy(pts), torch.from_numpy(random_cloud(rng, 300))]
    for points in (samples[0], samples):
        assert_same_octree(
            build_octree(points, depth, unit_edge="wrap"),
            build_octree(points, depth, unit_edge="clamp"),
        )
