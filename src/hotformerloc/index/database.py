"""The persisted place database: unit descriptors, per-place metadata, atomic crash-safe appends.

On-disk layout (``docs/database.md``)::

    <db>/database.json                 manifest: schema, count, checksums, segment list
    <db>/write.lock                    advisory lock held by a writer (fcntl.flock)
    <db>/segments/<000001>/descriptors.npy   (n, D) <f4, unit rows
    <db>/segments/<000001>/poses.npy         (n, 4, 4) <f8, submap -> map; NaN = unknown
    <db>/segments/<000001>/timestamps.npy    (n,) <f8 seconds; NaN = unknown
    <db>/segments/<000001>/metadata.json     {"id": [...], "source": [...], "world": [...],
                                              "sequence": [...], "path": [... or null]}
    <db>/segments/<000001>/rerank_points.npy  optional: (P, 3) <f4 downsampled clouds of
    <db>/segments/<000001>/rerank_offsets.npy (n + 1,) <i8 the entries, for re-ranking

The manifest is the only mutable file and the commit point. It lists every segment with the
size and SHA-256 of each of its files, the schema (dimension, metric, model name, weights
checksum and data scale, format version), the entry count, the SHA-256 of all descriptors
in order, and a SHA-256 of its own content. Segments are written once and never modified.

``add`` ordering (single writer, under the lock): remove leftovers of an interrupted add
(segment folders not in the manifest, temporary files) -> write the new segment's files,
each atomically (temp file, fsync, rename) -> fsync the segments folder -> atomically replace
``database.json`` (temp file, fsync, rename, fsync the folder). A kill before the rename leaves
the old manifest, which does not reference the new segment: the database reads as before.
A kill after it leaves the new database complete. Readers never lock: they read the manifest
once and then only immutable files it lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import secrets
import shutil
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hotformerloc.errors import HotformerlocError
from hotformerloc.index.search import SearchFilter, SearchIndex, SearchResult
from hotformerloc.io.atomic import atomic_write, atomic_write_bytes, sha256_file
from hotformerloc.io.pointcloud import SOURCES, check_rigid

FORMAT = "hotformerloc-place-database"
FORMAT_VERSION = 1
#: L2 distance between unit-norm descriptors.
METRIC = "l2-unit"
MANIFEST = "database.json"
SEGMENTS = "segments"
LOCK = "write.lock"
SEGMENT_FILES = ("descriptors.npy", "poses.npy", "timestamps.npy", "metadata.json")
#: Optional segment files (listed, sized and checksummed like the others when present):
#: entry ``i``'s re-ranking cloud is ``points[offsets[i]:offsets[i + 1]]``.
RERANK_FILES = ("rerank_points.npy", "rerank_offsets.npy")
META_COLUMNS = ("id", "source", "world", "sequence", "path")
#: Largest accepted ``| |row| - 1 |`` of a descriptor.
UNIT_NORM_TOL = 1e-3
#: Crash-test hook: when this environment variable names a step of ``add`` (see
#: :data:`ADD_STEPS`), the process SIGKILLs itself right after that step.
FAULT_ENV = "HOTFORMERLOC_DB_FAULT"
#: The steps of an append, in order; a kill after any of the first seven keeps the old
#: database, after ``committed`` the new one.
ADD_STEPS = (
    "cleaned",
    "segment-dir",
    "descriptors.npy",
    "poses.npy",
    "timestamps.npy",
    "metadata.json",
    "manifest-temp",
    "committed",
)
_HASH_CHUNK = 1 << 23


class DatabaseError(HotformerlocError):
    """A place database problem; the message names the database or file and what is wrong."""


class DatabaseCorruptError(DatabaseError):
    """A database file is missing, truncated, altered or malformed (``path`` names it)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class DatabaseExistsError(DatabaseError):
    """Creating a database where something already exists."""


class ModelMismatchError(DatabaseError):
    """The database was built with another model (name, weights or data scale)."""


class DatabaseInputError(DatabaseError):
    """Bad entries or descriptors given to :meth:`PlaceDatabase.add` or ``create``."""


class DatabaseLockedError(DatabaseError):
    """Another process is writing to the database."""


