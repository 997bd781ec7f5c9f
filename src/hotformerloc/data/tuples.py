"""Training tuples (spec 3.2): positives and non-negatives of every training element, and
the positive/negative masks of a batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Tuples:
    """Per training element ``i`` (local index in ``[0, N)``):

    * ``positives[i]``: sorted (P_i,) int64 local indices within ``pos_radius`` of ``i`` in
      the same group, ``i`` itself excluded;
    * ``non_negatives[i]``: sorted (Q_i,) int64 local indices within ``neg_radius`` in the
      same group, ``i`` itself included (so every positive is a non-negative).

    Every other element is a negative of ``i``. Both relations are symmetric.
    """

    positives: list[np.ndarray]
    non_negatives: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.positives)


def build_tuples(
    xy: np.ndarray, groups: np.ndarray, pos_radius: float, neg_radius: float
) -> Tuples:
    """Tuples of N elements from their positions, by a KD-tree per group.

    Args:
        xy: (N, 2) float positions (metres), finite.
        groups: (N,) labels (e.g. world names); elements of different groups are never
            positives nor non-negatives of each other.
        pos_radius: positive radius (distance <= pos_radius), > 0.
        neg_radius: non-negative radius, >= pos_radius.

    Raises:
        ValueError: bad shapes, non-finite positions, or radii not ``neg >= pos > 0``.
    """
    xy = np.asarray(xy, np.float64)
    groups = np.asarray(groups)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"build_tuples: xy must have shape (N, 2), got {xy.shape}")
    if groups.shape != (len(xy),):
        raise ValueError(f"build_tuples: groups must have shape ({len(xy)},), got {groups.shape}")
    if not np.isfinite(xy).all():
        raise ValueError("build_tuples: xy has non-finite values")
    if not (0 < pos_radius <= neg_radius < np.inf):
        raise ValueError(
            f"build_tuples: need neg_radius >= pos_radius > 0 (finite), got pos_radius="
            f"{pos_radius}, neg_radius={neg_radius}"
        )
    empty = np.zeros(0, np.int64)
    positives: list[np.ndarray] = [empty] * len(xy)
    non_negatives: list[np.ndarray] = [empty] * len(xy)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        tree = cKDTree(xy[members])
        near = tree.query_ball_point(xy[members], neg_radius, return_sorted=True)
        for k, i in enumerate(members):
            nn = members[np.asarray(near[k], np.int64)]  # members ascending -> nn sorted
            d2 = ((xy[nn] - xy[i]) ** 2).sum(1)
            non_negatives[i] = nn
            positives[i] = nn[(d2 <= pos_radius**2) & (nn != i)]
    return Tuples(positives=positives, non_negatives=non_negatives)


def batch_masks(batch: np.ndarray, tuples: Tuples) -> tuple[Tensor, Tensor]:
    """(positives_mask, negatives_mask), (B, B) bool tensors of a batch of local indices.

    ``positives_mask[a, b]``: ``batch[b]`` is a positive of ``batch[a]`` (never when
    ``batch[a] == batch[b]``, so the diagonal is False); ``negatives_mask[a, b]``:
    ``batch[b]`` is not a non-negative of ``batch[a]`` (never on the diagonal). A pair can be
    neither (between the two radii, or the same element twice).
    """
    batch = np.asarray(batch, np.int64)
    b = len(batch)
    pos = np.zeros((b, b), bool)
    nonneg = np.zeros((b, b), bool)
    for a, i in enumerate(batch):
        for out, table in ((pos, tuples.positives[i]), (nonneg, tuples.non_negatives[i])):
            if len(table):
                at = np.minimum(np.searchsorted(table, batch), len(table) - 1)
                out[a] = table[at] == batch
    return torch.from_numpy(pos), torch.from_numpy(~nonneg)
