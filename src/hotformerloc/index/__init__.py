"""Place database: persisted descriptors and metadata, FAISS search, query pipeline.

Typical use::

    from hotformerloc.index import Localizer, SearchFilter
    loc = Localizer.open("runs/places.db")          # the database's own model
    res = loc.query_file("scan.pcd", k=5, where=SearchFilter(source="aerial"), rerank=True)
    best = res.candidates[0]                         # Candidate: id, distance, metadata, ...

Re-ranking lives in :mod:`hotformerloc.index.rerank` (imported on use). See
``docs/database.md``. Importing this package does not import torch.
"""

from hotformerloc.index.database import (
    DatabaseCorruptError,
    DatabaseError,
    DatabaseExistsError,
    DatabaseInputError,
    DatabaseLockedError,
    Entry,
    ModelInfo,
    ModelMismatchError,
    PlaceDatabase,
    Schema,
)
from hotformerloc.index.pipeline import (
    Candidate,
    DataFolderError,
    Embedder,
    Localizer,
    QueryError,
    QueryResult,
    Timings,
    add_places,
    build_database,
    database_embedder,
    embed_places,
    load_embedder,
    read_poses_csv,
    scan_places,
)
from hotformerloc.index.search import (
    EXACT_MAX_ENTRIES,
    Box,
    Circle,
    SearchError,
    SearchFilter,
    SearchIndex,
    SearchResult,
    choose_index,
    numpy_search,
)

__all__ = [
    "EXACT_MAX_ENTRIES",
    "Box",
    "Candidate",
    "Circle",
    "DataFolderError",
    "DatabaseCorruptError",
    "DatabaseError",
    "DatabaseExistsError",
    "DatabaseInputError",
    "DatabaseLockedError",
    "Embedder",
    "Entry",
    "Localizer",
    "ModelInfo",
    "ModelMismatchError",
    "PlaceDatabase",
    "QueryError",
    "QueryResult",
    "Schema",
    "SearchError",
    "SearchFilter",
    "SearchIndex",
    "SearchResult",
    "Timings",
    "add_places",
    "build_database",
    "choose_index",
    "database_embedder",
    "embed_places",
    "load_embedder",
    "numpy_search",
    "read_poses_csv",
    "scan_places",
]
