"""Temporal filter of online localisation (hotformerloc.index.track) on synthetic drives."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hotformerloc.config import ConfigError
from hotformerloc.index.track import MapCandidate, TrackConfig, filter_track, pose_error


def pose(x: float, y: float, yaw_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    t = np.eye(4)
    t[:2, :2] = [[c, -s], [s, c]]
    t[:2, 3] = (x, y)
    return t


def drive(n: int = 40, step: float = 10.0) -> np.ndarray:
    """Ground truth (n, 4, 4): a drive with a slow left turn."""
    out, x, y, yaw = [], 0.0, 0.0, 0.0
    for _ in range(n):
        out.append(pose(x, y, yaw))
        x += step * math.cos(math.radians(yaw))
        y += step * math.sin(math.radians(yaw))
        yaw += 3.0
    return np.stack(out)


def odometry_of(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Odometry in its own frame: the true motion with a yaw drift of 0.3 deg per step
    and 2 % scale error, starting at an arbitrary origin."""
    rng = np.random.default_rng(seed)
    odo = [pose(100.0, -50.0, 40.0)]
    for a, b in itertools.pairwise(truth):
        d = np.linalg.inv(a) @ b
        d[:3, 3] *= 1.02
        d = d @ pose(0, 0, 0.3 + 0.05 * rng.standard_normal())
        odo.append(odo[-1] @ d)
    return np.stack(odo)


def good(truth: np.ndarray, i: int, rng: np.random.Generator, conf: float = 0.7) -> MapCandidate:
    noisy = truth[i] @ pose(*rng.normal(0, 0.4, 2), rng.normal(0, 1.0))
    return MapCandidate(noisy, conf, f"place{i}")


def within(a: np.ndarray | None, b: np.ndarray, m: float = 5.0, deg: float = 5.0) -> bool:
    if a is None:
        return False
    dt, dr = pose_error(a, b)
    return dt <= m and dr <= deg


def test_outliers_are_rejected_and_gaps_bridged_by_odometry():
    truth = drive()
    odo = odometry_of(truth)
    rng = np.random.default_rng(1)
    cands: list[list[MapCandidate]] = []
    for i in range(len(truth)):
        c = [good(truth, i, rng)]
        if i % 5 == 3:  # a confident look-alike 200 m away
            c.append(MapCandidate(truth[i] @ pose(200.0, 40.0, 90.0), 0.95, "lookalike"))
        if i % 7 == 6:  # nothing retrieved
            c = []
        cands.append(c)
    track = filter_track(odo, cands)
    assert [p.status for p in track[:2]] == ["uninitialised", "matched"]
    assert all(p.place != "lookalike" for p in track)
    assert all(within(p.pose, truth[i]) for i, p in enumerate(track[1:], 1))
    assert [i for i, p in enumerate(track) if p.status == "predicted"] == [
        i for i in range(2, len(truth)) if i % 7 == 6
    ]
    # Without the filter (best candidate each time) the look-alikes win.
    single = [max(c, key=lambda m: m.confidence) if c else None for c in cands]
    ok_single = sum(s is not None and within(s.pose, truth[i]) for i, s in enumerate(single))
    ok_track = sum(within(p.pose, truth[i]) for i, p in enumerate(track))
    assert ok_track == len(truth) - 1 and ok_single <= len(truth) - 8


def test_prediction_confidence_decays_and_track_restarts_after_a_wrong_start():
    truth = drive(30)
    odo = odometry_of(truth, seed=2)
    rng = np.random.default_rng(3)
    shift = pose(300.0, 0.0, 0.0)  # a consistent wrong start: the same look-alike region
    cands = [[MapCandidate(shift @ truth[i], 0.9, "wrong")] for i in range(2)]
    cands += [[good(truth, i, rng)] for i in range(2, 30)]
    cfg = TrackConfig(max_predicted=4, decay=0.5)
    track = filter_track(odo, cands, cfg)
    assert [p.status for p in track[:7]] == [
        "uninitialised", "matched", "predicted", "predicted", "predicted", "predicted",
        "uninitialised",
    ]  # fmt: skip
    assert [p.confidence for p in track[2:6]] == pytest.approx([0.45, 0.225, 0.1125, 0.05625])
    assert track[7].status == "matched"
    assert all(within(p.pose, truth[i]) for i, p in enumerate(track[7:], 7))


def test_low_confidence_never_starts_a_track():
    truth = drive(6)
    rng = np.random.default_rng(4)
    cands = [[good(truth, i, rng, conf=0.3)] for i in range(6)]
    track = filter_track(odometry_of(truth), cands)
    assert {p.status for p in track} == {"uninitialised"}
    assert all(p.pose is None for p in track)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"odometry: expected finite \(N, 4, 4\)"):
        filter_track(np.zeros((3, 3, 3)), [[], [], []])
    with pytest.raises(ValueError, match="candidates: 2 lists for 3 odometry poses"):
        filter_track(np.stack([np.eye(4)] * 3), [[], []])
    with pytest.raises(ConfigError, match=r"TrackConfig\.gate_m must be > 0"):
        TrackConfig(gate_m=0)
