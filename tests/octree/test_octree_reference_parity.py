"""Octree keys, leaf points and cylindrical input points against the reference's own outputs
(shared/data/reference_parity, produced by running the reference with ocnn on CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hotformerloc.octree import bbox_normalise, build_octree, filter_to_unit, to_cylindrical

DEPTH, FULL_DEPTH = 7, 2


def load(shared_data: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(shared_data / "reference_parity" / f"{name}_outputs.npz") as npz:
        return dict(npz)


def small_cloud(shared_data: Path) -> torch.Tensor:
    cloud = np.load(shared_data / "reference_parity" / "small_cloud.npy")
    assert cloud.dtype == np.float32 and cloud.shape == (6000, 3)
    return torch.from_numpy(cloud)


def cylindrical_input(shared_data: Path) -> torch.Tensor:
    """Our smallcyl pipeline: bbox normalisation, range filters, cylindrical mapping."""
    kept, _ = filter_to_unit(bbox_normalise(small_cloud(shared_data)), radial=True)
    return to_cylindrical(kept)


def assert_octree_matches(points: torch.Tensor, ref: dict[str, np.ndarray], mode: str) -> None:
    octree = build_octree(points, DEPTH, FULL_DEPTH, unit_edge=mode)
    assert octree.num_nodes(0) == 1
    for d in range(1, DEPTH + 1):
        np.testing.assert_array_equal(octree.keys[d].numpy(), ref[f"keys_d{d}"], err_msg=f"d={d}")
    np.testing.assert_allclose(octree.points.numpy(), ref["leaf_points"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("unit_edge", ["wrap", "clamp"])  # no +1 coordinate: both agree
def test_small_keys_and_leaf_points(shared_data: Path, unit_edge: str) -> None:
    ref = load(shared_data, "small")
    counts = [ref[f"keys_d{d}"].size for d in range(1, DEPTH + 1)]
    assert counts == [8, 32, 186, 715, 2464, 4751, 5679]
    assert_octree_matches(small_cloud(shared_data), ref, unit_edge)


def test_cylindrical_input_points_are_bit_exact(shared_data: Path) -> None:
    ref = load(shared_data, "smallcyl")["octree_input_points"]
    ours = cylindrical_input(shared_data)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape == (4748, 3)
    # Compare the bits (an ulp off anywhere fails; -0.0 != 0.0).
    mismatched = (ours.numpy().view(np.int32) != ref.view(np.int32)).any(1)
    assert int(mismatched.sum()) == 0, f"{int(mismatched.sum())} points differ"


@pytest.mark.parametrize("unit_edge", ["wrap", "clamp"])
def test_smallcyl_keys_and_leaf_points_from_our_pipeline(shared_data: Path, unit_edge: str) -> None:
    ref = load(shared_data, "smallcyl")
    counts = [ref[f"keys_d{d}"].size for d in range(1, DEPTH + 1)]
    assert counts == [8, 32, 185, 706, 2096, 3798, 4515]
    assert_octree_matches(cylindrical_input(shared_data), ref, unit_edge)
    assert_octree_matches(torch.from_numpy(ref["octree_input_points"]), ref, unit_edge)
