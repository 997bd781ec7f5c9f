"""Geometric verification and re-ranking of retrieved places (coarse BEV search + GICP).

A query cloud and a candidate submap, each metric in its own frame, are aligned in three
steps (``docs/reranking.md``):

1. **coarse**: for every yaw on a ``yaw_step_deg`` grid the query's bird's-eye occupancy
   image is cross-correlated (FFT) with the candidate's zero-mean occupancy image, which
   scores every horizontal translation up to ``max_translation`` at once; the best
   ``num_hypotheses`` distinct (yaw, translation) peaks are kept;
2. **height**: each hypothesis gets its vertical offset from the cell floors (lowest
   point per BEV cell) the two clouds share: a low quantile of their differences;
3. **fine**: GICP (``small_gicp``) refines the full 6-DoF pose with a shrinking
   correspondence distance. If the shared cell floors then say the query sits more than
   ``height_tolerance`` too high, it is lowered by that much (GICP between a ground and
   an aerial view drifts upwards, into the aerial cloud's denser upper layers). The
   hypothesis with the best fitness wins.

Speed (``docs/reranking.md``, "Speed"): with ``coarse_factor`` > 1 the coarse search
first runs on cells ``coarse_factor`` times larger, for all candidates of a query at once,
and only the best ``coarse_yaws`` yaws (with their neighbours) are searched again at full
resolution; each candidate's best hypothesis gets a cheap *coarse fitness* (the share of
query points falling in an occupied ``inlier_distance`` voxel of the candidate), and only
the ``refine_top`` candidates with the highest coarse fitness get GICP. The others are
returned unrefined (``Verification.refined`` False) and rank after every refined one.

Frames: ``Verification.pose`` maps query-frame points into the candidate frame,
``p_candidate = pose[:3, :3] @ p_query + pose[:3, 3]``. With submap poses ``T_q``, ``T_c``
(submap frame -> world) the true value is ``inv(T_c) @ T_q``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import small_gicp
import torch
from scipy import fft

from hotformerloc.config import require
from hotformerloc.errors import HotformerlocError
from hotformerloc.eval.metrics import Ranking
from hotformerloc.eval.protocols import Retriever
from hotformerloc.io.poses import rotation_yaw
from hotformerloc.submaps import voxel_downsample

__all__ = [
    "PreparedCloud",
    "RerankConfig",
    "RerankInputError",
    "RerankResult",
    "RerankRetriever",
    "Verification",
    "downsample",
    "order_of",
    "prepare",
    "rerank",
    "verify",
    "verify_many",
    "verify_prepared",
    "yaw_of",
]


class RerankInputError(HotformerlocError):
    """A point cloud given to verification is unusable; the message names it (``query``,
    ``candidate``, ``candidates[i]`` or a database item) and the problem."""


@dataclass(frozen=True)
class RerankConfig:
    """Verification knobs; ``RerankConfig()`` is the recommended setup (measured on the
    demo benchmark, ``docs/reranking.md``). Lengths in metres, angles in degrees.

    * ``voxel``: voxel-centroid downsampling of both clouds before anything else (0: off);
    * ``bev_cell``: cell edge of the bird's-eye occupancy images;
    * ``bev_radius``: points farther than this horizontally from their origin are left out
      of the images (not of GICP);
    * ``max_translation``: largest horizontal query->candidate offset searched;
    * ``yaw_step_deg``: yaw grid of the coarse search (the full circle is searched);
    * ``num_hypotheses``: coarse peaks refined by GICP; peaks within ``2 * yaw_step_deg``
      and 3 cells of a kept one are suppressed;
    * ``max_height_offset``: largest vertical offset the cell floors may give;
    * ``height_quantile`` in (0, 1): quantile of the shared cell floors' height
      differences taken as the offset (low: a candidate seen from above misses the low
      structure under canopy and roofs that a ground query sees);
    * ``height_tolerance``: after GICP, the query is lowered by the floor offset when that
      is below ``-height_tolerance`` (on ground-to-ground pairs the floor offset sits about
      0.3 m low, so with 0.5 m those keep their accurate GICP height);
    * ``gicp_distances``: GICP maximum correspondence distance per stage, non-increasing;
    * ``gicp_iterations``: iteration cap per stage; a stage stops earlier once an update
      is below ``gicp_rotation_tolerance_deg`` and ``gicp_translation_tolerance``;
    * ``num_neighbors``: points per covariance estimate;
    * ``inlier_distance``: a query point is an inlier when a candidate point lies within
      this distance after alignment (fitness = inlier fraction);
    * ``min_points``: fewest points a cloud may have after downsampling;
    * ``num_threads``: threads of the FFTs, the KD-tree and covariance estimation (GICP's
      iterations run on one thread, so results do not depend on it);
    * ``coarse_factor``: the coarse search first scores every yaw on cells this many times
      ``bev_cell`` (1: off, every yaw at ``bev_cell``, the reference search);
    * ``coarse_yaws``: yaws (local maxima, best first) of that first pass searched again at
      ``bev_cell``, each with its two grid neighbours;
    * ``refine_top``: candidates per query given GICP, those with the highest coarse
      fitness (0: all, the reference); the others are returned unrefined.
    """

    voxel: float = 0.5
    bev_cell: float = 1.0
    bev_radius: float = 32.0
    max_translation: float = 40.0
    yaw_step_deg: float = 5.0
    num_hypotheses: int = 1
    max_height_offset: float = 6.0
    height_quantile: float = 0.2
    height_tolerance: float = 0.5
    gicp_distances: tuple[float, ...] = (2.0, 1.0)
    gicp_iterations: int = 15
    gicp_rotation_tolerance_deg: float = 0.5
    gicp_translation_tolerance: float = 0.02
    num_neighbors: int = 15
    inlier_distance: float = 1.0
    min_points: int = 20
    num_threads: int = 2
    coarse_factor: int = 1
    coarse_yaws: int = 3
    refine_top: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "gicp_distances", tuple(float(d) for d in self.gicp_distances))
        require(self.voxel >= 0, f"RerankConfig.voxel must be >= 0, got {self.voxel}")
        require(self.bev_cell > 0, f"RerankConfig.bev_cell must be > 0, got {self.bev_cell}")
        require(
            self.bev_radius >= self.bev_cell,
            f"RerankConfig.bev_radius must be >= bev_cell, got {self.bev_radius}",
        )
        require(
            self.max_translation >= 0,
            f"RerankConfig.max_translation must be >= 0, got {self.max_translation}",
        )
        require(
            0 < self.yaw_step_deg <= 180,
            f"RerankConfig.yaw_step_deg must be in (0, 180], got {self.yaw_step_deg}",
        )
        require(
            self.num_hypotheses >= 1,
            f"RerankConfig.num_hypotheses must be >= 1, got {self.num_hypotheses}",
        )
        require(
            self.max_height_offset >= 0,
            f"RerankConfig.max_height_offset must be >= 0, got {self.max_height_offset}",
        )
        require(
            0 < self.height_quantile < 1,
            f"RerankConfig.height_quantile must be in (0, 1), got {self.height_quantile}",
        )
        require(
            self.height_tolerance >= 0,
            f"RerankConfig.height_tolerance must be >= 0, got {self.height_tolerance}",
        )
        d = self.gicp_distances
        require(
            len(d) >= 1 and all(v > 0 for v in d) and all(a >= b for a, b in itertools.pairwise(d)),
            f"RerankConfig.gicp_distances must be positive and non-increasing, got {d}",
        )
        require(
            self.gicp_iterations >= 1,
            f"RerankConfig.gicp_iterations must be >= 1, got {self.gicp_iterations}",
        )
        require(
            self.gicp_rotation_tolerance_deg > 0 and self.gicp_translation_tolerance > 0,
            "RerankConfig.gicp_rotation_tolerance_deg and gicp_translation_tolerance must be "
            f"> 0, got {self.gicp_rotation_tolerance_deg}, {self.gicp_translation_tolerance}",
        )
        require(
            self.num_neighbors >= 5,
            f"RerankConfig.num_neighbors must be >= 5, got {self.num_neighbors}",
        )
        require(
            self.inlier_distance > 0,
            f"RerankConfig.inlier_distance must be > 0, got {self.inlier_distance}",
        )
        require(
            self.min_points >= self.num_neighbors,
            f"RerankConfig.min_points must be >= num_neighbors, got {self.min_points}",
        )
        require(
            self.num_threads >= 1, f"RerankConfig.num_threads must be >= 1, got {self.num_threads}"
        )
        require(
            self.coarse_factor >= 1,
            f"RerankConfig.coarse_factor must be >= 1, got {self.coarse_factor}",
        )
        require(
            self.coarse_yaws >= 1, f"RerankConfig.coarse_yaws must be >= 1, got {self.coarse_yaws}"
        )
        require(
            self.refine_top >= 0, f"RerankConfig.refine_top must be >= 0, got {self.refine_top}"
        )

    @property
    def grid_size(self) -> int:
        """Side (cells) of the FFT grid: images span ``2 * bev_radius``, and shifts up to
        ``max_translation`` must not wrap around."""
        return _grid(self, self.bev_cell)

    @property
    def reference(self) -> RerankConfig:
        """This config with the speed-ups off (``coarse_factor=1``, ``refine_top=0``):
        every yaw searched at ``bev_cell``, every candidate refined."""
        return replace(self, coarse_factor=1, refine_top=0)


def _grid(config: RerankConfig, cell: float) -> int:
    """FFT grid side (cells) for BEV images of ``cell`` metres (see ``grid_size``)."""
    half = math.ceil(config.bev_radius / cell)
    shift = math.ceil(config.max_translation / cell)
    return int(fft.next_fast_len(2 * half + shift + 1, real=True))


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one (query, candidate) pair.

    * ``fitness`` in [0, 1]: fraction of the (downsampled) query points with a candidate
      point within ``inlier_distance`` after alignment; higher = better agreement;
    * ``rmse``: m, root-mean-square distance of those inliers (``inf`` without inliers);
    * ``pose``: (4, 4) float64, maps query-frame points into the candidate submap frame;
    * ``yaw_deg``: yaw of ``pose`` (rotation about +z), degrees in (-180, 180];
    * ``converged``: the last GICP stage met its convergence criteria;
    * ``refined``: GICP ran. When False (pruned, ``RerankConfig.refine_top``), ``pose``
      is the coarse pose, ``fitness`` the coarse fitness (share of query points in an
      occupied ``inlier_distance`` voxel of the candidate), ``rmse`` inf, ``converged``
      False; such a verification ranks after every refined one.
    """

    fitness: float
    rmse: float
    pose: np.ndarray
    yaw_deg: float
    converged: bool
    refined: bool = True


