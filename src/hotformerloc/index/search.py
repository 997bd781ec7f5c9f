"""Nearest-descriptor search: exact and approximate FAISS indexes, a NumPy fallback, filters.

The metric is the L2 distance between unit-norm descriptors (``|a - b|`` in [0, 2]; the
ranking equals the cosine ranking). Index kinds:

* ``exact``: brute force (FAISS ``IndexFlatL2``, or the NumPy fallback, same results);
* ``hnsw``: FAISS ``IndexHNSWFlat`` (graph, no training);
* ``ivf``: FAISS ``IndexIVFFlat`` (k-means cells, trained on the descriptors);
* ``auto``: ``exact`` up to :data:`EXACT_MAX_ENTRIES` entries, ``ivf`` above (indexes are
  built in memory when first searched, and IVF builds 30-120x faster than HNSW on CPU).

Filtered search returns the true top-k among the entries that pass the filter (the filter is
applied inside the search, never after it): exact indexes restrict the scan to the passing
entries; approximate ones search the passing subset exactly when it has at most
:data:`EXACT_MAX_ENTRIES` entries, else run the approximate search with a FAISS ID selector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from hotformerloc.errors import HotformerlocError
from hotformerloc.io.pointcloud import SOURCES

IndexKind = Literal["auto", "exact", "hnsw", "ivf"]
Backend = Literal["auto", "faiss", "numpy"]
INDEX_KINDS: tuple[str, ...] = ("auto", "exact", "hnsw", "ivf")
BACKENDS: tuple[str, ...] = ("auto", "faiss", "numpy")

#: ``auto`` uses exact search up to this many entries, IVF above (docs/database.md: exact
#: single-query latency grows linearly, ~20 ms at 100k on 2 cores; IVF p50 stays ~2 ms at 1M).
EXACT_MAX_ENTRIES = 100_000
#: HNSW graph degree, construction and search beam widths (search beam >= 2k).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
#: IVF: about ``sqrt(N)`` cells (at most N / 40), k-means trained on at most
#: ``IVF_TRAIN_PER_CELL`` points per cell (a fixed-seed sample), ``nprobe`` cells visited per query.
IVF_TRAIN_PER_CELL = 50
IVF_NPROBE = 32
#: Rows of the distance matrix computed at once by the NumPy search (bounded memory).
_CHUNK_ELEMENTS = 1 << 24


class SearchError(HotformerlocError):
    """Bad search input (shapes, dtypes, k, unknown index kind, filter values), or an index
    kind that needs FAISS when FAISS is not installed."""


def _faiss() -> ModuleType | None:
    """The ``faiss`` module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def choose_index(n: int) -> str:
    """The kind ``auto`` resolves to for ``n`` entries: ``exact`` or ``ivf``."""
    return "exact" if n <= EXACT_MAX_ENTRIES else "ivf"


