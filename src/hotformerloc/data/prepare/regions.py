"""Test regions and buffer circles of the public benchmarks, and the regions file format.

A regions file is JSON (documented in ``docs/datasets/README.md``)::

    {
      "format": "hotformerloc-regions", "version": 1,
      "axes": "northing,easting",          # or "easting,northing": order of EVERY pair below
      "locations": {
        "university": {"squares": [{"name": "P5", "center": [n, e], "half_size": 150.0}]},
        "venman": {"polygons": [{"name": "P1", "vertices": [[n, e], [n, e], [n, e]]}],
                   "buffers": [{"name": "C1", "center": [n, e], "radius": 30.0}]}
      }
    }

Coordinates are metres in the frame of the dataset's positions (PNV: UTM from the CSVs;
Wild-Places: the aligned-pose frame of each forest; CS-Wild-Places: UTM). Semantics, the
same for every dataset:

* a **square** is open, like the PointNetVLAD split code: ``|dx| < half_size`` and
  ``|dy| < half_size``;
* a **polygon** is closed: points on its boundary are inside;
* a **buffer** circle is closed: ``distance <= radius``.

Inside any square or polygon = test region; inside a buffer circle = excluded from training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hotformerloc.data.prepare.common import PrepareError

FORMAT = "hotformerloc-regions"
AXES = ("easting,northing", "northing,easting")


class RegionsError(PrepareError):
    """A regions file is missing or malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Square:
    """Axis-aligned open square: ``center`` (easting, northing) m, ``half_size`` m."""

    name: str
    center: tuple[float, float]
    half_size: float

    def contains(self, xy: np.ndarray) -> np.ndarray:
        d = np.abs(np.asarray(xy, np.float64) - np.asarray(self.center))
        return (d[:, 0] < self.half_size) & (d[:, 1] < self.half_size)


@dataclass(frozen=True)
class Circle:
    """Closed disc: ``center`` (easting, northing) m, ``radius`` m."""

    name: str
    center: tuple[float, float]
    radius: float

    def contains(self, xy: np.ndarray) -> np.ndarray:
        d = np.asarray(xy, np.float64) - np.asarray(self.center)
        return np.einsum("ij,ij->i", d, d) <= self.radius * self.radius