class PreparedCloud:
    """A cloud downsampled once for any number of verifications, as a query or a candidate.

    ``points``: (M, 3) float64 in the cloud's own frame; ``radius``: largest horizontal
    distance of a point from the origin (m); ``config``: the :class:`RerankConfig` it was
    made for. The search state (BEV spectra, cell floors, voxel keys, GICP covariances and
    KD-tree) is private and built on first use, then kept: a cloud that stays pruned never
    pays for its covariances.
    """

    def __init__(self, points: np.ndarray, config: RerankConfig) -> None:
        self.points = points
        self.config = config
        self.radius = float(np.sqrt(np.max(np.einsum("ij,ij->i", points[:, :2], points[:, :2]))))

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __repr__(self) -> str:
        return f"PreparedCloud({len(self)} points, radius {self.radius:.1f} m)"

    @cached_property
    def _floor(self) -> tuple[np.ndarray, np.ndarray]:
        return _cell_floor(self.points, self.config.bev_cell)

    @cached_property
    def _bev_fft(self) -> np.ndarray:
        return fft.rfft2(_bev_target(self.points, self.radius, self.config, self.config.bev_cell))

    @cached_property
    def _bev_fft_coarse(self) -> np.ndarray:
        cell = self.config.bev_cell * self.config.coarse_factor
        return fft.rfft2(_bev_target(self.points, self.radius, self.config, cell))

    @cached_property
    def _voxel_keys(self) -> np.ndarray:
        return np.unique(_voxel_key(self.points, self.config.inlier_distance))

    @cached_property
    def _gicp(self) -> tuple[small_gicp.PointCloud, small_gicp.KdTree]:
        cfg = self.config
        cloud = small_gicp.PointCloud(self.points)
        tree = small_gicp.KdTree(cloud, num_threads=cfg.num_threads)
        small_gicp.estimate_covariances(cloud, tree, cfg.num_neighbors, cfg.num_threads)
        return cloud, tree


