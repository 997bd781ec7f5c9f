"""Benchmark: place database build/open throughput, query latency and approximate recall.

Per size N (random unit 256-d float32 descriptors, generated in chunks so 1M stays ~1 GB):

* **write**: ``PlaceDatabase.create`` with N entries (validation, npy/JSON files, SHA-256s),
  in entries/s; **open**: ``PlaceDatabase.open`` with full checksum verification, in s;
* per index kind (exact FAISS, IVF, HNSW): index build in entries/s, single-query top-25
  latency p50/p99 over ``--queries`` queries, recall@25 against exact search (the fraction
  of the exact top-25 that the index returns) and top-1 agreement. Queries are noisy copies
  of random database rows (Gaussian noise, sigma 0.03 per dimension, renormalised): the
  nearest entry is clear, the rest of the top-25 is as hard as random data gets;
* re-ranking latency per candidate (``hotformerloc.index.rerank.verify``, default config) on
  two submaps of a synthetic benchmark, when that module and the benchmark exist;
* ``db build`` throughput (``build_database``: read, prepare, octree, forward, write) in
  entries/s per model variant (untrained weights, CPU) with ``--build-workers`` loader
  workers (0: in-process), on ``--build-entries`` submaps spread over the benchmark; the
  median of ``--build-reps`` runs (worker counts alternate within a repetition), and its
  ratio to workers 0.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/database.py [--sizes 10000,100000]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/database.py --sizes "" \
        --build-variants hotformerloc-tiny --build-entries 64
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hotformerloc.index import Entry, ModelInfo, PlaceDatabase, SearchIndex

DIM = 256
K = 25
CHUNK = 100_000
DEFAULT_BENCH = Path(__file__).resolve().parents[1] / "runs" / "demo" / "benchmark"
MODEL = ModelInfo("random", "0" * 64, "random", None)


def unit_rows(n: int, seed: int) -> np.ndarray:
    """(n, DIM) float32 random unit rows, generated CHUNK rows at a time."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for a in range(0, n, CHUNK):
        b = rng.standard_normal((min(CHUNK, n - a), DIM), dtype=np.float32)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        out[a : a + len(b)] = b
    return out


def noisy_copies(x: np.ndarray, q: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = x[rng.choice(len(x), q, replace=False)] + 0.03 * rng.standard_normal(
        (q, DIM), dtype=np.float32
    )
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def latencies_ms(index: SearchIndex, queries: np.ndarray) -> np.ndarray:
    out = []
    for q in queries:
        t = time.perf_counter()
        index.search(q, K)
        out.append(time.perf_counter() - t)
    return np.array(out) * 1e3


def run_size(n: int, kinds: list[str], n_queries: int, hnsw_max: int, tmp: Path) -> list[dict]:
    x = unit_rows(n, seed=n)
    entries = [Entry(id=f"p{i}", source=("ground", "aerial")[i % 2]) for i in range(n)]
    path = tmp / f"db_{n}"
    t = time.perf_counter()
    PlaceDatabase.create(path, DIM, MODEL, x, entries)
    write_s = time.perf_counter() - t
    del entries
    t = time.perf_counter()
    db = PlaceDatabase.open(path, verify=True)
    open_s = time.perf_counter() - t
    x = db.descriptors
    queries = noisy_copies(x, n_queries, seed=1)
    rows = [{"n": n, "what": "database", "write": n / write_s, "open_s": open_s}]
    t = time.perf_counter()
    exact = SearchIndex(x, "exact")
    exact_build_s = time.perf_counter() - t
    truth = exact.search(queries, K).indices
    for kind in kinds:
        if kind == "hnsw" and n > hnsw_max:
            rows.append({"n": n, "what": kind, "skipped": f"N > --hnsw-max {hnsw_max}"})
            continue
        if kind == "exact":
            index, build_s = exact, exact_build_s
        else:
            t = time.perf_counter()
            index = SearchIndex(x, kind)
            build_s = time.perf_counter() - t
        got = index.search(queries, K).indices
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(got, truth, strict=True)])
        lat = latencies_ms(index, queries)
        rows.append(
            {
                "n": n,
                "what": kind,
                "build": n / build_s,
                "p50": float(np.percentile(lat, 50)),
                "p99": float(np.percentile(lat, 99)),
                "recall": float(recall),
                "top1": float(np.mean(got[:, 0] == truth[:, 0])),
            }
        )
        print(f"  {n} {kind}: done", flush=True)
        del index
    shutil.rmtree(path)
    return rows


