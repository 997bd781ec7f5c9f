"""Evaluation on a benchmark folder (``hotformerloc generate`` / CS-Wild-Places layout).

Two protocols per world, each with its own true-positive radius:

* **ground-to-ground** (Wild-Places inter-sequence style): the test-region submaps of each
  ground sequence query every *other* ground sequence of the world (all of its submaps);
* **ground-to-aerial** (CS-Wild-Places): the test-region ground submaps of each sequence
  query the world's aerial database; ground-to-ground pairs are never scored.

Metrics are averaged over query/database pairs, then over worlds (``docs/evaluation.md``).
Any retrieval method works through the :class:`~hotformerloc.eval.Retriever` protocol
over the benchmark's global submap indices (a descriptor matrix, Scan Context, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hotformerloc.data import Benchmark, SubmapDataset, embedding_loader
from hotformerloc.eval.protocols import (
    CrossSourceSet,
    DescriptorRetriever,
    EvalRun,
    LocationsResult,
    QueryViewRetriever,
    Retriever,
    evaluate_cross_source,
    evaluate_wild_places_inter,
)
from hotformerloc.model import HOTFormerLoc


@dataclass(frozen=True)
class BenchmarkEvalConfig:
    """True-positive radii (m) and ranking depth. ``g2a_threshold`` 30 m is CS-Wild-Places'
    (spec 4.4); ``g2g_threshold`` 15 m is the generator's revisit radius (every synthetic
    test query has a revisit within it)."""

    g2g_threshold: float = 15.0
    g2a_threshold: float = 30.0
    k: int = 25


@dataclass(frozen=True, eq=False)
class BenchmarkResult:
    """Ground-to-ground and ground-to-aerial results (either None when the benchmark has
    no such pairs, e.g. a single ground sequence)."""

    g2g: LocationsResult | None
    g2a: LocationsResult | None
    config: BenchmarkEvalConfig = field(default_factory=BenchmarkEvalConfig)

    def summary(self) -> dict[str, float]:
        """Flat percentages: ``g2g_ar1``, ``g2g_ar1pct``, ``g2g_mrr``, same for ``g2a``,
        and ``ar1`` = the mean AR@1 of the available protocols (the validation score)."""
        out: dict[str, float] = {}
        for key, res in (("g2g", self.g2g), ("g2a", self.g2a)):
            if res is not None:
                out[f"{key}_ar1"] = float(res.r1)
                out[f"{key}_ar1pct"] = float(res.recall_1pct)
                out[f"{key}_mrr"] = float(res.mrr_hits)
        r1 = [out[k] for k in ("g2g_ar1", "g2a_ar1") if k in out]
        out["ar1"] = float(np.mean(r1)) if r1 else float("nan")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": {
                "g2g_threshold": self.config.g2g_threshold,
                "g2a_threshold": self.config.g2a_threshold,
                "k": self.config.k,
            },
            "summary": self.summary(),
            "g2g": self.g2g.to_dict() if self.g2g is not None else None,
            "g2a": self.g2a.to_dict() if self.g2a is not None else None,
        }


def benchmark_sets(
    bench: Benchmark,
) -> tuple[dict[str, list[EvalRun]], dict[str, CrossSourceSet]]:
    """Per world: the ground runs (queries = ``split == "test"``) and the cross-source set
    (those ground runs against the world's aerial submaps)."""
    g2g: dict[str, list[EvalRun]] = {}
    g2a: dict[str, CrossSourceSet] = {}
    for world in bench.worlds:
        runs = []
        for seq in bench.sequences(world):
            items = bench.select(world=world, sequence=seq, source="ground")
            if len(items):
                runs.append(
                    EvalRun(seq, items, bench.xy[items], is_query=bench.split[items] == "test")
                )
        if len(runs) >= 2:
            g2g[world] = runs
        aerial = bench.select(world=world, source="aerial")
        if runs and len(aerial):
            g2a[world] = CrossSourceSet(runs, EvalRun("aerial", aerial, bench.xy[aerial]))
    return g2g, g2a


def evaluate_retriever(
    retriever: Retriever, bench: Benchmark, config: BenchmarkEvalConfig | None = None
) -> BenchmarkResult:
    """Score ``retriever`` (over ``bench``'s global submap indices) on both protocols."""
    cfg = config or BenchmarkEvalConfig()
    g2g_sets, g2a_sets = benchmark_sets(bench)
    g2g = (
        evaluate_wild_places_inter(retriever, g2g_sets, threshold=cfg.g2g_threshold, k=cfg.k)
        if g2g_sets
        else None
    )
    g2a = (
        evaluate_cross_source(retriever, g2a_sets, threshold=cfg.g2a_threshold, k=cfg.k)
        if g2a_sets
        else None
    )
    return BenchmarkResult(g2g, g2a, cfg)


def embed_benchmark(
    model: HOTFormerLoc,
    bench: Benchmark,
    indices: np.ndarray | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    yaw_views: int = 1,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(len(indices), D) float32 unit descriptors of ``bench``'s submaps (all by default),
    in eval mode without gradients, on the model's device. Clouds are prepared by the
    model config's input pipeline (its ``input_scale`` included).

    ``yaw_views`` > 1 embeds each cloud rotated about z by ``360° · v / yaw_views``
    (v = 0 … yaw_views − 1) and returns the L2-normalised mean descriptor: a test-time
    rotation average that trades ``yaw_views``× the time for less yaw sensitivity.
    ``progress(n)`` is called after each batch with the clouds embedded so far (of
    ``len(indices) * yaw_views``).
    """
    if not isinstance(yaw_views, int) or yaw_views < 1:
        raise ValueError(f"yaw_views must be an int >= 1, got {yaw_views!r}")
    idx = np.arange(len(bench)) if indices is None else np.asarray(indices, np.int64)
    count = _Counter(progress)
    total = sum(
        _embed(
            model,
            SubmapDataset(bench, idx, yaw_deg=360.0 * v / yaw_views),
            batch_size,
            num_workers,
            count,
        )
        for v in range(yaw_views)
    )
    if yaw_views > 1:
        total = total / np.linalg.norm(total, axis=1, keepdims=True)
    return np.asarray(total, np.float32)


class _Counter:
    """Adds batch sizes and reports the running total to ``progress`` (if any)."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress = progress
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done)


def _embed(
    model: HOTFormerLoc,
    data: SubmapDataset,
    batch_size: int,
    num_workers: int,
    count: _Counter | None = None,
) -> np.ndarray:
    """(len(data), D) float32 descriptors, eval mode, no gradients, model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [torch.zeros(0, model.config.output_dim)]
    with torch.inference_mode():
        for batch in embedding_loader(data, model.config, batch_size, num_workers):
            batch = batch.to(device)
            out.extend(model(o).float().cpu() for o in batch.octrees)
            if count is not None:
                count(len(batch.indices))
    model.train(was_training)
    return torch.cat(out).numpy()


def query_rows(bench: Benchmark) -> np.ndarray:
    """(R,) global indices of the submaps that query in :func:`benchmark_sets` (ground
    submaps of the test split)."""
    return np.flatnonzero((bench.source == "ground") & (bench.split == "test")).astype(np.int64)


def embed_query_views(
    model: HOTFormerLoc,
    bench: Benchmark,
    indices: np.ndarray,
    views: int,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(len(indices), views, D) float32 unit descriptors of each cloud turned about z by
    ``360° · v / views`` (v = 0 … views − 1; view 0 is the cloud as stored).
    ``progress(n)``: clouds embedded so far (of ``len(indices) * views``), per batch."""
    if not isinstance(views, int) or views < 1:
        raise ValueError(f"views must be an int >= 1, got {views!r}")
    count = _Counter(progress)
    out = [
        _embed(
            model,
            SubmapDataset(bench, indices, yaw_deg=360.0 * v / views),
            batch_size,
            num_workers,
            count,
        )
        for v in range(views)
    ]
    return np.stack(out, axis=1)


def evaluate_model(
    model: HOTFormerLoc,
    bench: Benchmark,
    batch_size: int = 32,
    num_workers: int = 0,
    config: BenchmarkEvalConfig | None = None,
    yaw_views: int = 1,
    query_views: int | None = None,
) -> BenchmarkResult:
    """Embed every submap of ``bench`` with ``model`` and score both protocols.

    ``yaw_views`` > 1: every descriptor is the mean over rotated views
    (:func:`embed_benchmark`). ``query_views`` (default: the model's
    ``config.query_views``, or 1 with ``yaw_views`` > 1) > 1: the database descriptors are
    of the clouds as stored, each query cloud is embedded at ``query_views`` yaw angles and
    a query's distance to an item is the smallest over its views
    (:class:`~hotformerloc.eval.QueryViewRetriever`). The two are exclusive.
    """
    retriever = model_retriever(model, bench, batch_size, num_workers, yaw_views, query_views)
    return evaluate_retriever(retriever, bench, config)


def model_retriever(
    model: HOTFormerLoc,
    bench: Benchmark,
    batch_size: int = 32,
    num_workers: int = 0,
    yaw_views: int = 1,
    query_views: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DescriptorRetriever | QueryViewRetriever:
    """The retriever of ``model`` over ``bench`` (views as in :func:`evaluate_model`).
    ``progress(done, total)``: clouds embedded so far, of all the views' clouds."""
    if query_views is None:
        query_views = 1 if yaw_views > 1 else model.config.query_views
    if yaw_views > 1 and query_views > 1:
        raise ValueError("yaw_views and query_views cannot both be > 1")
    rows = query_rows(bench) if query_views > 1 else np.zeros(0, np.int64)
    total = len(bench) * yaw_views + len(rows) * query_views

    def stage(offset: int) -> Callable[[int], None] | None:
        return None if progress is None else lambda n: progress(offset + n, total)

    desc = embed_benchmark(model, bench, None, batch_size, num_workers, yaw_views, stage(0))
    if query_views == 1:
        return DescriptorRetriever(desc)
    views = embed_query_views(
        model, bench, rows, query_views, batch_size, num_workers, stage(len(bench) * yaw_views)
    )
    return QueryViewRetriever(desc, rows, views)
