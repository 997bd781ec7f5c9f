"""Benchmark: training throughput (samples/s) and peak memory of a multi-staged backprop step.

Per variant: one optimiser step = stage 1 (embed every chunk without grad), the Truncated
Smooth-AP loss on the whole batch, stage 3 (re-embed each chunk with grad and backprop),
Adam step; with the variant's gradient checkpointing and stochastic depth. Inputs: the
reference clouds of ``../shared/data/reference_bench`` (forest_28000 for the depth-7
configs, urban_4096 for Oxford), jittered per sample, as pairs of views of the same place.
Peak memory: resident set above the start (CPU) or ``torch.cuda.max_memory_allocated``.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/train.py [--device cuda] [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from hotformerloc import create_model
from hotformerloc.octree import build_octree
from hotformerloc.train.losses import build_loss
from hotformerloc.train.trainer import multistage_step

REF_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference_bench"
# variant -> (cloud, CPU batch, CPU split, GPU batch, GPU split)
RUNS = {
    "hotformerloc-tiny": ("forest_28000.npy", 32, 16, 256, 128),
    "hotformerloc-small": ("forest_28000.npy", 16, 8, 256, 128),
    "hotformerloc-cs-wild-places": ("forest_28000.npy", 8, 4, 256, 128),
    "hotformerloc-oxford": ("urban_4096.npy", 4, 2, 256, 128),
}


def rss_mb() -> float:
    status = Path("/proc/self/status")
    if not status.exists():
        return float("nan")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def reset_peak(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb()


def peak(device: torch.device, base: float) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return rss_mb() - base


def step_inputs(cloud: np.ndarray, batch: int, split: int, depth: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    base = torch.from_numpy(cloud.astype(np.float32))
    clouds = [(base + 0.004 * torch.randn(base.shape, generator=g)).clamp(-0.99, 0.99)]
    for _ in range(batch - 1):
        clouds.append((base + 0.004 * torch.randn(base.shape, generator=g)).clamp(-0.99, 0.99))
    chunks = [slice(a, min(a + split, batch)) for a in range(0, batch, split)]
    octrees = [build_octree(clouds[c], depth).to(device) for c in chunks]
    label = torch.arange(batch) // 2
    same = label[:, None] == label[None, :]
    pos = (same & ~torch.eye(batch, dtype=torch.bool)).to(device)
    return octrees, chunks, pos, (~same).to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    ap.add_argument("--quick", action="store_true", help="tiny and small only")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    loss_fn = build_loss("truncated_smooth_ap")
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    hdr = (
        f"{'variant':<28}{'batch':>6}{'split':>6}{'step s':>9}{'samples/s':>10}"
        f"{'peak MB':>9}{'grad ckpt':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, (cloud_name, b_cpu, s_cpu, b_gpu, s_gpu) in RUNS.items():
        if args.quick and name not in ("hotformerloc-tiny", "hotformerloc-small"):
            continue
        batch, split = (b_gpu, s_gpu) if device.type == "cuda" else (b_cpu, s_cpu)
        if args.batch:
            batch, split = args.batch, max(1, min(split, args.batch // 2))
        torch.manual_seed(0)
        model = create_model(name).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        cloud = np.load(REF_DIR / cloud_name)
        octrees, chunks, pos, neg = step_inputs(
            cloud, batch, split, model.config.octree_depth, device
        )

        def step(model=model, opt=opt, octrees=octrees, chunks=chunks, pos=pos, neg=neg) -> None:
            opt.zero_grad(set_to_none=True)
            multistage_step(model, octrees, chunks, pos, neg, loss_fn)
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        base = reset_peak(device)
        step()  # warm-up (also the peak-memory measurement)
        mem = peak(device, base)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sec = (time.perf_counter() - t0) / args.steps
        print(
            f"{name:<28}{batch:>6}{split:>6}{sec:>9.2f}{batch / sec:>10.1f}{mem:>9.0f}"
            f"{model.config.grad_checkpoint!s:>10}"
        )
        del model, opt, octrees


if __name__ == "__main__":
    main()
