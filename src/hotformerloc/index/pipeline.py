"""From point-cloud files to a place database, and from a scan to ranked places.

* :func:`load_embedder` loads a model (registered name or checkpoint) with its data scale;
  :meth:`Embedder.embed` runs the model's own input pipeline (``HOTFormerLoc.embed``);
  :func:`embed_files` / :func:`embed_places` embed files in batches, optionally with loader
  worker processes reading and building octrees while the forward pass runs.
* :func:`scan_places` lists the places of a benchmark folder or of a plain folder of clouds;
  :func:`build_database` / :func:`add_places` embed them into a :class:`PlaceDatabase`.
* :class:`Localizer` answers "where was this scan taken": embed, search top-k, optionally
  re-rank by geometric verification (:mod:`hotformerloc.index.rerank`), returning
  :class:`QueryResult` / :class:`Candidate`.

torch is imported on first use, so importing this module stays light.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hotformerloc.errors import HotformerlocError
from hotformerloc.index.database import (
    DatabaseError,
    DatabaseInputError,
    Entry,
    ModelInfo,
    PlaceDatabase,
    RerankPoints,
)
from hotformerloc.index.search import SearchFilter
from hotformerloc.io import FORMATS, LayoutFileError, read_pointcloud
from hotformerloc.io.pointcloud import SOURCES
from hotformerloc.io.poses import POSES_FILE
from hotformerloc.io.poses import read_poses_csv as read_pose_table
from hotformerloc.io.splits import SPLIT_FILE

if TYPE_CHECKING:
    from hotformerloc.index.rerank import PreparedCloud, RerankConfig, Verification
    from hotformerloc.octree import Octree

#: Seed of the weights of an untrained registered model (reproducible across processes).
UNTRAINED_SEED = 0

Progress = Callable[[int, int], None]


class DataFolderError(DatabaseError):
    """A folder given to index is missing or malformed (named, with the file and line)."""


class QueryError(DatabaseError):
    """A query cannot be answered (e.g. a candidate without a cloud file to re-rank with)."""


# ---------------------------------------------------------------------------- the model
def _batch_octree(
    clouds: Sequence[np.ndarray], names: Sequence[str], config: Any, device: Any = "cpu"
) -> Octree:
    """The model's input octree of a batch of metric clouds ((M_b, 3) float, own frames):
    :func:`hotformerloc.model.build_input_octree` after checking that each is an (N, 3)
    float array. Needs no model, so loader workers can run it.

    Raises:
        OctreeInputError: a cloud is empty, non-finite or malformed (named).
    """
    import torch

    from hotformerloc.model import build_input_octree
    from hotformerloc.octree import OctreeInputError

    tensors = []
    for c, name in zip(clouds, names, strict=True):
        a = np.asarray(c)
        if a.ndim != 2 or a.shape[1:] != (3,) or not np.issubdtype(a.dtype, np.floating):
            raise OctreeInputError(name, f"expected (N, 3) float points, got {a.dtype} {a.shape}")
        tensors.append(torch.from_numpy(np.ascontiguousarray(a, np.float32)))
    return build_input_octree(tensors, config, device, names)


class Embedder:
    """A model in eval mode with its identity (:class:`ModelInfo`; ``file_sha256``: the
    SHA-256 of the checkpoint file it was loaded from, None for untrained weights); the
    model's config says how clouds are prepared (input scale, normalisation, coordinates).
    The one way clouds are embedded outside training and benchmark evaluation (``embed``,
    ``db build``/``add``, ``query``)."""

    def __init__(
        self,
        model: Any,
        info: ModelInfo,
        device: str = "cpu",
        file_sha256: str | None = None,
        precision: str = "fp32",
    ) -> None:
        from hotformerloc.model import resolve_device
        from hotformerloc.model.precision import PrecisionWarning, resolve_precision

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        self.file_sha256 = file_sha256
        #: The precision used (:class:`~hotformerloc.model.precision.PrecisionChoice`);
        #: its ``note`` says why a bf16 request runs in fp32. bf16 is checked on the first
        #: batch: below ``MIN_BF16_COSINE`` to fp32 the embedder falls back to fp32.
        self.precision = resolve_precision(precision, self.device)
        self._checked = self.precision.name == "fp32"
        if self.precision.note:
            warnings.warn(self.precision.note, PrecisionWarning, stacklevel=2)

    @property
    def dim(self) -> int:
        return int(self.model.config.output_dim)

    def embed(self, clouds: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        """(B, D) float32 unit descriptors of metric clouds ((M_b, 3) float, own frames);
        equal to ``HOTFormerLoc.embed`` (L2-normalised).

        Raises:
            OctreeInputError: a cloud is empty, non-finite or malformed (named by ``names``).
        """
        if len(clouds) == 0:
            return np.zeros((0, self.dim), np.float32)
        names = names if names is not None else [f"clouds[{i}]" for i in range(len(clouds))]
        return self.embed_octree(_batch_octree(clouds, names, self.model.config, self.device))

    def embed_octree(self, octree: Octree) -> np.ndarray:
        """(B, D) float32 unit descriptors of the B clouds of an input octree built for this
        model (``_batch_octree`` with its config; moved to the model's device if needed)."""
        import torch
        import torch.nn.functional as F

        from hotformerloc.model.precision import (
            MIN_BF16_COSINE,
            PrecisionChoice,
            PrecisionWarning,
            autocast,
            bf16_cosine,
        )

        if octree.device != self.device:
            octree = octree.to(self.device)
        if not self._checked:
            self._checked = True
            cosine = bf16_cosine(self.model, octree)
            if cosine < MIN_BF16_COSINE:
                note = (
                    f"bf16 descriptors reach cosine {cosine:.5f} to fp32 "
                    f"(< {MIN_BF16_COSINE}): running in fp32"
                )
                self.precision = PrecisionChoice(torch.float32, "bf16", note)
                warnings.warn(note, PrecisionWarning, stacklevel=2)
        with torch.inference_mode(), autocast(self.precision.dtype, self.device):
            out = self.model(octree)
        return F.normalize(out.float(), dim=1).cpu().numpy()


def load_embedder(spec: str | Path, device: str = "cpu", precision: str = "fp32") -> Embedder:
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
    return Embedder(model, info, device, None if ck is None else ck.sha256, precision)


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


def _folder_places(
    root: Path,
    source: str,
    world: str | None,
    sequence: str | None,
    poses_file: Path | None = None,
) -> list[Entry]:
    extensions = {e for spec in FORMATS.values() for e in spec.extensions}
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise DataFolderError(
            f"{root}: no point-cloud files ({', '.join(sorted(extensions))}) and no benchmark "
            f"world (a subfolder with {SPLIT_FILE})"
        )
    poses_file = root / POSES_FILE if poses_file is None else poses_file
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


#: Batches each loader worker prepares ahead of the forward pass (:func:`embed_files`).
PREFETCH = 2
#: Loader workers of ``db build``/``add`` and ``embed`` without ``--workers``: none (on 2
#: CPUs the forward pass keeps both busy and workers measured no faster; docs/database.md
#: "Build throughput").
EMBED_WORKERS = 0


class _PlaceBatches:
    """Batch ``i`` of ``paths`` (``batch`` files, read as ``fmt``, None: by extension) ->
    its input octree (``_batch_octree`` on ``device``), or the named error reading or
    preparing it raised: a worker returns the error, so that the caller re-raises that very
    error, not the loader's wrapper. Picklable (a DataLoader dataset)."""

    def __init__(
        self, paths: Sequence[str], batch: int, config: Any, device: Any, fmt: str | None
    ) -> None:
        self.paths = list(paths)
        self.batch = batch
        self.config = config
        self.device = device
        self.fmt = fmt

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch)

    def __getitem__(self, i: int) -> Octree | HotformerlocError:
        from hotformerloc.io import PointCloudError
        from hotformerloc.octree import OctreeInputError

        paths = self.paths[i * self.batch : (i + 1) * self.batch]
        try:
            clouds = [read_pointcloud(p, self.fmt).xyz for p in paths]
            return _batch_octree(clouds, paths, self.config, self.device)
        except (PointCloudError, OctreeInputError) as e:
            return e


