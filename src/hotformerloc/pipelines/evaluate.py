"""Evaluate methods on a benchmark folder (``hotformerloc eval``, the demo, benchmarks).

Building blocks, each returning a report entry and its seconds: :func:`score_model` (a
model with test-time views), :func:`score_reranked` (a scored retriever with its top K
re-ranked by geometric verification) and :func:`score_scan_context`; and the pipeline
:func:`evaluate_benchmark` that loads models by name or checkpoint and composes them.
Importing this module does not import torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotformerloc.baselines import ScanContextConfig
    from hotformerloc.data.benchmark import Benchmark
    from hotformerloc.eval.report import MethodEntry
    from hotformerloc.model.network import HOTFormerLoc

__all__ = [
    "Evaluation",
    "TimedEntry",
    "evaluate_benchmark",
    "scan_context_config",
    "score_model",
    "score_reranked",
    "score_scan_context",
]

#: ``(stage, done, total)`` progress callback.
Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class TimedEntry:
    """One scored method: its report ``entry`` and the wall-clock ``seconds`` it took
    (embedding or description plus scoring)."""

    entry: MethodEntry
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate_benchmark`: the ``benchmark`` and one
    :class:`TimedEntry` per method, in the order evaluated."""

    benchmark: Benchmark
    methods: tuple[TimedEntry, ...]

    @property
    def entries(self) -> list[MethodEntry]:
        """The report entries (for :func:`hotformerloc.eval.report.write_report`)."""
        return [m.entry for m in self.methods]


def scan_context_config() -> ScanContextConfig:
    """The Scan Context setup of ``hotformerloc eval --scancontext`` and the demo: 30 m
    radius (the submap radius), heights above the cloud's lowest point."""
    from hotformerloc.baselines import ScanContextConfig

    return ScanContextConfig(max_radius=30.0, height_reference="min")


