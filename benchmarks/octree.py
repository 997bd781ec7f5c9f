"""Benchmark: octree build + 27-neighbour tables on the reference speed clouds.

Prints one table: per cloud, the depth, non-empty nodes per depth, build (keys, levels,
children/parent, leaf means), neighbour tables (all depths), the whole ``build_octree`` call,
the reference implementation's figure for the same thread count and the ratio ours/reference.
Medians of ``--repeats`` runs after warm-up.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/octree.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hotformerloc.octree import build_octree, compute_neighbours

BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference_bench"
# cloud -> (depth, {threads: reference build + neighbours ms}) from BENCH/README.md
CLOUDS = {
    "forest_28000": (7, {1: 72.0, 2: 46.0}),
    "urban_4096": (9, {1: 33.0, 2: 26.0}),
}


def octree_timing(points: torch.Tensor, depth: int, repeats: int = 20) -> dict[str, object]:
    """Median milliseconds of build, neighbours and the whole call; nodes per depth.

    Args:
        points: (N, 3) float32 in [-1, 1].
        depth: octree depth.
        repeats: timed runs (after 3 warm-up runs).

    Returns:
        ``{"nodes": list[int], "build_ms": float, "neighbours_ms": float, "total_ms": float}``.
    """
    for _ in range(3):
        build_octree(points, depth)
    build, neigh, total = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        octree = build_octree(points, depth, neighbours=False)
        t1 = time.perf_counter()
        compute_neighbours(octree)
        t2 = time.perf_counter()
        build.append(t1 - t0)
        neigh.append(t2 - t1)
        del octree
        t0 = time.perf_counter()
        octree = build_octree(points, depth)
        total.append(time.perf_counter() - t0)
    return {
        "nodes": [int(c.sum()) for c in octree.counts],
        "build_ms": 1e3 * statistics.median(build),
        "neighbours_ms": 1e3 * statistics.median(neigh),
        "total_ms": 1e3 * statistics.median(total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = (
        f"{'cloud':<14} {'depth':>5}  {'nodes per depth':<44} {'build':>7} {'neigh':>7} "
        f"{'total':>7} {'ref':>6} {'ratio':>6}"
    )
    print(f"octree build, torch {torch.__version__}, {args.threads} thread(s), ms (median)")
    print(header)
    print("-" * len(header))
    for name, (depth, reference) in CLOUDS.items():
        points = torch.from_numpy(np.load(BENCH / f"{name}.npy"))
        r = octree_timing(points, depth, args.repeats)
        ref = reference.get(args.threads)
        nodes = "/".join(map(str, r["nodes"]))
        ref_txt = f"{ref:6.1f}" if ref else f"{'-':>6}"
        ratio = f"{r['total_ms'] / ref:6.2f}" if ref else f"{'-':>6}"
        print(
            f"{name:<14} {depth:>5}  {nodes:<44} {r['build_ms']:7.2f} {r['neighbours_ms']:7.2f} "
            f"{r['total_ms']:7.2f} {ref_txt} {ratio}"
        )


if __name__ == "__main__":
    main()