def _keep(item: Any) -> Any:
    """The loader's collate function: the dataset item as it is."""
    return item


def _worker_init(_: int) -> None:
    """One torch thread per loader worker (the forward pass owns the other threads)."""
    import torch

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(1)


def _octrees(
    batches: _PlaceBatches, workers: int
) -> Generator[Octree | HotformerlocError, None, None]:
    """The items of ``batches`` in order: in-process (``workers`` 0) or from a DataLoader
    of ``workers`` processes, each ``PREFETCH`` batches ahead."""
    if workers == 0 or len(batches) == 0:
        yield from (batches[i] for i in range(len(batches)))
        return
    from torch.utils.data import DataLoader

    loader: DataLoader[Octree | HotformerlocError] = DataLoader(
        batches,  # type: ignore[arg-type]  # torch stubs: a Dataset subclass
        batch_size=None,
        collate_fn=_keep,
        num_workers=min(workers, len(batches)),
        prefetch_factor=PREFETCH,
        persistent_workers=False,
        worker_init_fn=_worker_init,
    )
    yield from loader


def embed_files(
    embedder: Embedder,
    paths: Sequence[str | Path],
    batch: int = 8,
    progress: Progress | None = None,
    workers: int = 0,
    fmt: str | None = None,
) -> np.ndarray:
    """(N, D) float32 unit descriptors of point-cloud files (read as ``fmt``; None: by
    extension), ``batch`` clouds per forward pass; ``progress(done, N)`` after each.

    ``workers`` 0 reads and prepares each batch in this process; N > 0 processes read the
    files, prepare the clouds and build the batches' octrees (on the CPU, one torch thread
    each) while this process runs the forward pass. The descriptors are the same either
    way (and equal to :meth:`Embedder.embed` on the same batches).

    Raises:
        DatabaseInputError: ``batch`` < 1 or ``workers`` < 0.
        PointCloudError: a file is missing or unreadable (named).
        OctreeInputError: a cloud is unusable by the model (named).
    """
    if batch < 1:
        raise DatabaseInputError(f"batch must be >= 1, got {batch}")
    if workers < 0:
        raise DatabaseInputError(f"workers must be >= 0, got {workers}")
    names = [str(p) for p in paths]
    device = embedder.device if workers == 0 else "cpu"
    batches = _PlaceBatches(names, batch, embedder.model.config, device, fmt)
    out = [np.zeros((0, embedder.dim), np.float32)]
    done = 0
    items = _octrees(batches, workers)
    try:
        for item in items:
            if isinstance(item, HotformerlocError):
                raise item
            out.append(embedder.embed_octree(item))
            done += item.batch_size
            if progress is not None:
                progress(done, len(names))
    finally:
        items.close()  # shuts the workers down now, also on an error
    return np.concatenate(out)