def _fault_point(step: str) -> None:
    """SIGKILL this process when ``$HOTFORMERLOC_DB_FAULT == step`` (crash tests)."""
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ModelInfo:
    """The model that computed a database's descriptors.

    ``name``: registered model name; ``tensors_sha256``: digest of the loaded weights'
    tensors (:func:`hotformerloc.model.checkpoint.tensors_digest`: the same for any file
    that holds those tensors; not the file's SHA-256, which ``embed.json`` and the model
    registry quote as ``weights_sha256``); ``spec``: what loads it again (the
    registered name, or the absolute checkpoint path); ``data_scale``: the model config's
    ``input_scale`` (metric clouds are multiplied by it first; ``None``: fed as read).
    """

    name: str
    tensors_sha256: str
    spec: str
    data_scale: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensors_sha256": self.tensors_sha256,
            "spec": self.spec,
            "data_scale": self.data_scale,
        }

    def same_model(self, other: ModelInfo) -> bool:
        """Same name, weights and data scale (``spec``, the location, may differ)."""
        return (self.name, self.tensors_sha256, self.data_scale) == (
            other.name,
            other.tensors_sha256,
            other.data_scale,
        )


@dataclass(frozen=True, eq=False)
class Entry:
    """One mapped place.

    ``id``: unique, non-empty, no line breaks; ``source``: ``ground`` or ``aerial``;
    ``world``: the map whose frame ``pose`` refers to; ``sequence``: the run (may be empty);
    ``timestamp``: seconds or None; ``pose``: (4, 4) float64 rigid transform, submap frame ->
    map frame, or None when unknown; ``path``: the submap cloud file or None.
    """

    id: str
    source: str
    world: str = ""
    sequence: str = ""
    timestamp: float | None = None
    pose: np.ndarray | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: pose as 4 rows of 4 floats (or None)."""
        return {
            "id": self.id,
            "source": self.source,
            "world": self.world,
            "sequence": self.sequence,
            "timestamp": self.timestamp,
            "pose": None if self.pose is None else self.pose.tolist(),
            "path": self.path,
        }


@dataclass(frozen=True, eq=False)
class RerankPoints:
    """Per-entry clouds for re-ranking, stored with a segment (``docs/database.md``).

    ``voxel``: the ``RerankConfig.voxel`` (m) they were downsampled with; ``points[i]``:
    entry ``i``'s (M_i, 3) float cloud (stored as float32), or None when unavailable (the
    cloud is then read from the entry's file at query time).
    """

    voxel: float
    points: Sequence[np.ndarray | None]


@dataclass(frozen=True)
class Schema:
    """What a database holds: ``dim``, ``metric``, ``model``, ``count``, the SHA-256 of all
    descriptors in order, the manifest ``generation`` (1 at creation, +1 per append)."""

    format_version: int
    dim: int
    metric: str
    model: ModelInfo
    count: int
    descriptors_sha256: str
    generation: int
    created: str
    updated: str


# ---------------------------------------------------------------------------- file helpers
def _sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data).hexdigest()


def _npy_bytes(a: np.ndarray) -> memoryview:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getbuffer()


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _write_lock(root: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<root>/write.lock`` (released on exit or process death)."""
    import fcntl

    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseLockedError(f"{root}: another process is writing to it") from None
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- validation
def _check_entries(
    descriptors: np.ndarray, entries: Sequence[Entry], dim: int, taken: set[str]
) -> np.ndarray:
    """Validated (n, dim) float32 copy of ``descriptors`` for ``entries``."""
    d = np.asarray(descriptors)
    if d.ndim != 2 or d.shape[1] != dim:
        raise DatabaseInputError(f"descriptors must have shape (n, {dim}), got {d.shape}")
    if not np.issubdtype(d.dtype, np.floating):
        raise DatabaseInputError(f"descriptors must be floating point, got {d.dtype}")
    if len(d) != len(entries):
        raise DatabaseInputError(f"{len(d)} descriptors for {len(entries)} entries")
    d = np.ascontiguousarray(d, np.float32)
    if not np.isfinite(d).all():
        bad = int(np.flatnonzero(~np.isfinite(d).all(axis=1))[0])
        raise DatabaseInputError(f"descriptor of entry {entries[bad].id!r} is not finite")
    norms = np.linalg.norm(d, axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOL)
    if len(off):
        raise DatabaseInputError(
            f"descriptor of entry {entries[int(off[0])].id!r} has norm {norms[off[0]]:.6f}; "
            f"the metric is L2 on unit descriptors (normalise them first)"
        )
    seen: set[str] = set()
    for e in entries:
        if not isinstance(e.id, str) or not e.id or "\n" in e.id or "\r" in e.id:
            raise DatabaseInputError(f"entry id {e.id!r} must be a non-empty one-line string")
        if e.id in taken or e.id in seen:
            raise DatabaseInputError(f"entry id {e.id!r} is already in the database")
        seen.add(e.id)
        if e.source not in SOURCES:
            raise DatabaseInputError(f"entry {e.id!r}: source {e.source!r} is not one of {SOURCES}")
        for name in ("world", "sequence"):
            if not isinstance(getattr(e, name), str):
                raise DatabaseInputError(f"entry {e.id!r}: {name} must be a string")
        if e.path is not None and not isinstance(e.path, str):
            raise DatabaseInputError(f"entry {e.id!r}: path must be a string or None")
        if e.timestamp is not None and not math.isfinite(e.timestamp):
            raise DatabaseInputError(f"entry {e.id!r}: timestamp {e.timestamp} is not finite")
        if e.pose is not None:
            try:
                check_rigid(e.pose, f"entry {e.id!r} pose")
            except ValueError as err:
                raise DatabaseInputError(str(err)) from None
    return d