def yaw_of(pose: np.ndarray) -> float:
    """Yaw (degrees, in (-180, 180]) of a (4, 4) or (3, 3) rotation: the heading of the
    rotated +x axis in the xy plane."""
    yaw = math.degrees(float(rotation_yaw(np.asarray(pose)[:3, :3])))
    return 180.0 if yaw <= -180.0 else yaw


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise RerankInputError(f"{name}: not a numeric (N, 3) array ({e})") from None
    if p.ndim != 2 or p.shape[1] != 3:
        raise RerankInputError(f"{name}: expected an (N, 3) point array, got shape {p.shape}")
    if p.shape[0] == 0:
        raise RerankInputError(f"{name}: empty point cloud")
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise RerankInputError(
            f"{name}: {rows.size} point(s) with NaN or infinite coordinates "
            f"(first rows {rows[:5].tolist()})"
        )
    return p


def _rasterise(xy: np.ndarray, cell: float, half: int, size: int) -> np.ndarray:
    """(size, size) float32 occupancy of points ``xy`` (..., N, 2) with |coordinate| <
    ``half`` cells, origin at index 0 (negative cells wrap), batched over leading axes."""
    ij = np.floor(xy / cell).astype(np.int64)
    inside = np.all((ij >= -half) & (ij < half), axis=-1)
    ij = np.mod(ij, size)
    lead = int(np.prod(xy.shape[:-2], dtype=np.int64))
    flat = (ij[..., 0] * size + ij[..., 1]).reshape(lead, -1)
    offs = (np.arange(lead, dtype=np.int64) * size * size)[:, None]
    occ = np.zeros(lead * size * size, np.float32)
    occ[(flat + offs)[inside.reshape(lead, -1)]] = 1.0
    return occ.reshape(*xy.shape[:-2], size, size)