def embed_places(
    embedder: Embedder,
    entries: Sequence[Entry],
    batch: int = 8,
    progress: Progress | None = None,
    workers: int = 0,
) -> np.ndarray:
    """(N, D) float32 unit descriptors of the entries' cloud files: :func:`embed_files`
    with ``batch`` and ``workers`` (same errors)."""
    return embed_files(embedder, [str(e.path) for e in entries], batch, progress, workers)


def build_database(
    out: str | Path,
    embedder: Embedder,
    entries: Sequence[Entry],
    batch: int = 8,
    progress: Progress | None = None,
    workers: int = 0,
    rerank_data: bool = True,
) -> PlaceDatabase:
    """Embed ``entries`` (:func:`embed_places`: ``batch`` clouds per forward pass, ``workers``
    loader processes) and create a database at ``out`` with them (atomically); with
    ``rerank_data`` their re-ranking clouds are stored too (:func:`rerank_points`).

    Raises:
        DatabaseExistsError: ``out`` exists (checked before embedding, and again at the end).
    """
    from hotformerloc.index.database import DatabaseExistsError

    if Path(out).exists():
        raise DatabaseExistsError(f"{out}: already exists (refusing to overwrite it)")
    desc = embed_places(embedder, entries, batch, progress, workers)
    pts = rerank_points(entries) if rerank_data else None
    return PlaceDatabase.create(out, embedder.dim, embedder.info, desc, entries, rerank=pts)


def add_places(
    db: PlaceDatabase,
    embedder: Embedder,
    entries: Sequence[Entry],
    batch: int = 8,
    progress: Progress | None = None,
    workers: int = 0,
    rerank_data: bool = True,
) -> int:
    """Embed ``entries`` (:func:`embed_places` with ``batch`` and ``workers``) and append
    them to ``db`` (with their re-ranking clouds when ``rerank_data``, as
    :func:`build_database`); returns how many were added.

    Raises:
        ModelMismatchError: ``embedder`` is not the database's model.
        DatabaseInputError: an id already in ``db`` (checked before embedding).
    """
    db.check_model(embedder.info)
    taken = [e.id for e in entries if e.id in db]
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise DatabaseInputError(f"{db.root}: entry {taken[0]!r}{more} already in the database")
    desc = embed_places(embedder, entries, batch, progress, workers)
    db.add(desc, entries, rerank_points(entries) if rerank_data else None)
    return len(entries)


