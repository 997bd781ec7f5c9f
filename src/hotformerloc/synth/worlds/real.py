"""Real-geometry world built from an aerial lidar cloud (by default the Autzen 2010 survey).

The crop of the cloud becomes a terrain model (DTM) plus solid occupancy voxels of every
point more than ``min_height`` above it; the real points are kept as the aerial capture.
World frame: the source frame shifted by ``-shift`` (= ``-(crop xmin, crop ymin, 0)``), so
the crop spans ``(0, 0, width, height)``; metres, z as in the source. The world is static:
:meth:`RealWorld.scene` ignores the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from hotformerloc.submaps import pmf_surface
from hotformerloc.synth.scene import HeightField, Scene, Voxels
from hotformerloc.synth.worlds.base import Epoch, World
from hotformerloc.synth.worlds.terrain import FootprintIndex, resample_polyline

AUTZEN_SOURCE = "../shared/data/autzen_2010_als/autzen_2010_points.npz"
"""Default source, relative to the working directory (the repository root)."""

AUTZEN_CROP = (40.0, 900.0, 540.0, 1400.0)
"""Default crop of Autzen (source frame, m): offices, parking lots, tree-lined roads, a
slough, the indoor practice hall and the west edge of the stadium."""

AUTZEN_ROUTE: tuple[tuple[float, float], ...] = (
    (102, 1106), (202, 1114), (220, 1104), (240, 1108), (248, 1112), (296, 1108), (310, 1118),
    (320, 1118), (330, 1112), (352, 1112), (360, 1104), (368, 1110), (370, 1124), (370, 1132),
    (362, 1138), (360, 1150), (370, 1156), (374, 1152), (390, 1154), (390, 1164), (384, 1170),
    (384, 1188), (402, 1208), (400, 1228), (416, 1230), (412, 1248), (426, 1252), (430, 1266),
    (430, 1274), (434, 1280), (364, 1278), (358, 1272), (346, 1276), (326, 1254), (298, 1254),
    (292, 1248), (274, 1252), (268, 1246), (228, 1246), (222, 1240), (216, 1246), (204, 1245),
    (202, 1224), (188, 1212), (184, 1222), (146, 1220), (122, 1180), (136, 1170), (148, 1142),
    (148, 1136), (134, 1118), (124, 1108), (102, 1106),
)  # fmt: skip
"""Default closed route in Autzen (source frame, m; ~1020 m): along the east-west road south
of the offices, north through the car park, west in front of the offices and back south
across the lawns; at least 1.2 m from every voxel 0.5-3 m above ground (free_mask)."""

_DTM_STEP0 = 0.5  # height step (m) tolerated at the smallest opening window


@dataclass(frozen=True)
class RealConfig:
    """Knobs of :class:`RealWorld` (metres).

    * ``source``: npz with ``xyz_mm`` (int32 millimetres, Autzen format) or ``xyz`` (float
      metres), shape (N, 3).
    * ``crop``: ``(xmin, ymin, xmax, ymax)`` in the source frame, or None for the whole
      cloud.
    * ``voxel_size``: edge of the occupancy voxels; ``min_height``: points at most this
      high above the DTM are ground and make no voxel.
    * ``dtm_resolution``: DTM cell size. The DTM is a progressive morphological filter on
      the per-cell 10th-percentile heights: openings with windows growing to
      ``dtm_max_window`` flag cells that rise more than ``0.5 + dtm_slope * window growth``
      (capped at ``dtm_max_step``) above the opened surface; flagged and empty cells take
      the nearest ground cell, then a 1-cell Gaussian smooths. Points up to
      ``dtm_max_window`` beyond the crop take part, so buildings cut by the crop edge are
      still removed.
    * ``route``: closed list of (x, y) waypoints in the source frame (first point repeated
      at the end), or None for :data:`AUTZEN_ROUTE` (which must lie inside the crop).
    * ``route_spacing``: waypoint spacing after resampling (<= 5).
    """

    source: str = AUTZEN_SOURCE
    crop: tuple[float, float, float, float] | None = AUTZEN_CROP
    voxel_size: float = 0.5
    dtm_resolution: float = 1.0
    route: tuple[tuple[float, float], ...] | None = None
    min_height: float = 0.3
    dtm_max_window: float = 130.0
    dtm_slope: float = 0.15
    dtm_max_step: float = 3.0
    route_spacing: float = 2.0

    def __post_init__(self) -> None:
        if self.voxel_size <= 0 or self.dtm_resolution <= 0 or self.dtm_max_window <= 0:
            raise ValueError("voxel_size, dtm_resolution and dtm_max_window must be > 0")
        if self.crop is not None and not (
            self.crop[2] > self.crop[0] and self.crop[3] > self.crop[1]
        ):
            raise ValueError(f"crop must be (xmin, ymin, xmax, ymax), got {self.crop}")
        if not 0 < self.route_spacing <= 5:
            raise ValueError("route_spacing must be in (0, 5]")


def _load_region(
    path: str, crop: tuple[float, float, float, float] | None, margin: float
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Points (N, 3) float64 metres (source frame) within ``margin`` of the crop, and the
    crop itself (the cloud's xy bounds when ``crop`` is None)."""
    with np.load(Path(path)) as data:
        if "xyz_mm" in data:
            raw, scale = data["xyz_mm"], 1e-3
        elif "xyz" in data:
            raw, scale = data["xyz"], 1.0
        else:
            raise ValueError(f"{path}: expected an 'xyz_mm' or 'xyz' array")
    if raw.ndim != 2 or raw.shape[1] != 3:
        raise ValueError(f"{path}: points must be (N, 3), got {raw.shape}")
    if crop is None:
        lo, hi = raw[:, :2].min(axis=0) * scale, raw[:, :2].max(axis=0) * scale
        crop = (float(lo[0]), float(lo[1]), float(hi[0]) + 1e-3, float(hi[1]) + 1e-3)
    x0, y0, x1, y1 = crop
    lim: list[float] | list[int] = [
        v / scale for v in (x0 - margin, y0 - margin, x1 + margin, y1 + margin)
    ]
    if np.issubdtype(raw.dtype, np.integer):  # compare in the integer dtype, no float copy
        lim = [int(np.ceil(v)) for v in lim]
    x, y = raw[:, 0], raw[:, 1]
    mask = (x >= lim[0]) & (x < lim[2]) & (y >= lim[1]) & (y < lim[3])
    return raw[mask].astype(np.float64) * scale, crop