@dataclass(frozen=True, eq=False)
class _Columns:
    """Entries as columns (all of length n)."""

    descriptors: np.ndarray  # (n, D) float32
    ids: np.ndarray  # (n,) str
    sources: np.ndarray
    worlds: np.ndarray
    sequences: np.ndarray
    timestamps: np.ndarray  # (n,) float64, NaN unknown
    poses: np.ndarray  # (n, 4, 4) float64, NaN unknown
    paths: list[str | None]

    @classmethod
    def of(cls, descriptors: np.ndarray, entries: Sequence[Entry], dim: int) -> _Columns:
        n = len(entries)
        poses = np.full((n, 4, 4), np.nan)
        for i, e in enumerate(entries):
            if e.pose is not None:
                poses[i] = e.pose
        return cls(
            descriptors=descriptors.reshape(n, dim),
            ids=np.array([e.id for e in entries], dtype=str).reshape(n),
            sources=np.array([e.source for e in entries], dtype=str).reshape(n),
            worlds=np.array([e.world for e in entries], dtype=str).reshape(n),
            sequences=np.array([e.sequence for e in entries], dtype=str).reshape(n),
            timestamps=np.array(
                [np.nan if e.timestamp is None else float(e.timestamp) for e in entries],
                np.float64,
            ).reshape(n),
            poses=poses,
            paths=[e.path for e in entries],
        )

    @classmethod
    def concat(cls, parts: Sequence[_Columns], dim: int) -> _Columns:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.of(np.zeros((0, dim), np.float32), [], dim)

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(
            descriptors=cat("descriptors"),
            ids=cat("ids"),
            sources=cat("sources"),
            worlds=cat("worlds"),
            sequences=cat("sequences"),
            timestamps=cat("timestamps"),
            poses=cat("poses"),
            paths=[p for part in parts for p in part.paths],
        )


# ---------------------------------------------------------------------------- segments
def _rerank_payloads(rerank: RerankPoints, n: int) -> list[tuple[str, memoryview]]:
    """The two optional re-ranking files of a segment of ``n`` entries."""
    if len(rerank.points) != n:
        raise DatabaseInputError(f"{len(rerank.points)} re-ranking clouds for {n} entries")
    if not (math.isfinite(rerank.voxel) and rerank.voxel >= 0):
        raise DatabaseInputError(f"re-ranking voxel must be finite and >= 0, got {rerank.voxel}")
    parts = []
    for i, p in enumerate(rerank.points):
        a = np.zeros((0, 3), "<f4") if p is None else np.asarray(p, dtype="<f4")
        if a.ndim != 2 or a.shape[1] != 3 or not np.isfinite(a).all():
            raise DatabaseInputError(f"re-ranking cloud {i}: expected finite (M, 3) points")
        parts.append(a)
    offsets = np.zeros(n + 1, "<i8")
    offsets[1:] = np.cumsum([len(a) for a in parts])
    points = np.concatenate(parts) if parts else np.zeros((0, 3), "<f4")
    return [
        ("rerank_points.npy", _npy_bytes(np.ascontiguousarray(points, "<f4"))),
        ("rerank_offsets.npy", _npy_bytes(offsets)),
    ]


