"""Ground-truth neighbours by position: which database places lie within a radius of each
query (the true positives of retrieval, and the check of prepared datasets). Torch-free."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["true_neighbours"]


def true_neighbours(query_pos: np.ndarray, db_pos: np.ndarray, radius: float) -> list[np.ndarray]:
    """For each query, the sorted int64 database indices within ``radius`` (inclusive, <=).

    ``query_pos``: (Q, 2|3), ``db_pos``: (M, 2|3) with the same number of columns (metres).
    """
    qp = np.asarray(query_pos, dtype=np.float64)
    dp = np.asarray(db_pos, dtype=np.float64)
    for name, p in (("query_pos", qp), ("db_pos", dp)):
        if p.ndim != 2 or p.shape[1] not in (2, 3):
            raise ValueError(f"{name} must be (N, 2) or (N, 3), got shape {p.shape}")
    if qp.shape[1] != dp.shape[1]:
        raise ValueError(f"query_pos has {qp.shape[1]} columns but db_pos has {dp.shape[1]}")
    if not (radius >= 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be finite and >= 0, got {radius}")
    if qp.shape[0] == 0:
        return []
    if dp.shape[0] == 0:
        return [np.empty(0, dtype=np.int64) for _ in range(qp.shape[0])]
    hits = cKDTree(dp).query_ball_point(qp, r=float(radius))
    return [np.sort(np.asarray(h, dtype=np.int64)) for h in hits]