def dtm_grid(
    pts: np.ndarray,
    origin: tuple[float, float],
    shape: tuple[int, int],
    res: float,
    max_window: float,
    slope: float,
    max_step: float,
) -> np.ndarray:
    """Digital terrain model (H, W) float64 of points (N, 3) on a grid whose cell (i, j)
    covers ``origin + ([j, j+1), [i, i+1)) * res`` (progressive morphological filter, see
    :class:`RealConfig`)."""
    h, w = shape
    j = np.floor((pts[:, 0] - origin[0]) / res).astype(np.int64)
    i = np.floor((pts[:, 1] - origin[1]) / res).astype(np.int64)
    inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
    cell, z = i[inside] * w + j[inside], pts[inside, 2]
    zmin = float(z.min()) if len(z) else 0.0
    key = np.sort((cell << 32) | np.round((z - zmin) * 1000).astype(np.int64))
    cells = key >> 32
    start = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    count = np.diff(np.r_[start, len(key)])
    flat = np.full(h * w, np.nan)
    flat[cells[start]] = (key[start + (count - 1) // 10] & 0xFFFFFFFF) / 1000 + zmin
    low = flat.reshape(h, w)

    surface = pmf_surface(low, res, max_window, slope, max_step, _DTM_STEP0)
    return ndimage.gaussian_filter(surface, 1.0)


class RealWorld(World):
    """Real geometry from an aerial cloud (see module doc and :class:`RealConfig`).

    Attributes: ``shift`` (3,) source-frame position of the world origin; ``terrain``
    (:class:`HeightField`, the DTM over the crop); ``voxels`` (:class:`Voxels`, solid).
    """

    kind = "real"

    def __init__(self, cfg: RealConfig, seed: int, name: str = "real") -> None:
        self.cfg = cfg
        self.seed = seed  # unused: the geometry is real
        self.name = name
        margin = cfg.dtm_max_window
        pts, crop = _load_region(cfg.source, cfg.crop, margin)
        x0, y0, x1, y1 = crop
        self.shift = np.array([x0, y0, 0.0])
        self.extent = (0.0, 0.0, x1 - x0, y1 - y0)
        pts -= self.shift

        res = cfg.dtm_resolution
        pad = int(np.ceil(margin / res))
        nx = int(np.ceil((x1 - x0) / res)) + 1
        ny = int(np.ceil((y1 - y0) / res)) + 1
        # Cells centred on the height-field nodes: node (i, j) of the crop is (j, i) * res.
        dtm = dtm_grid(
            pts,
            (-(pad + 0.5) * res, -(pad + 0.5) * res),
            (ny + 2 * pad, nx + 2 * pad),
            res,
            cfg.dtm_max_window,
            cfg.dtm_slope,
            cfg.dtm_max_step,
        )
        self.terrain = HeightField(0.0, 0.0, res, dtm[pad : pad + ny, pad : pad + nx])

        inside = (pts[:, 0] >= 0) & (pts[:, 0] < x1 - x0) & (pts[:, 1] >= 0) & (pts[:, 1] < y1 - y0)
        pts = pts[inside]
        self._points = pts.astype(np.float32)
        self._points.flags.writeable = False
        above = pts[:, 2] - self.terrain.height(pts[:, 0], pts[:, 1]) > cfg.min_height
        occ = pts[above]
        size = cfg.voxel_size
        origin = np.array([0.0, 0.0, np.floor(occ[:, 2].min()) if len(occ) else 0.0])
        ijk = np.floor((occ - origin) / size).astype(np.int64)
        key = np.unique((ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2])
        ijk = np.column_stack([key >> 42, (key >> 21) & 0x1FFFFF, key & 0x1FFFFF]).astype(np.int32)
        self.voxels = Voxels(origin=origin, size=size, ijk=ijk)

        centre = origin + (ijk + 0.5) * size
        hag = centre[:, 2] - self.terrain.height(centre[:, 0], centre[:, 1])
        col = ijk[(hag >= 0.5) & (hag <= 3.0)].astype(np.int64)
        col_key = np.unique((col[:, 0] << 21) | col[:, 1])
        cols = np.column_stack([col_key >> 21, col_key & 0x1FFFFF])
        discs = np.column_stack([(cols + 0.5) * size, np.full(len(cols), size * np.sqrt(0.5))])
        self._footprints = FootprintIndex(discs=discs)

        self._route = self._make_route(crop)

    def _make_route(self, crop: tuple[float, float, float, float]) -> np.ndarray:
        way = np.asarray(self.cfg.route if self.cfg.route is not None else AUTZEN_ROUTE, float)
        x0, y0, x1, y1 = crop
        if way.ndim != 2 or way.shape[1] != 2 or len(way) < 2:
            raise ValueError("route must be a list of at least two (x, y) waypoints")
        if not ((way >= [x0, y0]) & (way <= [x1, y1])).all():
            which = "route" if self.cfg.route is not None else "the default Autzen route"
            raise ValueError(f"{which} leaves the crop {crop}; give route waypoints inside it")
        return resample_polyline(way - self.shift[:2], self.cfg.route_spacing)

    def scene(self, epoch: Epoch) -> Scene:
        """The static real geometry (DTM + voxels); ``epoch`` is ignored."""
        return Scene(terrain=self.terrain, voxels=self.voxels)

    def route(self) -> np.ndarray:
        """The configured route in the world frame, (M, 2) float64, spacing <= route_spacing."""
        return self._route.copy()

    def ground_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """DTM height (m, float32) at arrays ``x``, ``y`` (world frame)."""
        return self.terrain.height(x, y)

    def free_mask(self, xy: np.ndarray, clearance: float) -> np.ndarray:
        """(N,) bool: no voxel 0.5-3 m above the DTM within ``clearance`` m horizontally
        (each such voxel column counts as a disc of its half diagonal)."""
        return self._footprints.free(xy, clearance)

    def aerial_points(self) -> np.ndarray:
        """The real points of the crop, (N, 3) float32, world frame (read-only)."""
        return self._points
