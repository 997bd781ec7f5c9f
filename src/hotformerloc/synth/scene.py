"""Scene description shared by worlds, the ray caster and the sensors.

A :class:`Scene` is a static snapshot of a world at one *epoch* (one visit): a terrain
height field plus struct-of-arrays primitive sets (finite cylinders, axis-aligned
ellipsoids, boxes rotated about z) and, for worlds built from real data, an occupancy
voxel set. All coordinates are metres in the world frame, z up, float32 (vectors (N, 3)).

Every primitive carries:

* ``density`` (float32, (N,)): ``inf`` for a solid surface, otherwise the extinction
  coefficient in 1/m of a porous volume (foliage): a ray crossing a chord of length L
  inside it is stopped with probability ``1 - exp(-density * L)`` (Beer-Lambert), at an
  exponentially distributed depth.
* ``label`` (int16, (N,)): a semantic class from :class:`Label`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

SOLID = np.float32(np.inf)


class Label(IntEnum):
    """Semantic class of a primitive (and of the points that hit it)."""

    GROUND = 0
    TRUNK = 1
    BRANCH = 2
    FOLIAGE = 3
    UNDERSTORY = 4
    LOG = 5
    BUILDING = 6
    POLE = 7
    SIGN = 8
    CAR = 9
    FENCE = 10
    WALL = 11
    OCCUPIED = 12  # voxel of a real-geometry world


@dataclass
class HeightField:
    """Terrain z = h(x, y) sampled on a regular grid, bilinear in between.

    ``heights[i, j]`` is the height at ``(x0 + j * resolution, y0 + i * resolution)``;
    outside the grid the edge value is used (clamped).
    """

    x0: float
    y0: float
    resolution: float
    heights: np.ndarray  # (H, W) float32

    def __post_init__(self) -> None:
        self.heights = np.ascontiguousarray(self.heights, dtype=np.float32)
        if self.heights.ndim != 2 or min(self.heights.shape) < 2:
            raise ValueError(f"heights must be (H>=2, W>=2), got {self.heights.shape}")
        if not self.resolution > 0:
            raise ValueError(f"resolution must be > 0, got {self.resolution}")

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) covered by samples."""
        h, w = self.heights.shape
        return (
            self.x0,
            self.y0,
            self.x0 + (w - 1) * self.resolution,
            self.y0 + (h - 1) * self.resolution,
        )

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear height at arrays ``x``, ``y`` (any equal shapes), float32."""
        h, w = self.heights.shape
        fx = np.clip((np.asarray(x, np.float32) - self.x0) / self.resolution, 0, w - 1.0001)
        fy = np.clip((np.asarray(y, np.float32) - self.y0) / self.resolution, 0, h - 1.0001)
        j = fx.astype(np.int64)
        i = fy.astype(np.int64)
        ax = (fx - j).astype(np.float32)
        ay = (fy - i).astype(np.float32)
        hh = self.heights
        top = hh[i, j] * (1 - ax) + hh[i, j + 1] * ax
        bot = hh[i + 1, j] * (1 - ax) + hh[i + 1, j + 1] * ax
        return (top * (1 - ay) + bot * ay).astype(np.float32)


@dataclass
class Cylinders:
    """Finite open cylinders with end caps, axis from ``p0`` to ``p1`` (both (N, 3))."""

    p0: np.ndarray
    p1: np.ndarray
    radius: np.ndarray  # (N,)
    density: np.ndarray  # (N,)
    label: np.ndarray  # (N,) int16

    def __len__(self) -> int:
        return len(self.radius)


@dataclass
class Ellipsoids:
    """Axis-aligned ellipsoids: ``center`` (N, 3), semi-axes ``radii`` (N, 3) > 0."""

    center: np.ndarray
    radii: np.ndarray
    density: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.density)


@dataclass
class Boxes:
    """Boxes with ``center`` (N, 3), half extents ``half`` (N, 3), rotated by ``yaw`` about z."""

    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray  # (N,) radians
    density: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.density)


@dataclass
class Voxels:
    """Occupied cubic voxels (solid) of edge ``size``: integer cell indices ``ijk`` (N, 3).

    Cell (i, j, k) spans ``origin + [i, i+1) * size`` etc. Used by real-geometry worlds.
    """

    origin: np.ndarray  # (3,) float64
    size: float
    ijk: np.ndarray  # (N, 3) int32, unique

    def __len__(self) -> int:
        return len(self.ijk)


def _col(v: object, n: int, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype), (n,)))


def cylinders_of(
    p0: np.ndarray, p1: np.ndarray, radius: object, density: object, label: Label | np.ndarray
) -> Cylinders:
    """:class:`Cylinders` from arrays ``(N, 3)``; scalars broadcast; cast to float32/int16."""
    n = len(p0)
    return Cylinders(
        np.asarray(p0, np.float32).reshape(n, 3),
        np.asarray(p1, np.float32).reshape(n, 3),
        _col(radius, n, np.float32),
        _col(density, n, np.float32),
        _col(label, n, np.int16),
    )


def ellipsoids_of(
    center: np.ndarray, radii: np.ndarray, density: object, label: Label | np.ndarray
) -> Ellipsoids:
    """:class:`Ellipsoids` from arrays ``(N, 3)``; scalars broadcast; cast to float32/int16."""
    n = len(center)
    return Ellipsoids(
        np.asarray(center, np.float32).reshape(n, 3),
        np.asarray(radii, np.float32).reshape(n, 3),
        _col(density, n, np.float32),
        _col(label, n, np.int16),
    )


def boxes_of(
    center: np.ndarray, half: np.ndarray, yaw: object, density: object, label: Label | np.ndarray
) -> Boxes:
    """:class:`Boxes` from arrays ``(N, 3)``; scalars broadcast; cast to float32/int16."""
    n = len(center)
    return Boxes(
        np.asarray(center, np.float32).reshape(n, 3),
        np.asarray(half, np.float32).reshape(n, 3),
        _col(yaw, n, np.float32),
        _col(density, n, np.float32),
        _col(label, n, np.int16),
    )


def empty_cylinders() -> Cylinders:
    return cylinders_of(np.zeros((0, 3)), np.zeros((0, 3)), 0.0, 0.0, Label.GROUND)


def empty_ellipsoids() -> Ellipsoids:
    return ellipsoids_of(np.zeros((0, 3)), np.zeros((0, 3)), 0.0, Label.GROUND)


def empty_boxes() -> Boxes:
    return boxes_of(np.zeros((0, 3)), np.zeros((0, 3)), 0.0, 0.0, Label.GROUND)


@dataclass
class Scene:
    """One epoch of a world: terrain plus primitives (any may be empty)."""

    terrain: HeightField | None = None
    cylinders: Cylinders = field(default_factory=empty_cylinders)
    ellipsoids: Ellipsoids = field(default_factory=empty_ellipsoids)
    boxes: Boxes = field(default_factory=empty_boxes)
    voxels: Voxels | None = None

    @property
    def num_primitives(self) -> int:
        nv = 0 if self.voxels is None else len(self.voxels)
        return len(self.cylinders) + len(self.ellipsoids) + len(self.boxes) + nv


class PrimitiveBuilder:
    """Accumulates primitives from Python-side generators, then freezes into a :class:`Scene`.

    Appends are cheap list appends; :meth:`build` converts to float32 arrays once.
    """

    def __init__(self) -> None:
        self._cyl: list[tuple] = []
        self._ell: list[tuple] = []
        self._box: list[tuple] = []

    def cylinder(
        self, p0: object, p1: object, radius: float, label: Label, density: float = np.inf
    ) -> None:
        self._cyl.append((*np.asarray(p0, float), *np.asarray(p1, float), radius, density, label))

    def ellipsoid(
        self, center: object, radii: object, label: Label, density: float = np.inf
    ) -> None:
        self._ell.append((*np.asarray(center, float), *np.asarray(radii, float), density, label))

    def box(
        self, center: object, half: object, yaw: float, label: Label, density: float = np.inf
    ) -> None:
        self._box.append(
            (*np.asarray(center, float), *np.asarray(half, float), yaw, density, label)
        )

    def build(self, terrain: HeightField | None = None, voxels: Voxels | None = None) -> Scene:
        scene = Scene(terrain=terrain, voxels=voxels)
        if self._cyl:
            a = np.asarray(self._cyl, np.float64)
            scene.cylinders = cylinders_of(a[:, 0:3], a[:, 3:6], a[:, 6], a[:, 7], a[:, 8])
        if self._ell:
            a = np.asarray(self._ell, np.float64)
            scene.ellipsoids = ellipsoids_of(a[:, 0:3], a[:, 3:6], a[:, 6], a[:, 7])
        if self._box:
            a = np.asarray(self._box, np.float64)
            scene.boxes = boxes_of(a[:, 0:3], a[:, 3:6], a[:, 6], a[:, 7], a[:, 8])
        return scene
