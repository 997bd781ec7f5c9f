"""Ablations on the `small` synthetic preset, the same training budget for each variant.

Variants (model overrides of the demo training config): the base model; relay tokens off
(``disable_rt``); GeM pooling instead of pyramid attention pooling; cylindrical instead of
Cartesian octree coordinates. Each is trained for ``--budget`` minutes (same seed, same
batches), its best checkpoint is evaluated ground-to-ground and ground-to-aerial, and a
markdown table is printed (and written to ``<out>/ablation.md`` / ``ablation.json``).
Training uses the `demo` preset (hotformerloc-tiny) with one world per batch
(``data.group_batches``) on ``--nproc`` data-parallel processes; the reported model is the
last one (no checkpoint selection on the test queries).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/ablation.py --out runs/ablation \
        [--budget 6] [--config small] [--only base,gem]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import time
from pathlib import Path
from typing import Any

from hotformerloc.eval.tables import markdown_table
from hotformerloc.io.atomic import atomic_write_text
from hotformerloc.pipelines.evaluate import evaluate_benchmark
from hotformerloc.synth.config import load_generator_config
from hotformerloc.synth.generate import generate, workers_default
from hotformerloc.train.config import load_train_config
from hotformerloc.train.trainer import fit_local

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "relay tokens off": {"disable_rt": True},
    "GeM pooling": {"pooling": "gem", "output_dim": 64},  # GeM: descriptor = channels[1]
    "cylindrical": {"coordinates": "cylindrical"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--config", default="small", help="generator preset or YAML file")
    ap.add_argument("--bench", type=Path, default=None, help="use this benchmark folder")
    ap.add_argument("--budget", type=float, default=6.0, help="training minutes per variant")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--nproc", type=int, default=2, help="data-parallel training processes")
    args = ap.parse_args()
    bench_dir = args.bench or args.out / "benchmark"
    t0 = time.perf_counter()
    if args.bench is None:
        generate(load_generator_config(args.config), bench_dir, workers_default())
    print(f"benchmark {bench_dir} ready in {time.perf_counter() - t0:.0f} s")
    only = [v.strip() for v in args.only.split(",") if v.strip()]
    rows: list[dict[str, Any]] = []
    for name, overrides in VARIANTS.items():
        if only and name not in only and name.split()[0] not in only:
            continue
        run = args.out / name.replace(" ", "-")
        cfg = load_train_config(
            "demo",
            {
                "time_budget_min": args.budget,
                "eval_every": 0,  # validate once, at the end: the budget is for training
                "data": {"root": str(bench_dir), "group_batches": True},  # steadier g2g
                "model_overrides": {"grad_checkpoint": False, **overrides},
            },
        )
        t1 = time.perf_counter()
        if (run / "done.json").exists():
            result_log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        else:
            resume = (run / "resume.safetensors").exists()
            result_log = fit_local(cfg, run, nproc=args.nproc, resume=resume).log
        train_s = time.perf_counter() - t1
        (scored,) = evaluate_benchmark(bench_dir, [run / "best.safetensors"]).methods
        summary = scored.entry.result.summary()
        rows.append(
            {
                "variant": name,
                "overrides": json.dumps(overrides),
                "epochs": len(result_log),
                "train_min": train_s / 60,
                **summary,
            }
        )
        print(json.dumps(rows[-1]))
    cols = [
        ("variant", "Variant", None),
        ("overrides", "Model overrides", None),
        ("epochs", "Epochs", None),
        ("g2g_ar1", "g2g AR@1", ".1f"),
        ("g2g_ar1pct", "g2g AR@1%", ".1f"),
        ("g2a_ar1", "g2a AR@1", ".1f"),
        ("g2a_ar1pct", "g2a AR@1%", ".1f"),
    ]
    table = markdown_table(rows, cols)
    print(table)
    atomic_write_text(args.out / "ablation.md", table + "\n")
    atomic_write_text(args.out / "ablation.json", json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
