"""Submap post-processing shared by the synthetic generator and real-data preparation.

The CS-Wild-Places recipe (spec 4.4), in order: crop to a horizontal radius around the
submap centre, optional ground removal, voxel downsampling, optional PNV normalisation,
and a minimum point count. Points are float32 (N, 3) metres unless stated otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hotformerloc.config import require

#: Metres -> network units for a submap of :attr:`SubmapConfig.radius` 30 m: the scale that
#: maps it roughly into [-1, 1] (CS-Wild-Places' metric release, Wild-Places, our
#: pre-training; a model's ``input_scale``).
METRIC_SCALE = 1.0 / 30.0


@dataclass(frozen=True)
class SubmapConfig:
    """Post-processing knobs (defaults follow CS-Wild-Places).

    * ``radius``: horizontal crop radius (m) around the submap centre;
    * ``remove_ground``: drop points within ``ground_threshold`` m above the estimated
      ground surface (:func:`remove_ground`: lowest points on a ``ground_cell`` m grid,
      progressive morphological filter with windows up to ``ground_window`` m);
    * ``voxel``: voxel edge (m) for centroid downsampling (0 disables);
    * ``normalise``: also PNV-normalise (centroid to 0, mean distance 0.5, drop |p| > 1);
    * ``min_points``: a submap with fewer points after processing is discarded.
    """

    radius: float = 30.0
    remove_ground: bool = True
    ground_cell: float = 1.0
    ground_threshold: float = 0.5
    ground_window: float = 40.0
    voxel: float = 0.8
    normalise: bool = False
    min_points: int = 512

    def __post_init__(self) -> None:
        require(self.radius > 0, f"radius must be > 0, got {self.radius}")
        require(self.ground_cell > 0, "ground_cell must be > 0")
        require(self.ground_threshold >= 0, "ground_threshold must be >= 0")
        require(self.ground_window >= 3 * self.ground_cell, "ground_window must be >= 3 cells")
        require(self.voxel >= 0, "voxel must be >= 0")
        require(self.min_points >= 1, "min_points must be >= 1")


def crop_radius(points: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of points within ``radius`` (horizontal) of ``center`` (xy)."""
    d = points[:, :2] - np.asarray(center, np.float64)[:2]
    return np.einsum("ij,ij->i", d, d) <= radius * radius


def pmf_surface(
    low: np.ndarray,
    res: float,
    max_window: float = 40.0,
    slope: float = 0.15,
    max_step: float = 3.0,
    step0: float = 0.5,
) -> np.ndarray:
    """Ground surface from a grid of per-cell low heights (progressive morphological filter).

    ``low`` (H, W) float, NaN for empty cells; ``res`` the cell size (m). Grey openings
    with windows growing (3, 7, 15, ... cells) to ``max_window`` m flag a cell as non-ground
    when it rises more than ``step0 + slope * window growth`` (capped at ``max_step``) above
    the opened surface, so roofs and canopy wider than a small window are still caught while
    slopes up to ``slope`` survive. Non-ground and empty cells take the nearest ground cell.
    Returns (H, W) float64.
    """
    known = np.isfinite(low)
    if not known.any():
        return np.zeros(low.shape)

    def fill(grid: np.ndarray, mask: np.ndarray) -> np.ndarray:
        near = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
        return grid[tuple(near)]

    surface = fill(np.where(known, low, 0.0), known)
    ground = known.copy()
    current, prev, size = surface, 1, 3
    while True:
        opened = ndimage.grey_opening(current, size=(size, size))
        step = min(step0 + slope * (size - prev) * res, max_step)
        ground &= current - opened <= step
        current, prev = opened, size
        if size * res >= max_window:
            break
        size = min(2 * size + 1, int(np.ceil(max_window / res)) | 1)
    return fill(surface, ground) if ground.any() else surface


def remove_ground(
    points: np.ndarray,
    cell: float = 1.0,
    threshold: float = 0.5,
    max_window: float = 40.0,
    slope: float = 0.15,
) -> np.ndarray:
    """Mask of points kept (True): those more than ``threshold`` m above the ground surface.

    The ground is :func:`pmf_surface` of the per-cell lowest points on a ``cell`` m grid, a
    stand-in for the Cloth Simulation Filter (cloth resolution 1 m, class threshold 0.5 m)
    of CS-Wild-Places (documented deviation).
    """
    if len(points) == 0:
        return np.zeros(0, bool)
    xy0 = points[:, :2].min(0)
    ij = np.floor((points[:, :2] - xy0) / cell).astype(np.int64)
    shape = ij.max(0) + 1
    flat = ij[:, 0] * shape[1] + ij[:, 1]
    low = np.full(int(shape[0] * shape[1]), np.inf)
    np.minimum.at(low, flat, points[:, 2].astype(np.float64))
    low[~np.isfinite(low)] = np.nan
    surface = pmf_surface(low.reshape(shape), cell, max_window, slope)
    return points[:, 2] > surface[ij[:, 0], ij[:, 1]] + threshold


def voxel_downsample(points: np.ndarray, voxel: float) -> np.ndarray:
    """Centroid of the points in each occupied voxel, in ascending voxel-key order (float32).

    Deterministic: the output order depends only on the set of occupied voxels.
    """
    if voxel <= 0 or len(points) == 0:
        return np.asarray(points, np.float32)
    p = np.asarray(points, np.float64)
    key = np.floor(p / voxel).astype(np.int64)
    key -= key.min(0)
    dims = key.max(0) + 1
    flat = (key[:, 0] * dims[1] + key[:, 1]) * dims[2] + key[:, 2]
    uniq, inv, cnt = np.unique(flat, return_inverse=True, return_counts=True)
    out = np.zeros((len(uniq), 3))
    for k in range(3):
        out[:, k] = np.bincount(inv, weights=p[:, k], minlength=len(uniq))
    return (out / cnt[:, None]).astype(np.float32)


def pnv_normalise(points: np.ndarray) -> np.ndarray:
    """PNV normalisation (spec 4.4 step 4): centroid to 0, scale by 0.5 / mean distance,
    drop points outside [-1, 1]^3. Returns float32 (M, 3)."""
    p = np.asarray(points, np.float64)
    c = p - p.mean(0)
    s = 0.5 / max(np.linalg.norm(c, axis=1).mean(), 1e-9)
    c *= s
    return c[np.all(np.abs(c) <= 1.0, axis=1)].astype(np.float32)


def to_local(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points (N, 3) into the frame of ``pose`` (4, 4, local -> world), float32."""
    rot = pose[:3, :3]
    return ((np.asarray(points, np.float64) - pose[:3, 3]) @ rot).astype(np.float32)


def process_submap(
    world_points: np.ndarray, pose: np.ndarray, cfg: SubmapConfig
) -> np.ndarray | None:
    """Crop, remove ground, voxelise (in the submap frame) and optionally normalise.

    ``world_points`` (N, 3); ``pose`` (4, 4) submap frame -> world. Returns local points
    (M, 3) float32, or None when fewer than ``cfg.min_points`` remain.
    """
    pts = world_points[crop_radius(world_points, pose[:3, 3], cfg.radius)]
    if cfg.remove_ground and len(pts):
        pts = pts[remove_ground(pts, cfg.ground_cell, cfg.ground_threshold, cfg.ground_window)]
    local = voxel_downsample(to_local(pts, pose), cfg.voxel)
    if cfg.normalise and len(local):
        local = pnv_normalise(local)
    return local if len(local) >= cfg.min_points else None