def rerank_latency(bench_dir: Path, reps: int) -> str:
    """Per-candidate verification latency on a ground/aerial and a ground/ground pair."""
    try:
        from hotformerloc.index.rerank import RerankConfig, verify
    except ImportError as e:
        return f"re-ranking: skipped (hotformerloc.index.rerank not importable: {e})"
    if not bench_dir.is_dir():
        return f"re-ranking: skipped (no benchmark at {bench_dir}; pass --bench)"
    from hotformerloc.data import Benchmark

    bench = Benchmark.load(bench_dir)
    world = bench.worlds[0]
    ground = bench.select(world=world, source="ground")
    q = int(ground[len(ground) // 2])

    def nearest(rows: np.ndarray) -> int:
        rows = rows[rows != q]
        return int(rows[np.argmin(np.linalg.norm(bench.xy[rows] - bench.xy[q], axis=1))])

    lines = []
    query = bench.load_cloud(q)
    for label, c in (
        ("ground->aerial", nearest(bench.select(world=world, source="aerial"))),
        ("ground->ground", nearest(ground)),
    ):
        cand = bench.load_cloud(c)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            v = verify(query, cand, RerankConfig())
            times.append(time.perf_counter() - t)
        lines.append(
            f"re-ranking {label} ({len(query)} vs {len(cand)} points, "
            f"{np.linalg.norm(bench.xy[c] - bench.xy[q]):.1f} m apart): "
            f"p50 {np.median(times) * 1e3:.0f} ms per candidate over {reps} runs "
            f"(fitness {v.fitness:.2f})"
        )
    return "\n".join(lines)


def build_throughput(
    bench_dir: Path,
    variants: list[str],
    n: int,
    workers: list[int],
    reps: int,
    batch: int,
    device: str = "cpu",
) -> str:
    """Markdown table: median ``db build`` entries/s per variant and worker count."""
    if not variants:
        return "db build: skipped (--build-variants is empty)"
    if not bench_dir.is_dir():
        return (
            f"db build: skipped (no benchmark at {bench_dir}; pass --bench, or make one with "
            "`hotformerloc generate -c demo --out DIR`)"
        )
    import torch

    from hotformerloc.index import build_database, load_embedder, scan_places

    places = scan_places(bench_dir)
    entries = [places[i] for i in np.linspace(0, len(places) - 1, min(n, len(places))).astype(int)]
    lines = [
        f"db build ({len(entries)} of {len(places)} submaps of {bench_dir}, batch {batch}, "
        f"{device}, {torch.get_num_threads()} torch threads, median of {reps}):",
        "",
        "| variant | "
        + " | ".join(f"workers {w} (entries/s)" for w in workers)
        + "".join(f" | ratio {w}/{workers[0]}" for w in workers[1:])
        + " |",
        "|---|" + "---|" * (2 * len(workers) - 1),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            embedder = load_embedder(variant, device)
            build_database(Path(tmp) / f"{variant}-warm", embedder, entries[:batch], batch)
            rates: dict[int, list[float]] = {w: [] for w in workers}
            for r in range(reps):
                for w in workers if r % 2 == 0 else workers[::-1]:
                    out = Path(tmp) / f"{variant}-{w}-{r}"
                    t = time.perf_counter()
                    build_database(out, embedder, entries, batch, workers=w)
                    rates[w].append(len(entries) / (time.perf_counter() - t))
                    shutil.rmtree(out)
            med = {w: float(np.median(v)) for w, v in rates.items()}
            cells = " | ".join(f"{med[w]:.2f}" for w in workers)
            ratios = "".join(f" | {med[w] / med[workers[0]]:.2f}" for w in workers[1:])
            lines.append(f"| {variant} | {cells}{ratios} |")
            print(f"  db build {variant}: done {rates}", flush=True)
    return "\n".join(lines)


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated N")
    p.add_argument("--kinds", default="exact,ivf,hnsw", help="index kinds to measure")
    p.add_argument("--queries", type=int, default=100, help="single queries per index")
    p.add_argument(
        "--hnsw-max", type=int, default=200_000, help="skip HNSW above this N (slow build)"
    )
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="benchmark for re-ranking")
    p.add_argument("--rerank-reps", type=int, default=5)
    p.add_argument(
        "--build-variants",
        default="hotformerloc-tiny,hotformerloc-small,hotformerloc-cs-wild-places",
        help="models for the db build throughput ('' skips it)",
    )
    p.add_argument("--build-entries", type=int, default=32, help="submaps per db build run")
    p.add_argument("--build-workers", default="0,1,2", help="loader worker counts to compare")
    p.add_argument("--build-reps", type=int, default=3, help="db build runs per worker count")
    p.add_argument("--batch-size", type=int, default=8, help="db build clouds per forward")
    p.add_argument("--build-device", default="cpu", help="db build model device (cpu, cuda)")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    kinds = args.kinds.split(",")
    import faiss

    from hotformerloc.model import retain_freed_memory

    retained = retain_freed_memory()  # as the command line does
    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs"
        f", malloc keeps freed memory: {'yes' if retained else 'no'}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rows += run_size(n, kinds, args.queries, args.hnsw_max, Path(tmp))
    header = "| N | index | build (entries/s) | p50 (ms) | p99 (ms) | recall@25 | top-1 agree |"
    print("\n" + header + "\n|---|---|---|---|---|---|---|")
    for r in rows:
        if r["what"] == "database":
            print(
                f"| {r['n']:,} | database write (open+verify {r['open_s']:.2f} s) | "
                f"{r['write']:,.0f} | - | - | - | - |"
            )
        elif "skipped" in r:
            print(f"| {r['n']:,} | {r['what']} | skipped ({r['skipped']}) | - | - | - | - |")
        else:
            print(
                f"| {r['n']:,} | {r['what']} | {r['build']:,.0f} | {fmt(r['p50'], '.2f')} | "
                f"{fmt(r['p99'], '.2f')} | {r['recall']:.3f} | {r['top1']:.2f} |"
            )
    print()
    print(rerank_latency(args.bench, args.rerank_reps))
    print()
    print(
        build_throughput(
            args.bench,
            [v for v in args.build_variants.split(",") if v],
            args.build_entries,
            [int(w) for w in args.build_workers.split(",")],
            args.build_reps,
            args.batch_size,
            args.build_device,
        )
    )


if __name__ == "__main__":
    main()