@dataclass(frozen=True, eq=False)
class Polygon:
    """Closed simple polygon: ``vertices`` (V, 2) float64 (easting, northing) m, V >= 3,
    without a repeated closing vertex."""

    name: str
    vertices: np.ndarray

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Even-odd rule for the interior, plus an exact on-segment test for the boundary."""
        p = np.asarray(xy, np.float64)
        x, y = p[:, 0], p[:, 1]
        inside = np.zeros(len(p), bool)
        on_edge = np.zeros(len(p), bool)
        v = self.vertices
        for (x1, y1), (x2, y2) in zip(v, np.roll(v, -1, axis=0), strict=True):
            crosses = (y1 > y) != (y2 > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (x < x_at)
            cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
            within = (
                (np.minimum(x1, x2) <= x)
                & (x <= np.maximum(x1, x2))
                & (np.minimum(y1, y2) <= y)
                & (y <= np.maximum(y1, y2))
            )
            on_edge |= (cross == 0) & within
        return inside | on_edge


@dataclass(frozen=True, eq=False)
class LocationRegions:
    """The test regions (squares, polygons) and buffer circles of one location."""

    squares: tuple[Square, ...] = ()
    polygons: tuple[Polygon, ...] = ()
    buffers: tuple[Circle, ...] = ()

    def in_test(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool: inside any square or polygon. ``xy``: (N, 2) (easting, northing)."""
        out = np.zeros(len(xy), bool)
        shapes: tuple[Square | Polygon, ...] = (*self.squares, *self.polygons)
        for r in shapes:
            out |= r.contains(xy)
        return out

    def in_buffer(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool: inside any buffer circle."""
        out = np.zeros(len(xy), bool)
        for c in self.buffers:
            out |= c.contains(xy)
        return out

    def describe(self) -> dict[str, Any]:
        """Plain summary for the manifest (names and numbers, easting/northing order)."""
        return {
            "squares": [
                {"name": s.name, "center_en": list(s.center), "half_size": s.half_size}
                for s in self.squares
            ],
            "polygons": [
                {"name": p.name, "vertices_en": p.vertices.tolist()} for p in self.polygons
            ],
            "buffers": [
                {"name": c.name, "center_en": list(c.center), "radius": c.radius}
                for c in self.buffers
            ],
        }


@dataclass(frozen=True, eq=False)
class RegionsFile:
    """A parsed regions file: ``locations`` {lower-case location: LocationRegions}."""

    path: Path
    locations: Mapping[str, LocationRegions] = field(default_factory=dict)

    def get(self, location: str) -> LocationRegions | None:
        return self.locations.get(location)


def _pair(value: Any, where: str, swap: bool) -> tuple[float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) for v in value)
    ):
        raise ValueError(f"{where}: expected a pair of finite numbers, got {value!r}")
    a, b = float(value[0]), float(value[1])
    return (b, a) if swap else (a, b)


def _positive(value: Any, where: str) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def _entries(loc: Mapping[str, Any], key: str, where: str) -> Sequence[Mapping[str, Any]]:
    items = loc.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{where}.{key}: expected a list of objects")
    return items


def _name(item: Mapping[str, Any], where: str) -> str:
    name = item.get("name", "")
    if not isinstance(name, str):
        raise ValueError(f"{where}.name: expected a string")
    return name


def _location(loc: Any, where: str, swap: bool) -> LocationRegions:
    if not isinstance(loc, dict):
        raise ValueError(f"{where}: expected an object with squares/polygons/buffers")
    unknown = sorted(set(loc) - {"squares", "polygons", "buffers"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (known: squares, polygons, buffers)")
    squares, polygons, buffers = [], [], []
    for i, s in enumerate(_entries(loc, "squares", where)):
        w = f"{where}.squares[{i}]"
        center = _pair(s.get("center"), f"{w}.center", swap)
        squares.append(Square(_name(s, w), center, _positive(s.get("half_size"), f"{w}.half_size")))
    for i, p in enumerate(_entries(loc, "polygons", where)):
        w = f"{where}.polygons[{i}]"
        raw = p.get("vertices")
        if not isinstance(raw, list):
            raise ValueError(f"{w}.vertices: expected a list of pairs")
        verts = [_pair(v, f"{w}.vertices[{k}]", swap) for k, v in enumerate(raw)]
        if len(verts) > 1 and verts[0] == verts[-1]:
            verts = verts[:-1]
        if len(verts) < 3:
            raise ValueError(f"{w}.vertices: a polygon needs at least 3 distinct vertices")
        polygons.append(Polygon(_name(p, w), np.array(verts, np.float64)))
    for i, c in enumerate(_entries(loc, "buffers", where)):
        w = f"{where}.buffers[{i}]"
        center = _pair(c.get("center"), f"{w}.center", swap)
        buffers.append(Circle(_name(c, w), center, _positive(c.get("radius"), f"{w}.radius")))
    return LocationRegions(tuple(squares), tuple(polygons), tuple(buffers))


def parse_regions(data: Any, path: Path, known: Sequence[str]) -> RegionsFile:
    """Validate a decoded regions document. ``known``: the location names the dataset has.

    Raises:
        RegionsError: wrong format tag or version, missing/unknown ``axes``, an unknown
            location, or a malformed entry (names the file and the JSON path).
    """
    try:
        if not isinstance(data, dict):
            raise ValueError("top level: expected a JSON object")
        if data.get("format") != FORMAT or data.get("version") != 1:
            raise ValueError(f'expected "format": "{FORMAT}" and "version": 1')
        axes = data.get("axes")
        if axes not in AXES:
            raise ValueError(
                f'"axes" must be one of {list(AXES)} (the order of every coordinate pair), '
                f"got {axes!r}"
            )
        locs = data.get("locations")
        if not isinstance(locs, dict) or not locs:
            raise ValueError('"locations": expected a non-empty object {location: regions}')
        out: dict[str, LocationRegions] = {}
        for name, loc in locs.items():
            key = str(name).lower()
            if key not in known:
                raise ValueError(f"unknown location {name!r} (this dataset has: {list(known)})")
            out[key] = _location(loc, f"locations.{name}", swap=axes == "northing,easting")
    except ValueError as e:
        raise RegionsError(f"{path}: {e}") from None
    return RegionsFile(path=path, locations=out)


def load_regions(path: str | Path, known: Sequence[str]) -> RegionsFile:
    """Read and validate a regions file (see the module doc).

    Raises:
        RegionsError: missing or unreadable file, invalid JSON, or a malformed document.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegionsError(f"{path}: regions file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RegionsError(f"{path}: cannot read regions file ({e})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RegionsError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return parse_regions(data, path, known)
