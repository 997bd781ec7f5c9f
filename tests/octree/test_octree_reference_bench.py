"""Node counts on the reference speed clouds equal ocnn's (shared/data/reference_bench)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hotformerloc.octree import build_octree

EXPECTED = {
    "forest_28000": (7, [1, 8, 32, 194, 798, 3256, 12249, 22602]),
    "urban_4096": (9, [1, 8, 32, 176, 917, 2361, 3456, 3845, 4023, 4083]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_node_counts(shared_data: Path, name: str) -> None:
    depth, counts = EXPECTED[name]
    pts = torch.from_numpy(np.load(shared_data / "reference_bench" / f"{name}.npy"))
    assert pts.dtype == torch.float32
    octree = build_octree(pts, depth)
    assert [int(c.sum()) for c in octree.counts] == counts
    assert [octree.neighbours[d].shape[0] for d in range(depth + 1)] == counts
