"""Benchmark: descriptor retrieval alone vs retrieval + geometric re-ranking.

On a benchmark folder (``hotformerloc generate`` layout), every submap is embedded with
``--model``; ground-to-aerial and ground-to-ground AR@1 are scored for the descriptor
ranking and for the same ranking with its ``--top-k`` re-ordered by
:class:`hotformerloc.index.rerank.RerankRetriever`. For the queries whose re-ranked top-1
is a true match, the returned pose is compared with the truth ``inv(T_candidate) @
T_query`` (poses from ``<world>/<sequence>/poses.csv``): the fraction within 1 m and
2 degrees, and the median errors.

Before/after: the re-ranking runs twice, with ``RerankConfig().reference`` (every yaw at
full resolution, every candidate refined: the pre-speed-up pipeline) and with
``RerankConfig()``; AR@1 of both is printed. Latency per query (p50/p99 over up to
``--timed`` query lists of the evaluation, re-timed): ``verify_many`` of the query
(prepared from its raw cloud, timed) against its top-k, with candidates *cold* (built
from their downsampled points, as stored in a database: everything else computed) and
*warm* (their search state already built, as in a long-lived process).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/rerank.py \
        [--bench runs/demo/benchmark] [--model hotformerloc-tiny.synth] \
        [--top-k 25] [--limit 20] [--timed 40]

``--limit N`` keeps N ground test queries per world (evenly spaced); the databases stay
complete.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hotformerloc.data import Benchmark
from hotformerloc.eval import DescriptorRetriever
from hotformerloc.eval.benchmark import (
    BenchmarkEvalConfig,
    benchmark_sets,
    embed_benchmark,
    evaluate_retriever,
)
from hotformerloc.eval.tables import markdown_table
from hotformerloc.index.rerank import (
    PreparedCloud,
    RerankConfig,
    RerankRetriever,
    Verification,
    downsample,
    prepare,
    verify_many,
)
from hotformerloc.io.poses import POSES_FILE, read_poses_csv
from hotformerloc.model.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
TRANSLATION_OK = 1.0  # m
ROTATION_OK = 2.0  # degrees


def read_poses(bench: Benchmark) -> np.ndarray:
    """(N, 4, 4) submap frame -> world pose of every row of ``bench``, from poses.csv."""
    poses = np.zeros((len(bench), 4, 4))
    for world in bench.worlds:
        for seq in bench.sequences(world):
            path = bench.root / world / seq / POSES_FILE
            rows = read_poses_csv(path)
            table = {
                f"{t:.6f}": p for t, p in zip(rows.timestamps.tolist(), rows.poses, strict=True)
            }
            for i in bench.select(world=world, sequence=seq):
                key = f"{bench.timestamp[i]:.6f}"
                if key not in table:
                    raise SystemExit(f"{path}: no pose for timestamp {key}")
                poses[i] = table[key]
    return poses


def subsample(bench: Benchmark, limit: int | None) -> Benchmark:
    """``bench`` with at most ``limit`` ground test queries per world (evenly spaced); the
    others become ``buffer`` (still in every database, no longer queries)."""
    if limit is None:
        return bench
    split = bench.split.copy()
    for world in bench.worlds:
        q = bench.select(world=world, source="ground", split="test")
        keep = q[np.unique(np.linspace(0, len(q) - 1, min(limit, len(q))).round().astype(int))]
        split[np.setdiff1d(q, keep)] = "buffer"
    return replace(bench, split=split)


@dataclass(frozen=True)
class Top1:
    """The re-ranked top-1 of one (query, database) pair."""

    correct: bool  # within the protocol's true-positive radius
    fitness: float
    t_err: float  # m, of the returned pose against the truth
    r_err: float  # degrees


def top1_results(
    retr: RerankRetriever, bench: Benchmark, poses: np.ndarray, cfg: BenchmarkEvalConfig
) -> dict[str, list[Top1]]:
    """Per protocol (``g2g``, ``g2a``), the re-ranked top-1 of every query (verifications
    come from the retriever's memo, filled by the evaluation)."""
    g2g, g2a = benchmark_sets(bench)
    pairs = {
        "g2g": (
            [(q, d) for runs in g2g.values() for q in runs for d in runs if d is not q],
            cfg.g2g_threshold,
        ),
        "g2a": ([(q, cs.aerial) for cs in g2a.values() for q in cs.ground], cfg.g2a_threshold),
    }
    out: dict[str, list[Top1]] = {}
    for key, (runs, threshold) in pairs.items():
        res = []
        for qrun, dbrun in runs:
            assert qrun.is_query is not None
            items = qrun.items[qrun.is_query]
            if not items.size:
                continue
            top1 = retr.rank(items, dbrun.items, 1).indices[:, 0]
            for qi, pos in zip(items, top1, strict=True):
                ci = int(dbrun.items[pos])
                ver = retr.verification(int(qi), ci)
                err = np.linalg.inv(np.linalg.inv(poses[ci]) @ poses[qi]) @ ver.pose
                cos = np.clip((np.trace(err[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
                res.append(
                    Top1(
                        correct=bool(np.linalg.norm(bench.xy[qi] - bench.xy[ci]) <= threshold),
                        fitness=ver.fitness,
                        t_err=float(np.linalg.norm(err[:3, 3])),
                        r_err=math.degrees(math.acos(cos)),
                    )
                )
        out[key] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, default=ROOT / "runs" / "demo" / "benchmark")
    ap.add_argument("--model", default="hotformerloc-tiny.synth")
    ap.add_argument("--top-k", type=int, default=25, help="candidates re-ranked per query")
    ap.add_argument("--limit", type=int, default=None, help="ground test queries per world")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for embedding")
    ap.add_argument("--timed", type=int, default=40, help="query lists re-timed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    try:
        full = Benchmark.load(args.bench)
        bench = subsample(full, args.limit)
        poses = read_poses(bench)
        t0 = time.perf_counter()
        model, _ = load_model(args.model)
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: {exc}") from None
    desc = embed_benchmark(model, bench, None)
    t_embed = time.perf_counter() - t0
    eval_cfg = BenchmarkEvalConfig()
    base = DescriptorRetriever(desc)
    before = evaluate_retriever(base, bench, eval_cfg)
    config = RerankConfig()
    ref_config = config.reference
    ref = RerankRetriever(base, bench.load_cloud, top_k=args.top_k, config=ref_config)
    t0 = time.perf_counter()
    after_ref = evaluate_retriever(ref, bench, eval_cfg)
    t_ref = time.perf_counter() - t0
    lists: list[tuple[int, list[int]]] = []
    retr = RecordingRetriever(base, bench.load_cloud, top_k=args.top_k, config=config)
    retr.lists = lists
    t0 = time.perf_counter()
    after = evaluate_retriever(retr, bench, eval_cfg)
    t_rerank = time.perf_counter() - t0
    tops = top1_results(retr, bench, poses, eval_cfg)

    rows = []
    for key, label in (("g2a", "ground-to-aerial"), ("g2g", "ground-to-ground")):
        b, a = getattr(before, key), getattr(after, key)
        if b is None or a is None:
            continue
        right = [t for t in tops[key] if t.correct]
        wrong = [t for t in tops[key] if not t.correct]
        e = np.array([(t.t_err, t.r_err) for t in right]).reshape(-1, 2)
        ok = (e[:, 0] <= TRANSLATION_OK) & (e[:, 1] <= ROTATION_OK)
        n_q = sum(r.num_queries for loc in a.locations.values() for r in loc.pairs.values())
        rows.append(
            {
                "protocol": label,
                "queries": n_q,
                "r1_before": b.r1,
                "r1_ref": getattr(after_ref, key).r1,
                "r1_after": a.r1,
                "r5_before": float(b.recall[4]),
                "r5_after": float(a.recall[4]),
                "correct": len(e),
                "pose_ok": 100.0 * ok.mean() if len(e) else float("nan"),
                "t_med": float(np.median(e[:, 0])) if len(e) else float("nan"),
                "r_med": float(np.median(e[:, 1])) if len(e) else float("nan"),
                "fit_right": float(np.median([t.fitness for t in right])) if right else math.nan,
                "fit_wrong": float(np.median([t.fitness for t in wrong])) if wrong else math.nan,
            }
        )
    print(
        f"benchmark {args.bench} ({len(full)} submaps), model {Path(args.model).name}, "
        f"top-k {args.top_k}, queries per world: {args.limit or 'all'}"
    )
    print(
        markdown_table(
            rows,
            [
                ("protocol", "protocol", None),
                ("queries", "query/db pairs", None),
                ("r1_before", "AR@1 retrieval", ".1f"),
                ("r1_ref", "AR@1 + re-rank (reference)", ".1f"),
                ("r1_after", "AR@1 + re-rank", ".1f"),
                ("r5_before", "AR@5 retrieval", ".1f"),
                ("r5_after", "AR@5 + re-rank", ".1f"),
                ("correct", "correct top-1", None),
                ("pose_ok", "pose ≤1 m & ≤2° (%)", ".1f"),
                ("t_med", "median t err (m)", ".2f"),
                ("r_med", "median rot err (°)", ".2f"),
                ("fit_right", "top-1 fitness: correct", ".2f"),
                ("fit_wrong", "wrong", ".2f"),
            ],
        )
    )

    timing = time_queries(bench, lists, args.timed, ref_config, config)
    print(f"\nper-query verification of the top {args.top_k} ({timing.pop('n')} query lists):")
    for name, ts in timing.items():
        print(
            f"  {name:<24} p50 {1e3 * np.median(ts):6.0f} ms   "
            f"p99 {1e3 * np.percentile(ts, 99):6.0f} ms"
        )
    print(
        f"re-ranked evaluation: reference {t_ref:.0f} s, default {t_rerank:.0f} s "
        f"({len(lists)} query lists, with loading and caching); embedding {t_embed:.0f} s"
    )


class RecordingRetriever(RerankRetriever):
    """A :class:`RerankRetriever` that records each (query item, candidate items) list."""

    lists: list[tuple[int, list[int]]]

    def _verified(self, query_item: int, items: Sequence[int]) -> list[Verification]:
        self.lists.append((query_item, list(items)))
        return super()._verified(query_item, items)


def time_queries(
    bench: Benchmark,
    lists: list[tuple[int, list[int]]],
    n: int,
    ref_config: RerankConfig,
    config: RerankConfig,
) -> dict[str, Any]:
    """Seconds per query list (up to ``n``, evenly spaced): query prepared from its raw
    cloud plus :func:`verify_many`, candidates cold (from downsampled points) or warm."""
    picked = [lists[i] for i in np.unique(np.linspace(0, len(lists) - 1, n).round().astype(int))]
    out: dict[str, Any] = {"n": len(picked)}
    for name, cfg in (("reference", ref_config), ("default", config)):
        cold, warm = [], []
        for qi, items in picked:
            raw = bench.load_cloud(qi)
            points = [downsample(bench.load_cloud(i), cfg) for i in items]
            cands = [PreparedCloud(p, cfg) for p in points]
            t = time.perf_counter()
            verify_many(prepare(raw, cfg), cands, cfg)
            cold.append(time.perf_counter() - t)
            for c in cands:  # every candidate's state, as after many queries
                c._gicp, c._voxel_keys, c._floor, c._bev_fft, c._bev_fft_coarse  # noqa: B018
            t = time.perf_counter()
            verify_many(prepare(raw, cfg), cands, cfg)
            warm.append(time.perf_counter() - t)
        out[f"{name}, cold candidates"] = cold
        out[f"{name}, warm candidates"] = warm
    return out


if __name__ == "__main__":
    main()
