"""Learning curves of training runs: validation AR@1 against cumulative training hours.

    python benchmarks/curves.py RUN_DIR [RUN_DIR ...] [--png curves.png]

Reads each run's ``log.jsonl`` (written by ``hotformerloc train``) and prints, per validated
epoch, the cumulative training time (the sum of the epochs' ``seconds``: validation time is
not counted), the training loss and the validation AR@1 (ground-to-ground, ground-to-aerial,
their mean). ``--png`` also plots the mean AR@1 of every run against hours.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run: Path) -> list[dict[str, float]]:
    """Validated epochs of ``run``: epoch, hours, loss, g2g, g2a, ar1 (percent)."""
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    out, seconds = [], 0.0
    for r in rows:
        seconds += float(r.get("seconds", 0.0))
        if "val_ar1" in r:
            out.append(
                {
                    "epoch": r["epoch"],
                    "hours": seconds / 3600,
                    "loss": r.get("loss", float("nan")),
                    "g2g": r.get("val_g2g_ar1", float("nan")),
                    "g2a": r.get("val_g2a_ar1", float("nan")),
                    "ar1": r["val_ar1"],
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    curves = {}
    for run in args.runs:
        try:
            curves[run.name] = curve(run)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: {run}: {e}") from None
    for name, rows in curves.items():
        print(f"\n{name}")
        print("| epoch | hours | loss | val g2g AR@1 | val g2a AR@1 | mean |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['epoch']} | {r['hours']:.2f} | {r['loss']:.4f} | {r['g2g']:.1f} "
                f"| {r['g2a']:.1f} | {r['ar1']:.1f} |"
            )
    if args.png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, rows in curves.items():
            ax.plot([r["hours"] for r in rows], [r["ar1"] for r in rows], marker="o", label=name)
        ax.set_xlabel("training hours (2-core CPU)")
        ax.set_ylabel("validation AR@1, mean of g2g and g2a (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        print(f"\nplot: {args.png}")


if __name__ == "__main__":
    main()