def rerank_points(entries: Sequence[Entry], config: RerankConfig | None = None) -> RerankPoints:
    """The entries' clouds downsampled for re-ranking (``hotformerloc.index.rerank.
    downsample`` with ``config``, default ``RerankConfig()``), to store with them; None for
    an entry without a file or whose cloud re-ranking rejects (its file is then used, and
    the error reported, at query time).

    Raises:
        PointCloudError: a file is unreadable.
    """
    from hotformerloc.index.rerank import RerankConfig, RerankInputError, downsample

    cfg = config or RerankConfig()
    points: list[np.ndarray | None] = []
    for e in entries:
        p = None
        if e.path is not None:
            try:
                p = downsample(read_pointcloud(e.path).xyz, cfg, e.id)
            except RerankInputError:
                p = None
        points.append(p)
    return RerankPoints(cfg.voxel, points)


def database_embedder(
    db: PlaceDatabase, model: str | None = None, device: str = "cpu", precision: str = "fp32"
) -> Embedder:
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
    embedder = load_embedder(spec, device, precision)
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

    Re-ranking keeps the prepared clouds of the last :attr:`cache_size` candidates, so
    repeated queries of one process reuse their search state.
    """

    cache_size = 256

    def __init__(
        self, db: PlaceDatabase, embedder: Embedder, rerank_config: RerankConfig | None = None
    ) -> None:
        db.check_model(embedder.info)
        self.db = db
        self.embedder = embedder
        self.rerank_config = rerank_config
        self._prepared: OrderedDict[tuple[int, RerankConfig], PreparedCloud] = OrderedDict()

    @classmethod
    def open(
        cls,
        path: str | Path,
        model: str | None = None,
        device: str = "cpu",
        index: str = "auto",
        backend: str = "auto",
        precision: str = "fp32",
    ) -> Localizer:
        """Open the database at ``path`` and load its model (from its schema, or ``model``:
        a registered name or checkpoint, which must be the same model) in ``precision``.

        Raises:
            DatabaseError: as :meth:`PlaceDatabase.open`; the schema's checkpoint is gone.
            ModelMismatchError: ``model`` is another model.
        """
        db = PlaceDatabase.open(path, index=index, backend=backend)
        loc = cls(db, database_embedder(db, model, device, precision))
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
            from hotformerloc.index.rerank import order_of

            verified = self._verify(np.asarray(cloud), name, [i for i, _ in hits])
            order = list(order_of(verified))
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

    def _verify(self, cloud: np.ndarray, name: str, rows: list[int]) -> list[Verification]:
        """Verify ``cloud`` against the entries ``rows`` together (``verify_many``); each
        candidate comes from the database's stored re-ranking cloud when it has one for this
        config, else from its file, and is kept (:attr:`cache_size` most recent)."""
        from hotformerloc.index.rerank import RerankConfig, RerankInputError, prepare, verify_many

        config = self.rerank_config or RerankConfig()
        try:
            query = prepare(cloud, config, name)
        except RerankInputError as err:
            raise QueryError(f"re-ranking {name}: {err}") from None
        return verify_many(query, [self._candidate(i, config) for i in rows], config)

    def _candidate(self, row: int, config: RerankConfig) -> PreparedCloud:
        from hotformerloc.index.rerank import RerankInputError, prepare
        from hotformerloc.io import PointCloudError

        key = (row, config)
        hit = self._prepared.get(key)
        if hit is not None:
            self._prepared.move_to_end(key)
            return hit
        e = self.db.entry(row)
        stored = self.db.rerank_points(row, config.voxel)
        try:
            if stored is not None:
                prepared = prepare(stored, config, e.id, downsampled=True)
            else:
                if e.path is None:
                    raise QueryError(f"candidate {e.id!r} has no cloud file: cannot re-rank")
                try:
                    raw = read_pointcloud(e.path).xyz
                except PointCloudError as err:
                    raise QueryError(f"candidate {e.id!r}: {err}") from None
                prepared = prepare(raw, config, e.id)
        except RerankInputError as err:
            raise QueryError(f"re-ranking against {e.id!r} ({e.path}): {err}") from None
        self._prepared[key] = prepared
        while len(self._prepared) > self.cache_size:
            self._prepared.popitem(last=False)
        return prepared
