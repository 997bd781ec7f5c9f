"""Temporal filter for online localisation: odometry between submaps keeps a consistent track.

Each submap along a drive comes with its odometry pose (drifting, in the odometry frame)
and with candidate map poses from retrieval and re-ranking (each with a confidence in
[0, 1], e.g. the verification fitness). Single-shot matches can be wrong with a high
confidence (a look-alike place); the filter accepts a match only when it agrees with the
track predicted by odometry. The rule (``docs/robot-logs.md``):

1. **Start.** Without a track, the best candidate with ``confidence >= min_confidence``
   is kept as a *tentative* fix; the track starts when the next submap's best candidate
   agrees with the tentative fix moved by the odometry between them (within the gate).
   Until then every submap is ``uninitialised``.
2. **Follow.** With a track, the prediction is the last pose moved by the odometry delta.
   Among the candidates with ``confidence >= min_confidence`` whose pose lies within the
   gate of the prediction (translation ``gate_m + drift * travelled``, where ``travelled``
   is the odometry path length since the last accepted match; rotation ``gate_deg``), the
   most confident is accepted (``matched``). Otherwise the submap gets the prediction
   (``predicted``), with confidence ``last * decay ** n`` after ``n`` predictions.
3. **Recover.** After ``max_predicted`` predictions in a row the track is dropped and the
   filter starts again (step 1), so a wrong start or a kidnapped robot is not followed for
   ever.

``filter_track`` is pure (numpy only): the same inputs give the same track.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hotformerloc.config import require

Status = Literal["matched", "predicted", "uninitialised"]

__all__ = ["MapCandidate", "TrackConfig", "TrackPoint", "filter_track", "pose_error"]


@dataclass(frozen=True)
class TrackConfig:
    """Knobs of :func:`filter_track` (lengths in m, angles in degrees).

    * ``min_confidence``: candidates below it are never accepted;
    * ``gate_m``, ``drift``: a candidate within ``gate_m + drift * travelled`` metres of
      the prediction may be accepted (``drift``: metres of odometry drift per metre driven);
    * ``gate_deg``: and within this rotation of it;
    * ``max_predicted``: predictions in a row after which the track is dropped;
    * ``decay``: confidence factor per prediction.
    """

    min_confidence: float = 0.5
    gate_m: float = 5.0
    drift: float = 0.05
    gate_deg: float = 15.0
    max_predicted: int = 10
    decay: float = 0.9

    def __post_init__(self) -> None:
        require(
            0.0 <= self.min_confidence <= 1.0,
            f"TrackConfig.min_confidence must be in [0, 1], got {self.min_confidence}",
        )
        require(self.gate_m > 0, f"TrackConfig.gate_m must be > 0, got {self.gate_m}")
        require(self.drift >= 0, f"TrackConfig.drift must be >= 0, got {self.drift}")
        require(
            0 < self.gate_deg <= 180,
            f"TrackConfig.gate_deg must be in (0, 180], got {self.gate_deg}",
        )
        require(
            self.max_predicted >= 1,
            f"TrackConfig.max_predicted must be >= 1, got {self.max_predicted}",
        )
        require(0 < self.decay <= 1, f"TrackConfig.decay must be in (0, 1], got {self.decay}")


@dataclass(frozen=True)
class MapCandidate:
    """One single-shot estimate of a submap's map pose: ``pose`` (4, 4) float64 submap ->
    map, ``confidence`` in [0, 1], ``place``: the matched place's id."""

    pose: np.ndarray
    confidence: float
    place: str


