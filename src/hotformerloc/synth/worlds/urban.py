"""Procedural town: gently sloped terrain, an irregular road grid (plus an optional diagonal
road), sidewalks, buildings, street lights, signs, parked cars, street and park trees and
fences. The route is a closed loop along road centrelines around several blocks.

World frame: metres, origin at the south-west corner, extent ``(0, 0, size_x, size_y)``,
z up. The layout is drawn once in ``__init__``; :meth:`UrbanWorld.scene` re-samples the
parked cars from ``Epoch.seed`` and applies foliage, leaf-off and growth to the trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from hotformerloc.synth.scene import Boxes, HeightField, Label, Scene, boxes_of, cylinders_of
from hotformerloc.synth.worlds.base import Epoch, World
from hotformerloc.synth.worlds.forest import CONIFER, Species, TreeSet, make_trees
from hotformerloc.synth.worlds.terrain import (
    FootprintIndex,
    concat,
    distance_to_segments,
    fractal_noise,
    resample_polyline,
    rng_for,
)

_TERRAIN, _ROADS, _LOTS, _FURNITURE, _TREES, _ROUTE, _CARS = range(1, 8)

STREET_TREE = Species(
    "street", "broadleaf", (6.0, 12.0), (0.2, 0.4), (0.3, 0.45), (2.0, 3.5), 0.9, True
)
URBAN_SPECIES: tuple[Species, ...] = (STREET_TREE, CONIFER)

CAR_HALF_MAX = (2.45 + 0.6, 0.95 + 0.15)
"""Half length / width of a car slot footprint (largest car plus the per-visit jitter)."""


@dataclass(frozen=True)
class UrbanConfig:
    """Knobs of :class:`UrbanWorld` (lengths in metres; ranges are ``(low, high)``).

    * ``size_x``, ``size_y``: world extent; ``terrain_resolution``: height-field spacing.
    * ``terrain_slope``: terrain gradient (m/m, random direction); ``terrain_bumps``:
      amplitude of gentle undulations.
    * ``block_size``: block edge lengths between roads (blocks inside the route margin are
      stretched so that roads run exactly along the margin); ``road_width``: carriageway
      widths; ``diagonal_road``: add one straight diagonal road across the grid.
    * ``sidewalk_width``: curb-side strip (15 cm slab) where lights, signs and trees stand.
    * ``setback``: building distance from the lot boundary (lots lie behind the sidewalk).
    * ``building_height``: clip range; heights are log-normal around
      ``building_height_median`` with log-sigma ``building_height_sigma``.
    * ``l_shape_prob``, ``rotated_prob``: building footprint types (else a rectangle).
    * ``park_prob``: lots without a building (trees instead); ``fence_prob``: fenced lots.
    * ``pole_spacing``, ``sign_spacing``, ``street_tree_spacing``, ``car_slot_spacing``:
      intervals along each road side.
    * ``car_occupancy``: probability that a parking slot holds a car at a visit.
    * ``route_length``: target length of the route loop (the best block loop is chosen);
      ``route_margin``: minimum distance of the route to the world edge;
      ``route_spacing``: waypoint spacing (<= 5).
    * ``leaf_off_factor``, ``growth_height_per_year``, ``growth_crown_per_year``: as in
      :class:`~hotformerloc.synth.worlds.forest.ForestConfig`, for street and park trees.
    """

    size_x: float = 300.0
    size_y: float = 300.0
    terrain_resolution: float = 1.0
    terrain_slope: float = 0.01
    terrain_bumps: float = 0.3
    block_size: tuple[float, float] = (50.0, 90.0)
    road_width: tuple[float, float] = (10.0, 16.0)
    diagonal_road: bool = True
    sidewalk_width: float = 2.5
    setback: tuple[float, float] = (2.0, 6.0)
    building_height: tuple[float, float] = (4.0, 40.0)
    building_height_median: float = 12.0
    building_height_sigma: float = 0.6
    l_shape_prob: float = 0.3
    rotated_prob: float = 0.2
    park_prob: float = 0.12
    fence_prob: float = 0.3
    pole_spacing: float = 30.0
    sign_spacing: float = 70.0
    street_tree_spacing: float = 12.0
    car_slot_spacing: float = 6.5
    car_occupancy: float = 0.6
    route_length: float = 900.0
    route_margin: float = 40.0
    route_spacing: float = 2.0
    leaf_off_factor: float = 0.15
    growth_height_per_year: float = 0.03
    growth_crown_per_year: float = 0.04

    def __post_init__(self) -> None:
        if min(self.size_x, self.size_y) <= 2 * self.route_margin + 20:
            raise ValueError("size_x and size_y must exceed 2 * route_margin + 20")
        if not 0 < self.route_spacing <= 5:
            raise ValueError("route_spacing must be in (0, 5]")
        if not 0 <= self.car_occupancy <= 1:
            raise ValueError("car_occupancy must be in [0, 1]")
        if min(self.road_width) <= 2 * 1.2 + 2 * CAR_HALF_MAX[1] + 2.0:
            raise ValueError("road_width too narrow for parking lanes and a free centre")


def _road_lines(rng: np.random.Generator, cfg: UrbanConfig, size: float) -> np.ndarray:
    """Centre positions of the roads across one axis (sorted): roads lie exactly on both
    route-margin lines, evenly-ish between, and continue outwards at block spacing."""
    lo, hi = cfg.route_margin, size - cfg.route_margin
    typical = np.mean(cfg.block_size) + np.mean(cfg.road_width)
    k = max(1, round((hi - lo) / typical))
    w = rng.uniform(0.85, 1.15, k)
    inner = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(w) / w.sum()])
    outer = []
    for start, sign in ((lo, -1.0), (hi, 1.0)):
        p = start + sign * (rng.uniform(*cfg.block_size) + np.mean(cfg.road_width))
        while 5.0 < p < size - 5.0:
            outer.append(p)
            p += sign * (rng.uniform(*cfg.block_size) + np.mean(cfg.road_width))
    return np.sort(np.concatenate([inner, outer]))


def _rect_outline(center: np.ndarray, half: np.ndarray, yaw: np.ndarray, step: float) -> np.ndarray:
    """Points every <= ``step`` m along the outlines of yawed rectangles: (N, S, 2)."""
    t = np.linspace(-1.0, 1.0, max(int(np.ceil(2 * half.max(initial=0.0) / step)), 1) + 1)
    one = np.ones_like(t)
    loc = np.concatenate(
        [
            np.stack([t, -one], 1),
            np.stack([one, t], 1),
            np.stack([t, one], 1),
            np.stack([-one, t], 1),
        ]
    )
    lx = loc[None, :, 0] * half[:, None, 0]
    ly = loc[None, :, 1] * half[:, None, 1]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack(
        [center[:, None, 0] + c * lx - s * ly, center[:, None, 1] + s * lx + c * ly], -1
    )


def _polyomino_ok(cells: np.ndarray) -> bool:
    """True when the boolean cell grid is one 4-connected region without holes or
    corner-only contacts (so that its outline is one simple loop)."""
    if ndimage.label(cells)[1] != 1:
        return False
    if ndimage.label(np.pad(~cells, 1, constant_values=True))[1] != 1:
        return False
    a, b, c, d = cells[:-1, :-1], cells[1:, :-1], cells[:-1, 1:], cells[1:, 1:]
    return not ((a & d & ~b & ~c) | (b & c & ~a & ~d)).any()


def _outline(cells: np.ndarray) -> list[tuple[int, int]]:
    """Counter-clockwise outline nodes (i, j) of a valid polyomino (cells[i, j], i along x)."""
    nxt: dict[tuple[int, int], tuple[int, int]] = {}
    pad = np.pad(cells, 1)
    for i, j in zip(*np.nonzero(cells), strict=True):
        i, j = int(i), int(j)
        if not pad[i + 1, j]:
            nxt[(i, j)] = (i + 1, j)
        if not pad[i + 2, j + 1]:
            nxt[(i + 1, j)] = (i + 1, j + 1)
        if not pad[i + 1, j + 2]:
            nxt[(i + 1, j + 1)] = (i, j + 1)
        if not pad[i, j + 1]:
            nxt[(i, j + 1)] = (i, j)
    start = min(nxt)
    loop = [start]
    while (node := nxt[loop[-1]]) != start:
        loop.append(node)
    return [*loop, start]


def block_loop(
    rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, target: float
) -> np.ndarray:
    """Closed loop (K, 2) along the grid lines ``xs`` x ``ys`` around a simply connected set
    of blocks whose perimeter is closest to ``target`` (randomised greedy growth)."""
    w, h = np.diff(xs), np.diff(ys)

    def perimeter(cells: np.ndarray) -> float:
        pad = np.pad(cells, 1)
        ex = pad[1:, 1:-1] != pad[:-1, 1:-1]  # edges along y between x-neighbours
        ey = pad[1:-1, 1:] != pad[1:-1, :-1]
        return float((ex * h[None, :]).sum() + (ey * w[:, None]).sum())

    best, best_err = None, np.inf
    for _ in range(48):
        cells = np.zeros((len(w), len(h)), bool)
        cells[rng.integers(len(w)), rng.integers(len(h))] = True
        while True:
            err = abs(perimeter(cells) - target)
            if err < best_err:
                best, best_err = cells.copy(), err
            if perimeter(cells) >= target:
                break
            grown = ndimage.binary_dilation(cells) & ~cells
            cands = [
                (i, j)
                for i, j in zip(*np.nonzero(grown), strict=True)
                if _polyomino_ok(
                    cells | (np.arange(len(w))[:, None] == i) & (np.arange(len(h)) == j)
                )
            ]
            if not cands:
                break
            i, j = cands[rng.integers(len(cands))]
            cells[i, j] = True
    assert best is not None
    return np.array([(xs[i], ys[j]) for i, j in _outline(best)], np.float64)


class UrbanWorld(World):
    """Procedural town (see module doc and :class:`UrbanConfig`).

    Public layout: ``terrain``; roads as ``road_a``, ``road_b`` (R, 2) centreline end
    points and ``road_width`` (R,); ``buildings``, ``fences``, ``sidewalks`` and
    ``furniture`` (lights and signs; :class:`Boxes` / :class:`Cylinders`); ``poles`` (P, 3)
    pole footprints (x, y, radius); ``trees`` (:class:`TreeSet`); ``car_slots`` (S, 4):
    x, y, heading (rad, along traffic), road index.

    Scene order: cylinders = tree trunks, branches, furniture; ellipsoids = crowns;
    boxes = buildings, fences, sidewalks, furniture boxes, cars.
    """

    kind = "urban"

    def __init__(self, cfg: UrbanConfig, seed: int, name: str = "urban") -> None:
        self.cfg = cfg
        self.seed = seed
        self.name = name
        sx, sy = cfg.size_x, cfg.size_y
        self.extent = (0.0, 0.0, float(sx), float(sy))
        rng = rng_for(seed, _TERRAIN)
        res = cfg.terrain_resolution
        shape = (int(np.ceil(sy / res)) + 1, int(np.ceil(sx / res)) + 1)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] * res
        phi = rng.uniform(0, 2 * np.pi)
        plane = cfg.terrain_slope * (np.cos(phi) * (xx - sx / 2) + np.sin(phi) * (yy - sy / 2))
        bumps = cfg.terrain_bumps * fractal_noise(shape, res, 200.0, rng, octaves=2)
        self.terrain = HeightField(0.0, 0.0, res, plane + bumps)

        self._build_roads(rng_for(seed, _ROADS))
        self._build_lots(rng_for(seed, _LOTS))
        self._build_furniture(rng_for(seed, _FURNITURE))
        self._build_trees(rng_for(seed, _TREES))
        route = block_loop(rng_for(seed, _ROUTE), self._xs_in, self._ys_in, cfg.route_length)
        self._route = resample_polyline(route, cfg.route_spacing)

        cars = np.column_stack(
            [
                self.car_slots[:, :2],
                np.tile(CAR_HALF_MAX, (len(self.car_slots), 1)),
                self.car_slots[:, 2],
            ]
        )
        trunks = np.column_stack([self.trees.base[:, :2], self.trees.trunk_radius])
        self._footprints = FootprintIndex(
            discs=np.vstack([self.poles, trunks]),
            boxes=np.vstack([_footprint(self.buildings), _footprint(self.fences), cars]),
        )

    # --- layout -------------------------------------------------------------------------

    def _build_roads(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        sx, sy = cfg.size_x, cfg.size_y
        xs = _road_lines(rng, cfg, sx)
        ys = _road_lines(rng, cfg, sy)
        m = cfg.route_margin
        self._xs_in = xs[(xs >= m - 1e-9) & (xs <= sx - m + 1e-9)]
        self._ys_in = ys[(ys >= m - 1e-9) & (ys <= sy - m + 1e-9)]
        a = [(x, -10.0) for x in xs] + [(-10.0, y) for y in ys]
        b = [(x, sy + 10.0) for x in xs] + [(sx + 10.0, y) for y in ys]
        if cfg.diagonal_road:
            ang = rng.uniform(np.pi / 6, np.pi / 3) * rng.choice([-1.0, 1.0])
            c = np.array([sx, sy]) * rng.uniform(0.35, 0.65, 2)
            d = np.array([np.cos(ang), np.sin(ang)]) * (sx + sy)
            a.append(tuple(c - d))
            b.append(tuple(c + d))
        self.road_a = np.array(a, np.float64)
        self.road_b = np.array(b, np.float64)
        self.road_width = rng.uniform(*cfg.road_width, len(self.road_a))
        self._xs, self._ys = xs, ys

    def road_gaps(self, xy: np.ndarray) -> np.ndarray:
        """(N, R) signed distance (m) from points to each road's carriageway edge
        (negative on the road)."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        cols = [
            distance_to_segments(xy, self.road_a[r : r + 1], self.road_b[r : r + 1])
            for r in range(len(self.road_a))
        ]
        return np.column_stack(cols) - self.road_width / 2

    def _clear(self, pts: np.ndarray, gap: float, own: np.ndarray | None = None) -> np.ndarray:
        """(N,) bool: all samples ``pts`` (N, S, 2) are >= ``gap`` m off every carriageway
        (except each item's own road ``own`` (N,), if given)."""
        n, s = pts.shape[:2]
        if n == 0:
            return np.zeros(0, bool)
        g = self.road_gaps(pts.reshape(-1, 2)).reshape(n, s, -1).min(axis=1)
        if own is not None:
            g[np.arange(n), own.astype(np.int64)] = np.inf
        return (g >= gap).all(axis=1)

    def _ground_box(
        self,
        center: np.ndarray,
        half: np.ndarray,
        yaw: np.ndarray,
        height: np.ndarray,
        label: Label,
    ) -> Boxes:
        """Solid boxes standing on the terrain: footprints (N, 2) centre / (N, 2) half
        extents, from 0.5 m below the lowest corner to ``height`` above the highest one."""
        corners = _rect_outline(center, half, yaw, np.inf)
        g = self.terrain.height(corners[..., 0], corners[..., 1])
        z0 = g.min(axis=1) - 0.5
        z1 = g.max(axis=1) + height
        c3 = np.column_stack([center, (z0 + z1) / 2])
        h3 = np.column_stack([half, (z1 - z0) / 2])
        return boxes_of(c3, h3, yaw, np.inf, label)

    def _build_lots(self, rng: np.random.Generator) -> None:
        """Blocks between roads -> sidewalks and lots -> buildings, fences, park spots."""
        cfg = self.cfg
        sw = cfg.sidewalk_width
        hw = self.road_width
        nx, ny = len(self._xs), len(self._ys)
        xe = np.concatenate([[0.0], self._xs, [cfg.size_x]])
        ye = np.concatenate([[0.0], self._ys, [cfg.size_y]])
        wx = np.concatenate([[0.0], hw[:nx], [0.0]]) / 2
        wy = np.concatenate([[0.0], hw[nx : nx + ny], [0.0]]) / 2
        lots, walks = [], []
        for i in range(nx + 1):
            for j in range(ny + 1):
                x0, x1 = xe[i] + wx[i], xe[i + 1] - wx[i + 1]
                y0, y1 = ye[j] + wy[j], ye[j + 1] - wy[j + 1]
                if min(x1 - x0, y1 - y0) < 2 * sw + 8:
                    continue
                walks += _strips(x0, y0, x1, y1, sw)
                lots += _split_block(rng, x0 + sw, y0 + sw, x1 - sw, y1 - sw)
        lots_a = np.array(lots, np.float64).reshape(-1, 4)
        walks_a = np.array(walks, np.float64).reshape(-1, 4)

        walk_c = (walks_a[:, :2] + walks_a[:, 2:]) / 2
        walk_h = (walks_a[:, 2:] - walks_a[:, :2]) / 2
        keep = self._clear(_rect_outline(walk_c, walk_h, 0 * walk_c[:, 0], 2.0), -0.05)
        wc = np.column_stack(
            [walk_c[keep], self.terrain.height(walk_c[keep, 0], walk_c[keep, 1]) + 0.025]
        )
        self.sidewalks = boxes_of(
            wc,
            np.column_stack([walk_h[keep], np.full(keep.sum(), 0.125)]),
            0.0,
            np.inf,
            Label.GROUND,
        )

        park = rng.random(len(lots_a)) < cfg.park_prob
        fenced = rng.random(len(lots_a)) < cfg.fence_prob
        b_c, b_h, b_y, b_z = [], [], [], []
        for lot in lots_a[~park]:
            for c, h, y, z in _building(rng, cfg, lot):
                b_c.append(c)
                b_h.append(h)
                b_y.append(y)
                b_z.append(z)
        bc, bh, by = np.array(b_c).reshape(-1, 2), np.array(b_h).reshape(-1, 2), np.array(b_y)
        ok = self._clear(_rect_outline(bc, bh, by, 1.0), sw + 1.0)
        self.buildings = self._ground_box(bc[ok], bh[ok], by[ok], np.array(b_z)[ok], Label.BUILDING)

        f_c, f_h = [], []
        for x0, y0, x1, y1 in lots_a[fenced] + [0.5, 0.5, -0.5, -0.5]:
            mid, gate = (x0 + x1) / 2, 2.0
            f_c += [(((x0 + mid - gate) / 2), y0), (((mid + gate + x1) / 2), y0)]
            f_h += [((mid - gate - x0) / 2, 0.04), ((x1 - mid - gate) / 2, 0.04)]
            f_c += [((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)]
            f_h += [((x1 - x0) / 2, 0.04), (0.04, (y1 - y0) / 2), (0.04, (y1 - y0) / 2)]
        fc, fh = np.array(f_c, np.float64).reshape(-1, 2), np.array(f_h, np.float64).reshape(-1, 2)
        ok = self._clear(_rect_outline(fc, fh, 0 * fc[:, 0], 1.0), sw + 0.3) & (fh.max(1) > 0.5)
        fence_z = rng.uniform(1.2, 2.0, len(fc))[ok]
        self.fences = self._ground_box(fc[ok], fh[ok], 0 * fence_z, fence_z, Label.FENCE)
        self._parks = lots_a[park]

    def _build_furniture(self, rng: np.random.Generator) -> None:
        """Street lights, signs and parking slots along both sides of every road."""
        cfg = self.cfg
        lights = self._stations(rng, cfg.pole_spacing, 0.6)
        signs = self._stations(rng, cfg.sign_spacing, 0.9)
        slots = self._stations(rng, cfg.car_slot_spacing, -1.2)
        lights = lights[self._clear(lights[:, None, :2], 0.3)]
        signs = signs[self._clear(signs[:, None, :2], 0.3)]
        if len(lights) and len(signs):
            signs = signs[cKDTree(lights[:, :2]).query(signs[:, :2])[0] > 2.0]
        slot_ends = (
            slots[:, None, :2]
            + np.stack([np.cos(slots[:, 2]), np.sin(slots[:, 2])], -1)[:, None]
            * np.array([-3.5, 0.0, 3.5])[None, :, None]
        )
        ok = self._clear(slot_ends, 6.0, own=slots[:, 4]) & _inside(slot_ends, self.extent, 3.0)
        self.car_slots = slots[ok][:, [0, 1, 2, 4]]

        g_l = self.terrain.height(lights[:, 0], lights[:, 1])
        h_l = rng.uniform(7.0, 9.0, len(lights))
        base_l = np.column_stack([lights[:, :2], g_l - 0.3])
        top_l = np.column_stack([lights[:, :2], g_l + h_l])
        toward = np.column_stack([-np.sin(lights[:, 2]), np.cos(lights[:, 2])])  # to the road
        arm_end = top_l + np.column_stack([1.8 * toward, np.full(len(lights), 0.2)])
        g_s = self.terrain.height(signs[:, 0], signs[:, 1])
        base_s = np.column_stack([signs[:, :2], g_s - 0.3])
        top_s = np.column_stack([signs[:, :2], g_s + 2.9])
        self.furniture = cylinders_of(
            np.vstack([base_l, top_l, base_s]),
            np.vstack([top_l, arm_end, top_s]),
            np.concatenate(
                [np.full(len(lights), 0.09), np.full(len(lights), 0.05), np.full(len(signs), 0.04)]
            ),
            np.inf,
            Label.POLE,
        )
        lamp = boxes_of(
            arm_end - [0, 0, 0.1],
            np.tile([0.3, 0.15, 0.08], (len(lights), 1)),
            np.arctan2(toward[:, 1], toward[:, 0]),
            np.inf,
            Label.POLE,
        )
        plate = boxes_of(
            np.column_stack([signs[:, :2], g_s + 2.5]),
            np.tile([0.02, 0.35, 0.3], (len(signs), 1)),
            signs[:, 2],
            np.inf,
            Label.SIGN,
        )
        self.furniture_boxes = concat([lamp, plate])
        self.poles = np.vstack(
            [
                np.column_stack([lights[:, :2], np.full(len(lights), 0.09)]),
                np.column_stack([signs[:, :2], np.full(len(signs), 0.04)]),
            ]
        )

    def _stations(self, rng: np.random.Generator, spacing: float, offset: float) -> np.ndarray:
        """Regular stations on both sides of every road, ``offset`` m beyond the carriageway
        edge (negative: on the carriageway). Rows: x, y, heading, side (+1 left / -1 right
        of the road direction), road index; heading follows traffic on that side."""
        rows = []
        for r, (a, b) in enumerate(zip(self.road_a, self.road_b, strict=True)):
            length = float(np.linalg.norm(b - a))
            u = (b - a) / length
            n = np.array([-u[1], u[0]])
            for side in (1.0, -1.0):
                s = np.arange(rng.uniform(0, spacing), length, spacing)
                p = a + s[:, None] * u + side * n * (self.road_width[r] / 2 + offset)
                head = np.arctan2(u[1], u[0]) + (np.pi if side > 0 else 0.0)
                rows.append(
                    np.column_stack(
                        [p, np.full(len(s), head), np.full(len(s), side), np.full(len(s), r)]
                    )
                )
        st = np.vstack(rows)
        return st[_inside(st[:, None, :2], self.extent, 0.5)]

    def _build_trees(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        st = self._stations(rng, cfg.street_tree_spacing, 0.7 * cfg.sidewalk_width)
        st = st[self._clear(st[:, None, :2], 0.5)]
        if len(self.poles):
            st = st[cKDTree(self.poles[:, :2]).query(st[:, :2])[0] > 2.5]
        park_xy = []
        for x0, y0, x1, y1 in self._parks:
            n = max(1, round((x1 - x0) * (y1 - y0) / 150.0))
            park_xy.append(rng.uniform([x0 + 3, y0 + 3], [x1 - 3, y1 - 3], (n, 2)))
        pxy = np.vstack([np.zeros((0, 2)), *park_xy])
        pxy = pxy[self._clear(pxy[:, None], cfg.sidewalk_width + 2.0)]
        xy = np.vstack([st[:, :2], pxy])
        species = np.concatenate(
            [np.zeros(len(st), np.int64), (rng.random(len(pxy)) < 0.3).astype(np.int64)]
        )
        z = self.terrain.height(xy[:, 0], xy[:, 1]).astype(np.float64)
        self.trees: TreeSet = make_trees(rng, xy, z, species, URBAN_SPECIES)

    # --- per visit ----------------------------------------------------------------------

    def cars(self, epoch: Epoch) -> Boxes:
        """Parked cars of a visit: each slot is occupied with probability ``car_occupancy``
        (drawn from ``epoch.seed``), with jittered position, heading and size; a car is a
        body box plus a cabin box, a van one tall box."""
        rng = rng_for(self.seed, _CARS, epoch.seed)
        s = self.car_slots
        n = len(s)
        occ = rng.random(n) < self.cfg.car_occupancy
        along = rng.uniform(-0.6, 0.6, n)
        across = rng.uniform(-0.15, 0.15, n)
        head = s[:, 2] + rng.normal(0, 0.03, n)
        half_l = rng.uniform(2.1, 2.45, n)
        half_w = rng.uniform(0.875, 0.95, n)
        van = rng.random(n) < 0.15
        tall = rng.uniform(1.9, 2.2, n)
        u = np.column_stack([np.cos(s[:, 2]), np.sin(s[:, 2])])
        xy = s[:, :2] + along[:, None] * u + across[:, None] * np.column_stack([-u[:, 1], u[:, 0]])
        g = self.terrain.height(xy[:, 0], xy[:, 1])
        body_top = np.where(van, tall, 1.05)
        body = boxes_of(
            np.column_stack([xy, g + (0.3 + body_top) / 2]),
            np.column_stack([half_l, half_w, (body_top - 0.3) / 2]),
            head,
            np.inf,
            Label.CAR,
        )
        cab_xy = xy - 0.1 * half_l[:, None] * np.column_stack([np.cos(head), np.sin(head)])
        cabin = boxes_of(
            np.column_stack([cab_xy, g + 1.05 + 0.24]),
            np.column_stack([0.55 * half_l, 0.9 * half_w, np.full(n, 0.24)]),
            head,
            np.inf,
            Label.CAR,
        )
        keep_cab = occ & ~van
        return concat([_take(body, occ), _take(cabin, keep_cab)])

    # --- World API ----------------------------------------------------------------------

    def scene(self, epoch: Epoch) -> Scene:
        """Static town + trees (foliage, leaf-off, growth) + the visit's parked cars."""
        cfg = self.cfg
        years = float(epoch.growth_years)
        if years < 0:
            raise ValueError(f"growth_years must be >= 0, got {years}")
        cyl, ell = self.trees.primitives(
            1.0 + cfg.growth_height_per_year * years,
            1.0 + cfg.growth_crown_per_year * years,
            epoch.foliage,
            cfg.leaf_off_factor if epoch.leaf_off else 1.0,
        )
        return Scene(
            terrain=self.terrain,
            cylinders=concat([cyl, self.furniture]),
            ellipsoids=ell,
            boxes=concat(
                [
                    self.buildings,
                    self.fences,
                    self.sidewalks,
                    self.furniture_boxes,
                    self.cars(epoch),
                ]
            ),
        )

    def route(self) -> np.ndarray:
        """Closed loop along road centrelines: (M, 2) float64, first point repeated last."""
        return self._route.copy()

    def ground_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terrain height (m, float32) at arrays ``x``, ``y``."""
        return self.terrain.height(x, y)

    def free_mask(self, xy: np.ndarray, clearance: float) -> np.ndarray:
        """(N,) bool: at least ``clearance`` m from buildings, fences, poles, tree trunks and
        every parking slot (a car may stand in any slot at some visit)."""
        return self._footprints.free(xy, clearance)


def _footprint(b: Boxes) -> np.ndarray:
    return np.column_stack([b.center[:, :2], b.half[:, :2], b.yaw]).astype(np.float64)


def _take(b: Boxes, mask: np.ndarray) -> Boxes:
    return Boxes(b.center[mask], b.half[mask], b.yaw[mask], b.density[mask], b.label[mask])


def _inside(
    pts: np.ndarray, extent: tuple[float, float, float, float], margin: float
) -> np.ndarray:
    """(N,) bool: all samples ``pts`` (N, S, 2) are ``margin`` m inside ``extent``."""
    x0, y0, x1, y1 = extent
    x, y = pts[..., 0], pts[..., 1]
    inside = (x >= x0 + margin) & (x <= x1 - margin) & (y >= y0 + margin) & (y <= y1 - margin)
    # numpy stubs: all(1) of an (N, S) array is an (N,) array, not maybe a scalar
    return cast("np.ndarray", inside.all(1))


def _strips(x0: float, y0: float, x1: float, y1: float, width: float) -> list[tuple[float, ...]]:
    """Sidewalk rectangles (x0, y0, x1, y1) along the four block edges, in pieces <= 10 m."""
    out: list[tuple[float, ...]] = []
    for a, b, fixed in ((x0, x1, (y0, y0 + width)), (x0, x1, (y1 - width, y1))):
        e = np.linspace(a, b, int(np.ceil((b - a) / 10.0)) + 1)
        out += [(e[k], fixed[0], e[k + 1], fixed[1]) for k in range(len(e) - 1)]
    for a, b, fixed in (
        (y0 + width, y1 - width, (x0, x0 + width)),
        (y0 + width, y1 - width, (x1 - width, x1)),
    ):
        e = np.linspace(a, b, int(np.ceil((b - a) / 10.0)) + 1)
        out += [(fixed[0], e[k], fixed[1], e[k + 1]) for k in range(len(e) - 1)]
    return out


def _split_block(
    rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float
) -> list[tuple[float, float, float, float]]:
    """Lots of a block interior: 1-3 along the long side, two rows when the block is deep."""
    w, h = x1 - x0, y1 - y0
    n_long = int(np.clip(round(max(w, h) / rng.uniform(25.0, 45.0)), 1, 3))
    n_short = 2 if min(w, h) > 50.0 else 1

    def cuts(a: float, b: float, n: int) -> np.ndarray:
        f = rng.uniform(0.7, 1.3, n)
        return a + (b - a) * np.concatenate([[0.0], np.cumsum(f) / f.sum()])

    cx = cuts(x0, x1, n_long if w >= h else n_short)
    cy = cuts(y0, y1, n_short if w >= h else n_long)
    return [
        (cx[i], cy[j], cx[i + 1], cy[j + 1]) for i in range(len(cx) - 1) for j in range(len(cy) - 1)
    ]


def _building(
    rng: np.random.Generator, cfg: UrbanConfig, lot: np.ndarray
) -> list[tuple[tuple[float, float], tuple[float, float], float, float]]:
    """Footprint boxes (centre, half extents, yaw, height) of one building on a lot:
    a rectangle (maybe rotated) or an L of two boxes; empty when the lot is too small."""
    sb = rng.uniform(*cfg.setback)
    x0, y0, x1, y1 = lot + np.array([sb, sb, -sb, -sb])
    ax, ay = (x1 - x0) / 2, (y1 - y0) / 2
    if min(ax, ay) < 3.0:
        return []
    height = float(
        np.clip(
            cfg.building_height_median * np.exp(rng.normal(0, cfg.building_height_sigma)),
            *cfg.building_height,
        )
    )
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    kind = rng.random()
    if kind < cfg.l_shape_prob:
        fy = rng.uniform(0.4, 0.6)
        fx = rng.uniform(0.35, 0.55)
        sy_, sx_ = rng.choice([-1.0, 1.0], 2)
        leg_a = ((cx, cy + sy_ * ay * (1 - fy)), (ax, ay * fy), 0.0, height)
        leg_b = ((cx + sx_ * ax * (1 - fx), cy), (ax * fx, ay), 0.0, height * rng.uniform(0.6, 1.0))
        return [leg_a, leg_b]
    hx, hy = ax * rng.uniform(0.7, 1.0), ay * rng.uniform(0.7, 1.0)
    yaw = 0.0
    if kind < cfg.l_shape_prob + cfg.rotated_prob:
        yaw = float(rng.uniform(0.15, 0.5) * rng.choice([-1.0, 1.0]))
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        f = min(ax / (hx * c + hy * s), ay / (hx * s + hy * c), 1.0)
        hx, hy = hx * f, hy * f
    return [((cx, cy), (hx, hy), yaw, height)]