def ivf_cells(n: int) -> int:
    """IVF cell count for ``n`` entries: ``round(sqrt(n))`` capped at ``n // 40`` (>= 1)."""
    return max(1, min(round(math.sqrt(n)), n // 40))


@dataclass(frozen=True)
class Circle:
    """Disc in map xy (metres): entries whose pose translation is within ``radius``."""

    x: float
    y: float
    radius: float

    def __post_init__(self) -> None:
        vals = (self.x, self.y, self.radius)
        if not all(math.isfinite(v) for v in vals) or self.radius < 0:
            raise SearchError(f"circle region needs finite x, y and radius >= 0, got {vals}")

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool for (N, 2) points (boundary included; NaN rows are outside)."""
        d2 = (xy[:, 0] - self.x) ** 2 + (xy[:, 1] - self.y) ** 2
        return d2 <= self.radius**2


@dataclass(frozen=True)
class Box:
    """Axis-aligned rectangle in map xy (metres), bounds included."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    def __post_init__(self) -> None:
        vals = (self.xmin, self.ymin, self.xmax, self.ymax)
        if (
            not all(math.isfinite(v) for v in vals)
            or self.xmin > self.xmax
            or self.ymin > self.ymax
        ):
            raise SearchError(f"box region needs finite xmin <= xmax, ymin <= ymax, got {vals}")

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """(N,) bool for (N, 2) points (NaN rows are outside)."""
        x, y = xy[:, 0], xy[:, 1]
        return (x >= self.xmin) & (x <= self.xmax) & (y >= self.ymin) & (y <= self.ymax)


def _values(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


@dataclass(frozen=True)
class SearchFilter:
    """Which entries a search may return; every given condition must hold (``None`` = any).

    ``source``, ``world``, ``sequence``: one value or a collection of accepted values;
    ``region``: a :class:`Circle` or :class:`Box` on the entry's pose translation in its map
    frame (entries with an unknown pose never pass a region filter).
    """

    source: str | tuple[str, ...] | None = None
    world: str | tuple[str, ...] | None = None
    sequence: str | tuple[str, ...] | None = None
    region: Circle | Box | None = None

    def __post_init__(self) -> None:
        unknown = [v for v in _values(self.source) or [] if v not in SOURCES]
        if unknown:
            raise SearchError(f"unknown source {unknown[0]!r} (known: {', '.join(SOURCES)})")

    def is_empty(self) -> bool:
        """True when no condition is set (every entry passes)."""
        return all(v is None for v in (self.source, self.world, self.sequence, self.region))

    def mask(
        self, source: np.ndarray, world: np.ndarray, sequence: np.ndarray, xy: np.ndarray
    ) -> np.ndarray:
        """(N,) bool: entries passing every condition, given the (N,) str columns and the
        (N, 2) float64 pose translations (NaN where the pose is unknown)."""
        keep = np.ones(len(source), bool)
        for column, value in (
            (source, self.source),
            (world, self.world),
            (sequence, self.sequence),
        ):
            wanted = _values(value)
            if wanted is not None:
                keep &= np.isin(column, wanted)
        if self.region is not None:
            with np.errstate(invalid="ignore"):
                keep &= self.region.contains(xy)
        return keep


@dataclass(frozen=True, eq=False)
class SearchResult:
    """Top-k of Q queries: ``indices`` (Q, k) int64 entry rows, best first, -1 padding when
    fewer than k entries can be returned; ``distances`` (Q, k) float32 L2 distances,
    non-decreasing per row, ``inf`` at padding; ``kind``: the index kind that answered."""

    indices: np.ndarray
    distances: np.ndarray
    kind: str


def _check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise SearchError(
            f"queries must have shape (Q, {dim}) or ({dim},), got {np.shape(queries)}"
        )
    if not np.issubdtype(q.dtype, np.floating):
        raise SearchError(f"queries must be floating point, got {q.dtype}")
    q = np.ascontiguousarray(q, np.float32)
    if not np.isfinite(q).all():
        raise SearchError("queries contain NaN or infinite values")
    return q


def numpy_search(
    database: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by squared L2 in float32: ``(indices (Q, k) int64, squared distances
    (Q, k) float32)`` with -1 / inf padding; ties broken by the lower row index.

    ``database`` (N, D) and ``queries`` (Q, D) are float32. Memory is bounded by computing
    the distance matrix a few query rows at a time.
    """
    n, nq = database.shape[0], queries.shape[0]
    indices = np.full((nq, k), -1, np.int64)
    dist = np.full((nq, k), np.inf, np.float32)
    if n == 0 or nq == 0:
        return indices, dist
    kk = min(k, n)
    db_sq = np.einsum("ij,ij->i", database, database)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for a in range(0, nq, rows):
        qc = queries[a : a + rows]
        d2 = qc @ database.T
        d2 *= np.float32(-2.0)
        d2 += np.einsum("ij,ij->i", qc, qc)[:, None]
        d2 += db_sq[None, :]
        np.maximum(d2, np.float32(0.0), out=d2)
        part = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
        vals = np.take_along_axis(d2, part, axis=1)
        order = np.lexsort((part, vals), axis=1)
        indices[a : a + len(qc), :kk] = np.take_along_axis(part, order, axis=1)
        dist[a : a + len(qc), :kk] = np.take_along_axis(vals, order, axis=1)
    return indices, dist


class SearchIndex:
    """A search structure over (N, D) unit descriptors; row ``i`` is entry ``i``.

    Args:
        descriptors: (N, D) float32 (kept by reference; FAISS keeps its own copy).
        kind: ``auto``, ``exact``, ``hnsw`` or ``ivf`` (module doc).
        backend: ``faiss``, ``numpy`` (exact only) or ``auto`` (FAISS when installed).

    Raises:
        SearchError: unknown kind or backend, an approximate kind without FAISS, or
            descriptors that are not a 2-D float32 array.
    """

    def __init__(self, descriptors: np.ndarray, kind: str = "auto", backend: str = "auto") -> None:
        if kind not in INDEX_KINDS:
            raise SearchError(f"unknown index kind {kind!r} (known: {', '.join(INDEX_KINDS)})")
        if backend not in BACKENDS:
            raise SearchError(f"unknown search backend {backend!r} (known: {', '.join(BACKENDS)})")
        if descriptors.ndim != 2 or descriptors.dtype != np.float32:
            raise SearchError(
                f"descriptors must be (N, D) float32, got {descriptors.dtype} {descriptors.shape}"
            )
        self.descriptors = np.ascontiguousarray(descriptors)
        n, self.dim = descriptors.shape
        self.kind = choose_index(n) if kind == "auto" else kind
        faiss = _faiss()
        if backend == "faiss" and faiss is None:
            raise SearchError("search backend 'faiss' requested but faiss is not installed")
        self.backend = "numpy" if backend == "numpy" or faiss is None else "faiss"
        if self.backend == "numpy" and self.kind != "exact":
            if kind != "auto":
                raise SearchError(f"index kind {kind!r} needs faiss (the numpy backend is exact)")
            self.kind = "exact"
        self._index: Any = None
        if self.backend == "faiss" and faiss is not None and n:
            self._index = self._build(faiss)

    def _build(self, faiss: ModuleType) -> Any:
        x = self.descriptors
        if self.kind == "exact":
            index = faiss.IndexFlatL2(self.dim)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, HNSW_M)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            cells = ivf_cells(len(x))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim), self.dim, cells)
            m = min(len(x), IVF_TRAIN_PER_CELL * cells)
            rows = np.random.default_rng(0).choice(len(x), m, replace=False) if m < len(x) else None
            index.train(x if rows is None else x[np.sort(rows)])
        index.add(x)
        return index

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])

    def _selector(self, allowed: np.ndarray) -> tuple[Any, np.ndarray]:
        """A FAISS ID selector of the True rows (and the bitmap it reads, to keep alive)."""
        faiss = _faiss()
        assert faiss is not None
        bits = np.packbits(allowed, bitorder="little")
        return faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits)), bits

    def _exact_subset(
        self, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search restricted to the rows where ``allowed``: (indices, squared L2)."""
        if self.backend == "faiss" and self.kind == "exact":
            sel, _bits = self._selector(allowed)
            d2, idx = self._index.search(q, k, params=self._params(sel, k))
            return idx, d2
        rows = np.flatnonzero(allowed)
        idx, d2 = numpy_search(self.descriptors[rows], q, k)
        return np.where(idx >= 0, rows[np.maximum(idx, 0)], -1), d2

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> SearchResult:
        """Top-``k`` entries of each query among those where ``allowed`` (N,) bool is True
        (all when None). ``queries``: (Q, D) or (D,) float, finite.

        Raises:
            SearchError: bad query shape/values, ``k < 1``, or a wrong ``allowed`` shape.
        """
        if not isinstance(k, int | np.integer) or k < 1:
            raise SearchError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        q = _check_queries(queries, self.dim)
        n = len(self)
        if allowed is not None:
            allowed = np.asarray(allowed)
            if allowed.shape != (n,) or allowed.dtype != bool:
                raise SearchError(
                    f"allowed must be a ({n},) bool mask, got {allowed.dtype} {allowed.shape}"
                )
            if allowed.all():
                allowed = None
        if allowed is None:
            if self._index is None:
                idx, d2 = numpy_search(self.descriptors, q, k)
            else:
                d2, idx = self._index.search(q, k, params=self._params(None, k))
        else:
            if self.kind == "exact" or int(allowed.sum()) <= EXACT_MAX_ENTRIES:
                idx, d2 = self._exact_subset(q, k, allowed)
            else:
                sel, _bits = self._selector(allowed)
                d2, idx = self._index.search(q, k, params=self._params(sel, k))
        return _result(idx, d2, self.kind)

    def _params(self, selector: Any, k: int) -> Any:
        faiss = _faiss()
        assert faiss is not None
        extra: dict[str, Any] = {} if selector is None else {"sel": selector}
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, 2 * k), **extra)
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=IVF_NPROBE, **extra)
        return faiss.SearchParameters(**extra) if extra else None


def _result(idx: np.ndarray, d2: np.ndarray, kind: str) -> SearchResult:
    idx = np.asarray(idx, np.int64)
    valid = idx >= 0
    dist = np.where(valid, np.sqrt(np.maximum(d2, 0.0)), np.inf).astype(np.float32)
    return SearchResult(np.where(valid, idx, -1), dist, kind)