def downsample(points: np.ndarray, config: RerankConfig, name: str = "cloud") -> np.ndarray:
    """(M, 3) float64: ``points`` ((N, 3) float, metric) checked and voxel-downsampled as
    :func:`prepare` does; what a database may store per entry (``docs/database.md``).

    Raises:
        RerankInputError: as :func:`prepare`.
    """
    p = _check_points(points, name)
    if config.voxel > 0:
        p = voxel_downsample(p, config.voxel).astype(np.float64)
    if p.shape[0] < config.min_points:
        raise RerankInputError(
            f"{name}: {p.shape[0]} point(s) after {config.voxel} m downsampling, "
            f"at least {config.min_points} needed"
        )
    return p


def prepare(
    points: np.ndarray, config: RerankConfig, name: str = "cloud", downsampled: bool = False
) -> PreparedCloud:
    """Downsample ``points`` ((N, 3) float, metric, own frame) for :func:`verify_prepared`
    and :func:`verify_many`, as a query or as a candidate. With ``downsampled`` the points
    are taken as the output of :func:`downsample` with the same ``voxel`` (checked, not
    downsampled again).

    Raises:
        RerankInputError: not an (N, 3) numeric array, empty, NaN/inf coordinates, or fewer
            than ``config.min_points`` points after downsampling (the message names
            ``name``).
    """
    if downsampled:
        p = _check_points(points, name)
        if p.shape[0] < config.min_points:
            raise RerankInputError(
                f"{name}: {p.shape[0]} point(s), at least {config.min_points} needed"
            )
    else:
        p = downsample(points, config, name)
    return PreparedCloud(p, config)


def _bev_target(points: np.ndarray, radius: float, config: RerankConfig, cell: float) -> np.ndarray:
    """(S, S) float32 candidate image on ``cell``-metre cells: occupancy minus its mean
    inside the disc of ``radius`` (the candidate's footprint), zero outside, so query cells
    falling on empty footprint cells cost and those outside it are neutral."""
    size = _grid(config, cell)
    half = math.ceil(config.bev_radius / cell)
    occ = _rasterise(points[:, :2], cell, half, size)
    disc = _rasterise_disc(min(radius, config.bev_radius), cell, size)
    inside = occ[disc]
    return np.where(disc, occ - (inside.mean() if inside.size else 0.0), 0.0).astype(np.float32)


def _bev_queries(
    points: np.ndarray, yaws: np.ndarray, config: RerankConfig, cell: float | None = None
) -> np.ndarray:
    """(Y, S, S) float32 occupancy images of ``points`` rotated by each of ``yaws`` (rad),
    on ``cell``-metre cells (default ``bev_cell``)."""
    cell = config.bev_cell if cell is None else cell
    c, s = np.cos(yaws), np.sin(yaws)
    rot = np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1)  # (Y, 2, 2)
    xy = points[None, :, :2] @ rot.transpose(0, 2, 1)  # (Y, N, 2)
    half = math.ceil(config.bev_radius / cell)
    return _rasterise(xy, cell, half, _grid(config, cell))


def _rasterise_disc(radius: float, cell: float, size: int) -> np.ndarray:
    """(size, size) bool: cells whose centre lies within ``radius`` of the origin (wrapped
    indexing as in :func:`_rasterise`)."""
    k = np.fft.fftfreq(size, 1.0 / size)  # 0, 1, ..., -1
    c = (k + 0.5) * cell
    return c[:, None] ** 2 + c[None, :] ** 2 <= radius * radius


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _yaws(config: RerankConfig) -> np.ndarray:
    """(Y,) yaw grid of the coarse search, radians, from 0, evenly covering the circle."""
    nyaw = max(1, round(360.0 / config.yaw_step_deg))
    return np.arange(nyaw) * (2 * math.pi / nyaw)


def _query_spectra(
    query: PreparedCloud, config: RerankConfig, cell: float | None = None
) -> np.ndarray:
    """(Y, S, S // 2 + 1) complex64: conjugate 2-D spectra of the query's occupancy image
    on ``cell``-metre cells (default ``bev_cell``) rotated by each grid yaw; computed once
    per query, shared by its candidates."""
    images = _bev_queries(query.points, _yaws(config), config, cell)
    return np.conj(fft.rfft2(images, axes=(1, 2), workers=config.num_threads))


