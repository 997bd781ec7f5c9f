"""Evaluation protocols (spec 4.1-4.5): PointNetVLAD query/database pairs, Wild-Places
inter- and intra-sequence, CS-Wild-Places cross-source, KITTI-style loop closure.

A method is a :class:`Retriever`: it ranks items of one global item list (descriptor rows,
submap ids, ...) given int64 index arrays, so non-L2 methods (Scan Context, re-ranking) plug
in too. :class:`DescriptorRetriever` wraps an (N, D) descriptor matrix with exact L2 search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .metrics import (
    _CHUNK_ELEMENTS,
    EvaluationError,
    Ranking,
    RecallResult,
    _jsonable,
    f1_max,
    l2_ranking,
    pr_curve,
    recall_metrics,
    true_neighbours,
)

__all__ = [
    "CrossSourceSet",
    "DescriptorRetriever",
    "EvalRun",
    "LocationsResult",
    "LoopClosureResult",
    "MeanMetrics",
    "ProtocolResult",
    "QueryViewRetriever",
    "RankingLike",
    "Retriever",
    "evaluate_cross_source",
    "evaluate_intra_sequence",
    "evaluate_loop_closure",
    "evaluate_pnv",
    "evaluate_wild_places_inter",
]


class RankingLike(Protocol):
    """Anything with (Q, K) ``indices`` (int, -1 padding) and ``distances`` (ascending, inf
    padding), e.g. :class:`~hotformerloc.eval.metrics.Ranking` or a Scan Context ranking."""

    @property
    def indices(self) -> np.ndarray: ...

    @property
    def distances(self) -> np.ndarray: ...


@runtime_checkable
class Retriever(Protocol):
    """A retrieval method over one global item list.

    ``rank(query, database, k, exclude)``: ``query`` (Q,) and ``database`` (M,) are int64
    item indices; returns a :class:`RankingLike` of shape (Q, k) whose indices are positions in
    ``database`` (0..M-1, best first, -1 padding). ``exclude`` (Q, M) bool marks database
    positions query q must not retrieve; a retriever must honour it (checked).
    """

    def rank(
        self,
        query: np.ndarray,
        database: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> RankingLike: ...


@dataclass(frozen=True, eq=False)
class DescriptorRetriever:
    """Exact L2 retrieval over ``descriptors``: (N, D) real, row i = global item i."""

    descriptors: np.ndarray

    def __post_init__(self) -> None:
        d = np.asarray(self.descriptors)
        if d.ndim != 2:
            raise ValueError(f"descriptors must be (N, D), got shape {d.shape}")
        object.__setattr__(self, "descriptors", d)

    def rank(
        self,
        query: np.ndarray,
        database: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> Ranking:
        return l2_ranking(self.descriptors[query], self.descriptors[database], k, exclude)


@dataclass(frozen=True, eq=False)
class QueryViewRetriever:
    """Exact L2 retrieval where queries may carry several descriptors (test-time query
    views, e.g. the query cloud turned to ``V`` yaw angles): the distance from a query to a
    database item is the smallest over the query's views. Database items always use their
    one stored descriptor.

    * ``descriptors``: (N, D) real, row i = global item i (as stored);
    * ``view_items``: (R,) distinct int64 global items that have views;
    * ``views``: (R, V, D) their view descriptors. A query without views uses its row of
      ``descriptors``.

    The min over views of each view's exact top-k is the exact top-k of the min distance
    (ties broken by the lower database position).
    """

    descriptors: np.ndarray
    view_items: np.ndarray
    views: np.ndarray

    def __post_init__(self) -> None:
        d = np.asarray(self.descriptors)
        items = np.asarray(self.view_items, np.int64)
        views = np.asarray(self.views)
        if d.ndim != 2:
            raise ValueError(f"descriptors must be (N, D), got shape {d.shape}")
        if views.ndim != 3 or views.shape[0] != len(items) or views.shape[2] != d.shape[1]:
            raise ValueError(
                f"views must be (R, V, D) = ({len(items)}, V, {d.shape[1]}), got {views.shape}"
            )
        if len(items) and (items.min() < 0 or items.max() >= len(d)):
            raise ValueError(f"view_items must be item indices in [0, {len(d)})")
        if len(np.unique(items)) != len(items):
            raise ValueError("view_items must be distinct")
        object.__setattr__(self, "descriptors", d)
        object.__setattr__(self, "view_items", items)
        object.__setattr__(self, "views", views)

    def rank(
        self,
        query: np.ndarray,
        database: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> Ranking:
        query = np.asarray(query, np.int64)
        n_views = self.views.shape[1]
        qv = np.repeat(self.descriptors[query][:, None, :], n_views, axis=1)
        slot = {int(item): r for r, item in enumerate(self.view_items)}
        for j, q in enumerate(query.tolist()):
            if q in slot:
                qv[j] = self.views[slot[q]]
        db = self.descriptors[database]
        parts = [l2_ranking(qv[:, v], db, k, exclude) for v in range(n_views)]
        idx = np.concatenate([p.indices for p in parts], axis=1)
        dist = np.concatenate([p.distances for p in parts], axis=1)
        out_idx = np.full((len(query), k), -1, np.int64)
        out_dist = np.full((len(query), k), np.inf)
        for j in range(len(query)):
            order = np.lexsort((idx[j], dist[j]))
            seen: set[int] = set()
            n = 0
            for o in order.tolist():
                i = int(idx[j, o])
                if i < 0 or i in seen:
                    continue
                seen.add(i)
                out_idx[j, n], out_dist[j, n] = i, dist[j, o]
                n += 1
                if n == k:
                    break
        return Ranking(out_idx, out_dist)


def _as_items(items: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(items)
    if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer index array, got {a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


def _as_positions(positions: np.ndarray, n: int, name: str) -> np.ndarray:
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n or p.shape[1] not in (2, 3):
        raise ValueError(f"{name} must be ({n}, 2) or ({n}, 3), got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return p


@dataclass(frozen=True, eq=False)
class EvalRun:
    """One run (sequence) of an evaluation set.

    * ``items``: (n,) int64 indices of its submaps in the global item list;
    * ``positions``: (n, 2|3) float64 metric positions (e.g. northing, easting);
    * ``is_query``: (n,) bool, the submaps used as queries (e.g. inside test regions);
      as a database a run always contributes every submap. Default: all False.
    """

    name: str
    items: np.ndarray
    positions: np.ndarray
    is_query: np.ndarray | None = None

    def __post_init__(self) -> None:
        items = _as_items(self.items, f"run {self.name!r} items")
        n = items.shape[0]
        pos = _as_positions(self.positions, n, f"run {self.name!r} positions")
        if self.is_query is None:
            isq = np.zeros(n, dtype=bool)
        else:
            isq = np.asarray(self.is_query, dtype=bool)
            if isq.shape != (n,):
                raise ValueError(f"run {self.name!r} is_query must be ({n},), got {isq.shape}")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "is_query", isq)

    @property
    def num_queries(self) -> int:
        assert self.is_query is not None
        return int(self.is_query.sum())

    def __len__(self) -> int:
        return int(self.items.shape[0])


@dataclass(frozen=True, eq=False)
class CrossSourceSet:
    """One CS-Wild-Places location: ground query runs and the aerial database run (all
    aerial submaps of the location; its ``is_query`` is ignored)."""

    ground: Sequence[EvalRun]
    aerial: EvalRun

    def __post_init__(self) -> None:
        object.__setattr__(self, "ground", tuple(self.ground))


# --------------------------------------------------------------------------------------
# Results


def _mean_recall(parts: Sequence[Any]) -> np.ndarray:
    return np.mean(np.stack([np.asarray(p.recall, dtype=np.float64) for p in parts]), axis=0)


@dataclass(frozen=True, eq=False)
class MeanMetrics:
    """Unweighted means (percent): ``recall`` (K,) recall@1..K, ``recall_1pct``,
    ``mrr_hits`` ("MRR (hits only, reference)") and ``mrr`` ("MRR (standard)")."""

    recall: np.ndarray
    recall_1pct: float
    mrr_hits: float
    mrr: float

    @property
    def r1(self) -> float:
        """AR@1 in percent."""
        return float(self.recall[0])

    @classmethod
    def mean_of(cls, parts: Sequence[Any]) -> MeanMetrics:
        """Mean of objects carrying ``recall``, ``recall_1pct``, ``mrr_hits``, ``mrr``."""
        if not parts:
            raise ValueError("mean of no results")
        return MeanMetrics(
            recall=_mean_recall(parts),
            recall_1pct=float(np.mean([p.recall_1pct for p in parts])),
            mrr_hits=float(np.mean([p.mrr_hits for p in parts])),
            mrr=float(np.mean([p.mrr for p in parts])),
        )

    def _metrics_dict(self) -> dict[str, Any]:
        return {
            "r1": _jsonable(self.r1),
            "recall": [_jsonable(v) for v in self.recall],
            "recall_1pct": _jsonable(self.recall_1pct),
            "mrr_hits": _jsonable(self.mrr_hits),
            "mrr": _jsonable(self.mrr),
        }

    def to_dict(self) -> dict[str, Any]:
        return self._metrics_dict()


@dataclass(frozen=True, eq=False)
class ProtocolResult(MeanMetrics):
    """Means over the scored (query run, database run) pairs, plus each pair's result.

    ``pairs``: {(query_run, db_run): RecallResult} in scoring order; ``skipped_pairs``:
    pairs whose queries had no true neighbour in that database (not in the means).
    """

    pairs: Mapping[tuple[str, str], RecallResult] = field(default_factory=dict)
    skipped_pairs: tuple[tuple[str, str], ...] = ()

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out = self._metrics_dict()
        out["pairs"] = {f"{q}->{d}": r.to_dict(per_query) for (q, d), r in self.pairs.items()}
        out["skipped_pairs"] = [[q, d] for q, d in self.skipped_pairs]
        return out


@dataclass(frozen=True, eq=False)
class LocationsResult(MeanMetrics):
    """Means over locations of the per-location (pair-averaged) means.

    ``locations``: {location: ProtocolResult}; ``groups``: {group: MeanMetrics over its
    locations} (e.g. CS-Wild-Places "Baseline" / "Unseen"; empty when no groups given);
    ``group_members``: {group: its location names}.
    """

    locations: Mapping[str, ProtocolResult] = field(default_factory=dict)
    groups: Mapping[str, MeanMetrics] = field(default_factory=dict)
    group_members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out = self._metrics_dict()
        out["locations"] = {n: r.to_dict(per_query) for n, r in self.locations.items()}
        out["groups"] = {
            n: {**g.to_dict(), "locations": list(self.group_members.get(n, ()))}
            for n, g in self.groups.items()
        }
        return out


@dataclass(frozen=True, eq=False)
class LoopClosureResult:
    """Online (time-filtered) retrieval of one sequence.

    * ``retrieval``: recall metrics over the revisit queries (those with a true neighbour in
      their time-filtered database); other queries are counted in ``num_skipped``;
    * ``f1max`` in [0, 1] and ``f1_threshold`` (descriptor distance; NaN when nothing was
      retrieved), see :func:`~hotformerloc.eval.metrics.f1_max` for the convention;
    * ``thresholds``, ``precision``, ``recall``: the (T,) PR curve, thresholds ascending;
    * ``top1_distance``: (Q,) float64, ``inf`` when the query's database was empty;
    * ``top1_correct``: (Q,) bool, the top-1 is a true neighbour.
    """

    retrieval: RecallResult
    f1max: float
    f1_threshold: float
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    top1_distance: np.ndarray
    top1_correct: np.ndarray

    @property
    def r1(self) -> float:
        """Recall@1 over revisit queries, percent."""
        return self.retrieval.r1

    @property
    def num_revisits(self) -> int:
        return self.retrieval.num_queries

    def to_dict(self, curve: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "r1": _jsonable(self.r1),
            "f1max": _jsonable(self.f1max),
            "f1_threshold": _jsonable(self.f1_threshold),
            "num_revisits": self.num_revisits,
            "retrieval": self.retrieval.to_dict(),
        }
        if curve:
            out["thresholds"] = [float(v) for v in self.thresholds]
            out["precision"] = [float(v) for v in self.precision]
            out["recall"] = [float(v) for v in self.recall]
        return out


# --------------------------------------------------------------------------------------
# Protocols


def _rank_checked(
    retriever: Retriever,
    query: np.ndarray,
    database: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
) -> Ranking:
    out = retriever.rank(query, database, k, exclude)
    r = Ranking(out.indices, out.distances)
    expected = (query.shape[0], k)
    if r.indices.shape != expected:
        raise ValueError(
            f"retriever returned a ranking of shape {r.indices.shape}, expected {expected}"
        )
    valid = r.indices >= 0
    if (r.indices >= database.shape[0]).any():
        raise ValueError("retriever returned indices outside the database")
    if exclude is not None and valid.any():
        rows = np.broadcast_to(np.arange(expected[0])[:, None], expected)
        if exclude[rows[valid], r.indices[valid]].any():
            raise ValueError("retriever returned excluded database items")
    return r


def _score_pairs(
    retriever: Retriever,
    pairs: Sequence[tuple[EvalRun, EvalRun]],
    threshold: float,
    k: int,
    name: str,
) -> ProtocolResult:
    results: dict[tuple[str, str], RecallResult] = {}
    skipped: list[tuple[str, str]] = []
    for qrun, dbrun in pairs:
        assert qrun.is_query is not None
        qsel = np.flatnonzero(qrun.is_query)
        if qsel.size == 0:
            continue
        positives = true_neighbours(qrun.positions[qsel], dbrun.positions, threshold)
        key = (qrun.name, dbrun.name)
        if not any(p.size for p in positives):
            skipped.append(key)
            continue
        ranking = _rank_checked(retriever, qrun.items[qsel], dbrun.items, k)
        results[key] = recall_metrics(
            ranking, positives, len(dbrun), name=f"{name}query {key[0]!r} vs database {key[1]!r}"
        )
    if not results:
        raise EvaluationError(
            f"{name}no evaluable (query, database) pair: {len(skipped)} pairs had no query "
            f"with a true neighbour within {threshold} m"
            + (f" (skipped: {skipped})" if skipped else " (no query submaps)")
        )
    mean = MeanMetrics.mean_of(list(results.values()))
    return ProtocolResult(
        recall=mean.recall,
        recall_1pct=mean.recall_1pct,
        mrr_hits=mean.mrr_hits,
        mrr=mean.mrr,
        pairs=results,
        skipped_pairs=tuple(skipped),
    )


def _check_names(runs: Sequence[EvalRun]) -> None:
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def evaluate_pnv(
    retriever: Retriever,
    runs: Sequence[EvalRun],
    threshold: float,
    skip_same_run: bool = True,
    k: int = 25,
    database_runs: Sequence[str] | None = None,
    name: str = "",
) -> ProtocolResult:
    """PointNetVLAD protocol (spec 4.1, 4.5): every run's query submaps against every run as
    a database (all its submaps); same-run pairs skipped when ``skip_same_run``.

    ``database_runs`` restricts the databases to the named runs (CS-Campus3D: only the
    aerial run, with ``skip_same_run=False``). True neighbours lie within ``threshold``
    (inclusive). Runs without query submaps only serve as databases. Means are unweighted
    over pairs; pairs without an evaluable query go to ``skipped_pairs``. Raises
    :class:`EvaluationError` when no pair is evaluable (``name`` prefixes the message).
    """
    k = _check_k(k)
    _check_names(runs)
    dbs = list(runs)
    if database_runs is not None:
        wanted = set(database_runs)
        unknown = wanted - {r.name for r in runs}
        if unknown:
            raise ValueError(f"unknown database runs {sorted(unknown)}")
        dbs = [r for r in runs if r.name in wanted]
    pairs = [(q, d) for q in runs for d in dbs if not (skip_same_run and q.name == d.name)]
    prefix = f"{name}: " if name else ""
    return _score_pairs(retriever, pairs, threshold, k, prefix)


def locations_result(
    per_location: dict[str, ProtocolResult], groups: Mapping[str, Sequence[str]] | None
) -> LocationsResult:
    """Combine per-location results: their mean, and the mean of each named group of
    locations (e.g. CS-Wild-Places Baseline / Unseen)."""
    mean = MeanMetrics.mean_of(list(per_location.values()))
    group_means: dict[str, MeanMetrics] = {}
    members_of: dict[str, tuple[str, ...]] = {}
    for g, members in (groups or {}).items():
        members_of[g] = tuple(members)
        missing = [m for m in members if m not in per_location]
        if missing or not members:
            raise ValueError(f"group {g!r} names unknown or no locations: {missing or members}")
        group_means[g] = MeanMetrics.mean_of([per_location[m] for m in members])
    return LocationsResult(
        recall=mean.recall,
        recall_1pct=mean.recall_1pct,
        mrr_hits=mean.mrr_hits,
        mrr=mean.mrr,
        locations=per_location,
        groups=group_means,
        group_members=members_of,
    )


def evaluate_wild_places_inter(
    retriever: Retriever,
    locations: Mapping[str, Sequence[EvalRun]],
    threshold: float = 3.0,
    k: int = 25,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> LocationsResult:
    """Wild-Places inter-sequence protocol (spec 4.3): per forest, every ordered pair of
    distinct sequences (queries = test-region submaps, ``is_query``; database = all submaps
    of the other sequence), true positive <= ``threshold`` m. Metrics (AR@1, MRR; all of
    :class:`MeanMetrics`) are averaged over pairs, then over forests."""
    if not locations:
        raise ValueError("no locations")
    per = {
        loc: evaluate_pnv(retriever, runs, threshold, skip_same_run=True, k=k, name=loc)
        for loc, runs in locations.items()
    }
    return locations_result(per, groups)


def evaluate_cross_source(
    retriever: Retriever,
    locations: Mapping[str, CrossSourceSet],
    threshold: float = 30.0,
    groups: Mapping[str, Sequence[str]] | None = None,
    k: int = 25,
) -> LocationsResult:
    """CS-Wild-Places protocol (spec 4.4): per location, each ground run's query submaps
    against the aerial database; ground->ground and aerial->* pairs are never scored.

    Per location the mean is over its ground query runs; the overall mean is over
    locations; each group (e.g. ``{"Baseline": ["Karawatha", "Venman"], "Unseen":
    ["QCAT", "Samford"]}``) gets the mean over its locations in ``groups``.
    """
    if not locations:
        raise ValueError("no locations")
    per: dict[str, ProtocolResult] = {}
    for loc, cs in locations.items():
        _check_names([*cs.ground, cs.aerial])
        pairs = [(g, cs.aerial) for g in cs.ground]
        per[loc] = _score_pairs(retriever, pairs, threshold, _check_k(k), f"{loc}: ")
    return locations_result(per, groups)


def _online(
    retriever: Retriever,
    items: np.ndarray,
    positions: np.ndarray,
    timestamps: np.ndarray,
    threshold: float,
    exclusion: float,
    k: int,
    name: str,
    wrong_loop_is_fn: bool,
) -> LoopClosureResult:
    k = _check_k(k)
    items = _as_items(items, "items")
    n = items.shape[0]
    pos = _as_positions(positions, n, "positions")
    t = np.asarray(timestamps, dtype=np.float64)
    if t.shape != (n,) or not np.isfinite(t).all():
        raise ValueError(f"timestamps must be ({n},) finite, got shape {t.shape}")
    if not (exclusion >= 0 and math.isfinite(exclusion)):
        raise ValueError(f"time exclusion must be finite and >= 0, got {exclusion}")
    limit = t - exclusion  # database of query i: items j with t[j] < limit[i]
    nbrs = true_neighbours(pos, pos, threshold)
    positives = [nb[t[nb] < limit[i]] for i, nb in enumerate(nbrs)]
    if not any(p.size for p in positives):
        raise EvaluationError(
            f"{name}: no evaluable query: none of the {n} queries has a true neighbour "
            f"within {threshold} m among items older than {exclusion} s"
        )
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    idx_parts, dist_parts = [], []
    for a in range(0, n, rows):
        exclude = ~(t[None, :] < limit[a : a + rows, None])
        r = _rank_checked(retriever, items[a : a + rows], items, k, exclude)
        idx_parts.append(r.indices)
        dist_parts.append(r.distances)
    ranking = Ranking(np.concatenate(idx_parts), np.concatenate(dist_parts))
    rr = recall_metrics(ranking, positives, n, name=name)
    top1 = np.where(ranking.indices[:, 0] >= 0, ranking.distances[:, 0], np.inf)
    correct = rr.first_hit == 1
    revisit = rr.first_hit >= 0
    thresholds, precision, recall = pr_curve(
        top1, correct, revisit, wrong_loop_is_fn=wrong_loop_is_fn
    )
    f1, f1_thr, _, _ = f1_max(top1, correct, revisit, wrong_loop_is_fn=wrong_loop_is_fn)
    return LoopClosureResult(
        retrieval=rr,
        f1max=f1,
        f1_threshold=f1_thr,
        thresholds=thresholds,
        precision=precision,
        recall=recall,
        top1_distance=top1,
        top1_correct=correct,
    )


def evaluate_intra_sequence(
    retriever: Retriever,
    items: np.ndarray,
    positions: np.ndarray,
    timestamps: np.ndarray,
    threshold: float = 3.0,
    time_exclusion: float = 600.0,
    k: int = 25,
    *,
    name: str = "sequence",
    wrong_loop_is_fn: bool = False,
) -> LoopClosureResult:
    """Wild-Places intra-sequence protocol: every submap of one sequence is a query against
    the submaps of the same sequence with ``timestamp < t_q - time_exclusion`` (seconds).

    Queries with a true neighbour (<= ``threshold`` m) in that database are revisits; R@N is
    over revisits, F1max over all queries (convention of :func:`f1_max`). The recall@1% of
    ``retrieval`` uses the sequence length as |DB| (not a paper metric). Raises
    :class:`EvaluationError` when the sequence has no revisit.
    """
    return _online(
        retriever,
        items,
        positions,
        timestamps,
        threshold,
        time_exclusion,
        k,
        name,
        wrong_loop_is_fn,
    )


def evaluate_loop_closure(
    retriever: Retriever,
    items: np.ndarray,
    positions: np.ndarray,
    timestamps: np.ndarray,
    threshold: float,
    skip_time: float,
    k: int = 1,
    *,
    name: str = "sequence",
    wrong_loop_is_fn: bool = False,
) -> LoopClosureResult:
    """KITTI-style online loop closure: query i retrieves among the items with
    ``timestamp < t_i - skip_time``; the PR curve sweeps the top-1 distance threshold.

    Same computation as :func:`evaluate_intra_sequence` with KITTI defaults (``k=1``):
    F1max (convention of :func:`f1_max`) and recall@1 over revisit queries. Raises
    :class:`EvaluationError` when the trajectory has no revisit.
    """
    return _online(
        retriever,
        items,
        positions,
        timestamps,
        threshold,
        skip_time,
        k,
        name,
        wrong_loop_is_fn,
    )
