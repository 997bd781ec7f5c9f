"""The split tables of our benchmark layout: ``split.csv`` and ``test_regions.json``.

Per world folder (written by the generator :mod:`hotformerloc.synth.generate` and by
:mod:`hotformerloc.data.recordings`, read by :class:`hotformerloc.data.Benchmark` and the
place database)::

    <world>/split.csv           sequence,timestamp,x,y,source,split   (one row per submap)
    <world>/test_regions.json   {"regions": [[[x, y], ...], ...], "buffer": metres}

``split.csv``: timestamp in seconds (6 decimals), x/y the submap centre in metres
(3 decimals), source ``ground``/``aerial``, split ``test``/``buffer``/``train``.
``test_regions.json``: the test polygons (map xy, closing vertex optional) and the buffer
used; other keys are ignored. :func:`assign_splits` gives the split of each submap.

No torch here: the benchmark readers stay light.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotformerloc.io.atomic import atomic_write_text
from hotformerloc.io.errors import LayoutFileError
from hotformerloc.io.poses import csv_text, open_csv_table

#: The name of the split table in a world folder.
SPLIT_FILE = "split.csv"
#: Column order of a ``split.csv``.
SPLIT_COLUMNS = ("sequence", "timestamp", "x", "y", "source", "split")
#: Values of the ``source`` column.
SOURCES = ("ground", "aerial")
#: Values of the ``split`` column.
SPLITS = ("test", "buffer", "train")
#: The name of the test-regions file in a world folder.
REGIONS_FILE = "test_regions.json"

RegionShape = Literal["polygon", "box"]
REGION_SHAPES: tuple[str, ...] = ("polygon", "box")


class SplitRow(NamedTuple):
    """One row of a ``split.csv``."""

    sequence: str
    timestamp: float
    x: float
    y: float
    source: str
    split: str


# --------------------------------------------------------------------------- split.csv


def read_split_csv(path: str | os.PathLike[str]) -> list[SplitRow]:
    """The rows of a ``split.csv``, in file order, validated: every column of
    :data:`SPLIT_COLUMNS` present (others ignored), finite numbers, a sequence name that is
    a single folder name, known source and split, no two rows with the same sequence and
    timestamp.

    Raises:
        LayoutFileError: names the file, the line and the problem.
    """
    path = Path(path)
    reader = open_csv_table(path, SPLIT_COLUMNS)
    rows = []
    for line, rec in enumerate(reader, start=2):
        if any(rec.get(c) is None for c in SPLIT_COLUMNS):
            raise LayoutFileError(path, "too few fields", line)
        numbers = []
        for c in ("timestamp", "x", "y"):
            try:
                v = float(rec[c])
            except ValueError:
                raise LayoutFileError(path, f"{c} {rec[c]!r} is not a number", line) from None
            if not math.isfinite(v):
                raise LayoutFileError(path, f"{c} {rec[c]!r} is not finite", line)
            numbers.append(v)
        seq, source, split = rec["sequence"], rec["source"], rec["split"]
        if not seq or "/" in seq or "\\" in seq:
            raise LayoutFileError(path, f"invalid sequence name {seq!r}", line)
        if source not in SOURCES:
            raise LayoutFileError(path, f"source {source!r} is not one of {SOURCES}", line)
        if split not in SPLITS:
            raise LayoutFileError(path, f"split {split!r} is not one of {SPLITS}", line)
        rows.append(SplitRow(seq, numbers[0], numbers[1], numbers[2], source, split))
    for a, b in itertools.pairwise(sorted(rows, key=lambda r: (r.sequence, r.timestamp))):
        if a[:2] == b[:2]:
            raise LayoutFileError(
                path, f"duplicate row for sequence {a.sequence!r}, timestamp {a.timestamp:.6f}"
            )
    return rows


def split_csv_text(rows: Iterable[Sequence[object]]) -> str:
    """``split.csv`` text from ``(sequence, timestamp, x, y, source, split)`` rows
    (:class:`SplitRow` or plain tuples): timestamp with 6 decimals, x and y with 3."""
    return csv_text(
        SPLIT_COLUMNS,
        (
            [seq, f"{ts:.6f}", f"{x:.3f}", f"{y:.3f}", source, split]
            for seq, ts, x, y, source, split in rows
        ),
    )


def write_split_csv(path: str | os.PathLike[str], rows: Iterable[Sequence[object]]) -> None:
    """Write (atomically) :func:`split_csv_text` of ``rows`` to ``path``."""
    atomic_write_text(path, split_csv_text(rows))


# --------------------------------------------------------------------------- test regions


@dataclass(frozen=True, eq=False)
class SplitRegions:
    """The content of a ``test_regions.json``: ``regions``, each a (V >= 3, 2) float64
    polygon in map xy (as written: a closing vertex may be repeated); ``buffer`` (m), or
    None when the file has no numeric ``buffer``."""

    regions: tuple[NDArray[np.float64], ...]
    buffer: float | None = None


def read_regions_json(path: str | os.PathLike[str]) -> SplitRegions:
    """Read a ``test_regions.json`` (or any ``{"regions": [[[x, y], ...], ...]}`` file;
    other keys ignored).

    Raises:
        LayoutFileError: missing or unreadable file, bad JSON, a bad polygon (names the
            file and the polygon).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutFileError(path, f"cannot read test regions ({e})") from e
    except ValueError as e:
        raise LayoutFileError(path, f"not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("regions"), list):
        raise LayoutFileError(path, 'expected {"regions": [[[x, y], ...], ...]}')
    out = []
    for i, poly in enumerate(data["regions"]):
        try:
            p = np.asarray(poly, np.float64)
        except (TypeError, ValueError):
            p = np.zeros((0,))
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3 or not np.isfinite(p).all():
            raise LayoutFileError(path, f"region {i} must be a list of >= 3 finite [x, y] vertices")
        out.append(p)
    raw = data.get("buffer")
    buffer = None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        buffer = float(raw)
    return SplitRegions(tuple(out), buffer)


def regions_json_text(regions: Iterable[ArrayLike], buffer: float) -> str:
    """``test_regions.json`` text: ``{"regions": [...], "buffer": buffer}``, indented by 1,
    each region a list of ``[x, y]`` vertices (as given: close the polygon or not)."""
    polys = [np.asarray(p, np.float64).tolist() for p in regions]
    return json.dumps({"regions": polys, "buffer": buffer}, indent=1) + "\n"


def write_regions_json(
    path: str | os.PathLike[str], regions: Iterable[ArrayLike], buffer: float
) -> None:
    """Write (atomically) :func:`regions_json_text` to ``path``."""
    atomic_write_text(path, regions_json_text(regions, buffer))


# --------------------------------------------------------------------------- splits


def points_in_polygon(xy: ArrayLike, polygon: ArrayLike) -> NDArray[np.bool_]:
    """(N,) bool: ``xy`` (N, 2) inside the simple polygon (V, 2) (even-odd rule; the
    closing vertex may be repeated or not; points on an edge may fall either way)."""
    pts = np.asarray(xy, np.float64)
    p = np.asarray(polygon, np.float64)
    q = np.roll(p, -1, axis=0)
    x, y = pts[:, :1], pts[:, 1:2]
    crosses = (p[:, 1] > y) != (q[:, 1] > y)
    dy = np.where(q[:, 1] == p[:, 1], 1.0, q[:, 1] - p[:, 1])
    x_at = p[:, 0] + (y - p[:, 1]) * (q[:, 0] - p[:, 0]) / dy
    return np.asarray((np.sum(crosses & (x < x_at), axis=1) % 2) == 1)


def points_in_box(xy: ArrayLike, polygon: ArrayLike) -> NDArray[np.bool_]:
    """(N,) bool: ``xy`` (N, 2) inside the axis-aligned bounding box of ``polygon`` (V, 2),
    boundary included (for an axis-aligned square, the closed square)."""
    pts = np.asarray(xy, np.float64)
    p = np.asarray(polygon)
    lo, hi = p.min(0), p.max(0)
    return np.asarray(np.all((pts >= lo) & (pts <= hi), axis=1))


def assign_splits(
    xy: ArrayLike,
    is_ground: ArrayLike,
    regions: Iterable[ArrayLike],
    buffer: float,
    *,
    shape: RegionShape = "polygon",
) -> NDArray[np.str_]:
    """(N,) str splits of submaps at ``xy`` (N, 2): ``test`` inside a region, ``buffer``
    outside every region but within ``buffer`` m of a ground (``is_ground`` (N,) bool)
    ``test`` submap, else ``train``.

    ``shape`` says what a region (V, 2) vertices covers: ``"polygon"`` the polygon (even-odd
    rule, :func:`points_in_polygon`; the recordings' regions) or ``"box"`` its axis-aligned
    bounding box, boundary included (:func:`points_in_box`; the generator's squares).
    """
    if shape not in REGION_SHAPES:
        raise ValueError(f"shape must be one of {REGION_SHAPES}, got {shape!r}")
    from scipy.spatial import cKDTree  # only here: the readers stay light

    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    ground = np.asarray(is_ground, bool)
    contains = points_in_polygon if shape == "polygon" else points_in_box
    inside = np.zeros(len(pts), bool)
    for poly in regions:
        inside |= contains(pts, poly)
    split = np.where(inside, "test", "train").astype(object)
    queries = pts[inside & ground]
    if len(queries) and buffer > 0:
        d, _ = cKDTree(queries).query(pts, k=1)
        split[~inside & (d <= buffer)] = "buffer"
    return split.astype(str)
