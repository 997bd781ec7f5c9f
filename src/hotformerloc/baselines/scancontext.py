"""Scan Context (Kim & Kim, IROS 2018): an egocentric polar height descriptor for lidar
place recognition, with the ring-key shortlist and the column-shift distance.

Written from the paper's definitions. Conventions (see ``docs/scancontext.md``):

* bins: ring ``i = floor(r / max_radius * num_rings)`` for horizontal range
  ``r = hypot(x, y) <= max_radius`` (``r == max_radius`` goes to the last ring); sector
  ``j = floor(theta / (2 pi) * num_sectors)`` for azimuth ``theta = atan2(y, x)`` in
  ``[0, 2 pi)``; a bin holds the largest height of its points, clipped below at 0, and 0
  when empty (so "non-empty" means "> 0");
* a counter-clockwise rotation of the cloud about +z by ``m`` sector angles rolls the
  descriptor by ``+m`` columns (``np.roll(sc, m, axis=1)``);
* :func:`sc_distance` returns the shift ``s`` for which ``np.roll(query, s, axis=1)`` best
  matches the candidate and ``yaw = s * 2 pi / num_sectors`` wrapped to ``(-pi, pi]``: the
  candidate cloud is (about) the query cloud rotated by ``yaw``, i.e.
  ``p_candidate = Rz(yaw) @ p_query`` (the query sensor's heading in the candidate frame).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hotformerloc.config import ConfigError

__all__ = [
    "ScanContextConfig",
    "ScanContextRanking",
    "ScanContextRetriever",
    "ring_key",
    "sc_distance",
    "sc_distance_pairs",
    "scan_context",
    "sector_key",
]

_TWO_PI = 2.0 * math.pi
# pairs per chunk in the batched distance: (chunk, R, S) complex temporaries stay small
_PAIR_CHUNK = 512
# bytes of ring-key distance matrix per chunk of queries in the shortlist stage
_SHORTLIST_BYTES = 32 * 2**20


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclass(frozen=True)
class ScanContextConfig:
    """Scan Context parameters (defaults follow the paper).

    * ``num_rings`` (>= 1) x ``num_sectors`` (>= 2): descriptor shape (paper: 20 x 60);
    * ``max_radius`` (> 0, m): points farther than this horizontally are ignored (paper: 80);
    * ``height_offset`` (finite, m): added to the heights so they are positive (paper: the
      lidar mounting height, about 2 m);
    * ``height_reference``: ``"sensor"`` uses ``z + height_offset`` (z in the sensor frame,
      as in the paper); ``"min"`` uses ``z - z_ref + height_offset`` where ``z_ref`` is the
      ``height_percentile``-th percentile of z over the in-range points, so clouds whose
      frames have different z origins (ground-vehicle vs aerial submaps) compare;
    * ``height_percentile`` (in [0, 100)): the low percentile used by ``"min"`` (1 = robust
      to a few stray low points);
    * ``num_candidates`` (>= 1): ring-key shortlist size per query;
    * ``search_ratio`` (in (0, 1]): fraction of the column shifts searched; 1 searches all,
      below 1 searches ``ceil(ratio * num_sectors)`` shifts centred on the sector-key
      estimate (the paper's fast alignment).
    """

    num_rings: int = 20
    num_sectors: int = 60
    max_radius: float = 80.0
    height_offset: float = 2.0
    height_reference: Literal["sensor", "min"] = "sensor"
    height_percentile: float = 1.0
    num_candidates: int = 10
    search_ratio: float = 1.0

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"ScanContextConfig: {msg}")

        check(
            _is_int(self.num_rings) and self.num_rings >= 1,
            f"num_rings must be an int >= 1, got {self.num_rings!r}",
        )
        check(
            _is_int(self.num_sectors) and self.num_sectors >= 2,
            f"num_sectors must be an int >= 2, got {self.num_sectors!r}",
        )
        check(
            isinstance(self.max_radius, int | float)
            and math.isfinite(self.max_radius)
            and self.max_radius > 0,
            f"max_radius must be a finite number > 0, got {self.max_radius!r}",
        )
        check(
            isinstance(self.height_offset, int | float) and math.isfinite(self.height_offset),
            f"height_offset must be a finite number, got {self.height_offset!r}",
        )
        check(
            self.height_reference in ("sensor", "min"),
            f"height_reference must be 'sensor' or 'min', got {self.height_reference!r}",
        )
        check(
            isinstance(self.height_percentile, int | float) and 0 <= self.height_percentile < 100,
            f"height_percentile must be in [0, 100), got {self.height_percentile!r}",
        )
        check(
            _is_int(self.num_candidates) and self.num_candidates >= 1,
            f"num_candidates must be an int >= 1, got {self.num_candidates!r}",
        )
        check(
            isinstance(self.search_ratio, int | float) and 0 < self.search_ratio <= 1,
            f"search_ratio must be in (0, 1], got {self.search_ratio!r}",
        )


# --------------------------------------------------------------------------- descriptor


def scan_context(points: np.ndarray, cfg: ScanContextConfig | None = None) -> np.ndarray:
    """Scan Context of one cloud.

    ``points``: (N, 3) float array (metres, sensor frame, N >= 1, all finite). Returns a
    (num_rings, num_sectors) float32 array >= 0: per polar bin the largest (offset) height
    of its points, clipped below at 0; 0 for empty bins. Points with horizontal range
    > ``max_radius`` are ignored; a cloud with none in range gives all zeros. Raises
    ValueError on a wrong shape, an empty cloud or non-finite values.
    """
    cfg = ScanContextConfig() if cfg is None else cfg
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"scan_context: points must have shape (N, 3), got {pts.shape}")
    if pts.shape[0] == 0:
        raise ValueError("scan_context: points is empty (N == 0)")
    if not np.issubdtype(pts.dtype, np.number) or np.issubdtype(pts.dtype, np.complexfloating):
        raise ValueError(f"scan_context: points must be real numbers, got dtype {pts.dtype}")
    pts = pts.astype(np.float64, copy=False)
    if not np.isfinite(pts).all():
        raise ValueError("scan_context: points contain NaN or inf")

    R, S = cfg.num_rings, cfg.num_sectors
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    r = np.hypot(x, y)
    keep = r <= cfg.max_radius
    out = np.zeros(R * S, np.float64)
    if not keep.any():
        return out.reshape(R, S).astype(np.float32)
    x, y, z, r = x[keep], y[keep], z[keep], r[keep]

    if cfg.height_reference == "min":
        h = z - np.percentile(z, cfg.height_percentile) + cfg.height_offset
    else:
        h = z + cfg.height_offset

    ring = np.minimum((r * (R / cfg.max_radius)).astype(np.int64), R - 1)
    theta = np.mod(np.arctan2(y, x), _TWO_PI)  # [0, 2 pi]; 2 pi only by rounding
    sector = np.minimum((theta * (S / _TWO_PI)).astype(np.int64), S - 1)
    np.maximum.at(out, ring * S + sector, h)  # starts at 0: clips negative heights
    return out.reshape(R, S).astype(np.float32)


def _check_descriptor(sc: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(sc)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError(f"{name}: expected a (num_rings, num_sectors) array, got {a.shape}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: descriptor contains NaN or inf")
    if (a < 0).any():
        raise ValueError(f"{name}: descriptor values must be >= 0")
    return a


def ring_key(sc: np.ndarray) -> np.ndarray:
    """Rotation-invariant ring key: per ring, the occupancy ratio (the paper's
    ``||r_i||_0 / N_s``, fraction of non-empty bins). (R, S) -> (R,) float32 in [0, 1]."""
    a = _check_descriptor(sc, "ring_key")
    return (a > 0).mean(axis=1).astype(np.float32)


def sector_key(sc: np.ndarray) -> np.ndarray:
    """Sector key: per column, the mean height over the rings; it rolls with the columns
    and gives the fast initial shift estimate. (R, S) -> (S,) float32 >= 0."""
    a = _check_descriptor(sc, "sector_key")
    return a.mean(axis=0).astype(np.float32)


# --------------------------------------------------------------------------- distance


def _xcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Circular cross-correlation over the last axis (FFT, float64):
    ``out[..., s] = sum_j a[..., (j - s) % S] * b[..., j]``, i.e. ``roll(a, s) . b``."""
    S = a.shape[-1]
    return np.fft.irfft(np.conj(np.fft.rfft(a, axis=-1)) * np.fft.rfft(b, axis=-1), n=S, axis=-1)


def _pair_distances(
    a: np.ndarray, b: np.ndarray, search_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Core of :func:`sc_distance_pairs` for one chunk of validated float64 (P, R, S).

    All S shifts are scored at once by FFT cross-correlation of the unit columns (summed
    over rings) and of the column occupancy masks; ``search_ratio < 1`` then restricts
    the argmin to a window of shifts around the sector-key estimate.
    """
    P, _, S = a.shape
    na = np.sqrt(np.einsum("prj,prj->pj", a, a))  # (P, S) column norms
    nb = np.sqrt(np.einsum("prj,prj->pj", b, b))
    va, vb = na > 0, nb > 0
    ua = a / np.where(va, na, 1.0)[:, None, :]  # unit columns; empty columns stay 0
    ub = b / np.where(vb, nb, 1.0)[:, None, :]
    fa, fb = np.fft.rfft(ua, axis=2), np.fft.rfft(ub, axis=2)
    sim = np.fft.irfft((np.conj(fa) * fb).sum(axis=1), n=S, axis=1)  # (P, S) sum of cosines
    cnt = np.rint(_xcorr(va.astype(np.float64), vb.astype(np.float64)))  # (P, S) both non-empty
    d = np.where(cnt > 0, 1.0 - sim / np.maximum(cnt, 1.0), 1.0)
    d = np.clip(d, 0.0, 1.0)
    n = S if search_ratio >= 1 else max(1, min(S, math.ceil(search_ratio * S)))
    rows = np.arange(P)
    if n == S:
        best = np.argmin(d, axis=1)
        return d[rows, best], best.astype(np.int64)
    # the paper's fast alignment: sector-key shift s0 = argmin_s ||roll(ka, s) - kb||^2,
    # then search n shifts centred on it
    ka, kb = a.mean(axis=1), b.mean(axis=1)  # (P, S) sector keys
    s0 = np.argmax(_xcorr(ka, kb), axis=1)  # same argmin: |ka|, |kb| do not depend on s
    shifts = (s0[:, None] + np.arange(n)[None, :] - n // 2) % S  # (P, n)
    dw = np.take_along_axis(d, shifts, axis=1)
    best = np.argmin(dw, axis=1)
    return dw[rows, best], shifts[rows, best].astype(np.int64)


def _yaw(shift: np.ndarray, S: int) -> np.ndarray:
    """Shift (columns) -> yaw (rad) in (-pi, pi]."""
    s = np.asarray(shift, np.int64) % S
    s = np.where(s > S // 2, s - S, s)  # S even: +S/2 -> +pi
    return s.astype(np.float64) * (_TWO_PI / S)


def sc_distance_pairs(
    query: np.ndarray, candidate: np.ndarray, search_ratio: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched :func:`sc_distance` over pairs ``(query[p], candidate[p])``.

    ``query``, ``candidate``: (P, R, S) arrays >= 0 (a single (R, S) ``query`` is broadcast
    to all candidates). Returns ``(distance (P,) float64 in [0, 1], shift (P,) int64 in
    [0, S), yaw (P,) float64 in (-pi, pi])``.
    """
    q = np.asarray(query)
    c = np.asarray(candidate)
    if c.ndim != 3:
        raise ValueError(f"sc_distance_pairs: candidate must be (P, R, S), got {c.shape}")
    if q.ndim == 2:
        q = np.broadcast_to(q, c.shape)
    if q.shape != c.shape:
        raise ValueError(f"sc_distance_pairs: shapes differ: {q.shape} vs {c.shape}")
    if not 0 < search_ratio <= 1:
        raise ValueError(f"sc_distance_pairs: search_ratio must be in (0, 1], got {search_ratio}")
    _, R, S = c.shape
    if S < 2 or R < 1:
        raise ValueError(f"sc_distance_pairs: bad descriptor shape (R, S) = ({R}, {S})")
    q = q.astype(np.float64, copy=False)
    c = c.astype(np.float64, copy=False)
    for arr, name in ((q, "query"), (c, "candidate")):
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise ValueError(f"sc_distance_pairs: {name} must be finite and >= 0")
    return _pairs_unchecked(q, c, search_ratio)


def _pairs_unchecked(
    q: np.ndarray, c: np.ndarray, search_ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    P, _, S = c.shape
    dist = np.empty(P, np.float64)
    shift = np.empty(P, np.int64)
    for lo in range(0, P, _PAIR_CHUNK):
        hi = min(P, lo + _PAIR_CHUNK)
        dist[lo:hi], shift[lo:hi] = _pair_distances(q[lo:hi], c[lo:hi], search_ratio)
    return dist, shift, _yaw(shift, S)


def sc_distance(
    query: np.ndarray, candidate: np.ndarray, search_ratio: float = 1.0
) -> tuple[float, int, float]:
    """Scan Context distance between two (R, S) descriptors (paper eq. 5/6).

    ``d(s) = mean over columns j non-empty in both of 1 - cos(roll(query, s)[:, j],
    candidate[:, j])``, minimised over the circular shifts ``s`` (all of them, or a window
    around the sector-key estimate when ``search_ratio < 1``). Returns ``(distance in
    [0, 1], best_shift in [0, S), yaw in (-pi, pi])`` with ``yaw = best_shift * 2 pi / S``
    wrapped: the candidate is the query rotated counter-clockwise about +z by ``yaw``.
    With no column non-empty in both (for every shift) the distance is 1.0. Ties go to the
    first shift searched.
    """
    q = _check_descriptor(query, "sc_distance(query)")
    c = _check_descriptor(candidate, "sc_distance(candidate)")
    if q.shape != c.shape:
        raise ValueError(f"sc_distance: shapes differ: {q.shape} vs {c.shape}")
    d, s, y = sc_distance_pairs(q[None], c[None], search_ratio)
    return float(d[0]), int(s[0]), float(y[0])


# --------------------------------------------------------------------------- retrieval


@dataclass(frozen=True)
class ScanContextRanking:
    """Result of :meth:`ScanContextRetriever.rank` for Q queries and K = k columns.

    * ``indices``: (Q, K) int64, positions into the ``database`` array passed to ``rank``
      (not global ids), best first; -1 pads past the shortlist / database;
    * ``distances``: (Q, K) float64 Scan Context distances in [0, 1], ascending; inf pads;
    * ``yaw``: (Q, K) float64 in (-pi, pi], query heading relative to the candidate
      (``p_candidate = Rz(yaw) @ p_query``); NaN pads.
    """

    indices: np.ndarray
    distances: np.ndarray
    yaw: np.ndarray


class ScanContextRetriever:
    """Two-stage Scan Context retrieval over a fixed list of descriptors.

    ``descriptors``: (N, R, S) array >= 0 (as from :func:`scan_context`). Stage 1: exact
    L2 over ring keys gives ``num_candidates`` per query; stage 2: :func:`sc_distance` with
    the shift search re-ranks them. ``cfg`` supplies ``num_candidates`` and
    ``search_ratio`` (default config when None; when given, its shape must match).
    """

    def __init__(self, descriptors: np.ndarray, cfg: ScanContextConfig | None = None) -> None:
        d = np.asarray(descriptors)
        if d.ndim != 3 or d.shape[1] < 1 or d.shape[2] < 2:
            raise ValueError(f"ScanContextRetriever: descriptors must be (N, R, S), got {d.shape}")
        if cfg is not None and d.shape[1:] != (cfg.num_rings, cfg.num_sectors):
            raise ValueError(
                f"ScanContextRetriever: descriptors are {d.shape[1:]} but cfg asks for "
                f"({cfg.num_rings}, {cfg.num_sectors})"
            )
        d = d.astype(np.float32, copy=False)
        if not np.isfinite(d).all() or (d < 0).any():
            raise ValueError("ScanContextRetriever: descriptors must be finite and >= 0")
        self.cfg = ScanContextConfig() if cfg is None else cfg
        self._desc = d
        self._keys = (d > 0).mean(axis=2, dtype=np.float64)  # (N, R) ring keys

    @classmethod
    def from_clouds(
        cls, clouds: Sequence[np.ndarray], cfg: ScanContextConfig | None = None
    ) -> ScanContextRetriever:
        """Describe every (N_i, 3) cloud with :func:`scan_context` and build a retriever."""
        cfg = ScanContextConfig() if cfg is None else cfg
        if len(clouds) == 0:
            raise ValueError("ScanContextRetriever.from_clouds: no clouds given")
        return cls(np.stack([scan_context(c, cfg) for c in clouds]), cfg)

    def __len__(self) -> int:
        return int(self._desc.shape[0])

    @property
    def descriptors(self) -> np.ndarray:
        """(N, R, S) float32 descriptors (read-only view)."""
        v = self._desc.view()
        v.flags.writeable = False
        return v

    @property
    def ring_keys(self) -> np.ndarray:
        """(N, R) float64 ring keys (occupancy ratios)."""
        v = self._keys.view()
        v.flags.writeable = False
        return v

    def _index(self, idx: np.ndarray, name: str) -> np.ndarray:
        a = np.asarray(idx)
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
            raise ValueError(f"rank: {name} must be a 1-D integer array, got {a.dtype} {a.shape}")
        a = a.astype(np.int64, copy=False)
        if a.size and (a.min() < 0 or a.max() >= len(self)):
            raise ValueError(f"rank: {name} indices must be in [0, {len(self)})")
        return a

    def rank(
        self,
        query: np.ndarray,
        database: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> ScanContextRanking:
        """Rank ``database`` for each of ``query`` (int64 index arrays into the descriptors).

        ``exclude``: optional (len(query), len(database)) bool mask of forbidden pairs.
        Returns a :class:`ScanContextRanking` with K = ``k`` columns; at most
        ``min(num_candidates, allowed entries)`` are filled per row, the rest padded.
        Ties in distance keep the ring-key order.
        """
        q = self._index(query, "query")
        db = self._index(database, "database")
        if not _is_int(k) or k < 1:
            raise ValueError(f"rank: k must be an int >= 1, got {k!r}")
        Q, D = q.size, db.size
        if exclude is not None:
            exclude = np.asarray(exclude)
            if exclude.shape != (Q, D) or exclude.dtype != np.bool_:
                raise ValueError(
                    f"rank: exclude must be a bool array of shape {(Q, D)}, "
                    f"got {exclude.dtype} {exclude.shape}"
                )
        out_i = np.full((Q, k), -1, np.int64)
        out_d = np.full((Q, k), np.inf, np.float64)
        out_y = np.full((Q, k), np.nan, np.float64)
        if Q == 0 or D == 0:
            return ScanContextRanking(out_i, out_d, out_y)

        cand = self._shortlist(q, db, exclude)  # (Q, C) positions into db, -1 pads
        C = cand.shape[1]
        qi, ci = np.nonzero(cand >= 0)
        pos = cand[qi, ci]
        dist = np.full((Q, C), np.inf)
        yaw = np.full((Q, C), np.nan)
        if qi.size:
            dq = self._desc[q[qi]].astype(np.float64)
            dc = self._desc[db[pos]].astype(np.float64)
            d, _, y = _pairs_unchecked(dq, dc, self.cfg.search_ratio)
            dist[qi, ci], yaw[qi, ci] = d, y
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        m = min(k, C)
        out_d[:, :m] = np.take_along_axis(dist, order, axis=1)
        out_y[:, :m] = np.take_along_axis(yaw, order, axis=1)
        out_i[:, :m] = np.take_along_axis(cand, order, axis=1)
        out_i[:, :m][~np.isfinite(out_d[:, :m])] = -1
        return ScanContextRanking(out_i, out_d, out_y)

    def _shortlist(self, q: np.ndarray, db: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
        """(Q, C) positions into ``db`` of the ring-key nearest neighbours, nearest first,
        -1 where fewer than C are allowed. C = min(num_candidates, len(db))."""
        Q, D = q.size, db.size
        C = min(self.cfg.num_candidates, D)
        kdb = self._keys[db]  # (D, R)
        kdb2 = np.einsum("dr,dr->d", kdb, kdb)
        out = np.full((Q, C), -1, np.int64)
        step = max(1, _SHORTLIST_BYTES // (8 * D))
        for lo in range(0, Q, step):
            hi = min(Q, lo + step)
            kq = self._keys[q[lo:hi]]
            d2 = np.einsum("qr,qr->q", kq, kq)[:, None] + kdb2[None, :] - 2.0 * (kq @ kdb.T)
            np.maximum(d2, 0.0, out=d2)
            if exclude is not None:
                d2[exclude[lo:hi]] = np.inf
            if C < D:
                part = np.argpartition(d2, C - 1, axis=1)[:, :C]
            else:
                part = np.broadcast_to(np.arange(D), (hi - lo, D))
            pd = np.take_along_axis(d2, part, axis=1)
            o = np.lexsort((part, pd), axis=1)  # by key distance, then position
            sel = np.take_along_axis(part, o, axis=1)
            ok = np.isfinite(np.take_along_axis(pd, o, axis=1))
            out[lo:hi] = np.where(ok, sel, -1)
        return out
