"""Window partition (per-sample padding, dilation), gather/scatter, RPE offsets, ADaPE corners."""

from __future__ import annotations

import pytest
import torch

from hotformerloc.octree import (
    Octree,
    OctreeInputError,
    build_octree,
    node_corner_coords,
    relative_offsets,
    window_partition,
)


def batch_octree() -> Octree:
    gen = torch.Generator().manual_seed(0)
    sizes = [700, 40, 1, 260]
    return build_octree([torch.rand(n, 3, generator=gen) * 1.98 - 0.99 for n in sizes], 5)


def padded_sequences(octree: Octree, depth: int, block: int) -> list[list[int]]:
    """Per sample: its node indices in z-order, then -1 up to a multiple of ``block``."""
    ptr = octree.ptr(depth).tolist()
    out = []
    for b in range(octree.batch_size):
        nodes = list(range(ptr[b], ptr[b + 1]))
        out.append(nodes + [-1] * (-len(nodes) % block))
    return out


@pytest.mark.parametrize(("k", "dilation"), [(8, 1), (8, 4), (5, 3), (1, 1), (64, 1)])
def test_partition_layout(k: int, dilation: int) -> None:
    octree = batch_octree()
    depth = 4
    w = window_partition(octree, depth, k, dilation)
    n = octree.num_nodes(depth)
    assert w.index.shape == (w.num_windows, k) and w.index.dtype == torch.int64
    assert torch.equal(w.valid, w.index >= 0)
    # Every node exactly once.
    assert torch.equal(torch.sort(w.index[w.valid])[0], torch.arange(n))
    # Windows never mix samples, and batch is right.
    owner = octree.batch_id[depth][w.index.clamp(min=0)]
    assert bool((owner[w.valid] == w.batch.unsqueeze(1).expand_as(owner)[w.valid]).all())
    # Layout: per sample, blocks of K*D padded positions; window j of a block takes j, j+D, ...
    expected_rows = []
    for seq in padded_sequences(octree, depth, k * dilation):
        for start in range(0, len(seq), k * dilation):
            block = seq[start : start + k * dilation]
            expected_rows += [block[j::dilation] for j in range(dilation)]
    assert w.index.tolist() == expected_rows
    counts = octree.counts[depth]
    per_sample = (counts + k * dilation - 1) // (k * dilation) * dilation
    assert torch.equal(w.num_windows_per_sample, per_sample)
    assert torch.equal(w.first_window, torch.cumsum(per_sample, 0) - per_sample)
    assert torch.equal(
        w.batch, torch.repeat_interleave(torch.arange(octree.batch_size), per_sample)
    )
    assert torch.equal(w.index.view(-1)[w.slot], torch.arange(n))


@pytest.mark.parametrize("dilation", [1, 4])
def test_gather_scatter_round_trip(dilation: int) -> None:
    octree = batch_octree()
    w = window_partition(octree, 5, 16, dilation)
    x = torch.randn(octree.num_nodes(5), 7, requires_grad=True)
    tokens = w.gather(x)
    assert tokens.shape == (w.num_windows, 16, 7)
    assert bool((tokens[~w.valid] == 0).all())
    assert torch.equal(tokens[w.valid], x[w.index[w.valid]])
    assert torch.equal(w.scatter(tokens), x)
    y = torch.randn(w.num_windows, 16, 2, 3)
    assert torch.equal(w.gather(w.scatter(y)), y * w.valid[..., None, None])
    (tokens * 2).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))
    with pytest.raises(ValueError, match="gather"):
        w.gather(x[:-1])


def test_relative_offsets() -> None:
    octree = batch_octree()
    for dilation in (1, 2):
        w = window_partition(octree, 4, 6, dilation)
        off = relative_offsets(octree, 4, w)
        assert off.shape == (w.num_windows, 6, 6, 3) and off.dtype == torch.int64
        coords = octree.coords(4)
        for win in range(w.num_windows):
            for i in range(6):
                for j in range(6):
                    a, b = int(w.index[win, i]), int(w.index[win, j])
                    want = (
                        coords[a] - coords[b]
                        if a >= 0 and b >= 0
                        else torch.zeros(3, dtype=torch.int64)
                    )
                    assert torch.equal(off[win, i, j], want)
    with pytest.raises(OctreeInputError, match="depth 4, not 3"):
        relative_offsets(octree, 3, w)


def test_node_corner_coords() -> None:
    pts = torch.tensor([[-1.0, -1.0, -1.0], [0.3, -0.4, 0.99], [0.0, 0.0, 0.0]])
    octree = build_octree(pts, 6)
    for d in range(7):
        corners = node_corner_coords(octree, d)
        assert corners.dtype == torch.float32 and corners.shape == (octree.num_nodes(d), 3)
        torch.testing.assert_close(corners, octree.coords(d).float() * 2.0 ** (1 - d) - 1)
        assert bool((corners >= -1).all()) and bool((corners < 1).all())
        # Each input point lies in the cube [corner, corner + 2^(1-d)) of its node.
        size = 2.0 ** (1 - d)
        inside = ((pts[:, None] >= corners[None]) & (pts[:, None] < corners[None] + size)).all(-1)
        assert inside.any(1).all()
    assert node_corner_coords(octree, 0).tolist() == [[-1.0, -1.0, -1.0]]


def test_bad_partition_arguments() -> None:
    octree = batch_octree()
    with pytest.raises(OctreeInputError, match="depth"):
        window_partition(octree, 6, 8)
    with pytest.raises(OctreeInputError, match="patch_size and dilation"):
        window_partition(octree, 3, 0)
    with pytest.raises(OctreeInputError, match="depth"):
        node_corner_coords(octree, -1)
