"""From point-cloud files to a place database, and from a scan to ranked places.

* :func:`load_embedder` loads a model (registered name or checkpoint) with its data scale;
  :meth:`Embedder.embed` runs the model's own input pipeline (``HOTFormerLoc.embed``).
* :func:`scan_places` lists the places of a benchmark folder or of a plain folder of clouds;
  :func:`build_database` / :func:`add_places` embed them into a :class:`PlaceDatabase`.
* :class:`Localizer` answers "where was this scan taken": embed, search top-k, optionally
  re-rank by geometric verification (:mod:`hotformerloc.index.rerank`), returning
  :class:`QueryResult` / :class:`Candidate`.

torch is imported on first use, so importing this module stays light.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hotformerloc.index.database import (
    DatabaseError,
    DatabaseInputError,
    Entry,
    ModelInfo,
    PlaceDatabase,
)
from hotformerloc.index.search import SearchFilter
from hotformerloc.io import FORMATS, LayoutFileError, read_pointcloud
from hotformerloc.io.pointcloud import SOURCES
from hotformerloc.io.poses import POSES_FILE
from hotformerloc.io.poses import read_poses_csv as read_pose_table
from hotformerloc.io.splits import SPLIT_FILE

if TYPE_CHECKING:
    from hotformerloc.index.rerank import RerankConfig, Verification

#: Seed of the weights of an untrained registered model (reproducible across processes).
UNTRAINED_SEED = 0

Progress = Callable[[int, int], None]


class DataFolderError(DatabaseError):
    """A folder given to index is missing or malformed (named, with the file and line)."""


class QueryError(DatabaseError):
    """A query cannot be answered (e.g. a candidate without a cloud file to re-rank with)."""


# ---------------------------------------------------------------------------- the model
class Embedder:
    """A model in eval mode with its identity (:class:`ModelInfo`; ``file_sha256``: the
    SHA-256 of the checkpoint file it was loaded from, None for untrained weights); the
    model's config says how clouds are prepared (input scale, normalisation, coordinates).
    The one way clouds are embedded outside training and benchmark evaluation (``embed``,
    ``db build``/``add``, ``query``)."""

    def __init__(
        self, model: Any, info: ModelInfo, device: str = "cpu", file_sha256: str | None = None
    ) -> None:
        from hotformerloc.model import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        self.file_sha256 = file_sha256

    @property
    def dim(self) -> int:
        return int(self.model.config.output_dim)

    def embed(self, clouds: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        """(B, D) float32 unit descriptors of metric clouds ((M_b, 3) float, own frames).

        Raises:
            OctreeInputError: a cloud is empty, non-finite or malformed (named by ``names``).
        """
        import torch
        import torch.nn.functional as F

        from hotformerloc.model import prepare_points
        from hotformerloc.octree import OctreeInputError

        tensors = []
        for i, c in enumerate(clouds):
            name = names[i] if names is not None else f"clouds[{i}]"
            a = np.asarray(c)
            if a.ndim != 2 or a.shape[1:] != (3,) or not np.issubdtype(a.dtype, np.floating):
                raise OctreeInputError(
                    name, f"expected (N, 3) float points, got {a.dtype} {a.shape}"
                )
            t = torch.from_numpy(np.ascontiguousarray(a, np.float32))
            prepare_points(t, self.model.config, name)  # raises naming this cloud
            tensors.append(t.to(self.device))
        if not tensors:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            out = self.model.embed(tensors)
        return F.normalize(out.float(), dim=1).cpu().numpy()


def load_embedder(spec: str | Path, device: str = "cpu") -> Embedder:
    """The model ``spec`` (registered name: untrained weights from seed
    :data:`UNTRAINED_SEED`; or checkpoint file) via
    :func:`hotformerloc.model.checkpoint.load_model`, with its :class:`ModelInfo`.

    Raises:
        CheckpointError: neither a registered name nor a valid checkpoint.
    """
    import torch

    from hotformerloc.model.checkpoint import load_model, tensors_digest
    from hotformerloc.model.registry import is_model_name

    registered = is_model_name(str(spec))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        model, ck = load_model(spec)
    info = ModelInfo(
        name=str(spec) if ck is None else ck.model,
        tensors_sha256=tensors_digest(model.state_dict()),
        spec=str(spec) if registered else str(Path(spec).resolve()),
        data_scale=model.config.input_scale,
    )
    return Embedder(model, info, device, None if ck is None else ck.sha256)


# ---------------------------------------------------------------------------- data folders
def _ts_key(ts: float) -> int:
    """Timestamp -> integer microseconds (how poses and files are matched)."""
    return round(ts * 1e6)


def read_poses_csv(path: Path) -> dict[int, np.ndarray]:
    """``timestamp,x,y,z,qx,qy,qz,qw`` rows -> {timestamp in us: (4, 4) float64 pose}
    (:func:`hotformerloc.io.poses.read_poses_csv`; a file without rows gives ``{}``).

    Raises:
        DataFolderError: unreadable file, missing column, bad number, zero quaternion or
            duplicate timestamp (names the file).
    """
    try:
        table = read_pose_table(path, allow_empty=True)
    except LayoutFileError as e:
        raise DataFolderError(str(e)) from None
    poses: dict[int, np.ndarray] = {}
    for ts, pose in zip(table.timestamps.tolist(), table.poses, strict=True):
        key = _ts_key(ts)
        if key in poses:
            raise DataFolderError(f"{path}: duplicate timestamp {ts:.6f}")
        poses[key] = pose
    return poses


def _benchmark_places(root: Path, source: str | None) -> list[Entry]:
    from hotformerloc.data.benchmark import Benchmark

    bench = Benchmark.load(root)
    rows = bench.select(source=source) if source is not None else np.arange(len(bench))
    poses: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    entries = []
    for i in rows.tolist():
        world, seq = str(bench.world[i]), str(bench.sequence[i])
        if (world, seq) not in poses:
            f = root / world / seq / POSES_FILE
            poses[world, seq] = read_poses_csv(f) if f.is_file() else {}
        ts = float(bench.timestamp[i])
        entries.append(
            Entry(
                id=f"{world}/{seq}/{ts:.6f}",
                source=str(bench.source[i]),
                world=world,
                sequence=seq,
                timestamp=ts,
                pose=poses[world, seq].get(_ts_key(ts)),
                path=str(bench.path(i).resolve()),
            )
        )
    return entries


def _folder_places(root: Path, source: str, world: str | None, sequence: str | None) -> list[Entry]:
    extensions = {e for spec in FORMATS.values() for e in spec.extensions}
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise DataFolderError(
            f"{root}: no point-cloud files ({', '.join(sorted(extensions))}) and no benchmark "
            f"world (a subfolder with {SPLIT_FILE})"
        )
    poses_file = root / POSES_FILE
    poses = read_poses_csv(poses_file) if poses_file.is_file() else None
    world = root.resolve().name if world is None else world
    sequence = root.resolve().name if sequence is None else sequence
    entries = []
    for f in files:
        try:
            ts: float | None = float(f.stem)
        except ValueError:
            ts = None
        if ts is not None and not math.isfinite(ts):
            ts = None
        pose = None
        if poses is not None:
            if ts is None or _ts_key(ts) not in poses:
                raise DataFolderError(
                    f"{f}: no pose in {poses_file} (file names must be the timestamps listed there)"
                )
            pose = poses[_ts_key(ts)]
        entries.append(
            Entry(
                id=f"{world}/{sequence}/{f.name}",
                source=source,
                world=world,
                sequence=sequence,
                timestamp=ts,
                pose=pose,
                path=str(f.resolve()),
            )
        )
    return entries


def scan_places(
    data: str | Path,
    source: str | None = None,
    world: str | None = None,
    sequence: str | None = None,
) -> list[Entry]:
    """The places (entries, not yet embedded) of ``data``.

    * a benchmark folder (a subfolder holds a ``split.csv``, :class:`Benchmark` layout): every
      submap, or only those of ``source``; id ``<world>/<sequence>/<timestamp:.6f>``, pose
      from ``<world>/<sequence>/poses.csv`` (unknown when absent);
    * a plain folder of point-cloud files (any extension :func:`read_pointcloud` knows, not
      recursive, sorted by name): source ``source`` (default ``ground``), world and sequence
      ``world``/``sequence`` (default: the folder's name), id ``<world>/<sequence>/<file
      name>``, timestamp from the file name when it is a number; poses from a ``poses.csv``
      beside the files (every file must then be listed by its timestamp), else unknown.

    Raises:
        DataFolderError: missing folder, no clouds, malformed ``poses.csv``.
        DatasetError: a malformed benchmark.
    """
    root = Path(data)
    if source is not None and source not in SOURCES:
        raise DataFolderError(f"source {source!r} is not one of {SOURCES}")
    if not root.is_dir():
        raise DataFolderError(f"{root}: folder does not exist")
    if any((p / SPLIT_FILE).is_file() for p in root.iterdir()):
        return _benchmark_places(root, source)
    return _folder_places(root, source or "ground", world, sequence)


def embed_places(
    embedder: Embedder,
    entries: Sequence[Entry],
    batch: int = 8,
    progress: Progress | None = None,
) -> np.ndarray:
    """(N, D) float32 unit descriptors of the entries' cloud files, ``batch`` at a time.

    Raises:
        PointCloudError: a file is missing or unreadable (named).
        OctreeInputError: a cloud is unusable by the model (named).
    """
    if batch < 1:
        raise DatabaseInputError(f"batch must be >= 1, got {batch}")
    out = [np.zeros((0, embedder.dim), np.float32)]
    for a in range(0, len(entries), batch):
        chunk = entries[a : a + batch]
        paths = [str(e.path) for e in chunk]
        clouds = [read_pointcloud(p).xyz for p in paths]
        out.append(embedder.embed(clouds, paths))
        if progress is not None:
            progress(a + len(chunk), len(entries))
    return np.concatenate(out)


def build_database(
    out: str | Path,
    embedder: Embedder,
    entries: Sequence[Entry],
    batch: int = 8,
    progress: Progress | None = None,
) -> PlaceDatabase:
    """Embed ``entries`` and create a database at ``out`` with them (atomically).

    Raises:
        DatabaseExistsError: ``out`` exists (checked before embedding, and again at the end).
    """
    from hotformerloc.index.database import DatabaseExistsError

    if Path(out).exists():
        raise DatabaseExistsError(f"{out}: already exists (refusing to overwrite it)")
    desc = embed_places(embedder, entries, batch, progress)
    return PlaceDatabase.create(out, embedder.dim, embedder.info, desc, entries)


def add_places(
    db: PlaceDatabase,
    embedder: Embedder,
    entries: Sequence[Entry],
    batch: int = 8,
    progress: Progress | None = None,
) -> int:
    """Embed ``entries`` and append them to ``db``; returns how many were added.

    Raises:
        ModelMismatchError: ``embedder`` is not the database's model.
        DatabaseInputError: an id already in ``db`` (checked before embedding).
    """
    db.check_model(embedder.info)
    taken = [e.id for e in entries if e.id in db]
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise DatabaseInputError(f"{db.root}: entry {taken[0]!r}{more} already in the database")
    desc = embed_places(embedder, entries, batch, progress)
    db.add(desc, entries)
    return len(entries)


def database_embedder(db: PlaceDatabase, model: str | None = None, device: str = "cpu") -> Embedder:
    """The model ``db`` was built with: loaded from its schema's ``spec``, or from ``model``
    (a registered name or checkpoint elsewhere), and checked against the schema.

    Raises:
        DatabaseError: the schema's checkpoint file is gone and no ``model`` was given.
        ModelMismatchError: the loaded model is not the database's.
        CheckpointError: ``model`` is neither a registered name nor a valid checkpoint.
    """
    from hotformerloc.model.registry import is_model_name

    spec = model if model is not None else db.model.spec
    if model is None and not is_model_name(spec) and not Path(spec).exists():
        raise DatabaseError(
            f"{db.root}: its model checkpoint {spec} is missing; give a copy of it "
            "(--model / model=)"
        )
    embedder = load_embedder(spec, device)
    db.check_model(embedder.info)
    return embedder


# ---------------------------------------------------------------------------- queries
def _finite(v: float) -> float | None:
    """``v`` as a float for JSON; NaN and infinities become None."""
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True, eq=False)
class Candidate:
    """A retrieved place.

    ``rank``: 1-based final position; ``distance``: descriptor L2 distance in [0, 2];
    ``metadata``: the database entry; ``verification``: geometric verification when
    re-ranked, else None; ``map_pose``: (4, 4) float64 query frame -> the entry's map frame
    (``entry.pose @ verification.pose``), None without verification or entry pose.
    """

    rank: int
    id: str
    distance: float
    metadata: Entry
    verification: Verification | None = None
    map_pose: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        v = self.verification
        return {
            "rank": self.rank,
            "id": self.id,
            "distance": self.distance,
            **{k: val for k, val in self.metadata.to_dict().items() if k != "id"},
            "verification": None
            if v is None
            else {
                "fitness": _finite(v.fitness),
                "rmse": _finite(v.rmse),
                "yaw_deg": _finite(v.yaw_deg),
                "converged": bool(v.converged),
                "pose": np.asarray(v.pose).tolist(),
            },
            "map_pose": None if self.map_pose is None else self.map_pose.tolist(),
        }


@dataclass(frozen=True)
class Timings:
    """Seconds spent reading the scan, embedding it, searching, re-ranking (0 when skipped)."""

    read_s: float = 0.0
    embed_s: float = 0.0
    search_s: float = 0.0
    rerank_s: float = 0.0


@dataclass(frozen=True)
class QueryResult:
    """The candidates of one query scan, best first, and where the time went."""

    query: str
    candidates: tuple[Candidate, ...]
    timings: Timings

    def to_dict(self) -> dict[str, Any]:
        t = self.timings
        return {
            "query": self.query,
            "candidates": [c.to_dict() for c in self.candidates],
            "timings": {
                "read_s": t.read_s,
                "embed_s": t.embed_s,
                "search_s": t.search_s,
                "rerank_s": t.rerank_s,
            },
        }


def _turn(cloud: np.ndarray, degrees: float) -> np.ndarray:
    """``cloud`` turned counter-clockwise about z (itself for 0)."""
    if degrees == 0:
        return cloud
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return cloud @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32).T


class Localizer:
    """Answers queries against a database with the database's own model.

    Args:
        db: the database.
        embedder: its model (checked: :class:`ModelMismatchError` otherwise).
        rerank_config: verification settings for ``rerank=True`` (default ``RerankConfig()``).
    """

    def __init__(
        self, db: PlaceDatabase, embedder: Embedder, rerank_config: RerankConfig | None = None
    ) -> None:
        db.check_model(embedder.info)
        self.db = db
        self.embedder = embedder
        self.rerank_config = rerank_config

    @classmethod
    def open(
        cls,
        path: str | Path,
        model: str | None = None,
        device: str = "cpu",
        index: str = "auto",
        backend: str = "auto",
    ) -> Localizer:
        """Open the database at ``path`` and load its model (from its schema, or ``model``:
        a registered name or checkpoint, which must be the same model).

        Raises:
            DatabaseError: as :meth:`PlaceDatabase.open`; the schema's checkpoint is gone.
            ModelMismatchError: ``model`` is another model.
        """
        db = PlaceDatabase.open(path, index=index, backend=backend)
        loc = cls(db, database_embedder(db, model, device))
        db.search_index()  # built here, so query timings measure the search alone
        return loc

    def query_file(
        self,
        path: str | Path,
        k: int = 5,
        where: SearchFilter | None = None,
        rerank: bool = False,
    ) -> QueryResult:
        """:meth:`query` on a point-cloud file (any format :func:`read_pointcloud` knows).

        Raises:
            PointCloudError: the file is missing or unreadable.
        """
        t0 = time.perf_counter()
        xyz = read_pointcloud(path).xyz
        res = self.query(xyz, str(path), k, where, rerank)
        t = res.timings
        read_s = time.perf_counter() - t0 - t.embed_s - t.search_s - t.rerank_s
        return QueryResult(
            res.query,
            res.candidates,
            Timings(read_s, t.embed_s, t.search_s, t.rerank_s),
        )

    def query(
        self,
        cloud: np.ndarray,
        name: str = "query",
        k: int = 5,
        where: SearchFilter | None = None,
        rerank: bool = False,
    ) -> QueryResult:
        """Top-``k`` places for a metric scan ((N, 3) float, its own frame), among the
        entries passing ``where`` (a model with ``config.query_views`` V > 1 searches the
        scan turned to V yaw angles and keeps each entry's smallest distance); with
        ``rerank`` the k candidates are verified against their submap files and reordered
        by fitness (stable: ties keep descriptor order).

        Raises:
            OctreeInputError: the scan is empty, non-finite or malformed.
            QueryError: re-ranking a candidate without a readable cloud file, or a cloud
                the verification rejects (named).
        """
        t0 = time.perf_counter()
        views = int(self.embedder.model.config.query_views)
        turned = [_turn(np.asarray(cloud), 360.0 * v / views) for v in range(views)]
        desc = self.embedder.embed(turned, [name] * views)
        t1 = time.perf_counter()
        found = self.db.search(desc, k, where)
        t2 = time.perf_counter()
        best: dict[int, float] = {}
        for i, d in zip(found.indices.ravel(), found.distances.ravel(), strict=True):
            if i >= 0 and d < best.get(int(i), math.inf):
                best[int(i)] = float(d)
        hits = sorted(best.items(), key=lambda h: (h[1], h[0]))[:k]
        entries = [self.db.entry(i) for i, _ in hits]
        verifications: list[Verification | None] = [None] * len(hits)
        order = list(range(len(hits)))
        if rerank and hits:
            verified = list(self._verify(np.asarray(cloud), name, entries))
            order = sorted(order, key=lambda j: -verified[j].fitness)
            verifications = list(verified)
        t3 = time.perf_counter()
        candidates = []
        for rank, j in enumerate(order, start=1):
            v, e = verifications[j], entries[j]
            map_pose = None if v is None or e.pose is None else e.pose @ np.asarray(v.pose)
            candidates.append(Candidate(rank, e.id, hits[j][1], e, v, map_pose))
        return QueryResult(
            name, tuple(candidates), Timings(0.0, t1 - t0, t2 - t1, t3 - t2 if rerank else 0.0)
        )

    def _verify(self, cloud: np.ndarray, name: str, entries: list[Entry]) -> list[Verification]:
        from hotformerloc.index.rerank import RerankConfig, verify
        from hotformerloc.io import PointCloudError

        config = self.rerank_config or RerankConfig()
        out = []
        for e in entries:
            if e.path is None:
                raise QueryError(f"candidate {e.id!r} has no cloud file: cannot re-rank")
            try:
                candidate = read_pointcloud(e.path).xyz
            except PointCloudError as err:
                raise QueryError(f"candidate {e.id!r}: {err}") from None
            try:
                out.append(verify(cloud, candidate, config))
            except ValueError as err:
                raise QueryError(f"re-ranking {name} against {e.id!r} ({e.path}): {err}") from None
        return out