def _allowed(config: RerankConfig, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """(shift per index (S,), (S, S) bool: shifts within ``max_translation``) on
    ``cell``-metre cells."""
    size = _grid(config, cell)
    shift = np.fft.fftfreq(size, 1.0 / size)
    reach = config.max_translation / cell
    return shift, shift[:, None] ** 2 + shift[None, :] ** 2 <= reach * reach


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside (restored after)."""
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def _coarse(
    spectra: np.ndarray,
    candidate: PreparedCloud,
    config: RerankConfig,
    yaw_index: np.ndarray | None = None,
) -> list[tuple[float, float, float]]:
    """Up to ``num_hypotheses`` (yaw rad, tx m, ty m) at the best peaks of the BEV
    cross-correlation at ``bev_cell`` (query spectra from :func:`_query_spectra`), best
    first, over the grid yaws ``yaw_index`` (default: all)."""
    size = config.grid_size
    yaws = _yaws(config)
    nyaw = yaws.shape[0]
    idx = np.arange(nyaw) if yaw_index is None else np.asarray(yaw_index, np.int64)
    shift, allowed = _allowed(config, config.bev_cell)
    # torch's FFT: faster than scipy's here and threaded over the yaws (same values to
    # float32 rounding).
    with _torch_threads(config.num_threads):
        spec = torch.from_numpy(spectra)
        if yaw_index is not None:
            spec = spec[torch.from_numpy(idx)]
        corr_t = torch.fft.irfft2(spec * torch.from_numpy(candidate._bev_fft), s=(size, size))
        corr = corr_t.masked_fill_(torch.from_numpy(~allowed), -math.inf).numpy()
    out: list[tuple[float, float, float]] = []
    yaw_gap = max(1, round(2 * config.yaw_step_deg / (360.0 / nyaw)))
    for _ in range(config.num_hypotheses):
        flat = int(np.argmax(corr))
        if not np.isfinite(corr.flat[flat]):
            break
        r, i, j = np.unravel_index(flat, corr.shape)
        y = int(idx[r])
        out.append(
            (float(yaws[y]), float(shift[i]) * config.bev_cell, float(shift[j]) * config.bev_cell)
        )
        dy = np.abs((idx - y + nyaw // 2) % nyaw - nyaw // 2) <= yaw_gap
        di = np.abs((np.arange(size) - i + size // 2) % size - size // 2) <= 3
        dj = np.abs((np.arange(size) - j + size // 2) % size - size // 2) <= 3
        corr[np.ix_(dy, di, dj)] = -np.inf
    return out


#: Candidates per batched coarse-level FFT (bounds the memory of one call).
_COARSE_CHUNK = 8


def _coarse_yaws(
    spectra_coarse: np.ndarray, candidates: Sequence[PreparedCloud], config: RerankConfig
) -> list[np.ndarray]:
    """Per candidate, the grid yaw indices to search at ``bev_cell``: the ``coarse_yaws``
    best yaw local maxima of the coarse-level correlation (one batched FFT over
    candidates x yaws), each with its two neighbours."""
    cell = config.bev_cell * config.coarse_factor
    size = _grid(config, cell)
    _, allowed = _allowed(config, cell)
    nyaw = spectra_coarse.shape[0]
    out: list[np.ndarray] = []
    for a in range(0, len(candidates), _COARSE_CHUNK):
        chunk = candidates[a : a + _COARSE_CHUNK]
        targets = np.stack([c._bev_fft_coarse for c in chunk])
        corr = fft.irfft2(
            spectra_coarse[None] * targets[:, None],
            s=(size, size),
            axes=(2, 3),
            workers=config.num_threads,
        )
        score = np.where(allowed, corr, -np.inf).max(axis=(2, 3))  # (n, Y)
        for row in score:
            is_max = (row >= np.roll(row, 1)) & (row >= np.roll(row, -1))
            peaks = np.flatnonzero(is_max)
            best = peaks[np.argsort(-row[peaks], kind="stable")[: config.coarse_yaws]]
            sel = (best[:, None] + np.array([-1, 0, 1])[None]) % nyaw
            out.append(np.unique(sel))
    return out


def _cell_floor(points: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """(unique cell keys (K,) int64 ascending, lowest z per cell (K,)) on a ``cell`` grid
    (cells within 2**20 of the origin per axis)."""
    ij = np.floor(points[:, :2] / cell).astype(np.int64) + (1 << 20)
    key = (ij[:, 0] << 21) | ij[:, 1]
    uniq, inv = np.unique(key, return_inverse=True)
    low = np.full(uniq.shape[0], np.inf)
    np.minimum.at(low, inv, points[:, 2])
    return uniq, low


def _voxel_key(points: np.ndarray, cell: float) -> np.ndarray:
    """(N,) int64 key of each point's ``cell`` voxel (21 bits per axis, wrapping)."""
    ijk = (np.floor(points / cell).astype(np.int64) + (1 << 20)) & ((1 << 21) - 1)
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


def _coarse_fitness(moved: np.ndarray, candidate: PreparedCloud, config: RerankConfig) -> float:
    """Share of the query points ``moved`` (candidate frame) whose ``inlier_distance``
    voxel holds a candidate point: a cheap stand-in for :func:`_fitness`."""
    keys = candidate._voxel_keys
    k = _voxel_key(moved, config.inlier_distance)
    pos = np.minimum(np.searchsorted(keys, k), keys.shape[0] - 1)
    return float(np.mean(keys[pos] == k))


def _height_offset(moved: np.ndarray, candidate: PreparedCloud, config: RerankConfig) -> float:
    """Vertical offset (m) to add to the query points ``moved`` (M, 3, candidate frame):
    the ``height_quantile`` quantile, over the BEV cells both clouds occupy, of (candidate
    lowest z - query lowest z), clipped to ``max_height_offset``; 0 without shared cells."""
    qk, qlow = _cell_floor(moved, config.bev_cell)
    ck, cz = candidate._floor
    common, qi, ci = np.intersect1d(qk, ck, return_indices=True)
    if common.size == 0:
        return 0.0
    dz = cz[ci] - qlow[qi]
    off = float(np.quantile(dz, config.height_quantile))
    return float(np.clip(off, -config.max_height_offset, config.max_height_offset))


def _fitness(
    query: PreparedCloud, candidate: PreparedCloud, pose: np.ndarray, config: RerankConfig
) -> tuple[float, float]:
    """(inlier fraction of the query points under ``pose``, inlier RMSE m or inf)."""
    moved = query.points @ pose[:3, :3].T + pose[:3, 3]
    _, sq = candidate._gicp[1].batch_nearest_neighbor_search(moved, config.num_threads)
    d2 = np.asarray(sq, np.float64)
    inlier = d2 <= config.inlier_distance**2
    n = int(inlier.sum())
    rmse = math.sqrt(float(np.mean(d2[inlier]))) if n else math.inf
    return n / len(query), rmse


def _moved(query: PreparedCloud, pose: np.ndarray) -> np.ndarray:
    return query.points @ pose[:3, :3].T + pose[:3, 3]


def _initial_poses(
    query: PreparedCloud,
    candidate: PreparedCloud,
    config: RerankConfig,
    spectra: np.ndarray,
    yaw_index: np.ndarray | None,
) -> list[np.ndarray]:
    """Steps 1-2 of the module docstring: (4, 4) hypotheses, best coarse peak first."""
    poses = []
    for yaw, tx, ty in _coarse(spectra, candidate, config, yaw_index):
        pose = np.eye(4)
        pose[:3, :3] = _rot_z(yaw)
        pose[:2, 3] = (tx, ty)
        pose[2, 3] = _height_offset(_moved(query, pose), candidate, config)
        poses.append(pose)
    assert poses  # the zero shift is always searched, so there is a peak
    return poses


def _refine(
    query: PreparedCloud, candidate: PreparedCloud, config: RerankConfig, poses: list[np.ndarray]
) -> Verification:
    """Step 3 of the module docstring on each hypothesis; the best fitness wins."""
    best: tuple[float, float, np.ndarray, bool] | None = None
    q_cloud = query._gicp[0]
    c_cloud, c_tree = candidate._gicp
    for init in poses:
        pose = init
        converged = False
        for dist in config.gicp_distances:
            res = small_gicp.align(
                c_cloud,
                q_cloud,
                c_tree,
                init_T_target_source=pose,
                registration_type="GICP",
                max_correspondence_distance=dist,
                num_threads=1,  # a threaded reduction's sums vary from run to run
                max_iterations=config.gicp_iterations,
                rotation_epsilon=math.radians(config.gicp_rotation_tolerance_deg),
                translation_epsilon=config.gicp_translation_tolerance,
            )
            pose = np.array(res.T_target_source, dtype=np.float64)
            converged = bool(res.converged)
        sink = _height_offset(_moved(query, pose), candidate, config)
        if sink < -config.height_tolerance:
            pose[2, 3] += sink
        fit, rmse = _fitness(query, candidate, pose, config)
        if best is None or fit > best[0]:
            best = (fit, rmse, pose, converged)
    assert best is not None
    fit, rmse, pose, converged = best
    return Verification(
        fitness=fit, rmse=rmse, pose=pose, yaw_deg=yaw_of(pose), converged=converged
    )


def _check_prepared(config: RerankConfig, *clouds: PreparedCloud) -> None:
    for c in clouds:
        if c.config != config:
            raise RerankInputError(
                "prepared cloud was made with another RerankConfig than the one given"
            )


def verify_many(
    query: PreparedCloud, candidates: Sequence[PreparedCloud], config: RerankConfig
) -> list[Verification]:
    """Verify ``query`` against every candidate together (clouds :func:`prepare`-d with
    ``config``): batched coarse search, coarse fitness, GICP on the ``refine_top`` best
    by coarse fitness (all with ``refine_top=0``). Returns one :class:`Verification` per
    candidate, input order; unrefined ones have ``refined`` False.

    Raises:
        RerankInputError: a cloud was prepared with another config.
    """
    _check_prepared(config, query, *candidates)
    if not candidates:
        return []
    spectra = _query_spectra(query, config)
    if config.coarse_factor > 1:
        spectra_c = _query_spectra(query, config, config.bev_cell * config.coarse_factor)
        yaw_sets: list[np.ndarray | None] = list(_coarse_yaws(spectra_c, candidates, config))
    else:
        yaw_sets = [None] * len(candidates)
    inits = [
        _initial_poses(query, c, config, spectra, ys)
        for c, ys in zip(candidates, yaw_sets, strict=True)
    ]
    n_refine = len(candidates) if config.refine_top == 0 else config.refine_top
    if n_refine >= len(candidates):
        refine = set(range(len(candidates)))
        coarse_fit = [math.nan] * len(candidates)
    else:
        coarse_fit = [
            max(_coarse_fitness(_moved(query, p), c, config) for p in ps)
            for c, ps in zip(candidates, inits, strict=True)
        ]
        order = np.argsort(-np.asarray(coarse_fit), kind="stable")
        refine = {int(i) for i in order[:n_refine]}
    out = []
    for i, (c, ps) in enumerate(zip(candidates, inits, strict=True)):
        if i in refine:
            out.append(_refine(query, c, config, ps))
        else:
            pose = ps[0]
            out.append(
                Verification(
                    fitness=coarse_fit[i],
                    rmse=math.inf,
                    pose=pose,
                    yaw_deg=yaw_of(pose),
                    converged=False,
                    refined=False,
                )
            )
    return out


def verify_prepared(
    query: PreparedCloud, candidate: PreparedCloud, config: RerankConfig
) -> Verification:
    """:func:`verify` on clouds already :func:`prepare`-d with ``config`` (always refined).

    Raises:
        RerankInputError: a cloud was prepared with another config.
    """
    _check_prepared(config, query, candidate)
    return verify_many(query, [candidate], config)[0]


def verify(query: np.ndarray, candidate: np.ndarray, config: RerankConfig) -> Verification:
    """Align ``query`` to ``candidate`` and score the agreement.

    Args:
        query, candidate: (N, 3) float point clouds, metric, each in its own frame.
        config: the verification knobs.

    Returns:
        The :class:`Verification` (refined); its ``pose`` maps query points into the
        candidate frame.

    Raises:
        RerankInputError: either cloud is not (N, 3) numeric, is empty, has NaN/inf
            coordinates or too few points (the message names ``query`` or ``candidate``).
    """
    return verify_prepared(
        prepare(query, config, "query"), prepare(candidate, config, "candidate"), config
    )


@dataclass(frozen=True)
class RerankResult:
    """Candidates re-ordered by verification.

    ``order``: candidate positions (into the input sequence), best first: refined before
    unrefined, then fitness descending, ties in input order; ``verifications[i]``: the
    verification of input candidate ``i`` (input order).
    """

    order: tuple[int, ...]
    verifications: tuple[Verification, ...]

    @property
    def best(self) -> Verification:
        """The verification of the top candidate."""
        return self.verifications[self.order[0]]


def order_of(verifications: Sequence[Verification]) -> tuple[int, ...]:
    """Positions sorted best first: refined before unrefined, then fitness descending,
    ties in input order."""
    key = [(0 if v.refined else 1, -v.fitness, i) for i, v in enumerate(verifications)]
    return tuple(k[2] for k in sorted(key))


def rerank(
    query: np.ndarray, candidates: Sequence[np.ndarray], config: RerankConfig
) -> RerankResult:
    """Verify ``query`` against every candidate (clouds as in :func:`verify`; together, as
    :func:`verify_many`) and order them (:func:`order_of`).

    Raises:
        RerankInputError: no candidates, or a bad cloud (named ``query`` or
            ``candidates[i]``).
    """
    if len(candidates) == 0:
        raise RerankInputError("candidates: no candidate clouds to re-rank")
    q = prepare(query, config, "query")
    prepared = [prepare(c, config, f"candidates[{i}]") for i, c in enumerate(candidates)]
    ver = tuple(verify_many(q, prepared, config))
    return RerankResult(order_of(ver), ver)


CloudSource = Callable[[int], np.ndarray] | Sequence[np.ndarray]


class RerankRetriever:
    """A :class:`~hotformerloc.eval.Retriever` that re-orders the ``top_k`` results of a
    ``base`` retriever by geometric verification.

    ``clouds`` gives the (N, 3) metric cloud of a global item index: a sequence, or a
    function such as :meth:`hotformerloc.data.Benchmark.load_cloud`. For each query the
    base ranking's first ``top_k`` valid positions are verified together
    (:func:`verify_many`) and sorted (:func:`order_of`: refined by fitness descending,
    then unrefined by coarse fitness, ties in base order), with distance ``1 - fitness``
    (in [0, 1]) for refined candidates and 1 for unrefined ones. Positions
    past ``top_k`` keep the base order with distance ``1 + (d - d0)`` (``d`` the base
    distance, ``d0`` the first of them), so rows stay non-decreasing; ``-1`` padding keeps
    ``inf``. ``exclude`` is passed to the base, whose items are only re-ordered.

    ``progress``, if given, is called with the number of query rows re-ranked so far (over
    every :meth:`rank` call), after each row.

    Prepared clouds are kept in an LRU cache of ``cache_size`` items (about 2 MB for a
    10k-point cloud with its covariances); the verifications of the last ``memo_size``
    (query item, item) pairs are memoised (:meth:`verification`, :attr:`verified_pairs`),
    and a query's candidate list verified again returns the same verifications. A pair
    verified unrefined is verified again (with its new list) when it is met again.

    Raises (from :meth:`rank` / :meth:`verification`): :class:`RerankInputError` naming
    the item whose cloud is unusable.
    """

    def __init__(
        self,
        base: Retriever,
        clouds: CloudSource,
        top_k: int = 25,
        config: RerankConfig | None = None,
        cache_size: int = 512,
        memo_size: int = 100_000,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        require(top_k >= 1, f"RerankRetriever: top_k must be >= 1, got {top_k}")
        require(cache_size >= 1, f"RerankRetriever: cache_size must be >= 1, got {cache_size}")
        require(memo_size >= 0, f"RerankRetriever: memo_size must be >= 0, got {memo_size}")
        self.base = base
        self.clouds = clouds
        self.top_k = int(top_k)
        self.config = config or RerankConfig()
        self.cache_size = int(cache_size)
        self.memo_size = int(memo_size)
        self.progress = progress
        self.rows_done = 0
        self._cache: OrderedDict[int, PreparedCloud] = OrderedDict()
        self._memo: OrderedDict[tuple[int, int], Verification] = OrderedDict()

    @property
    def verified_pairs(self) -> list[tuple[int, int]]:
        """The memoised (query item, item) pairs, oldest first."""
        return list(self._memo)

    def _cloud(self, item: int) -> PreparedCloud:
        hit = self._cache.get(item)
        if hit is not None:
            self._cache.move_to_end(item)
            return hit
        raw = self.clouds(item) if callable(self.clouds) else self.clouds[item]
        prepared = prepare(raw, self.config, f"item {item}")
        self._cache[item] = prepared
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return prepared

    def _verified(self, query_item: int, items: Sequence[int]) -> list[Verification]:
        """Verifications of ``query_item`` against each of ``items`` (memoised): when any
        pair is missing or unrefined, the whole list is verified together."""
        memo = [self._memo.get((query_item, item)) for item in items]
        if any(v is None or not v.refined for v in memo):
            q = self._cloud(query_item)
            cands = [self._cloud(item) for item in items]
            fresh = verify_many(q, cands, self.config)
            # keep refined memo entries (the same computation gives the same result)
            memo = [
                m if m is not None and m.refined else f for m, f in zip(memo, fresh, strict=True)
            ]
        out: list[Verification] = []
        for item, ver in zip(items, memo, strict=True):
            assert ver is not None
            key = (query_item, item)
            if self.memo_size:
                self._memo[key] = ver
                self._memo.move_to_end(key)
                while len(self._memo) > self.memo_size:
                    self._memo.popitem(last=False)
            out.append(ver)
        return out

    def verification(self, query_item: int, item: int) -> Verification:
        """Verification of global item ``query_item`` (as the query) against global item
        ``item`` (memoised)."""
        return self._verified(int(query_item), [int(item)])[0]

    def rank(
        self,
        query: np.ndarray,
        database: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> Ranking:
        """(Q, k) ranking of the ``query`` items (Q,) among the ``database`` items (M,),
        positions into ``database``, as in the :class:`~hotformerloc.eval.Retriever`
        protocol."""
        q = np.asarray(query, np.int64)
        db = np.asarray(database, np.int64)
        base = self.base.rank(q, db, max(int(k), self.top_k), exclude)
        b_idx = np.asarray(base.indices, np.int64)
        b_dist = np.asarray(base.distances, np.float64)
        idx = np.full((q.shape[0], k), -1, np.int64)
        dist = np.full((q.shape[0], k), np.inf)
        for row in range(q.shape[0]):
            valid = np.flatnonzero(b_idx[row] >= 0)
            head, tail = valid[: self.top_k], valid[self.top_k :]
            vers = self._verified(int(q[row]), [int(db[b_idx[row, p]]) for p in head])
            perm = np.array(order_of(vers), np.int64)
            fit = np.array([v.fitness if v.refined else 0.0 for v in vers], np.float64)
            cols = np.concatenate([head[perm], tail])[:k]
            d_tail = b_dist[row, tail]
            offset = d_tail[0] if d_tail.size else 0.0
            d = np.concatenate([1.0 - fit[perm], 1.0 + (d_tail - offset)])
            idx[row, : cols.size] = b_idx[row, cols]
            dist[row, : cols.size] = d[: cols.size]
            self.rows_done += 1
            if self.progress is not None:
                self.progress(self.rows_done)
        return Ranking(idx, dist)
