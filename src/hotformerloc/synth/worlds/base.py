"""The world interface: a seeded layout that yields one :class:`Scene` per visit (epoch)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hotformerloc.synth.scene import Scene


@dataclass(frozen=True)
class Epoch:
    """Conditions of one capture (a ground traversal or the aerial survey).

    * ``foliage``: multiplier on the density of foliage and understory (1 = as generated).
    * ``leaf_off``: deciduous species have lost their leaves (their crown density is
      multiplied by the world's leaf-off factor; evergreen species are unchanged).
    * ``growth_years``: years of growth after the reference state: trees grow taller and
      crowns wider, a few new saplings appear (used between ground and aerial capture).
    * ``seed``: seed of the per-visit changes (parked cars moved, removed or added).
    """

    name: str = "reference"
    foliage: float = 1.0
    leaf_off: bool = False
    growth_years: float = 0.0
    seed: int = 0


class World(ABC):
    """A procedural or real-geometry world.

    Subclasses are built from a config and a seed, fully deterministic. ``extent`` is
    ``(xmin, ymin, xmax, ymax)`` in metres; the origin is arbitrary but fixed.
    """

    name: str
    kind: str  # "forest" | "urban" | "real"
    extent: tuple[float, float, float, float]

    @abstractmethod
    def scene(self, epoch: Epoch) -> Scene:
        """The world as captured at ``epoch`` (deterministic given the epoch)."""

    @abstractmethod
    def route(self) -> np.ndarray:
        """Base route of the ground traversals: (M, 2) float64 polyline of xy waypoints.

        The route is free of obstacles (a track or road) and lies inside ``extent`` with a
        margin of at least 40 m where the world allows it. Consecutive waypoints are at most
        5 m apart. A closed loop repeats its first point at the end.
        """

    @abstractmethod
    def ground_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terrain height (m) at arrays x, y."""

    @abstractmethod
    def free_mask(self, xy: np.ndarray, clearance: float) -> np.ndarray:
        """(N,) bool: a sensor at ``xy`` (N, 2) is at least ``clearance`` m (horizontally)
        from every solid obstacle footprint (trunks, poles, buildings, cars, fences, walls)."""

    def aerial_points(self) -> np.ndarray | None:
        """Real aerial points (N, 3) float32 in the world frame, or None when the aerial
        survey is to be simulated (procedural worlds)."""
        return None
