"""build_tuples against a brute-force reference; batch_masks from the tuples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hotformerloc.data import Tuples, batch_masks, build_tuples


def brute_force(xy: np.ndarray, groups: np.ndarray, r: float, self_included: bool) -> list:
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    near = (d <= r) & (groups[:, None] == groups[None])
    if not self_included:
        np.fill_diagonal(near, False)
    return [np.flatnonzero(row) for row in near]


def test_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (300, 2))
    xy[:5] = xy[5]  # coincident points are positives of each other
    groups = rng.choice(np.array(["a", "b", "c"]), 300)
    groups[:6] = "a"
    t = build_tuples(xy, groups, pos_radius=4.0, neg_radius=9.0)
    assert len(t) == 300
    pos = brute_force(xy, groups, 4.0, self_included=False)
    nonneg = brute_force(xy, groups, 9.0, self_included=True)
    for i in range(300):
        assert t.positives[i].dtype == np.int64 and t.non_negatives[i].dtype == np.int64
        np.testing.assert_array_equal(t.positives[i], pos[i])
        np.testing.assert_array_equal(t.non_negatives[i], nonneg[i])
    assert sum(len(p) for p in t.positives) > 300  # the test is not vacuous
    assert set(t.positives[0].tolist()) >= {1, 2, 3, 4, 5}


def test_groups_are_separated() -> None:
    xy = np.zeros((4, 2))
    t = build_tuples(xy, np.array([0, 0, 1, 1]), 1.0, 2.0)
    assert [p.tolist() for p in t.positives] == [[1], [0], [3], [2]]
    assert [n.tolist() for n in t.non_negatives] == [[0, 1], [0, 1], [2, 3], [2, 3]]


@pytest.mark.parametrize(("pos", "neg"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0), (1.0, np.inf)])
def test_bad_radii(pos: float, neg: float) -> None:
    with pytest.raises(ValueError, match="neg_radius >= pos_radius > 0"):
        build_tuples(np.zeros((2, 2)), np.zeros(2), pos, neg)


def test_batch_masks() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 20, (40, 2))
    t = build_tuples(xy, np.zeros(40), 3.0, 8.0)
    batch = np.array([5, 17, 5, 0, 33, 12, 17, 8])  # with repeats
    pos, neg = batch_masks(batch, t)
    assert pos.shape == neg.shape == (8, 8) and pos.dtype == neg.dtype == torch.bool
    for a, i in enumerate(batch):
        for b, j in enumerate(batch):
            d = np.linalg.norm(xy[i] - xy[j])
            assert bool(pos[a, b]) == (i != j and d <= 3.0)
            assert bool(neg[a, b]) == (d > 8.0)
    assert not pos.diagonal().any() and not neg.diagonal().any()
    assert not (pos & neg).any()
    assert pos.any() and neg.any() and (~pos & ~neg).sum() > 8  # all three cases occur


def test_batch_masks_element_without_neighbours() -> None:
    t = Tuples(positives=[np.zeros(0, np.int64)] * 2, non_negatives=[np.array([0]), np.array([1])])
    pos, neg = batch_masks(np.array([0, 1]), t)
    assert not pos.any()
    assert neg.tolist() == [[False, True], [True, False]]