def _write_segment(
    folder: Path, cols: _Columns, rerank: RerankPoints | None = None
) -> dict[str, Any]:
    """Write a segment's files (each atomically), with the optional re-ranking files when
    ``rerank`` is given; returns its manifest record."""
    folder.mkdir()
    _fault_point("segment-dir")
    files: dict[str, dict[str, Any]] = {}
    meta = {
        "id": cols.ids.tolist(),
        "source": cols.sources.tolist(),
        "world": cols.worlds.tolist(),
        "sequence": cols.sequences.tolist(),
        "path": list(cols.paths),
    }
    payloads: list[tuple[str, memoryview | bytes]] = [
        ("descriptors.npy", _npy_bytes(cols.descriptors.astype("<f4", copy=False))),
        ("poses.npy", _npy_bytes(cols.poses.astype("<f8", copy=False))),
        ("timestamps.npy", _npy_bytes(cols.timestamps.astype("<f8", copy=False))),
        ("metadata.json", json.dumps(meta, ensure_ascii=False).encode()),
    ]
    for name, data in payloads:
        atomic_write_bytes(folder / name, data)  # type: ignore[arg-type]  # it writes any buffer
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        _fault_point(name)
    record: dict[str, Any] = {"name": folder.name, "count": len(cols.ids), "files": files}
    if rerank is not None:
        for name, view in _rerank_payloads(rerank, len(cols.ids)):
            atomic_write_bytes(folder / name, view)  # type: ignore[arg-type]
            files[name] = {"bytes": len(view), "sha256": hashlib.sha256(view).hexdigest()}
        record["rerank"] = {"voxel": float(rerank.voxel)}
    return record