def score_model(
    bench: Benchmark,
    model: HOTFormerLoc,
    name: str,
    yaw_views: int = 1,
    query_views: int | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> TimedEntry:
    """``model`` (eval mode, on its device) over ``bench`` on both protocols, entry named
    ``name``. Views as :func:`hotformerloc.eval.benchmark.model_retriever`: ``yaw_views``
    > 1 averages the descriptor over turned inputs; ``query_views`` (default: the model's
    ``config.query_views``) embeds each query turned and keeps its smallest distance."""
    from hotformerloc.eval.benchmark import evaluate_retriever, model_retriever
    from hotformerloc.eval.report import MethodEntry

    update = progress or _noop
    views = max(yaw_views, query_views or model.config.query_views)
    stage = f"embedding ({views} view{'s' * (views > 1)})"
    t0 = time.perf_counter()
    retr = model_retriever(
        model, bench, batch_size, 0, yaw_views, query_views, lambda d, n: update(stage, d, n)
    )
    res = evaluate_retriever(retr, bench)
    return TimedEntry(MethodEntry(name, res, retr), time.perf_counter() - t0)


def score_reranked(
    bench: Benchmark, base: MethodEntry, top: int, progress: Progress | None = None
) -> TimedEntry:
    """``base``'s retriever with its top ``top`` candidates re-ranked by geometric
    verification (:class:`hotformerloc.index.rerank.RerankRetriever`), on both protocols;
    named ``"<base> + re-ranking top <top>"``."""
    from hotformerloc.eval.benchmark import evaluate_retriever
    from hotformerloc.eval.report import MethodEntry
    from hotformerloc.index.rerank import RerankRetriever

    if base.retriever is None:
        raise ValueError(f"{base.name}: no retriever to re-rank")
    update = progress or _noop
    stage = f"re-ranking the top {top}"
    total = _query_rows(bench)
    update(stage, 0, total)
    t0 = time.perf_counter()
    rr = RerankRetriever(
        base.retriever,
        bench.load_cloud,
        top_k=top,
        progress=lambda n: update(stage, min(n, total), total),
    )
    res = evaluate_retriever(rr, bench)
    update(stage, total, total)
    entry = MethodEntry(f"{base.name} + re-ranking top {top}", res, rr)
    return TimedEntry(entry, time.perf_counter() - t0)


def _query_rows(bench: Benchmark) -> int:
    """Query rows both protocols rank on ``bench`` (each ground test submap once per other
    ground sequence of its world, and once against the aerial database): the total of a
    re-ranking progress bar."""
    from hotformerloc.eval.benchmark import benchmark_sets

    g2g, g2a = benchmark_sets(bench)
    rows = 0
    for runs in g2g.values():
        rows += sum(int(r.is_query.sum()) * (len(runs) - 1) for r in runs if r.is_query is not None)
    for cs in g2a.values():
        rows += sum(int(r.is_query.sum()) for r in cs.ground if r.is_query is not None)
    return max(rows, 1)


def score_scan_context(bench: Benchmark, progress: Progress | None = None) -> TimedEntry:
    """Scan Context (:func:`scan_context_config`) over ``bench`` on both protocols."""
    from hotformerloc.baselines import ScanContextRetriever
    from hotformerloc.eval.benchmark import evaluate_retriever
    from hotformerloc.eval.report import MethodEntry

    update = progress or _noop
    t0 = time.perf_counter()
    clouds = []
    for i in range(len(bench)):
        clouds.append(bench.load_cloud(i))
        update("scan context", i + 1, len(bench))
    sc = ScanContextRetriever.from_clouds(clouds, scan_context_config())
    res = evaluate_retriever(sc, bench)
    return TimedEntry(MethodEntry("Scan Context", res, sc), time.perf_counter() - t0)


def evaluate_benchmark(
    data: str | Path,
    models: Sequence[str | Path] = (),
    scancontext: bool = False,
    batch_size: int = 32,
    device: str = "auto",
    yaw_views: int = 1,
    query_views: int | None = None,
    rerank: int = 0,
    progress: Progress | None = None,
) -> Evaluation:
    """Score each of ``models`` (registered name, ``ARCH.TAG`` or checkpoint file) on the
    benchmark folder ``data``, each followed, with ``rerank`` > 0, by itself with its top
    ``rerank`` re-ranked; then Scan Context when ``scancontext``.

    Entry names: the spec for a name, ``ARCH (file)`` for a checkpoint, then
    ``", N yaw views"`` / ``", N query views"`` when more than one view is used.

    Raises:
        EvaluationError: nothing to evaluate, ``rerank`` without a model, or ``yaw_views`` > 1
            together with ``query_views`` > 1.
        DatasetError, CheckpointError, DeviceError: an unreadable benchmark, checkpoint or
            an unavailable device (all :class:`hotformerloc.errors.HotformerlocError`).
    """
    from hotformerloc.data.benchmark import Benchmark
    from hotformerloc.eval.metrics import EvaluationError
    from hotformerloc.model.checkpoint import load_model
    from hotformerloc.model.device import resolve_device

    if not models and not scancontext:
        raise EvaluationError("nothing to evaluate: give a model and/or Scan Context")
    if rerank and not models:
        raise EvaluationError("re-ranking re-ranks a model's retrievals: give a model too")
    if yaw_views > 1 and query_views is not None and query_views > 1:
        raise EvaluationError("yaw views and query views cannot be combined")
    bench = Benchmark.load(data)
    dev = resolve_device(device)
    methods: list[TimedEntry] = []
    for spec in models:
        net, ck = load_model(spec)
        net = net.to(dev)
        label = str(spec) if ck is None else f"{ck.model} ({Path(spec).name})"
        own = query_views if query_views is not None else net.config.query_views
        if yaw_views > 1:
            label += f", {yaw_views} yaw views"
        elif own > 1:
            label += f", {own} query views"
        scored = score_model(bench, net, label, yaw_views, query_views, batch_size, progress)
        methods.append(scored)
        if rerank:
            methods.append(score_reranked(bench, scored.entry, rerank, progress))
    if scancontext:
        methods.append(score_scan_context(bench, progress))
    return Evaluation(bench, tuple(methods))
