"""Benchmark: synthetic benchmark generation throughput (demo preset by default).

Prints one table: per stage, wall seconds and submaps per second, the whole run against
the 5-minute target, and the culled ray caster against the brute-force reference on the
same scan, measured in this run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/generate.py [--config demo] [--workers 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import tempfile
import time

import numpy as np

from hotformerloc.synth.config import load_generator_config
from hotformerloc.synth.generate import generate, workers_default
from hotformerloc.synth.raycast import cast_rays_bruteforce, cast_scan, scan_directions
from hotformerloc.synth.worlds import build_world
from hotformerloc.synth.worlds.base import Epoch


def caster_ratio() -> tuple[float, float, int]:
    """Seconds of one culled VLP-16 scan (360 columns) vs brute force in a demo forest."""
    world = build_world(
        "forest", {"size_x": 240.0, "size_y": 240.0, "route_length": 700.0}, 0, "forest"
    )
    scene = world.scene(Epoch())
    x, y = world.route()[0]
    origin = np.array([x, y, float(world.ground_height(np.array([x]), np.array([y]))[0]) + 1.4])
    el = np.deg2rad(np.linspace(-15, 15, 16))
    t0 = time.perf_counter()
    a = cast_scan(scene, origin, np.eye(3), el, 360, 32.0, np.random.default_rng(0))
    t1 = time.perf_counter()
    dirs = scan_directions(el, 360)
    half = slice(0, len(dirs) // 8)  # brute force on 1/8 of the rays, scaled up
    cast_rays_bruteforce(scene, origin, dirs[half], 32.0, np.random.default_rng(0))
    t2 = time.perf_counter()
    return t1 - t0, (t2 - t1) * 8, len(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="demo", help="generator preset or YAML file")
    ap.add_argument("--workers", type=int, default=workers_default())
    args = ap.parse_args()
    cfg = load_generator_config(args.config)
    stamps: dict[str, list[float]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        s = stamps.setdefault(stage, [time.perf_counter(), 0.0, 0])
        s[1], s[2] = time.perf_counter(), total

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = generate(cfg, tmp, args.workers, progress)
        total = time.perf_counter() - t0
    n_ground = sum(
        c.get(f"ground_{s}", 0) for c in res.counts.values() for s in ("train", "test", "buffer")
    )
    n_aerial = sum(c.get("aerial", 0) for c in res.counts.values())
    print(f"config={args.config} workers={args.workers} cpus={os.cpu_count()}")
    print(f"{'stage':<28}{'seconds':>10}{'items':>10}{'items/s':>10}")
    for stage, (start, end, n) in stamps.items():
        dt = max(end - start, 1e-9)
        print(f"{stage:<28}{dt:>10.1f}{n:>10}{n / dt:>10.2f}")
    n = res.generated
    print(f"{'total':<28}{total:>10.1f}{n:>10}{n / total:>10.2f}")
    print(
        f"ground submaps kept: {n_ground}, aerial submaps kept: {n_aerial}, "
        f"discarded: {res.discarded}"
    )
    print(f"target: demo in < 300 s -> ratio total/target = {total / 300:.2f}")
    culled, brute, pts = caster_ratio()
    print(
        f"ray caster, one VLP-16 scan (360 cols, {pts} returns): culled {culled * 1e3:.1f} ms, "
        f"brute force {brute * 1e3:.0f} ms, speed-up x{brute / culled:.0f}"
    )


if __name__ == "__main__":
    main()