def _load_npy(path: Path, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DatabaseCorruptError(path, f"not a readable .npy file ({e})") from None
    if a.shape != shape or a.dtype != np.dtype(dtype):
        raise DatabaseCorruptError(path, f"expected {dtype} {shape}, found {a.dtype} {a.shape}")
    return a


def _read_segment(root: Path, record: dict[str, Any], dim: int, verify: bool) -> _Columns:
    folder = root / SEGMENTS / str(record["name"])
    n = int(record["count"])
    for name in (*SEGMENT_FILES, *(f for f in RERANK_FILES if f in record["files"])):
        path = folder / name
        want = record["files"][name]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DatabaseCorruptError(path, "file is missing") from None
        if size != want["bytes"]:
            raise DatabaseCorruptError(
                path, f"size {size} bytes, the manifest says {want['bytes']} (truncated or altered)"
            )
        if verify and sha256_file(path) != want["sha256"]:
            raise DatabaseCorruptError(path, "checksum mismatch (file altered or corrupted)")
    desc = _load_npy(folder / "descriptors.npy", (n, dim), "<f4")
    poses = _load_npy(folder / "poses.npy", (n, 4, 4), "<f8")
    stamps = _load_npy(folder / "timestamps.npy", (n,), "<f8")
    meta_path = folder / "metadata.json"
    try:
        meta = json.loads(meta_path.read_bytes())
    except (OSError, ValueError) as e:
        raise DatabaseCorruptError(meta_path, f"not valid JSON ({e})") from None
    if not isinstance(meta, dict) or set(meta) != set(META_COLUMNS):
        raise DatabaseCorruptError(meta_path, f"expected an object with keys {META_COLUMNS}")
    for key in META_COLUMNS:
        col = meta[key]
        ok_type = (str, type(None)) if key == "path" else (str,)
        if (
            not isinstance(col, list)
            or len(col) != n
            or not all(isinstance(v, ok_type) for v in col)
        ):
            raise DatabaseCorruptError(meta_path, f"column {key!r} must be {n} strings")
    bad = [s for s in meta["source"] if s not in SOURCES]
    if bad:
        raise DatabaseCorruptError(meta_path, f"unknown source {bad[0]!r}")
    return _Columns(
        descriptors=desc,
        ids=np.array(meta["id"], dtype=str).reshape(n),
        sources=np.array(meta["source"], dtype=str).reshape(n),
        worlds=np.array(meta["world"], dtype=str).reshape(n),
        sequences=np.array(meta["sequence"], dtype=str).reshape(n),
        timestamps=stamps,
        poses=poses,
        paths=meta["path"],
    )


# ---------------------------------------------------------------------------- manifest
def _manifest(
    dim: int,
    model: ModelInfo,
    segments: list[dict[str, Any]],
    descriptors: np.ndarray,
    generation: int,
    created: str,
) -> dict[str, Any]:
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dim": dim,
        "metric": METRIC,
        "model": model.to_dict(),
        "count": int(sum(s["count"] for s in segments)),
        "descriptors_sha256": _sha256_array(descriptors),
        "generation": generation,
        "created": created,
        "updated": _now(),
        "segments": segments,
    }
    return {**body, "manifest_sha256": hashlib.sha256(_canonical(body)).hexdigest()}


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n"
    with atomic_write(root / MANIFEST) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _fault_point("manifest-temp")


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise DatabaseError(f"{root}: no place database here (folder does not exist)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatabaseCorruptError(path, "file is missing (not a place database?)") from None
    try:
        m = json.loads(raw)
    except ValueError as e:
        raise DatabaseCorruptError(path, f"not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DatabaseCorruptError(path, f"not a {FORMAT} manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise DatabaseCorruptError(
            path, f"format version {m.get('format_version')!r} is not {FORMAT_VERSION}"
        )
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    try:
        digest = hashlib.sha256(_canonical(body)).hexdigest()
    except ValueError as e:
        raise DatabaseCorruptError(path, f"invalid content ({e})") from None
    if digest != m.get("manifest_sha256"):
        raise DatabaseCorruptError(path, "checksum mismatch (file altered or corrupted)")
    try:
        if m["metric"] != METRIC:
            raise DatabaseCorruptError(path, f"unknown metric {m['metric']!r}")
        dim = int(m["dim"])
        _model_of(m)
        for s in m["segments"]:
            if not isinstance(s["name"], str) or "/" in s["name"] or s["name"] in ("", ".", ".."):
                raise DatabaseCorruptError(path, f"bad segment name {s['name']!r}")
            int(s["count"])
            for f in SEGMENT_FILES:
                int(s["files"][f]["bytes"])
                str(s["files"][f]["sha256"])
            if "rerank" in s:
                float(s["rerank"]["voxel"])
                for f in RERANK_FILES:
                    int(s["files"][f]["bytes"])
                    str(s["files"][f]["sha256"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, DatabaseCorruptError):
            raise
        raise DatabaseCorruptError(path, f"malformed schema ({type(e).__name__}: {e})") from None
    if dim < 1 or int(m["count"]) != sum(int(s["count"]) for s in m["segments"]):
        raise DatabaseCorruptError(path, "inconsistent dim or count")
    return m


def _model_of(m: dict[str, Any]) -> ModelInfo:
    d = m["model"]
    scale = d["data_scale"]
    return ModelInfo(
        str(d["name"]),
        # "weights_sha256": the same digest, as databases written before this name called it
        str(d["tensors_sha256"] if "tensors_sha256" in d else d["weights_sha256"]),
        str(d["spec"]),
        None if scale is None else float(scale),
    )


# ---------------------------------------------------------------------------- the database
class PlaceDatabase:
    """Descriptors (N, D) float32 unit rows and the metadata of N places, persisted in a folder.

    Open with :meth:`open`, create with :meth:`create`; :meth:`add` appends atomically;
    :meth:`search` answers top-k queries (index built on first use, module doc of
    :mod:`hotformerloc.index.search`). Row ``i`` is entry ``i`` (insertion order).
    """

    def __init__(
        self, root: Path, manifest: dict[str, Any], cols: _Columns, index: str, backend: str
    ) -> None:
        self.root = root
        self._manifest = manifest
        self._cols = cols
        self._row_of = {k: i for i, k in enumerate(cols.ids.tolist())}
        if len(self._row_of) != len(cols.ids):
            raise DatabaseCorruptError(root / MANIFEST, "duplicate entry ids across segments")
        self.index_kind = index
        self.backend = backend
        self._index: SearchIndex | None = None
        self._rerank: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        path: str | Path,
        dim: int,
        model: ModelInfo,
        descriptors: np.ndarray | None = None,
        entries: Sequence[Entry] = (),
        index: str = "auto",
        backend: str = "auto",
        rerank: RerankPoints | None = None,
    ) -> PlaceDatabase:
        """Create a database at ``path`` (optionally with initial entries and their
        re-ranking clouds ``rerank``), atomically: it is assembled in a temporary folder
        beside ``path`` and renamed into place.

        Raises:
            DatabaseExistsError: ``path`` exists (a database is never overwritten).
            DatabaseInputError: bad descriptors or entries (shape, non-unit norm, duplicate
                id, unknown source, non-rigid pose, ...).
        """
        root = Path(path)
        if root.exists() or root.is_symlink():
            raise DatabaseExistsError(f"{root}: already exists (refusing to overwrite it)")
        if not isinstance(dim, int) or dim < 1:
            raise DatabaseInputError(f"dim must be a positive integer, got {dim!r}")
        d = np.zeros((0, dim), np.float32) if descriptors is None else descriptors
        desc = _check_entries(d, entries, dim, set())
        cols = _Columns.of(desc, entries, dim)
        parent = root.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{root.name}.tmp-{secrets.token_hex(6)}"
        tmp.mkdir()
        try:
            (tmp / SEGMENTS).mkdir()
            (tmp / LOCK).touch()
            segments = (
                [_write_segment(tmp / SEGMENTS / "000001", cols, rerank)] if len(entries) else []
            )
            _fsync_dir(tmp / SEGMENTS)
            created = _now()
            manifest = _manifest(dim, model, segments, cols.descriptors, 1, created)
            _write_manifest(tmp, manifest)
            if root.exists():
                raise DatabaseExistsError(f"{root}: already exists (refusing to overwrite it)")
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(parent)
        return cls(root, manifest, cols, index, backend)

    @classmethod
    def open(
        cls,
        path: str | Path,
        model: ModelInfo | None = None,
        verify: bool = True,
        index: str = "auto",
        backend: str = "auto",
    ) -> PlaceDatabase:
        """Open the database at ``path``.

        Args:
            model: when given, the database must have been built with the same model
                (name, weights checksum and data scale).
            verify: check every file's SHA-256 (sizes, shapes and the manifest's own
                checksum are always checked).
            index, backend: search settings (:class:`~hotformerloc.index.search.SearchIndex`).

        Raises:
            DatabaseError: no database at ``path``.
            DatabaseCorruptError: a missing, truncated, altered or malformed file (named), a
                wrong format version, or a descriptor checksum mismatch.
            ModelMismatchError: ``model`` differs from the one the database was built with.
        """
        root = Path(path)
        m = _read_manifest(root)
        if model is not None:
            check_model(root, _model_of(m), model)
        dim = int(m["dim"])
        cols = _Columns.concat([_read_segment(root, s, dim, verify) for s in m["segments"]], dim)
        if verify and _sha256_array(cols.descriptors) != m["descriptors_sha256"]:
            raise DatabaseCorruptError(root / MANIFEST, "descriptor checksum mismatch")
        return cls(root, m, cols, index, backend)

    # -------------------------------------------------------------- properties
    @property
    def schema(self) -> Schema:
        m = self._manifest
        return Schema(
            format_version=int(m["format_version"]),
            dim=int(m["dim"]),
            metric=str(m["metric"]),
            model=_model_of(m),
            count=int(m["count"]),
            descriptors_sha256=str(m["descriptors_sha256"]),
            generation=int(m["generation"]),
            created=str(m["created"]),
            updated=str(m["updated"]),
        )

    @property
    def model(self) -> ModelInfo:
        return _model_of(self._manifest)

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def descriptors(self) -> np.ndarray:
        """(N, D) float32, read-only view."""
        v = self._cols.descriptors.view()
        v.flags.writeable = False
        return v

    @property
    def ids(self) -> list[str]:
        return self._cols.ids.tolist()

    @property
    def sources(self) -> np.ndarray:
        return self._cols.sources.copy()

    @property
    def worlds(self) -> np.ndarray:
        return self._cols.worlds.copy()

    @property
    def sequences(self) -> np.ndarray:
        return self._cols.sequences.copy()

    @property
    def positions(self) -> np.ndarray:
        """(N, 2) float64 map xy of each pose translation; NaN where the pose is unknown."""
        return self._cols.poses[:, :2, 3].copy()

    def __len__(self) -> int:
        return len(self._cols.ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._row_of

    def row(self, entry_id: str) -> int:
        """Row of ``entry_id``; KeyError when absent."""
        return self._row_of[entry_id]

    def entry(self, i: int) -> Entry:
        """Metadata of row ``i`` (0 <= i < N)."""
        c = self._cols
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range [0, {len(self)})")
        pose = c.poses[i]
        ts = float(c.timestamps[i])
        return Entry(
            id=str(c.ids[i]),
            source=str(c.sources[i]),
            world=str(c.worlds[i]),
            sequence=str(c.sequences[i]),
            timestamp=None if math.isnan(ts) else ts,
            pose=None if np.isnan(pose).any() else pose.copy(),
            path=c.paths[i],
        )

    def rerank_points(self, i: int, voxel: float) -> np.ndarray | None:
        """Entry ``i``'s stored re-ranking cloud ((M, 3) float64, :class:`RerankPoints`)
        when its segment holds one downsampled with ``voxel``; None otherwise (older
        databases, another voxel, or none stored for it: use the entry's file).

        Raises:
            DatabaseCorruptError: the segment's re-ranking files are malformed.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range [0, {len(self)})")
        start = 0
        for seg in self._manifest["segments"]:
            n = int(seg["count"])
            if i < start + n:
                break
            start += n
        info = seg.get("rerank")
        if info is None or float(info["voxel"]) != float(voxel):
            return None
        points, offsets = self._rerank_segment(str(seg["name"]), n)
        a, b = int(offsets[i - start]), int(offsets[i - start + 1])
        return np.asarray(points[a:b], np.float64) if b > a else None

    def _rerank_segment(self, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (P, 3) <f4 memory-mapped, offsets (n + 1,)) of segment ``name``."""
        hit = self._rerank.get(name)
        if hit is not None:
            return hit
        folder = self.root / SEGMENTS / name
        try:
            points = np.load(folder / RERANK_FILES[0], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DatabaseCorruptError(folder / RERANK_FILES[0], f"not readable ({e})") from None
        if points.ndim != 2 or points.shape[1:] != (3,) or points.dtype != np.dtype("<f4"):
            raise DatabaseCorruptError(
                folder / RERANK_FILES[0],
                f"expected <f4 (P, 3), found {points.dtype} {points.shape}",
            )
        offsets = _load_npy(folder / RERANK_FILES[1], (n + 1,), "<i8")
        if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(points):
            raise DatabaseCorruptError(folder / RERANK_FILES[1], "offsets do not index the points")
        self._rerank[name] = (points, offsets)
        return points, offsets

    def entries(self) -> Iterable[Entry]:
        return (self.entry(i) for i in range(len(self)))

    def counts(self) -> dict[str, dict[str, int]]:
        """Entry counts by ``source`` and by ``world/sequence``."""

        def tally(keys: Iterable[str]) -> dict[str, int]:
            vals, n = np.unique(np.array(list(keys), dtype=str), return_counts=True)
            return {str(v): int(c) for v, c in zip(vals, n, strict=True)}

        c = self._cols
        return {
            "source": tally(c.sources.tolist()),
            "sequence": tally(
                f"{w}/{s}" if w else s
                for w, s in zip(c.worlds.tolist(), c.sequences.tolist(), strict=True)
            ),
        }

    # -------------------------------------------------------------- checks
    def check_model(self, model: ModelInfo) -> None:
        """Raise :class:`ModelMismatchError` unless ``model`` is the database's model."""
        check_model(self.root, self.model, model)

    def verify(self) -> None:
        """Re-read and check every file (sizes, SHA-256, shapes) and the descriptor checksum.

        Raises:
            DatabaseCorruptError: naming the first bad file.
        """
        PlaceDatabase.open(self.root, verify=True)

    # -------------------------------------------------------------- append
    def add(
        self,
        descriptors: np.ndarray,
        entries: Sequence[Entry],
        rerank: RerankPoints | None = None,
    ) -> None:
        """Append ``entries`` with their (n, D) unit ``descriptors`` (and their re-ranking
        clouds ``rerank``), crash-safely (module doc); a no-op for n = 0. Another
        process's append since this one was opened is kept (the manifest is re-read under
        the lock).

        Raises:
            DatabaseInputError: bad descriptors or entries, or an id already present.
            DatabaseLockedError: another process is appending.
            DatabaseCorruptError: the database changed on disk into something unreadable.
        """
        if len(entries) == 0 and np.asarray(descriptors).size == 0:
            return
        with _write_lock(self.root):
            m = _read_manifest(self.root)
            if m["generation"] != self._manifest["generation"]:
                fresh = PlaceDatabase.open(self.root, verify=True)
                self._manifest, self._cols = fresh._manifest, fresh._cols
                self._row_of = fresh._row_of
            desc = _check_entries(descriptors, entries, self.dim, set(self._row_of))
            new = _Columns.of(desc, entries, self.dim)
            self._clean(m)
            _fault_point("cleaned")
            generation = int(m["generation"]) + 1
            record = _write_segment(self.root / SEGMENTS / f"{generation:06d}", new, rerank)
            _fsync_dir(self.root / SEGMENTS)
            cols = _Columns.concat([self._cols, new], self.dim)
            manifest = _manifest(
                self.dim,
                self.model,
                [*m["segments"], record],
                cols.descriptors,
                generation,
                m["created"],
            )
            _write_manifest(self.root, manifest)
            _fault_point("committed")
        base = len(self._cols.ids)
        self._manifest, self._cols = manifest, cols
        self._row_of.update((e.id, base + i) for i, e in enumerate(entries))
        self._index = None

    def _clean(self, manifest: dict[str, Any]) -> None:
        """Remove what an interrupted append left: unlisted segments and temporary files."""
        listed = {s["name"] for s in manifest["segments"]}
        seg_root = self.root / SEGMENTS
        for p in seg_root.iterdir():
            if p.name not in listed:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        for p in self.root.glob(f"{MANIFEST}.tmp-*"):
            p.unlink()

    # -------------------------------------------------------------- search
    def search(
        self, queries: np.ndarray, k: int = 5, where: SearchFilter | None = None
    ) -> SearchResult:
        """Top-``k`` entries for each query descriptor ((Q, D) or (D,) unit float), among the
        entries passing ``where`` (the true top-k of those, not top-k then filter).

        Raises:
            SearchError: bad queries, ``k`` or filter, or an index kind needing FAISS.
        """
        index = self.search_index()
        allowed = None
        if where is not None and not where.is_empty():
            c = self._cols
            allowed = where.mask(c.sources, c.worlds, c.sequences, c.poses[:, :2, 3])
        return index.search(queries, k, allowed)

    def search_index(self) -> SearchIndex:
        """The search structure, built on first use (and again after an append)."""
        if self._index is None:
            self._index = SearchIndex(self._cols.descriptors, self.index_kind, self.backend)
        return self._index


def check_model(root: Path, built: ModelInfo, given: ModelInfo) -> None:
    """Raise :class:`ModelMismatchError` (naming the database) unless ``given`` is ``built``."""
    if not built.same_model(given):
        raise ModelMismatchError(
            f"{root}: built with model {built.name} (weights {built.tensors_sha256[:12]}, "
            f"data scale {built.data_scale}), not {given.name} (weights "
            f"{given.tensors_sha256[:12]}, data scale {given.data_scale})"
        )