@dataclass(frozen=True)
class TrackPoint:
    """The filter's answer for one submap: ``pose`` (4, 4) float64 submap -> map (None
    while ``uninitialised``), ``confidence`` in [0, 1], ``status``, and ``place``: the
    accepted candidate's place (None unless ``matched``)."""

    pose: np.ndarray | None
    confidence: float
    status: Status
    place: str | None


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation m, rotation degrees) between two (4, 4) poses."""
    dt = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    r = a[:3, :3].T @ b[:3, :3]
    cos = float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    return dt, math.degrees(math.acos(cos))


def _best(
    candidates: Sequence[MapCandidate],
    config: TrackConfig,
    near: np.ndarray | None = None,
    gate_m: float = 0.0,
) -> MapCandidate | None:
    """The most confident candidate over ``min_confidence`` (and within the gate of
    ``near`` when given); ties keep the input order."""
    best: MapCandidate | None = None
    for c in candidates:
        if c.confidence < config.min_confidence:
            continue
        if near is not None:
            dt, dr = pose_error(near, c.pose)
            if dt > gate_m or dr > config.gate_deg:
                continue
        if best is None or c.confidence > best.confidence:
            best = c
    return best


def filter_track(
    odometry: np.ndarray,
    candidates: Sequence[Sequence[MapCandidate]],
    config: TrackConfig | None = None,
) -> list[TrackPoint]:
    """The filtered track of a drive (the rule of the module docstring).

    Args:
        odometry: (N, 4, 4) float odometry poses of the N submaps (submap -> odometry
            frame), in driving order; only the motion between consecutive ones is used.
        candidates: per submap, its map-pose candidates (any number, possibly none).
        config: the knobs (default ``TrackConfig()``).

    Returns:
        N :class:`TrackPoint`, one per submap.

    Raises:
        ValueError: ``odometry`` is not (N, 4, 4) finite, or ``candidates`` has another
            length.
    """
    cfg = config or TrackConfig()
    odo = np.asarray(odometry, dtype=np.float64)
    if odo.ndim != 3 or odo.shape[1:] != (4, 4) or not np.isfinite(odo).all():
        raise ValueError(f"odometry: expected finite (N, 4, 4) poses, got shape {odo.shape}")
    if len(candidates) != odo.shape[0]:
        raise ValueError(f"candidates: {len(candidates)} lists for {odo.shape[0]} odometry poses")
    out: list[TrackPoint] = []
    track: np.ndarray | None = None  # last pose (matched or predicted)
    tentative: MapCandidate | None = None  # a start waiting for its confirmation
    tentative_at = -1
    confidence = 0.0
    travelled = 0.0  # odometry path length since the last match
    predicted = 0
    for i, cands in enumerate(candidates):
        delta = np.linalg.inv(odo[i - 1]) @ odo[i] if i else np.eye(4)
        step = float(np.linalg.norm(delta[:3, 3]))
        if track is None:
            point, track, tentative, tentative_at, confidence = _start(
                i, cands, odo, tentative, tentative_at, cfg
            )
            travelled, predicted = 0.0, 0
            out.append(point)
            continue
        prediction = track @ delta
        travelled += step
        match = _best(cands, cfg, prediction, cfg.gate_m + cfg.drift * travelled)
        if match is not None:
            track, confidence, travelled, predicted = match.pose, match.confidence, 0.0, 0
            out.append(TrackPoint(match.pose, match.confidence, "matched", match.place))
            continue
        predicted += 1
        if predicted > cfg.max_predicted:  # lost: start again from this submap
            point, track, tentative, tentative_at, confidence = _start(i, cands, odo, None, -1, cfg)
            travelled, predicted = 0.0, 0
            out.append(point)
            continue
        track = prediction
        out.append(TrackPoint(prediction, confidence * cfg.decay**predicted, "predicted", None))
    return out


def _start(
    i: int,
    cands: Sequence[MapCandidate],
    odo: np.ndarray,
    tentative: MapCandidate | None,
    tentative_at: int,
    cfg: TrackConfig,
) -> tuple[TrackPoint, np.ndarray | None, MapCandidate | None, int, float]:
    """Step 1 at submap ``i``: (its point, the track or None, the tentative fix and its
    submap, the confidence)."""
    best = _best(cands, cfg)
    if tentative is not None and best is not None:
        moved = tentative.pose @ np.linalg.inv(odo[tentative_at]) @ odo[i]
        path = float(
            np.linalg.norm(np.diff(odo[tentative_at : i + 1, :3, 3], axis=0), axis=1).sum()
        )
        dt, dr = pose_error(moved, best.pose)
        if dt <= cfg.gate_m + cfg.drift * path and dr <= cfg.gate_deg:
            point = TrackPoint(best.pose, best.confidence, "matched", best.place)
            return point, best.pose, None, -1, best.confidence
    return TrackPoint(None, 0.0, "uninitialised", None), None, best, i, 0.0
