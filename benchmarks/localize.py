"""Benchmark: online localisation of synthetic drives, with and without the temporal filter.

Each ground sequence given becomes a drive: its submaps with *drifting* odometry in
another frame (the true motion with a 2 % scale error and a yaw drift of 0.3 +- 0.1 degrees
per submap, from an arbitrary origin). The drive is localised against a place database
(``hotformerloc.pipelines.localize.localize_drive``: top-k retrieval, re-ranking), and for
several confidence thresholds the table gives the share of submaps whose map pose is
within 5 m and 5 degrees of the truth, and the false share among those reported: single
shot (the most confident verified candidate) against the filtered track.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/localize.py \
        --db runs/demo/places.db runs/demo/benchmark/forest/ground_01 \
        runs/demo/benchmark/urban/ground_01
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import itertools
import math
import tempfile
from pathlib import Path

import numpy as np

from hotformerloc.index import Localizer, SearchFilter
from hotformerloc.index.track import TrackConfig, filter_track, pose_error
from hotformerloc.io.poses import POSES_FILE, read_poses_csv, write_poses_csv
from hotformerloc.pipelines.localize import LocalizedSubmap, localize_drive

THRESHOLDS = (0.3, 0.4, 0.5, 0.6)


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    t = np.eye(4)
    t[:2, :2] = [[c, -s], [s, c]]
    return t


def make_drive(sequence: Path, out: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``out``: links to ``sequence/clouds/*`` and a drifting-odometry ``poses.csv``;
    returns (timestamps, true poses)."""
    table = read_poses_csv(sequence / POSES_FILE)
    ts, truth = np.asarray(table.timestamps), np.asarray(table.poses)
    rng = np.random.default_rng(seed)
    start = _rz(37.0)
    start[:3, 3] = (500.0, -200.0, 3.0)
    odo = [start]
    for a, b in itertools.pairwise(truth):
        d = np.linalg.inv(a) @ b
        d[:3, 3] *= 1.02
        odo.append(odo[-1] @ d @ _rz(0.3 + 0.1 * rng.standard_normal()))
    clouds = {round(float(p.stem), 3): p for p in (sequence / "clouds").iterdir()}
    out.mkdir(parents=True)
    for t in ts:
        src = clouds[round(float(t), 3)]
        (out / src.name).symlink_to(src.resolve())
    write_poses_csv(out / POSES_FILE, ts, np.stack(odo))
    return ts, truth


def _ok(pose: np.ndarray, truth: np.ndarray) -> bool:
    dt, dr = pose_error(pose, truth)
    return dt <= 5.0 and dr <= 5.0


def score_rows(run: list[LocalizedSubmap], true: list[np.ndarray]) -> list[str]:
    """One table row per threshold of :data:`THRESHOLDS` for a localised drive and the true
    pose of each submap: threshold, single shot within 5 m / 5 deg and false, filtered
    within and false, matched / predicted (cells joined by `` | ``, no outer bars)."""
    odo = np.stack([np.asarray(s.entry.pose) for s in run])
    n = len(run)
    rows = []
    for thr in THRESHOLDS:
        rep = [(s.best.pose, t) for s, t in zip(run, true, strict=True)
               if s.best is not None and s.best.confidence >= thr]  # fmt: skip
        good = sum(_ok(p, t) for p, t in rep)
        track = filter_track(odo, [list(s.candidates) for s in run], TrackConfig(thr))
        frep = [(p.pose, t) for p, t in zip(track, true, strict=True) if p.pose is not None]
        fgood = sum(_ok(p, t) for p, t in frep)
        matched = sum(p.status == "matched" for p in track)
        rows.append(
            f"{thr} | {100 * good / n:.1f} % | {100 * (len(rep) - good) / max(len(rep), 1):.1f} %"
            f" | {100 * fgood / n:.1f} % | {100 * (len(frep) - fgood) / max(len(frep), 1):.1f} %"
            f" | {matched} / {len(frep) - matched}"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sequences", nargs="+", type=Path, help="ground sequence folders")
    ap.add_argument("--db", type=Path, required=True, help="place database (the map)")
    ap.add_argument("--source", default="aerial", help="map places of this source")
    ap.add_argument("--top-k", type=int, default=25)
    args = ap.parse_args()
    loc = Localizer.open(args.db)
    print(
        "| drive | min confidence | single shot within 5 m / 5 deg | single shot false | "
        "filtered within | filtered false | matched / predicted |"
    )
    print("|---|---|---|---|---|---|---|")
    for seq in args.sequences:
        with tempfile.TemporaryDirectory() as tmp:
            ts, truth = make_drive(seq, Path(tmp) / "drive")
            run = localize_drive(loc, Path(tmp) / "drive", args.top_k, SearchFilter(args.source))
        by_ts = {round(float(t), 3): p for t, p in zip(ts, truth, strict=True)}
        true = [by_ts[round(float(s.entry.timestamp or 0.0), 3)] for s in run]
        for row in score_rows(run, true):
            print(f"| {seq.parent.name}/{seq.name} | {row} |", flush=True)


if __name__ == "__main__":
    main()
