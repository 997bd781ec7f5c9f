"""Read a dataset written by ``hotformerloc dataset prepare`` (our format, no pickles).

Layout of a prepared folder (written by :mod:`hotformerloc.data.prepare`)::

    <dir>/submaps.csv      world,sequence,timestamp,x,y,source,split,path   (one row per submap)
    <dir>/tuples.npz       training tuples: rows + CSR positives / non-negatives (int64)
    <dir>/evaluation.json  evaluation sets: protocol, threshold, runs, queries, databases
    <dir>/manifest.json    format, dataset, source root, cloud format, scale, counts,
                           reference checks, SHA-256 of the three files above (written last)

The clouds are not copied: ``path`` is relative to the dataset folder the set was prepared
from (``source_root`` in the manifest, or the ``root`` given to :meth:`PreparedDataset.load`
when the data moved), and clouds are read in the format the dataset ships (``cloud_format``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hotformerloc.data.benchmark import Benchmark, DatasetError
from hotformerloc.data.tuples import Tuples
from hotformerloc.io import PointCloudError, read_pointcloud, sha256_file
from hotformerloc.io.splits import SOURCES, SPLITS

__all__ = [
    "CLOUD_FORMATS",
    "EVALUATION_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "PROTOCOLS",
    "SUBMAPS_FILE",
    "SUBMAP_COLUMNS",
    "TUPLES_FILE",
    "EvalLocationSpec",
    "EvalRunSpec",
    "EvaluationSpec",
    "PreparedDataset",
    "sha256_file",
]

FORMAT = "hotformerloc-prepared"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SUBMAPS_FILE = "submaps.csv"
TUPLES_FILE = "tuples.npz"
EVALUATION_FILE = "evaluation.json"
SUBMAP_COLUMNS = ("world", "sequence", "timestamp", "x", "y", "source", "split", "path")
#: Evaluation protocols (functions of :mod:`hotformerloc.eval.protocols`).
PROTOCOLS = ("pnv", "wild_places_inter", "cross_source")
#: Cloud file formats a prepared set may reference (names of :data:`hotformerloc.io.FORMATS`).
CLOUD_FORMATS = ("pnv", "pcd", "kitti")
_TUPLE_KEYS = ("rows", "positives_indptr", "positives", "non_negatives_indptr", "non_negatives")


def _index_array(value: Any, n_rows: int, where: str) -> np.ndarray:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{where}: expected a list of row indices")
    a = np.asarray(value, np.int64).reshape(-1)
    if a.size and (a.min() < 0 or a.max() >= n_rows):
        raise ValueError(f"{where}: row index out of range [0, {n_rows})")
    if a.size and not (np.diff(a) > 0).all():
        raise ValueError(f"{where}: row indices must be strictly increasing")
    return a


@dataclass(frozen=True, eq=False)
class EvalRunSpec:
    """One run of an evaluation set: ``rows`` (n,) int64 ascending row indices of its
    submaps (its database when used as one); ``queries`` (q,) int64 ascending, a subset of
    ``rows``: the submaps it queries with."""

    name: str
    rows: np.ndarray
    queries: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows.tolist(), "queries": self.queries.tolist()}

    @classmethod
    def from_dict(cls, data: Any, n_rows: int, where: str) -> EvalRunSpec:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError(f"{where}: expected an object with a string 'name'")
        rows = _index_array(data.get("rows"), n_rows, f"{where}.rows")
        queries = _index_array(data.get("queries"), n_rows, f"{where}.queries")
        if not np.isin(queries, rows).all():
            raise ValueError(f"{where}: queries must be a subset of rows")
        return cls(data["name"], rows, queries)


@dataclass(frozen=True, eq=False)
class EvalLocationSpec:
    """One location (e.g. ``oxford``, ``venman``).

    * ``runs``: the query runs (and, for ``pnv`` / ``wild_places_inter``, the databases);
    * ``database_runs``: ``pnv`` only: restrict the databases to these run names
      (CS-Campus3D: the aerial-only database), ``None`` = every run;
    * ``aerial``: ``cross_source`` only: the aerial database run.
    """

    name: str
    runs: tuple[EvalRunSpec, ...]
    database_runs: tuple[str, ...] | None = None
    aerial: EvalRunSpec | None = None

    @property
    def num_queries(self) -> int:
        return int(sum(r.queries.size for r in self.runs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": [r.to_dict() for r in self.runs],
            "database_runs": None if self.database_runs is None else list(self.database_runs),
            "aerial": None if self.aerial is None else self.aerial.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class EvaluationSpec:
    """How a prepared dataset is scored (spec 4.1-4.5).

    * ``protocol``: ``pnv`` (:func:`~hotformerloc.eval.protocols.evaluate_pnv` per location,
      then the mean over locations), ``wild_places_inter`` or ``cross_source``;
    * ``threshold``: true-positive distance (m, inclusive);
    * ``skip_same_run``: ``pnv`` only: a run never queries itself;
    * ``k``: ranking depth (25);
    * ``locations``: in scoring order;
    * ``groups``: {group: location names} reported separately (CS-Wild-Places Baseline /
      Unseen), may be empty.
    """

    protocol: str
    threshold: float
    skip_same_run: bool
    k: int
    locations: tuple[EvalLocationSpec, ...]
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "threshold": self.threshold,
            "skip_same_run": self.skip_same_run,
            "k": self.k,
            "groups": {g: list(m) for g, m in self.groups.items()},
            "locations": [loc.to_dict() for loc in self.locations],
        }

    @classmethod
    def from_dict(cls, data: Any, n_rows: int) -> EvaluationSpec:
        """Validate a decoded ``evaluation.json``.

        Raises:
            ValueError: unknown protocol, bad numbers, indices out of range, a run name
                repeated within a location, a location without runs, unknown group members.
        """
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        protocol = data.get("protocol")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is not one of {PROTOCOLS}")
        threshold, k = data.get("threshold"), data.get("k")
        if not isinstance(threshold, int | float) or not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a positive number, got {threshold!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        skip = data.get("skip_same_run")
        if not isinstance(skip, bool):
            raise ValueError(f"skip_same_run must be true/false, got {skip!r}")
        raw_locs = data.get("locations")
        if not isinstance(raw_locs, list):
            raise ValueError("locations: expected a list")
        locations = []
        for i, loc in enumerate(raw_locs):
            where = f"locations[{i}]"
            if not isinstance(loc, dict) or not isinstance(loc.get("name"), str):
                raise ValueError(f"{where}: expected an object with a string 'name'")
            raw_runs = loc.get("runs")
            if not isinstance(raw_runs, list) or not raw_runs:
                raise ValueError(f"{where}.runs: expected a non-empty list")
            runs = tuple(
                EvalRunSpec.from_dict(r, n_rows, f"{where}.runs[{j}]")
                for j, r in enumerate(raw_runs)
            )
            names = [r.name for r in runs]
            if len(set(names)) != len(names):
                raise ValueError(f"{where}: run names repeat: {names}")
            dbr = loc.get("database_runs")
            if dbr is not None:
                if not isinstance(dbr, list) or not set(dbr) <= set(names) or not dbr:
                    raise ValueError(f"{where}.database_runs: expected a list of its run names")
                dbr = tuple(dbr)
            aerial = loc.get("aerial")
            if aerial is not None:
                aerial = EvalRunSpec.from_dict(aerial, n_rows, f"{where}.aerial")
            if protocol == "cross_source" and aerial is None:
                raise ValueError(f"{where}: the cross_source protocol needs an aerial run")
            locations.append(EvalLocationSpec(loc["name"], runs, dbr, aerial))
        groups_raw = data.get("groups", {})
        if not isinstance(groups_raw, dict):
            raise ValueError("groups: expected an object")
        loc_names = {loc.name for loc in locations}
        groups: dict[str, tuple[str, ...]] = {}
        for g, members in groups_raw.items():
            if not isinstance(members, list) or not set(members) <= loc_names or not members:
                raise ValueError(f"groups.{g}: expected a non-empty list of location names")
            groups[str(g)] = tuple(members)
        return cls(protocol, float(threshold), skip, k, tuple(locations), groups)


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise DatasetError(f"{directory}: prepared dataset folder does not exist")
    if not path.is_file():
        raise DatasetError(
            f"{directory}: not a prepared dataset (no {MANIFEST_FILE}); "
            f"run `hotformerloc dataset prepare`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION}); prepare the dataset again"
        )
    for key, kind in (
        ("dataset", str),
        ("source_root", str),
        ("cloud_format", str),
        ("scale", float),
        ("files", dict),
    ):
        value = manifest.get(key)
        if kind is float:
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            )
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise DatasetError(f"{path}: missing or invalid {key!r}")
    if manifest["cloud_format"] not in CLOUD_FORMATS:
        raise DatasetError(f"{path}: unknown cloud_format {manifest['cloud_format']!r}")
    for name in (SUBMAPS_FILE, TUPLES_FILE, EVALUATION_FILE):
        expected = manifest["files"].get(name)
        file = directory / name
        if not file.is_file():
            raise DatasetError(f"{file}: missing (the prepared folder is incomplete)")
        if expected != sha256_file(file):
            raise DatasetError(
                f"{file}: SHA-256 does not match the manifest (modified or corrupt); "
                f"prepare the dataset again"
            )
    return manifest


def _read_submaps(path: Path) -> dict[str, list[Any]]:
    text = path.read_text(encoding="utf-8")
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(header) != SUBMAP_COLUMNS:
        raise DatasetError(f"{path}: header must be {','.join(SUBMAP_COLUMNS)}, got {header}")
    cols: dict[str, list[Any]] = {c: [] for c in SUBMAP_COLUMNS}
    for line, rec in enumerate(reader, start=2):
        if len(rec) != len(SUBMAP_COLUMNS):
            raise DatasetError(f"{path} line {line}: expected {len(SUBMAP_COLUMNS)} fields")
        world, seq, ts, x, y, source, split, rel = rec
        try:
            nums = [float(ts), float(x), float(y)]
        except ValueError:
            raise DatasetError(f"{path} line {line}: timestamp/x/y must be numbers") from None
        if not all(math.isfinite(v) for v in nums):
            raise DatasetError(f"{path} line {line}: non-finite timestamp/x/y")
        if source not in SOURCES or split not in SPLITS or not world or not seq:
            raise DatasetError(f"{path} line {line}: bad world/sequence/source/split")
        p = PurePosixPath(rel)
        if not rel or p.is_absolute() or ".." in p.parts:
            raise DatasetError(f"{path} line {line}: path {rel!r} must be relative, without '..'")
        for c, v in zip(SUBMAP_COLUMNS, (world, seq, *nums, source, split, rel), strict=True):
            cols[c].append(v)
    return cols


def _read_tuples(path: Path, n_rows: int) -> tuple[np.ndarray, Tuples]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in _TUPLE_KEYS}
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: unreadable tuples ({e})") from e
    for k, a in arrays.items():
        if a.ndim != 1 or a.dtype != np.int64:
            raise DatasetError(f"{path}: {k} must be a 1-D int64 array, got {a.dtype} {a.shape}")
    rows = arrays["rows"]
    n = rows.size
    if n and (rows.min() < 0 or rows.max() >= n_rows or not (np.diff(rows) > 0).all()):
        raise DatasetError(f"{path}: rows must be increasing indices in [0, {n_rows})")
    lists: dict[str, list[np.ndarray]] = {}
    for name in ("positives", "non_negatives"):
        ptr, flat = arrays[f"{name}_indptr"], arrays[name]
        if ptr.size != n + 1 or ptr[0] != 0 or ptr[-1] != flat.size or (np.diff(ptr) < 0).any():
            raise DatasetError(f"{path}: {name}_indptr is not a valid CSR pointer")
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise DatasetError(f"{path}: {name} holds indices outside [0, {n})")
        lists[name] = np.split(flat, ptr[1:-1]) if n else []
    return rows, Tuples(positives=lists["positives"], non_negatives=lists["non_negatives"])


@dataclass(frozen=True, eq=False)
class PreparedDataset(Benchmark):
    """A prepared public benchmark: the :class:`~hotformerloc.data.Benchmark` columns plus
    its training tuples and evaluation sets.

    Columns (N rows): ``world`` (location, e.g. ``oxford``, ``venman``), ``sequence``
    (run), ``timestamp`` (float64, the dataset's own clock/units), ``xy`` (N, 2) float64
    metric position (easting, northing) in the dataset's frame, ``source``, ``split``
    (``train`` = a training tuple row, ``test`` = evaluation/validation only, ``buffer`` =
    excluded from training by a buffer rule), ``relpath`` (cloud file relative to ``root``).

    Other fields: ``directory`` (the prepared folder), ``dataset`` (name), ``cloud_format``,
    ``scale`` (multiply a cloud by it to map it into [-1, 1] for the model: 1.0 for
    normalised data, 1/radius for metric data), ``manifest`` (the parsed manifest),
    ``train_index`` (T,) int64 global rows of the training tuples (local index j = row
    ``train_index[j]``), ``tuples`` (:class:`~hotformerloc.data.tuples.Tuples` over those
    local indices) and ``evaluation`` (:class:`EvaluationSpec`).
    """

    relpath: np.ndarray
    directory: Path
    dataset: str
    cloud_format: str
    scale: float
    manifest: Mapping[str, Any]
    train_index: np.ndarray
    tuples: Tuples
    evaluation: EvaluationSpec

    @classmethod
    def load(  # type: ignore[override]  # one folder only, and a root= keyword
        cls, directory: str | Path, check_files: bool = False, *, root: str | Path | None = None
    ) -> PreparedDataset:
        """Read a prepared folder, verifying the manifest's checksums.

        Args:
            directory: the folder written by ``hotformerloc dataset prepare``.
            check_files: also verify that every cloud file exists under ``root``.
            root: the dataset folder (default: the manifest's ``source_root``).

        Raises:
            DatasetError: not a prepared folder, unsupported format version, a file missing
                or not matching its checksum, malformed rows/tuples/evaluation sets, the
                dataset folder missing, or (``check_files``) missing cloud files.
        """
        directory = Path(directory)
        manifest = _read_manifest(directory)
        data_root = Path(root) if root is not None else Path(manifest["source_root"])
        if not data_root.is_dir():
            raise DatasetError(
                f"{directory}: dataset folder {data_root} does not exist; pass root= (or "
                f"--root) where the data now lives"
            )
        cols = _read_submaps(directory / SUBMAPS_FILE)
        n = len(cols["world"])
        train_index, tuples = _read_tuples(directory / TUPLES_FILE, n)
        eval_path = directory / EVALUATION_FILE
        try:
            evaluation = EvaluationSpec.from_dict(
                json.loads(eval_path.read_text(encoding="utf-8")), n
            )
        except (OSError, json.JSONDecodeError, ValueError) as e:
            raise DatasetError(f"{eval_path}: {e}") from e
        ds = cls(
            root=data_root,
            world=np.array(cols["world"], dtype=str),
            sequence=np.array(cols["sequence"], dtype=str),
            timestamp=np.array(cols["timestamp"], dtype=np.float64),
            xy=np.stack(
                [np.array(cols["x"], np.float64), np.array(cols["y"], np.float64)], 1
            ).reshape(-1, 2),
            source=np.array(cols["source"], dtype=str),
            split=np.array(cols["split"], dtype=str),
            relpath=np.array(cols["path"], dtype=str),
            directory=directory,
            dataset=manifest["dataset"],
            cloud_format=manifest["cloud_format"],
            scale=float(manifest["scale"]),
            manifest=manifest,
            train_index=train_index,
            tuples=tuples,
            evaluation=evaluation,
        )
        if check_files:
            missing = [str(p) for p in map(ds.path, range(n)) if not p.is_file()]
            if missing:
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise DatasetError(
                    f"{data_root}: {len(missing)} cloud file(s) of {directory} are missing: "
                    f"{', '.join(missing[:5])}{more}"
                )
        return ds

    def path(self, i: int) -> Path:
        """The cloud file of row ``i``."""
        return self.root / str(self.relpath[i])

    def load_cloud(self, i: int) -> np.ndarray:
        """(M, 3) float32 points of row ``i`` in the frame and normalisation the dataset
        ships (PNV: float64 file values in [-1, 1] cast to float32; PCD/KITTI: metres or
        normalised units, as released). Multiply by :attr:`scale` for the model.

        Raises:
            DatasetError: the file is missing, unreadable or holds no finite points.
        """
        path = self.path(i)
        try:
            return read_pointcloud(path, self.cloud_format).xyz
        except PointCloudError as e:
            raise DatasetError(f"cloud {i} ({path}): {e.problem}") from e
