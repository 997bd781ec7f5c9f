"""Procedural forest: rolling terrain, several tree species, understory, logs, clearings and
a small network of curvy tracks whose loop is the ground route.

World frame: metres, origin at the south-west corner, extent ``(0, 0, size_x, size_y)``,
z up (terrain heights are zero-mean noise of a few metres). The layout is drawn once in
``__init__``; :meth:`ForestWorld.scene` applies the per-visit changes of an :class:`Epoch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from hotformerloc.synth.scene import (
    Cylinders,
    Ellipsoids,
    HeightField,
    Label,
    Scene,
    cylinders_of,
    ellipsoids_of,
)
from hotformerloc.synth.worlds.base import Epoch, World
from hotformerloc.synth.worlds.terrain import (
    FootprintIndex,
    chaikin,
    concat,
    distance_to_segments,
    fractal_noise,
    polyline_length,
    rng_for,
    segments,
)

# Independent random streams of the layout (see ``rng_for``).
_TERRAIN, _ROUTE, _SIDE_TRACKS, _CLEARINGS, _TREES, _SHRUBS, _LOGS, _SAPLINGS = range(1, 9)

MAX_SAPLING_YEARS = 25.0
"""Saplings are pre-drawn for this many years of growth; older epochs add no more."""


@dataclass(frozen=True)
class Species:
    """A tree species. Ranges are ``(low, high)``, drawn uniformly per tree.

    ``shape``: ``"conifer"`` (stacked shrinking ellipsoids forming a cone, short whorl
    branches), ``"broadleaf"`` (one wide round crown with two side lobes, thick branches
    up into it) or ``"clumpy"`` (eucalyptus-like: tall bare trunk, several small foliage
    clumps each fed by a branch). ``crown_base``: height of the crown bottom as a fraction
    of the tree height. ``crown_density``: foliage extinction coefficient (1/m).
    """

    name: str
    shape: str
    height: tuple[float, float]
    dbh: tuple[float, float]
    crown_base: tuple[float, float]
    crown_radius: tuple[float, float]
    crown_density: float
    deciduous: bool


CONIFER = Species(
    "conifer", "conifer", (14.0, 26.0), (0.25, 0.5), (0.2, 0.35), (2.0, 3.5), 1.2, False
)
BROADLEAF = Species(
    "broadleaf", "broadleaf", (10.0, 18.0), (0.3, 0.6), (0.35, 0.5), (3.0, 5.5), 0.8, True
)
EUCALYPT = Species(
    "eucalypt", "clumpy", (20.0, 32.0), (0.3, 0.7), (0.55, 0.7), (3.0, 5.0), 0.5, False
)
FOREST_SPECIES: tuple[Species, ...] = (CONIFER, BROADLEAF, EUCALYPT)


@dataclass
class TreeSet:
    """Trees in a growth-independent form, expanded into primitives by :meth:`primitives`.

    Per tree (T): ``base`` (T, 3) trunk foot on the terrain, ``height`` / ``crown_radius`` /
    ``trunk_radius`` in metres, ``trunk_top`` (trunk end as a fraction of the height),
    ``species`` (index into the species table) and ``deciduous``.
    Branches (K) and crown ellipsoids (M) are stored in tree units ``(u, v, h)``: u and v
    in crown radii, h in tree heights, so that growth rescales them: ``branch_a``/``branch_b``
    (K, 3) end points, ``branch_r`` radius as a fraction of the trunk radius; ``crown_c``
    (M, 3) centres, ``crown_r`` (M, 3) semi-axes, ``crown_density`` (M,) in 1/m.
    """

    base: np.ndarray
    height: np.ndarray
    crown_radius: np.ndarray
    trunk_radius: np.ndarray
    trunk_top: np.ndarray
    species: np.ndarray
    deciduous: np.ndarray
    branch_tree: np.ndarray
    branch_a: np.ndarray
    branch_b: np.ndarray
    branch_r: np.ndarray
    crown_tree: np.ndarray
    crown_c: np.ndarray
    crown_r: np.ndarray
    crown_density: np.ndarray

    def __len__(self) -> int:
        return len(self.height)

    @property
    def crown_deciduous(self) -> np.ndarray:
        """(M,) bool: the crown ellipsoid belongs to a deciduous tree."""
        return self.deciduous[self.crown_tree]

    def head(self, n: int) -> TreeSet:
        """The first ``n`` trees (and their branches and crowns)."""
        b = self.branch_tree < n
        c = self.crown_tree < n
        per_tree = ("base", "height", "crown_radius", "trunk_radius", "trunk_top", "species")
        return replace(
            self,
            **{k: getattr(self, k)[:n] for k in (*per_tree, "deciduous")},
            branch_tree=self.branch_tree[b],
            branch_a=self.branch_a[b],
            branch_b=self.branch_b[b],
            branch_r=self.branch_r[b],
            crown_tree=self.crown_tree[c],
            crown_c=self.crown_c[c],
            crown_r=self.crown_r[c],
            crown_density=self.crown_density[c],
        )

    def primitives(
        self,
        height_scale: float | np.ndarray = 1.0,
        crown_scale: float | np.ndarray = 1.0,
        foliage: float = 1.0,
        deciduous_factor: float = 1.0,
    ) -> tuple[Cylinders, Ellipsoids]:
        """Trunks then branches (solid cylinders) and crowns (porous ellipsoids).

        ``height_scale`` multiplies heights and trunk radii, ``crown_scale`` crown radii
        (scalars or per tree (T,)); crown densities are multiplied by ``foliage`` and, for
        deciduous trees, by ``deciduous_factor``.
        """
        n = len(self)
        h = self.height * np.broadcast_to(height_scale, (n,))
        r = self.crown_radius * np.broadcast_to(crown_scale, (n,))
        tr = self.trunk_radius * np.broadcast_to(height_scale, (n,))
        top = self.base + np.stack([0 * h, 0 * h, self.trunk_top * h], axis=1)
        scale = np.stack([r, r, h], axis=1)
        bt, ct = self.branch_tree, self.crown_tree
        cyl = cylinders_of(
            np.vstack([self.base - [0.0, 0.0, 0.5], self.base[bt] + self.branch_a * scale[bt]]),
            np.vstack([top, self.base[bt] + self.branch_b * scale[bt]]),
            np.concatenate([tr, self.branch_r * tr[bt]]),
            np.inf,
            np.concatenate(
                [np.full(n, Label.TRUNK, np.int16), np.full(len(bt), Label.BRANCH, np.int16)]
            ),
        )
        dens = self.crown_density * foliage * np.where(self.deciduous[ct], deciduous_factor, 1.0)
        ell = ellipsoids_of(
            self.base[ct] + self.crown_c * scale[ct], self.crown_r * scale[ct], dens, Label.FOLIAGE
        )
        return cyl, ell


def _polar(radius: np.ndarray, yaw: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.stack([radius * np.cos(yaw), radius * np.sin(yaw), h], axis=-1)


def _shape_parts(
    shape: str, cb: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
    """Branches and crowns of ``n`` trees of one shape, in tree units (see :class:`TreeSet`).

    ``cb`` (n,) is the crown base fraction. Returns ``(branch_a, branch_b, trunk_top,
    branch_r, crown_c, crown_r, crown_rel_density)`` with per-tree leading axis:
    branches (n, K, 3), crowns (n, M, 3), ``crown_rel_density`` (n, M).
    """
    n = len(cb)
    c = cb[:, None]
    span = 1.0 - c
    if shape == "conifer":
        k = 6
        t = (np.arange(k) + 0.5) / k
        hc = c + span * t * 0.95
        rad = (1.0 - 0.8 * t) * rng.uniform(0.9, 1.1, (n, k))
        crown_c = np.stack([rng.normal(0, 0.05, (n, k)), rng.normal(0, 0.05, (n, k)), hc], -1)
        crown_r = np.stack([rad, rad, np.broadcast_to(0.8 * span / k, (n, k))], axis=-1)
        hb = c + span * rng.uniform(0.0, 0.4, (n, 4))
        yaw = rng.uniform(0, 2 * np.pi, (n, 4))
        reach = 0.8 * (1.0 - 0.8 * (hb - c) / span)
        a = _polar(0 * hb, yaw, hb)
        b = _polar(reach, yaw, hb + 0.04)
        top = np.full(n, 0.95)
        branch_r = 0.25
    elif shape == "broadleaf":
        phi = rng.uniform(0, 2 * np.pi, (n, 1))
        lobe_yaw = np.hstack([phi, phi + np.pi + rng.uniform(-0.5, 0.5, (n, 1))])
        main = np.stack([0 * c, 0 * c, c + 0.5 * span], axis=-1)
        lobes = _polar(np.full((n, 2), 0.45), lobe_yaw, c + span * rng.uniform(0.35, 0.55, (n, 2)))
        crown_c = np.concatenate([main, lobes], axis=1)
        main_r = np.stack(
            [rng.uniform(0.85, 1.0, (n, 1)), rng.uniform(0.85, 1.0, (n, 1)), 0.5 * span], axis=-1
        )
        lobe_r = np.stack(
            [np.full((n, 2), 0.6), np.full((n, 2), 0.6), np.broadcast_to(0.3 * span, (n, 2))], -1
        )
        crown_r = np.concatenate([main_r, lobe_r], axis=1)
        yaw = rng.uniform(0, 2 * np.pi, (n, 4))
        a = _polar(0 * yaw, yaw, np.broadcast_to(c + 0.05 * span, yaw.shape))
        b = _polar(np.full((n, 4), 0.6), yaw, np.broadcast_to(c + 0.55 * span, yaw.shape))
        top = (c + 0.35 * span)[:, 0]
        branch_r = 0.35
    elif shape == "clumpy":
        k = 5
        yaw = 2 * np.pi * np.arange(k) / k + rng.uniform(-0.5, 0.5, (n, k))
        crown_c = _polar(
            rng.uniform(0.35, 0.75, (n, k)), yaw, c + span * rng.uniform(0.25, 0.9, (n, k))
        )
        rxy = rng.uniform(0.3, 0.45, (n, k))
        crown_r = np.stack([rxy, rxy, span * rng.uniform(0.12, 0.2, (n, k))], axis=-1)
        a = _polar(0 * rxy, yaw, c + span * rng.uniform(0.0, 0.25, (n, k)))
        b = crown_c * [0.9, 0.9, 1.0]
        top = (c + 0.45 * span)[:, 0]
        branch_r = 0.3
    else:
        raise ValueError(f"unknown crown shape {shape!r}")
    rel = rng.uniform(0.8, 1.2, (n, 1)) * np.ones(crown_c.shape[:2])
    return a, b, top, branch_r, crown_c, crown_r, rel


def make_trees(
    rng: np.random.Generator,
    xy: np.ndarray,
    ground_z: np.ndarray,
    species: np.ndarray,
    table: Sequence[Species],
    height: np.ndarray | None = None,
    crown_radius: np.ndarray | None = None,
    trunk_radius: np.ndarray | None = None,
) -> TreeSet:
    """Draw trees at ``xy`` (T, 2) on the terrain heights ``ground_z`` (T,).

    ``species`` (T,) indexes ``table``. Sizes come from the species ranges unless given
    (``height``, ``crown_radius``, ``trunk_radius`` in metres, e.g. for saplings).
    """
    n = len(xy)
    species = np.asarray(species, np.int64)
    sp = list(table)

    def draw(attr: str, q: np.ndarray) -> np.ndarray:
        lo, hi = np.array([getattr(s, attr) for s in sp], np.float64)[species].T
        return lo + (hi - lo) * q

    u = rng.random((4, n))
    h = draw("height", u[0]) if height is None else np.asarray(height, np.float64)
    r = draw("crown_radius", u[1]) if crown_radius is None else np.asarray(crown_radius, float)
    size_q = 0.7 * u[0] + 0.3 * u[2]  # thicker trunks on taller trees
    tr = draw("dbh", size_q) / 2 if trunk_radius is None else np.asarray(trunk_radius, float)
    cb = draw("crown_base", u[3])
    base = np.column_stack([xy, ground_z]).astype(np.float64)
    top = np.zeros(n)
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("bt", "ba", "bb", "br", "ct", "cc", "cr", "cd")
    }
    for s_idx, s in enumerate(sp):
        idx = np.flatnonzero(species == s_idx)
        if len(idx) == 0:
            continue
        a, b, tp, br, cc, cr, rel = _shape_parts(s.shape, cb[idx], rng)
        top[idx] = tp
        parts["bt"].append(np.repeat(idx, a.shape[1]))
        parts["ba"].append(a.reshape(-1, 3))
        parts["bb"].append(b.reshape(-1, 3))
        parts["br"].append(np.full(a.shape[0] * a.shape[1], br))
        parts["ct"].append(np.repeat(idx, cc.shape[1]))
        parts["cc"].append(cc.reshape(-1, 3))
        parts["cr"].append(cr.reshape(-1, 3))
        parts["cd"].append((s.crown_density * rel).ravel())
    cat = {
        k: np.concatenate(v) if v else np.zeros((0, 3) if k in ("ba", "bb", "cc", "cr") else 0)
        for k, v in parts.items()
    }
    return TreeSet(
        base=base,
        height=h,
        crown_radius=r,
        trunk_radius=tr,
        trunk_top=top,
        species=species,
        deciduous=np.array([s.deciduous for s in sp], bool)[species],
        branch_tree=cat["bt"].astype(np.int64),
        branch_a=cat["ba"],
        branch_b=cat["bb"],
        branch_r=cat["br"],
        crown_tree=cat["ct"].astype(np.int64),
        crown_c=cat["cc"],
        crown_r=cat["cr"],
        crown_density=cat["cd"],
    )


@dataclass(frozen=True)
class ForestConfig:
    """Knobs of :class:`ForestWorld` (lengths in metres, densities per hectare).

    * ``size_x``, ``size_y``: world extent.
    * ``terrain_resolution``: height-field spacing; ``terrain_relief``: peak-to-peak
      terrain height; ``terrain_wavelength``: size of the largest hills.
    * ``tree_area``: forest area per tree (m², outside clearings and tracks);
      ``clustering`` in [0, 1): 0 = even spacing (jittered grid), larger = clumpier.
    * ``species_mix``: fractions of conifer, broadleaf (deciduous), eucalypt.
    * ``shrub_density``, ``log_density``: understory shrubs and fallen logs per hectare.
    * ``n_clearings``, ``clearing_radius``: treeless irregular clearings (radius range).
    * ``track_width``: width of the tracks (nothing grows or lies on them);
      ``n_side_tracks``: curvy tracks from the loop out to the world edge.
    * ``route_length``: target length of the track loop that is the route (reached when
      the world is large enough); ``route_margin``: minimum distance of the route to the
      world edge; ``route_spacing``: waypoint spacing (<= 5).
    * ``leaf_off_factor``: crown density multiplier of deciduous trees when leaf-off.
    * ``growth_height_per_year``, ``growth_crown_per_year``: relative growth of tree
      heights (and trunk radii) and crown radii per year of ``Epoch.growth_years``.
    * ``sapling_rate``: new saplings per hectare per year of growth.
    """

    size_x: float = 300.0
    size_y: float = 300.0
    terrain_resolution: float = 1.0
    terrain_relief: float = 4.0
    terrain_wavelength: float = 150.0
    tree_area: float = 50.0
    clustering: float = 0.5
    species_mix: tuple[float, float, float] = (0.4, 0.35, 0.25)
    shrub_density: float = 300.0
    log_density: float = 15.0
    n_clearings: int = 3
    clearing_radius: tuple[float, float] = (12.0, 25.0)
    track_width: float = 3.0
    n_side_tracks: int = 3
    route_length: float = 900.0
    route_margin: float = 40.0
    route_spacing: float = 2.0
    leaf_off_factor: float = 0.15
    growth_height_per_year: float = 0.03
    growth_crown_per_year: float = 0.04
    sapling_rate: float = 3.0

    def __post_init__(self) -> None:
        if min(self.size_x, self.size_y) <= 2 * self.route_margin + 10:
            raise ValueError("size_x and size_y must exceed 2 * route_margin + 10")
        if not 0 < self.route_spacing <= 5:
            raise ValueError("route_spacing must be in (0, 5]")
        if not 0 <= self.clustering < 1:
            raise ValueError("clustering must be in [0, 1)")
        if self.tree_area <= 0 or sum(self.species_mix) <= 0 or min(self.species_mix) < 0:
            raise ValueError("tree_area must be > 0 and species_mix non-negative, not all 0")


def track_loop(
    rng: np.random.Generator,
    box: tuple[float, float, float, float],
    length: float,
    spacing: float,
) -> np.ndarray:
    """Curvy closed loop inside ``box`` (xmin, ymin, xmax, ymax) of about ``length`` metres:
    ``(M, 2)`` points evenly spaced by <= ``spacing`` along the curve, first point repeated.

    A rounded rectangle filling the box is pushed inwards along its normals by 2-3 smooth
    bays (on distinct sides; their depth is bisected to reach the target length) plus a
    small wiggle. Inward-only displacement keeps the loop inside the box; a target shorter
    than the rounded rectangle shrinks the loop about the box centre instead.
    """
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    rho = 0.2 * min(w, h)
    arc = np.linspace(0, np.pi / 2, 16)
    corners = [(x1 - rho, y0 + rho, -np.pi / 2), (x1 - rho, y1 - rho, 0.0)]
    corners += [(x0 + rho, y1 - rho, np.pi / 2), (x0 + rho, y0 + rho, np.pi)]
    ring = np.vstack(
        [
            [cx, cy] + rho * np.column_stack([np.cos(a0 + arc), np.sin(a0 + arc)])
            for cx, cy, a0 in corners
        ]
    )
    ring = np.vstack([[x0 + rho, y0], ring, [x0 + rho, y0]])
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ring, axis=0), axis=1))])
    perim = cum[-1]
    s = np.arange(0.0, perim, 0.5)
    base = np.column_stack([np.interp(s, cum, ring[:, 0]), np.interp(s, cum, ring[:, 1])])
    tangent = np.roll(base, -1, axis=0) - np.roll(base, 1, axis=0)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)

    sides = np.array([w, h, w, h]) - 2 * rho
    side_start = np.concatenate([[0.0], np.cumsum(sides + np.pi * rho / 2)])[:4]
    n_bays = int(rng.integers(2, 4))
    which = rng.permutation(4)[:n_bays]
    centre_s = side_start[which] + sides[which] * rng.uniform(0.35, 0.65, n_bays)
    sigma = sides[which] * rng.uniform(0.12, 0.2, n_bays)
    depth = rng.uniform(0.5, 1.0, n_bays) * 0.4 * min(w, h)
    gap = np.abs(s[:, None] - centre_s[None])
    gap = np.minimum(gap, perim - gap)
    bays = (depth * np.exp(-0.5 * (gap / sigma) ** 2)).sum(axis=1)
    k = np.arange(5, 10)[:, None]
    wig = (
        rng.uniform(0.5, 1, (5, 1))
        * np.sin(2 * np.pi * (k * s / perim + rng.uniform(0, 1, (5, 1))))
    ).sum(0)
    wig = 0.015 * min(w, h) * (wig - wig.min()) / max(float(np.ptp(wig)), 1e-9)

    def curve(alpha: float) -> np.ndarray:
        p = base + (alpha * bays + wig)[:, None] * normal
        return np.vstack([p, p[:1]])

    lo, hi = 0.0, 1.0
    if polyline_length(curve(hi)) > length:
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if polyline_length(curve(mid)) < length else (lo, mid)
    loop = curve(hi)
    total = polyline_length(loop)
    if total > length * 1.001:
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        loop = centre + (loop - centre) * (length / total)
        total = length
    n = max(int(np.ceil(total / spacing)), 8)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(loop, axis=0), axis=1))])
    t = np.linspace(0.0, cum[-1], n + 1)
    out = np.column_stack([np.interp(t, cum, loop[:, 0]), np.interp(t, cum, loop[:, 1])])
    out[-1] = out[0]
    return out


class ForestWorld(World):
    """Procedural forest (see module doc and :class:`ForestConfig`).

    Public layout (reference state, epoch-independent): ``terrain`` (:class:`HeightField`),
    ``tracks`` (list of (K, 2) centrelines; ``tracks[0]`` is the route loop), ``clearings``
    ((C, 7): centre x, y, radius, two harmonic amplitudes and phases), ``trees`` and
    ``saplings`` (:class:`TreeSet`; saplings appear in pool order with growth),
    ``shrubs`` (:class:`Ellipsoids`, reference density) and ``logs`` (:class:`Cylinders`).

    Scene order: cylinders = tree trunks, branches, sapling trunks, branches, logs;
    ellipsoids = tree crowns, sapling crowns, shrubs.
    """

    kind = "forest"

    def __init__(self, cfg: ForestConfig, seed: int, name: str = "forest") -> None:
        self.cfg = cfg
        self.seed = seed
        self.name = name
        sx, sy = cfg.size_x, cfg.size_y
        self.extent = (0.0, 0.0, float(sx), float(sy))
        res = cfg.terrain_resolution
        shape = (int(np.ceil(sy / res)) + 1, int(np.ceil(sx / res)) + 1)
        noise = fractal_noise(shape, res, cfg.terrain_wavelength, rng_for(seed, _TERRAIN))
        self.terrain = HeightField(0.0, 0.0, res, noise * (cfg.terrain_relief / 2))
        self._area_ha = sx * sy / 1e4

        m = cfg.route_margin
        self._route = track_loop(
            rng_for(seed, _ROUTE), (m, m, sx - m, sy - m), cfg.route_length, cfg.route_spacing
        )
        self.tracks = [self._route, *self._side_tracks(rng_for(seed, _SIDE_TRACKS))]
        self._track_a, self._track_b = segments(self.tracks)
        self.clearings = self._draw_clearings(rng_for(seed, _CLEARINGS))
        self.trees = self._draw_trees(rng_for(seed, _TREES))
        self.shrubs = self._draw_shrubs(rng_for(seed, _SHRUBS))
        self.logs, log_boxes = self._draw_logs(rng_for(seed, _LOGS))
        self.saplings = self._draw_saplings(rng_for(seed, _SAPLINGS))
        trunks = np.column_stack([self.trees.base[:, :2], self.trees.trunk_radius])
        self._footprints = FootprintIndex(discs=trunks, boxes=log_boxes)

    # --- layout -------------------------------------------------------------------------

    def _side_tracks(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Curvy tracks from evenly spread loop points out across the world edge."""
        n = self.cfg.n_side_tracks
        loop = self._route[:-1]
        centre = loop.mean(axis=0)
        start = (rng.uniform(0, 1) + np.arange(n) / max(n, 1)) % 1.0
        out = []
        reach = float(np.hypot(self.cfg.size_x, self.cfg.size_y))
        steps = int(reach / 4.0) + 2
        for s in start:
            p0 = loop[int(s * len(loop))]
            d = p0 - centre
            heading = np.arctan2(d[1], d[0]) + np.cumsum(rng.normal(0, 0.12, steps))
            pts = p0 + 4.0 * np.cumsum(np.column_stack([np.cos(heading), np.sin(heading)]), 0)
            inside = (pts >= -5).all(1) & (pts <= [self.cfg.size_x + 5, self.cfg.size_y + 5]).all(1)
            last = int(np.argmin(inside)) if not inside.all() else len(pts) - 1
            out.append(chaikin(np.vstack([p0, pts[: last + 1]]), 2, closed=False))
        return out

    def _draw_clearings(self, rng: np.random.Generator) -> np.ndarray:
        n = self.cfg.n_clearings
        c = rng.uniform(0.1, 0.9, (n, 2)) * [self.cfg.size_x, self.cfg.size_y]
        r = rng.uniform(*self.cfg.clearing_radius, n)
        amp = rng.uniform(0.0, 0.2, (n, 2))
        phase = rng.uniform(0, 2 * np.pi, (n, 2))
        return np.column_stack([c, r, amp, phase])

    def track_distance(self, xy: np.ndarray) -> np.ndarray:
        """(N,) distance (m) from points ``xy`` (N, 2) to the nearest track centreline."""
        return distance_to_segments(xy, self._track_a, self._track_b)

    def in_clearing(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool: the point lies inside a clearing."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if len(self.clearings) == 0:
            return np.zeros(len(xy), bool)
        c = self.clearings
        d = xy[:, None, :] - c[None, :, :2]
        th = np.arctan2(d[..., 1], d[..., 0])
        edge = c[:, 2] * (
            1 + c[:, 3] * np.cos(2 * th + c[:, 5]) + c[:, 4] * np.cos(3 * th + c[:, 6])
        )
        return (np.hypot(d[..., 0], d[..., 1]) < edge).any(axis=1)

    def _species(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mix = np.asarray(self.cfg.species_mix, np.float64)
        return rng.choice(len(FOREST_SPECIES), size=n, p=mix / mix.sum())

    def _tree_clear(self, xy: np.ndarray) -> np.ndarray:
        """Trunks stay 1.5 m beyond the track edge (route clearance with a margin)."""
        return self.track_distance(xy) >= self.cfg.track_width / 2 + 1.5

    def _draw_trees(self, rng: np.random.Generator) -> TreeSet:
        cfg = self.cfg
        boost = 1.0 + cfg.clustering
        step = np.sqrt(cfg.tree_area / boost)
        gx = np.arange(step / 2, cfg.size_x, step)
        gy = np.arange(step / 2, cfg.size_y, step)
        xy = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
        xy = xy + rng.uniform(-0.35, 0.35, xy.shape) * step
        xy = xy[((xy >= 0) & (xy <= [cfg.size_x, cfg.size_y])).all(1)]
        res = cfg.terrain_resolution
        field = fractal_noise(self.terrain.heights.shape, res, 60.0, rng, octaves=2)
        ij = np.round(xy[:, ::-1] / res).astype(np.int64)
        keep_p = (1.0 + cfg.clustering * field[ij[:, 0], ij[:, 1]]) / boost
        keep = rng.random(len(xy)) < keep_p
        xy = xy[keep]
        xy = xy[~self.in_clearing(xy)]
        xy = xy[self._tree_clear(xy)]
        z = self.terrain.height(xy[:, 0], xy[:, 1]).astype(np.float64)
        return make_trees(rng, xy, z, self._species(rng, len(xy)), FOREST_SPECIES)

    def _draw_shrubs(self, rng: np.random.Generator) -> Ellipsoids:
        cfg = self.cfg
        n = round(cfg.shrub_density * self._area_ha)
        xy = rng.uniform(0, 1, (n, 2)) * [cfg.size_x, cfg.size_y]
        rxy = rng.uniform(0.5, 1.5, (n, 2))
        rz = rng.uniform(0.4, 1.1, n)
        dens = rng.uniform(0.6, 1.8, n)
        ok = self.track_distance(xy) >= cfg.track_width / 2 + rxy.max(1) + 0.3
        z = self.terrain.height(xy[ok, 0], xy[ok, 1]) + 0.8 * rz[ok]
        centre = np.column_stack([xy[ok], z])
        radii = np.column_stack([rxy[ok], rz[ok]])
        return ellipsoids_of(centre, radii, dens[ok], Label.UNDERSTORY)

    def _draw_logs(self, rng: np.random.Generator) -> tuple[Cylinders, np.ndarray]:
        """Fallen logs lying on the terrain, and their footprints (M, 5) as boxes."""
        cfg = self.cfg
        n = round(cfg.log_density * self._area_ha)
        c = rng.uniform(0, 1, (n, 2)) * [cfg.size_x, cfg.size_y]
        yaw = rng.uniform(0, np.pi, n)
        half = rng.uniform(1.5, 5.0, n)
        rad = rng.uniform(0.12, 0.35, n)
        axis = np.column_stack([np.cos(yaw), np.sin(yaw)]) * half[:, None]
        t = np.linspace(-1, 1, 9)
        samples = c[:, None, :] + t[None, :, None] * axis[:, None, :]
        dist = self.track_distance(samples.reshape(-1, 2)).reshape(n, -1).min(1)
        ok = dist >= cfg.track_width / 2 + rad + 1.2
        c, axis, rad, yaw, half = c[ok], axis[ok], rad[ok], yaw[ok], half[ok]
        ends = [c - axis, c + axis]
        p0, p1 = (
            np.column_stack([e, self.terrain.height(e[:, 0], e[:, 1]) + 0.8 * rad]) for e in ends
        )
        boxes = np.column_stack([c, half + rad, rad, yaw])
        return cylinders_of(p0, p1, rad, np.inf, Label.LOG), boxes

    def _draw_saplings(self, rng: np.random.Generator) -> TreeSet:
        cfg = self.cfg
        n = int(np.ceil(cfg.sapling_rate * self._area_ha * MAX_SAPLING_YEARS))
        xy = rng.uniform(0, 1, (n, 2)) * [cfg.size_x, cfg.size_y]
        xy = xy[self._tree_clear(xy)]
        m = len(xy)
        h = rng.uniform(1.5, 4.0, m)
        z = self.terrain.height(xy[:, 0], xy[:, 1]).astype(np.float64)
        return make_trees(
            rng,
            xy,
            z,
            self._species(rng, m),
            FOREST_SPECIES,
            height=h,
            crown_radius=h * rng.uniform(0.25, 0.4, m),
            trunk_radius=rng.uniform(0.02, 0.05, m),
        )

    # --- World API ----------------------------------------------------------------------

    def scene(self, epoch: Epoch) -> Scene:
        """Reference layout with the epoch's foliage, leaf-off state and growth applied."""
        cfg = self.cfg
        years = float(epoch.growth_years)
        if years < 0:
            raise ValueError(f"growth_years must be >= 0, got {years}")
        leaf = cfg.leaf_off_factor if epoch.leaf_off else 1.0
        hs = 1.0 + cfg.growth_height_per_year * years
        rs = 1.0 + cfg.growth_crown_per_year * years
        cyl, ell = self.trees.primitives(hs, rs, epoch.foliage, leaf)
        rate = cfg.sapling_rate * self._area_ha
        n_sap = min(int(np.floor(rate * min(years, MAX_SAPLING_YEARS) + 1e-9)), len(self.saplings))
        sap = self.saplings.head(n_sap)
        age = years - (np.arange(n_sap) + 1) / max(rate, 1e-12)
        s_cyl, s_ell = sap.primitives(
            1.0 + cfg.growth_height_per_year * age,
            1.0 + cfg.growth_crown_per_year * age,
            epoch.foliage,
            leaf,
        )
        shrubs = replace(
            self.shrubs,
            density=(self.shrubs.density * np.float64(epoch.foliage)).astype(np.float32),
        )
        return Scene(
            terrain=self.terrain,
            cylinders=concat([cyl, s_cyl, self.logs]),
            ellipsoids=concat([ell, s_ell, shrubs]),
        )

    def route(self) -> np.ndarray:
        """Closed loop along ``tracks[0]``: (M, 2) float64, first point repeated last."""
        return self._route.copy()

    def ground_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terrain height (m, float32) at arrays ``x``, ``y``."""
        return self.terrain.height(x, y)

    def free_mask(self, xy: np.ndarray, clearance: float) -> np.ndarray:
        """(N,) bool: at least ``clearance`` m from every trunk (reference radius) and log."""
        return self._footprints.free(xy, clearance)
