"""Retrieval metrics of the PointNetVLAD protocol (spec 4.5) and loop-closure PR / F1max.

All functions are pure numpy (plus ``scipy.spatial.cKDTree`` for true neighbours) and return
frozen dataclasses. Ranks are 1-based, percentages are in [0, 100].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hotformerloc.data.neighbours import true_neighbours
from hotformerloc.errors import HotformerlocError

__all__ = [
    "EvaluationError",
    "Ranking",
    "RecallResult",
    "f1_max",
    "l2_ranking",
    "one_percent_threshold",
    "pr_curve",
    "recall_metrics",
    "true_neighbours",
]

# Bound on the elements of one (chunk of queries) x (database) distance block: 4 Mi float64
# = 32 MiB, so a 10k x 10k search never holds the full 800 MB matrix.
_CHUNK_ELEMENTS = 1 << 22


class EvaluationError(HotformerlocError):
    """A query set cannot be scored (e.g. no query has a true neighbour in the database)."""


def _jsonable(value: float) -> float | None:
    """A float for JSON: NaN and infinities become ``None``."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True, eq=False)
class Ranking:
    """Top-K retrieval of Q queries from a database of M items.

    * ``indices``: (Q, K) int64 positions **in the database passed to the search**
      (``0 <= i < M``), best first; -1 pads the row when fewer than K items are retrievable
      (``M < K`` or excluded items);
    * ``distances``: (Q, K) float64, non-decreasing along each row; ``inf`` at padding.
    """

    indices: np.ndarray
    distances: np.ndarray

    def __post_init__(self) -> None:
        idx = np.asarray(self.indices, dtype=np.int64)
        dist = np.asarray(self.distances, dtype=np.float64)
        if idx.ndim != 2 or idx.shape != dist.shape:
            raise ValueError(
                f"Ranking needs (Q, K) indices and distances of one shape, got "
                f"{idx.shape} and {dist.shape}"
            )
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "distances", dist)

    @property
    def num_queries(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _topk_sorted(d: np.ndarray, kk: int) -> np.ndarray:
    """Column indices of the ``kk`` smallest entries of each row of ``d``, sorted by
    (value, index): among equal values the lower index wins, also at the cut-off."""
    n, m = d.shape
    if kk < m:
        cand = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(d, cand, axis=1).max(axis=1)
        # argpartition picks arbitrary members of a tie at the cut-off; fix those rows
        # (finite ties only: infinite entries are excluded items that become padding).
        over = ((d <= kth[:, None]).sum(axis=1) > kk) & np.isfinite(kth)
        for r in np.flatnonzero(over):
            row = d[r]
            below = np.flatnonzero(row < kth[r])
            equal = np.flatnonzero(row == kth[r])[: kk - below.size]
            cand[r] = np.concatenate([below, equal])
    else:
        cand = np.broadcast_to(np.arange(m, dtype=np.int64), (n, m)).copy()
    vals = np.take_along_axis(d, cand, axis=1)
    order = np.lexsort((cand, vals), axis=1)
    return np.take_along_axis(cand, order, axis=1).astype(np.int64, copy=False)


def l2_ranking(
    queries: np.ndarray,
    database: np.ndarray,
    k: int = 25,
    exclude: np.ndarray | None = None,
) -> Ranking:
    """Exact L2 top-``k`` search of each query in the database (brute force, float64).

    * ``queries``: (Q, D), ``database``: (M, D), any real dtype, finite values;
    * ``exclude``: optional (Q, M) bool, True where query q may not retrieve item m
      (time exclusion, self-matches);
    * returns a :class:`Ranking` of width exactly ``k``: padded with -1 / ``inf`` when
      fewer than ``k`` items are retrievable.

    Distances use ``|q|^2 + |x|^2 - 2 q.x`` in chunks of queries (bounded memory, so a
    10k x 10k search is fine). Ties of the computed distance are broken by the lower
    database index, so the result is deterministic.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = int(k)
    q = _as_matrix(queries, "queries")
    db = _as_matrix(database, "database")
    if q.shape[1] != db.shape[1] and q.shape[0] and db.shape[0]:
        raise ValueError(f"queries have D={q.shape[1]} but the database has D={db.shape[1]}")
    nq, m = q.shape[0], db.shape[0]
    ex = None
    if exclude is not None:
        ex = np.asarray(exclude, dtype=bool)
        if ex.shape != (nq, m):
            raise ValueError(f"exclude must have shape (Q, M) = {(nq, m)}, got {ex.shape}")
    indices = np.full((nq, k), -1, dtype=np.int64)
    distances = np.full((nq, k), np.inf, dtype=np.float64)
    if nq == 0 or m == 0:
        return Ranking(indices, distances)
    kk = min(k, m)
    db_sq = np.einsum("ij,ij->i", db, db)
    rows = max(1, _CHUNK_ELEMENTS // m)
    for a in range(0, nq, rows):
        qc = q[a : a + rows]
        d2 = qc @ db.T
        d2 *= -2.0
        d2 += np.einsum("ij,ij->i", qc, qc)[:, None]
        d2 += db_sq[None, :]
        np.maximum(d2, 0.0, out=d2)
        if ex is not None:
            d2[ex[a : a + rows]] = np.inf
        sel = _topk_sorted(d2, kk)
        dsel = np.sqrt(np.take_along_axis(d2, sel, axis=1))
        sel[~np.isfinite(dsel)] = -1
        indices[a : a + rows, :kk] = sel
        distances[a : a + rows, :kk] = dsel
    return Ranking(indices, distances)


def one_percent_threshold(db_size: int) -> int:
    """N of recall@1%: ``max(round(db_size / 100), 1)`` with Python's ``round``, which rounds
    halves to even (250 -> 2, 350 -> 4), as the reference does."""
    return max(round(db_size / 100.0), 1)


@dataclass(frozen=True, eq=False)
class RecallResult:
    """Retrieval metrics of one query set against one database (spec 4.5).

    * ``recall``: (K,) float64, recall@1..K in percent, cumulative (non-decreasing);
    * ``recall_1pct``: percent of evaluated queries with a true neighbour in the top
      ``min(n_1pct, K)`` (the reference truncates to K; pass ``k >= n_1pct`` for the
      untruncated value);
    * ``mrr_hits``: "MRR (hits only, reference)": ``100 * mean(1 / rank)`` over the queries
      with a hit in the top K only (0.0 when no query hits);
    * ``mrr``: "MRR (standard)": same but misses count 0, over all evaluated queries;
    * ``num_queries``: evaluated queries (with >= 1 true neighbour);
    * ``num_skipped``: queries without a true neighbour (ignored);
    * ``first_hit``: (Q,) int64 rank 1..K of the first true positive, 0 for a miss,
      -1 for a skipped query;
    * ``n_1pct``: the nominal recall@1% cut-off ``max(round(|DB| / 100), 1)``.
    """

    recall: np.ndarray
    recall_1pct: float
    mrr_hits: float
    mrr: float
    num_queries: int
    num_skipped: int
    first_hit: np.ndarray
    n_1pct: int

    @property
    def r1(self) -> float:
        """Recall@1 in percent."""
        return float(self.recall[0])

    @property
    def k(self) -> int:
        return int(self.recall.shape[0])

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        """JSON-friendly dict (lists and floats; ``first_hit`` only with ``per_query``)."""
        out: dict[str, Any] = {
            "r1": _jsonable(self.r1),
            "recall": [_jsonable(v) for v in self.recall],
            "recall_1pct": _jsonable(self.recall_1pct),
            "n_1pct": int(self.n_1pct),
            "mrr_hits": _jsonable(self.mrr_hits),
            "mrr": _jsonable(self.mrr),
            "num_queries": int(self.num_queries),
            "num_skipped": int(self.num_skipped),
        }
        if per_query:
            out["first_hit"] = [int(v) for v in self.first_hit]
        return out


def recall_metrics(
    ranking: Ranking,
    positives: Sequence[np.ndarray],
    db_size: int,
    name: str = "query set",
) -> RecallResult:
    """Recall@1..K, recall@1% and both MRRs of ``ranking`` (spec 4.5).

    * ``positives``: one int array of true-neighbour database indices per query (row);
    * ``db_size``: |DB| (all indices must be < ``db_size``), used for the 1 % cut-off;
    * K = ``ranking.k``; padding (-1) never counts as a hit.

    Raises :class:`EvaluationError` (naming ``name``) when no query has a true neighbour.
    """
    idx = ranking.indices
    nq, k = idx.shape
    if len(positives) != nq:
        raise ValueError(f"{len(positives)} positive lists for {nq} ranked queries")
    db_size = int(db_size)
    if db_size < 0:
        raise ValueError(f"db_size must be >= 0, got {db_size}")
    if idx.size and int(idx.max()) >= db_size:
        raise ValueError(f"ranking holds index {int(idx.max())} >= db_size {db_size}")
    pos = [np.asarray(p, dtype=np.int64).reshape(-1) for p in positives]
    counts = np.array([p.size for p in pos], dtype=np.int64)
    evaluated = counts > 0
    num_queries = int(evaluated.sum())
    if num_queries == 0:
        raise EvaluationError(
            f"{name}: no evaluable query: none of the {nq} queries has a true neighbour "
            f"in the database ({db_size} items)"
        )
    flat = np.concatenate(pos) if pos else np.empty(0, dtype=np.int64)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= db_size):
        raise ValueError(f"positive indices must lie in [0, {db_size})")
    # Encode (row, index) as one int64 key so one np.isin call marks every hit.
    stride = db_size + 1
    pos_keys = np.repeat(np.arange(nq, dtype=np.int64), counts) * stride + flat
    rank_keys = np.arange(nq, dtype=np.int64)[:, None] * stride + idx
    hit = np.isin(rank_keys, pos_keys) & (idx >= 0)
    any_hit = hit.any(axis=1)
    first_hit = np.where(any_hit, hit.argmax(axis=1) + 1, 0).astype(np.int64)
    first_hit[~evaluated] = -1

    fh = first_hit[evaluated]
    per_rank = np.bincount(fh, minlength=k + 1)[1 : k + 1]
    recall = 100.0 * np.cumsum(per_rank) / num_queries
    n_1pct = one_percent_threshold(db_size)
    cut = min(n_1pct, k)
    recall_1pct = 100.0 * float(((fh >= 1) & (fh <= cut)).sum()) / num_queries
    recip = np.where(fh > 0, 1.0 / np.maximum(fh, 1), 0.0)
    hits = fh > 0
    mrr_hits = 100.0 * float(recip[hits].mean()) if hits.any() else 0.0
    mrr = 100.0 * float(recip.mean())
    return RecallResult(
        recall=recall.astype(np.float64),
        recall_1pct=recall_1pct,
        mrr_hits=mrr_hits,
        mrr=mrr,
        num_queries=num_queries,
        num_skipped=nq - num_queries,
        first_hit=first_hit,
        n_1pct=n_1pct,
    )


def pr_curve(
    scores: np.ndarray,
    is_positive: np.ndarray,
    is_revisit: np.ndarray,
    *,
    wrong_loop_is_fn: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision / recall of loop-closure detection at every distinct finite score.

    Returns ``(thresholds, precision, recall)``, each (T,) float64, thresholds ascending.
    Same inputs and convention as :func:`f1_max`.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(is_positive, dtype=bool).reshape(-1)
    rev = np.asarray(is_revisit, dtype=bool).reshape(-1)
    if not (s.shape == pos.shape == rev.shape):
        raise ValueError(
            f"scores, is_positive and is_revisit must have one shape, got "
            f"{s.shape}, {pos.shape}, {rev.shape}"
        )
    if (pos & ~rev).any():
        raise ValueError("is_positive implies is_revisit (a correct top-1 is a revisit)")
    s = np.where(np.isnan(s), np.inf, s)
    pos = pos & np.isfinite(s)
    order = np.argsort(s, kind="stable")
    s, pos, rev = s[order], pos[order], rev[order]
    finite = np.isfinite(s)
    thresholds = np.unique(s[finite])
    if thresholds.size == 0:
        empty = np.empty(0, dtype=np.float64)
        return empty, empty, empty
    # c = number of predicted loops (score <= t) for each threshold t
    c = np.searchsorted(s, thresholds, side="right")
    tp = np.cumsum(pos)[c - 1].astype(np.float64)
    fp = c - tp
    total_rev = float(rev.sum())
    # FN: revisits without a predicted loop (+ revisits with a wrong loop if strict)
    fn = total_rev - (tp if wrong_loop_is_fn else np.cumsum(rev)[c - 1])
    precision = tp / (tp + fp)
    denom = tp + fn
    recall = np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return thresholds, precision, recall


def f1_max(
    scores: np.ndarray,
    is_positive: np.ndarray,
    is_revisit: np.ndarray,
    *,
    wrong_loop_is_fn: bool = False,
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Maximum F1 of loop-closure detection over thresholds of the top-1 distance.

    Inputs, (Q,) each: ``scores`` the top-1 descriptor distance (``inf``/NaN when the query
    retrieved nothing), ``is_positive`` the top-1 is a true neighbour, ``is_revisit`` the
    query has a true neighbour in its (time-filtered) database.

    Convention (LoGG3D-Net / Wild-Places, the usual one for lidar loop closure): at
    threshold t a query predicts a loop iff its top-1 distance <= t;

    * TP: predicted loop and the top-1 is a true neighbour;
    * FP: predicted loop and the top-1 is not a true neighbour (also for a revisit);
    * FN: a revisit query that predicts no loop;
    * TN: a non-revisit query that predicts no loop.

    ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)`` (0 when TP + FN = 0). With
    ``wrong_loop_is_fn=True`` a wrong loop of a revisit also counts as FN (stricter:
    ``recall = TP / #revisits``). Thresholds are the distinct finite scores, so TP + FP >= 1.

    Returns ``(f1max, threshold, precision, recall)``: the best F1 in [0, 1], the smallest
    threshold reaching it (NaN when no query retrieved anything, then f1max = 0 and the
    arrays are empty), and the (T,) precision and recall over the ascending thresholds
    (see :func:`pr_curve` for the thresholds).
    """
    thresholds, precision, recall = pr_curve(
        scores, is_positive, is_revisit, wrong_loop_is_fn=wrong_loop_is_fn
    )
    if thresholds.size == 0:
        return 0.0, math.nan, precision, recall
    denom = precision + recall
    f1 = np.divide(2.0 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best]), precision, recall
