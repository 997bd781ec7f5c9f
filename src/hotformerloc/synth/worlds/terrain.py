"""Shared helpers of the worlds: seeded random streams, smooth noise fields, polylines and
an index of solid obstacle footprints for free-space queries.

All lengths are metres; xy arrays are ``(N, 2)`` float in the world frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TypeVar

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from hotformerloc.synth.scene import Boxes, Cylinders, Ellipsoids

P = TypeVar("P", Cylinders, Ellipsoids, Boxes)


def rng_for(seed: int, purpose: int, *extra: int) -> np.random.Generator:
    """Independent generator for one purpose of a world built from ``seed``.

    Each part of a layout draws from its own stream, so adding draws to one part never
    shifts another. ``extra`` integers (e.g. an epoch seed) select sub-streams.
    """
    words = [int(v) % 2**64 for v in (seed, purpose, *extra)]
    return np.random.default_rng(np.random.SeedSequence(words))


def concat(parts: Sequence[P]) -> P:
    """Concatenate primitive sets of one type (all :class:`Cylinders`, ... ) field by field."""
    cls = type(parts[0])
    return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def fractal_noise(
    shape: tuple[int, int],
    cell: float,
    wavelength: float,
    rng: np.random.Generator,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Smooth multi-octave value noise, ``(H, W)`` float64 with zero mean and max |v| = 1.

    Samples are ``cell`` metres apart; the coarsest octave has features of ``wavelength``
    metres, each next octave halves the wavelength and multiplies the amplitude by
    ``persistence`` (cubic-spline interpolated random lattices).
    """
    h, w = shape
    out = np.zeros(shape)
    amp = 1.0
    for octave in range(octaves):
        lam = wavelength / 2**octave
        ny = int(np.ceil(h * cell / lam)) + 4
        nx = int(np.ceil(w * cell / lam)) + 4
        lattice = rng.standard_normal((ny, nx))
        yy = np.arange(h) * (cell / lam) + 1.5
        xx = np.arange(w) * (cell / lam) + 1.5
        gy, gx = np.meshgrid(yy, xx, indexing="ij")
        out += amp * ndimage.map_coordinates(lattice, [gy, gx], order=3, mode="nearest")
        amp *= persistence
    out -= out.mean()
    return out / max(float(np.abs(out).max()), 1e-12)


def polyline_length(poly: np.ndarray) -> float:
    """Total length of an ``(N, 2)`` polyline."""
    return float(np.linalg.norm(np.diff(poly, axis=0), axis=1).sum())


def resample_polyline(poly: np.ndarray, max_spacing: float) -> np.ndarray:
    """Insert evenly spaced points so that no segment exceeds ``max_spacing``.

    Keeps every original vertex (a closed polyline stays closed); returns ``(M, 2)``.
    """
    poly = np.asarray(poly, np.float64)
    seg = np.diff(poly, axis=0)
    n = np.maximum(np.ceil(np.linalg.norm(seg, axis=1) / max_spacing), 1).astype(np.int64)
    idx = np.repeat(np.arange(len(seg)), n)
    t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
    return np.vstack([poly[idx] + seg[idx] * t[:, None], poly[-1:]])


def chaikin(poly: np.ndarray, iterations: int, closed: bool) -> np.ndarray:
    """Corner-cutting smoothing (Chaikin). A closed input repeats its first point at the end
    and so does the output; an open polyline keeps its end points."""
    p = np.asarray(poly, np.float64)
    for _ in range(iterations):
        a, b = p[:-1], p[1:]
        q = np.empty((2 * len(a), 2))
        q[0::2] = 0.75 * a + 0.25 * b
        q[1::2] = 0.25 * a + 0.75 * b
        p = np.vstack([q, q[:1]]) if closed else np.vstack([p[:1], q, p[-1:]])
    return p


def segments(polylines: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end points ``(S, 2)`` of all segments of several polylines."""
    a = [np.asarray(p, np.float64)[:-1] for p in polylines]
    b = [np.asarray(p, np.float64)[1:] for p in polylines]
    if not a:
        return np.zeros((0, 2)), np.zeros((0, 2))
    return np.vstack(a), np.vstack(b)


def distance_to_segments(xy: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from each point to the nearest of the segments ``a[k] -> b[k]``
    (``inf`` when there is no segment). Exact, chunked to bound memory."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    out = np.full(len(xy), np.inf)
    if len(a) == 0:
        return out
    d = b - a
    dd = np.maximum((d * d).sum(axis=1), 1e-18)
    chunk = max(1, 2**21 // len(a))
    for s in range(0, len(xy), chunk):
        p = xy[s : s + chunk, None, :] - a[None]
        t = np.clip((p * d[None]).sum(axis=2) / dd, 0.0, 1.0)
        r = p - t[..., None] * d[None]
        out[s : s + chunk] = np.sqrt((r * r).sum(axis=2).min(axis=1))
    return out


class FootprintIndex:
    """Horizontal footprints of solid obstacles: discs and rectangles rotated about z.

    ``discs``: ``(N, 3)`` rows ``(x, y, radius)``; ``boxes``: ``(M, 5)`` rows
    ``(cx, cy, half_x, half_y, yaw)`` (half extents along the box axes, yaw in radians).
    """

    def __init__(self, discs: np.ndarray | None = None, boxes: np.ndarray | None = None):
        self.discs = np.zeros((0, 3)) if discs is None else np.asarray(discs, np.float64)
        self.boxes = np.zeros((0, 5)) if boxes is None else np.asarray(boxes, np.float64)
        self._disc_tree = cKDTree(self.discs[:, :2]) if len(self.discs) else None
        self._box_tree = cKDTree(self.boxes[:, :2]) if len(self.boxes) else None

    def free(self, xy: np.ndarray, clearance: float) -> np.ndarray:
        """``(N,)`` bool: the point is at least ``clearance`` m from every footprint."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        ok = np.ones(len(xy), bool)
        if len(xy) == 0:
            return ok
        pts = cKDTree(xy)
        if self._disc_tree is not None:
            reach = float(self.discs[:, 2].max()) + clearance
            pr = self._disc_tree.sparse_distance_matrix(pts, reach, output_type="ndarray")
            hit = pr["v"] < self.discs[pr["i"], 2] + clearance
            ok[pr["j"][hit]] = False
        if self._box_tree is not None:
            reach = float(np.hypot(self.boxes[:, 2], self.boxes[:, 3]).max()) + clearance
            pr = self._box_tree.sparse_distance_matrix(pts, reach, output_type="ndarray")
            bx = self.boxes[pr["i"]]
            rel = xy[pr["j"]] - bx[:, :2]
            c, s = np.cos(bx[:, 4]), np.sin(bx[:, 4])
            u = np.abs(c * rel[:, 0] + s * rel[:, 1]) - bx[:, 2]
            v = np.abs(-s * rel[:, 0] + c * rel[:, 1]) - bx[:, 3]
            dist = np.hypot(np.maximum(u, 0.0), np.maximum(v, 0.0)) + np.minimum(
                np.maximum(u, v), 0.0
            )  # signed: negative inside
            ok[pr["j"][dist < clearance]] = False
        return ok
