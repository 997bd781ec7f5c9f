"""``hotformerloc.pipelines.evaluate``: the library behind ``hotformerloc eval`` gives the
numbers of the evaluation primitives it composes, and refuses what cannot be evaluated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from place_bench import write_place_benchmark

from hotformerloc.config import to_dict
from hotformerloc.data import Benchmark
from hotformerloc.errors import HotformerlocError
from hotformerloc.eval import QueryViewRetriever
from hotformerloc.eval.benchmark import evaluate_retriever, model_retriever
from hotformerloc.index.rerank import RerankRetriever
from hotformerloc.model.checkpoint import load_model, save_checkpoint
from hotformerloc.pipelines.evaluate import evaluate_benchmark, score_scan_context


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_evaluate_benchmark_equals_its_primitives(tmp_path: Path) -> None:
    root = write_place_benchmark(tmp_path / "b", places=4)
    ckpt = tmp_path / "m.safetensors"
    net, _ = load_model("hotformerloc-tiny")
    net.config = dataclasses.replace(net.config, query_views=2)
    save_checkpoint(ckpt, net, "hotformerloc-tiny", to_dict(net.config))
    res = evaluate_benchmark(root, [ckpt], scancontext=True, rerank=2)
    names = [m.entry.name for m in res.methods]
    assert names == [
        "hotformerloc-tiny (m.safetensors), 2 query views",
        "hotformerloc-tiny (m.safetensors), 2 query views + re-ranking top 2",
        "Scan Context",
    ]
    assert all(m.seconds > 0 for m in res.methods)
    bench = Benchmark.load(root)
    model, _ = load_model(str(ckpt))
    base = model_retriever(model.eval(), bench)
    assert isinstance(base, QueryViewRetriever)  # the model's own query views
    want = [
        evaluate_retriever(base, bench),
        evaluate_retriever(RerankRetriever(base, bench.load_cloud, top_k=2), bench),
        score_scan_context(bench).entry.result,
    ]
    for got, w in zip(res.entries, want, strict=True):
        assert _same(got.result.to_dict(), w.to_dict()), got.name
    one = evaluate_benchmark(root, [ckpt], query_views=1)
    assert one.entries[0].name == "hotformerloc-tiny (m.safetensors)"
    assert _same(
        one.entries[0].result.to_dict(),
        evaluate_retriever(model_retriever(model, bench, query_views=1), bench).to_dict(),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to evaluate"),
        ({"scancontext": True, "rerank": 5}, "give a model"),
        ({"models": ["hotformerloc-tiny"], "yaw_views": 2, "query_views": 2}, "cannot be"),
    ],
)
def test_evaluate_benchmark_refuses(tmp_path: Path, kwargs: dict, message: str) -> None:
    root = write_place_benchmark(tmp_path / "b", places=3)
    with pytest.raises(HotformerlocError, match=message):
        evaluate_benchmark(root, **kwargs)


def test_progress_counts_embedded_clouds_and_reranked_rows(tmp_path: Path) -> None:
    """Long stages report done/total as they go (what the CLI's log lines show): every
    cloud of every view while embedding, every query row while re-ranking, ending at the
    total."""
    from hotformerloc.eval.benchmark import query_rows
    from hotformerloc.pipelines.evaluate import score_model, score_reranked

    root = write_place_benchmark(tmp_path / "b", places=4)
    bench = Benchmark.load(root)
    net, _ = load_model("hotformerloc-tiny")
    calls: list[tuple[str, int, int]] = []
    scored = score_model(
        bench, net.eval(), "m", query_views=3, batch_size=2, progress=lambda *a: calls.append(a)
    )
    total = len(bench) + 3 * len(query_rows(bench))
    done = [d for _, d, _ in calls]
    assert {t for _, _, t in calls} == {total} and done == sorted(done) and done[-1] == total
    assert len(calls) > 3  # per batch, not once at the end
    calls.clear()
    rr = score_reranked(bench, scored.entry, 2, progress=lambda *a: calls.append(a))
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and calls[-1][1] == calls[-1][2]
    assert rr.entry.retriever.rows_done == calls[-1][2]  # the total is the rows re-ranked
