"""Read a cross-source place-recognition benchmark from disk (the CS-Wild-Places layout).

Layout (written by :mod:`hotformerloc.synth.generate`, spec 4.4; the tables' formats are
:mod:`hotformerloc.io.splits` and :mod:`hotformerloc.io.poses`)::

    <root>/<world>/split.csv                          sequence,timestamp,x,y,source,split
    <root>/<world>/<sequence>/clouds/<timestamp>.pcd  metric, submap frame

Every folder of ``<root>`` that holds a ``split.csv`` is a world. The cloud of a row is
``<world>/<sequence>/clouds/<timestamp formatted with 6 decimals>.pcd``. Other files
(``test_regions.json``, ``manifest.json``) are not needed; ``<world>/<sequence>/poses.csv``
(``timestamp,x,y,z,qx,qy,qz,qw``) is read only for the submap headings
(:meth:`Benchmark.headings`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotformerloc.errors import HotformerlocError
from hotformerloc.io import LayoutFileError, PointCloudError, read_pointcloud
from hotformerloc.io.poses import POSES_FILE, quaternion_yaw, read_poses_csv
from hotformerloc.io.splits import (
    SOURCES,
    SPLIT_COLUMNS,
    SPLIT_FILE,
    SPLITS,
    SplitRow,
    read_split_csv,
)

#: The columns of a ``split.csv`` (:data:`hotformerloc.io.splits.SPLIT_COLUMNS`).
COLUMNS = SPLIT_COLUMNS
#: Missing cloud files named in a :class:`DatasetError` before "and N more".
MAX_LISTED = 5


class DatasetError(HotformerlocError):
    """The benchmark on disk is missing or malformed; the message names the folder or file
    (and the line for a CSV problem) and what is wrong."""


def cloud_relpath(sequence: str, timestamp: float) -> str:
    """``<sequence>/clouds/<timestamp:.6f>.pcd``, relative to the world folder."""
    return f"{sequence}/clouds/{timestamp:.6f}.pcd"


def _read_headings(path: Path) -> dict[float, float]:
    """``{timestamp (rounded to 1 µs): yaw (radians)}`` of a ``poses.csv``."""
    try:
        table = read_poses_csv(path, allow_empty=True)
    except LayoutFileError as e:
        raise DatasetError(str(e)) from e
    yaws = np.asarray(quaternion_yaw(table.quaternions), np.float64).reshape(-1)
    return dict(zip((round(t, 6) for t in table.timestamps.tolist()), yaws.tolist(), strict=True))


def _read_split(path: Path) -> list[SplitRow]:
    """Rows of one ``split.csv`` (:func:`hotformerloc.io.splits.read_split_csv`)."""
    try:
        return read_split_csv(path)
    except LayoutFileError as e:
        raise DatasetError(str(e)) from e


def _as_set(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True, eq=False)
class Benchmark:
    """All submaps of a benchmark as columns (N rows), ordered by world, sequence, timestamp.

    Fields: ``root`` (the folder), ``world``, ``sequence``, ``source`` (``ground``/``aerial``),
    ``split`` (``test``/``buffer``/``train``): (N,) str arrays; ``timestamp``: (N,) float64;
    ``xy``: (N, 2) float64, metric position (easting, northing) of the submap centre.
    A row index ``i`` is a *global* index; data sets and tuples use local indices into a
    selection. Picklable (for data-loader workers).
    """

    root: Path
    world: np.ndarray
    sequence: np.ndarray
    timestamp: np.ndarray
    xy: np.ndarray
    source: np.ndarray
    split: np.ndarray

    @classmethod
    def load(cls, root: str | Path | Sequence[str | Path], check_files: bool = True) -> Benchmark:
        """Read every ``<root>/<world>/split.csv`` (worlds sorted by name).

        Several benchmark folders (a list of roots) read as one benchmark: its ``root`` is
        their deepest common folder and each world is named by its path from there (e.g.
        ``small_s1/forest``), so worlds of different folders never merge.

        Args:
            root: the benchmark folder, or a list of benchmark folders.
            check_files: verify that every listed cloud file exists.

        Raises:
            DatasetError: ``root`` missing or not a folder; no world with a ``split.csv``; a
                malformed CSV (missing column, too few fields, unparsable or non-finite
                number, unknown source/split; names the file and line); a duplicate
                (sequence, timestamp) row; listed cloud files missing (the count and the
                first few paths).
        """
        roots = [Path(r) for r in ([root] if isinstance(root, str | Path) else root)]
        if not roots:
            raise DatasetError("no benchmark folder given")
        worlds: list[str] = []
        for r in roots:
            if not r.is_dir():
                raise DatasetError(f"{r}: benchmark folder does not exist or is not a folder")
            found = sorted(p.name for p in r.iterdir() if (p / SPLIT_FILE).is_file())
            if not found:
                raise DatasetError(f"{r}: no world folder with a {SPLIT_FILE}")
            worlds += [str(r / w) for w in found]
        if len(roots) == 1:
            root = roots[0]
            worlds = [Path(w).name for w in worlds]
        else:
            root = Path(os.path.commonpath([r.absolute() for r in roots]))
            worlds = [Path(w).absolute().relative_to(root).as_posix() for w in worlds]
            if len(set(worlds)) != len(worlds):
                raise DatasetError(f"{', '.join(map(str, roots))}: a folder is given twice")
        cols: dict[str, list] = {c: [] for c in ("world", *COLUMNS)}
        for w in worlds:
            rows = _read_split(root / w / SPLIT_FILE)
            if not rows:
                continue
            rows.sort(key=lambda r: (r[0], r[1]))
            cols["world"] += [w] * len(rows)
            for c, values in zip(COLUMNS, zip(*rows, strict=True), strict=True):
                cols[c] += values
        bench = cls(
            root=root,
            world=np.array(cols["world"], dtype=str),
            sequence=np.array(cols["sequence"], dtype=str),
            timestamp=np.array(cols["timestamp"], dtype=np.float64),
            xy=np.stack(
                [np.array(cols["x"], np.float64), np.array(cols["y"], np.float64)], 1
            ).reshape(-1, 2),
            source=np.array(cols["source"], dtype=str),
            split=np.array(cols["split"], dtype=str),
        )
        if check_files:
            missing = [p for p in map(bench.path, range(len(bench))) if not p.is_file()]
            if missing:
                shown = ", ".join(str(p) for p in missing[:MAX_LISTED])
                more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
                raise DatasetError(
                    f"{root}: {len(missing)} cloud file(s) listed in {SPLIT_FILE} are missing: "
                    f"{shown}{more}"
                )
        return bench

    def __len__(self) -> int:
        return len(self.timestamp)

    @property
    def worlds(self) -> list[str]:
        """World names, sorted."""
        return sorted(set(self.world.tolist()))

    def sequences(self, world: str) -> list[str]:
        """Sequence names of ``world``, sorted (empty for an unknown world)."""
        return sorted(set(self.sequence[self.world == world].tolist()))

    def path(self, i: int) -> Path:
        """The cloud file of row ``i``."""
        return (
            self.root
            / str(self.world[i])
            / cloud_relpath(str(self.sequence[i]), float(self.timestamp[i]))
        )

    def select(
        self,
        world: str | Iterable[str] | None = None,
        source: str | Iterable[str] | None = None,
        split: str | Iterable[str] | None = None,
        sequence: str | Iterable[str] | None = None,
    ) -> np.ndarray:
        """(K,) int64 ascending global indices of the rows matching every given filter (a
        value or a collection of accepted values; ``None`` = any).

        Raises:
            ValueError: an unknown world, source or split value.
        """
        keep = np.ones(len(self), bool)
        for name, column, value, known in (
            ("world", self.world, world, self.worlds),
            ("source", self.source, source, SOURCES),
            ("split", self.split, split, SPLITS),
            ("sequence", self.sequence, sequence, None),
        ):
            if value is None:
                continue
            wanted = _as_set(value)
            if known is not None:
                unknown = [v for v in wanted if v not in known]
                if unknown:
                    raise ValueError(f"select: unknown {name} {unknown} (known: {list(known)})")
            keep &= np.isin(column, wanted)
        return np.flatnonzero(keep).astype(np.int64)

    def headings(self, indices: np.ndarray | None = None) -> np.ndarray:
        """(K,) float64 heading (yaw, radians, counter-clockwise about z) of each row's
        submap frame in the world (all rows by default), from its sequence's ``poses.csv``
        (the yaw of the pose's rotation, ``R = Rz(yaw) Ry(pitch) Rx(roll)``). Rotating a
        cloud by its heading brings it to the world's orientation (north-up, the aerial
        submaps' frame).

        Raises:
            DatasetError: a ``poses.csv`` missing, malformed, or without a row's timestamp.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        out = np.empty(len(idx), np.float64)
        tables: dict[Path, dict[float, float]] = {}
        for j, i in enumerate(idx.tolist()):
            path = self.root / str(self.world[i]) / str(self.sequence[i]) / POSES_FILE
            if path not in tables:
                tables[path] = _read_headings(path)
            key = round(float(self.timestamp[i]), 6)
            if key not in tables[path]:
                raise DatasetError(f"{path}: no pose for timestamp {key:.6f}")
            out[j] = tables[path][key]
        return out

    def load_cloud(self, i: int) -> np.ndarray:
        """(M, 3) float32 points of row ``i``, metric, submap frame.

        Raises:
            DatasetError: the file is missing or unreadable (names the file).
        """
        path = self.path(i)
        try:
            return read_pointcloud(path).xyz
        except PointCloudError as e:
            raise DatasetError(f"cloud {i} ({path}): {e.problem}") from e
