"""build_octree(unit_edge=...): a coordinate at +1 is clamped to the last cell or wrapped (ocnn)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hotformerloc.octree import (
    Octree,
    OctreeInputError,
    bbox_normalise,
    build_octree,
    morton_encode,
)


def leaves(octree: Octree) -> dict[tuple[int, int, int], list[float]]:
    """Leaf cell -> leaf mean point (batch of one)."""
    cells = octree.coords(octree.depth).tolist()
    return {tuple(c): p for c, p in zip(cells, octree.points.tolist(), strict=True)}


# Depth 3 (scale 4): +1 -> trunc(8) = 8 = 2^3, wrapped to 0 or clamped to 7.
HAND = torch.tensor(
    [
        [1.0, 0.1, -0.3],  # x at the edge: trunc((0.1+1)*4) = 4, trunc(0.7*4) = 2
        [0.2, 1.0, 0.5],  # y at the edge
        [-0.7, -0.2, 1.0],  # z at the edge
        [1.0, 1.0, 1.0],  # every axis
        [-1.0, -1.0, -1.0],  # the opposite corner: shares cell (0, 0, 0) with the above on wrap
    ]
)
HAND_CELLS = {
    "wrap": [(0, 4, 2), (4, 0, 6), (1, 3, 0), (0, 0, 0), (0, 0, 0)],
    "clamp": [(7, 4, 2), (4, 7, 6), (1, 3, 7), (7, 7, 7), (0, 0, 0)],
}


@pytest.mark.parametrize("unit_edge", ["wrap", "clamp"])
def test_hand_made_unit_edge_cells_and_leaf_means(unit_edge: str) -> None:
    octree = build_octree(HAND, 3, unit_edge=unit_edge)
    expected: dict[tuple[int, int, int], list[torch.Tensor]] = {}
    for cell, p in zip(HAND_CELLS[unit_edge], HAND, strict=True):
        expected.setdefault(cell, []).append(p)
    got = leaves(octree)
    assert sorted(got) == sorted(expected)
    for cell, pts in expected.items():
        # Leaf means average the points as given: the wrapped (1, 1, 1) and (-1, -1, -1)
        # share cell (0, 0, 0) with mean (0, 0, 0); a lone wrapped point keeps its +1.
        torch.testing.assert_close(torch.tensor(got[cell]), torch.stack(pts).mean(0))
    if unit_edge == "wrap":
        assert got[(0, 4, 2)][0] == 1.0  # leaf in x cell 0 whose mean point has x = +1
        assert got[(0, 0, 0)] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("depth", [1, 7, 8, 9, 16])
def test_unit_edge_at_every_key_width(depth: int) -> None:
    pts = torch.tensor([[1.0, -1.0, 1.0], [0.0, 1.0, -1.0]])
    last = 2**depth - 1
    wrap = build_octree(pts, depth, unit_edge="wrap", neighbours=False)
    clamp = build_octree(pts, depth, unit_edge="clamp", neighbours=False)
    half = 2 ** (depth - 1)
    assert sorted(map(tuple, wrap.coords(depth).tolist())) == sorted([(0, 0, 0), (half, 0, 0)])
    assert sorted(map(tuple, clamp.coords(depth).tolist())) == sorted(
        [(last, 0, last), (half, last, 0)]
    )


def test_float32_rounding_to_the_edge_wraps_like_ocnn() -> None:
    """In float32, 1 - 2^-24 + 1 rounds to 2: ocnn's cell overflows too; float64 does not."""
    below = 1.0 - 2.0**-24
    pts32 = torch.tensor([[below, 0.0, 0.0]], dtype=torch.float32)
    assert pts32[0, 0].item() == below
    assert build_octree(pts32, 5, unit_edge="wrap").coords(5).tolist() == [[0, 16, 16]]
    assert build_octree(pts32, 5, unit_edge="clamp").coords(5).tolist() == [[31, 16, 16]]
    pts64 = pts32.double()
    for mode in ("wrap", "clamp"):
        assert build_octree(pts64, 5, unit_edge=mode).coords(5).tolist() == [[31, 16, 16]]


def test_bad_unit_edge() -> None:
    with pytest.raises(OctreeInputError, match=r"build_octree unit_edge: must be one of"):
        build_octree(torch.zeros(2, 3), 3, unit_edge="mirror")


def test_real_submap_hits_the_unit_edge_and_wrap_moves_it_to_cell_0(shared_data: Path) -> None:
    """The CS-Wild-Places sample after the reference's float32 bbox normalisation has a point
    at exactly x = +1 (the 1e-6 in the scale is lost to rounding): ocnn wraps it to x cell 0."""
    from hotformerloc.io import read_pointcloud

    path = shared_data / "cs_wild_places_ground_submap_sample" / "karawatha_submap_gnd_2.pcd"
    xyz = bbox_normalise(torch.from_numpy(read_pointcloud(path).xyz))
    assert xyz.dtype == torch.float32 and bool((xyz.abs() <= 1).all())
    edge = xyz == 1.0
    assert edge.sum(0).tolist() == [1, 0, 0]  # the longest axis, x, ends exactly at +1
    depth = 7
    n = 2**depth
    raw = ((xyz + 1) * (n // 2)).long()
    trees = {
        mode: build_octree(xyz, depth, unit_edge=mode, neighbours=False)
        for mode in ("wrap", "clamp")
    }
    for mode, cells in (("wrap", raw & (n - 1)), ("clamp", raw.clamp_max(n - 1))):
        keys = torch.unique(morton_encode(cells, depth))
        assert torch.equal(trees[mode].keys[depth], keys)
    (i,) = edge.any(1).nonzero().squeeze(1).tolist()
    assert raw[i, 0] == n
    wrapped = (0, *raw[i, 1:].tolist())
    clamped = (n - 1, *raw[i, 1:].tolist())
    wrap_leaves, clamp_leaves = leaves(trees["wrap"]), leaves(trees["clamp"])
    assert wrapped in wrap_leaves and clamped in clamp_leaves
    # Leaf means average the points as given, the +1 point included.
    in_cell = (raw & (n - 1) == torch.tensor(wrapped)).all(1)
    torch.testing.assert_close(torch.tensor(wrap_leaves[wrapped]), xyz[in_cell].mean(0))
    assert wrap_leaves[wrapped][0] > -1 + 2 / n  # mean point outside its cell on x
