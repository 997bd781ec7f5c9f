"""The reference implementation's pickles (spec 4.1, 4.2): schemas, reading, matching to
our rows, and comparisons with the sets we compute.

Everything is read through :func:`hotformerloc.io.pickles.load_plain_pickle`; the only
class admitted is the MinkLoc3Dv2-style ``TrainingTuple`` record (read inertly).

Schemas accepted:

* **training**: ``{id: entry}`` where an entry is a ``TrainingTuple`` record (``id``,
  ``timestamp``, ``rel_scan_filepath``, ``positives``, ``non_negatives``, ``position``), a
  6-tuple in that order, or a PointNetVLAD / CrossLoc3D dict ``{"query": path,
  "positives": [...], "negatives": [...]}`` with optional ``northing`` / ``easting``
  (non-negatives = all ids minus the negatives);
* **evaluation database**: a list (one per run) of ``{idx: {"query": path, "northing",
  "easting"}}``; **evaluation query**: the same plus, per other run index ``m``, the key
  ``m`` with the list of database-``m`` indices that are true neighbours. A single dict
  instead of a list is read as a one-run list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hotformerloc.data.neighbours import true_neighbours
from hotformerloc.data.prepare.common import Findings, PathIndex, PrepareError
from hotformerloc.data.prepared import EvalRunSpec
from hotformerloc.data.tuples import Tuples
from hotformerloc.io.pickles import PickledObject, PickleError, load_plain_pickle

RECORDS = ("TrainingTuple",)
_TUPLE_FIELDS = ("id", "timestamp", "rel_scan_filepath", "positives", "non_negatives", "position")


class ReferencePickleError(PrepareError):
    """A reference pickle is unreadable or does not follow the expected schema; the message
    names the file and the entry."""


@dataclass(frozen=True, eq=False)
class RefTrainingEntry:
    """One training element: ``positives`` / ``non_negatives`` / ``negatives`` are int64
    arrays of ids (``None`` when the schema lacks them); ``position`` as stored (2,)."""

    id: int
    path: str
    positives: np.ndarray
    non_negatives: np.ndarray | None
    negatives: np.ndarray | None
    position: np.ndarray | None


@dataclass(frozen=True, eq=False)
class RefItem:
    """One evaluation submap: ``path``; ``en`` (easting, northing) or ``None``;
    ``neighbours`` {database run index: int64 array of database indices}."""

    path: str
    en: tuple[float, float] | None
    neighbours: Mapping[int, np.ndarray] = field(default_factory=dict)


def _load(path: Path) -> Any:
    try:
        return load_plain_pickle(path, records=RECORDS)
    except PickleError as e:
        raise ReferencePickleError(str(e)) from e


def _ids(value: Any, where: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ReferencePickleError(f"{where}: expected a list of integer ids") from None
    if a.size and (not np.isfinite(a).all() or (a != np.round(a)).any()):
        raise ReferencePickleError(f"{where}: expected integer ids")
    return np.unique(a.astype(np.int64))


def _number(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ReferencePickleError(f"{where}: {value!r} is not a number") from None
    if not np.isfinite(v):
        raise ReferencePickleError(f"{where}: {value!r} is not finite")
    return v


def _position(value: Any, where: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        a = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ReferencePickleError(f"{where}: position is not numeric") from None
    if a.size < 2 or not np.isfinite(a[:2]).all():
        raise ReferencePickleError(f"{where}: position needs 2 finite numbers")
    return a[:2]


def read_training_pickle(path: Path) -> list[RefTrainingEntry]:
    """Entries of a reference training pickle, sorted by id (schemas: module doc).

    Raises:
        ReferencePickleError: unreadable/refused pickle or an entry of an unknown shape.
    """
    data = _load(path)
    if not isinstance(data, dict) or not data:
        raise ReferencePickleError(f"{path}: expected a non-empty dict {{id: training entry}}")
    entries = []
    for key, raw in data.items():
        where = f"{path} entry {key!r}"
        if isinstance(raw, PickledObject):
            attrs = raw.attributes()
            if not attrs and len(raw.args) == len(_TUPLE_FIELDS):
                attrs = dict(zip(_TUPLE_FIELDS, raw.args, strict=True))
            raw = attrs
        elif isinstance(raw, tuple | list) and len(raw) == len(_TUPLE_FIELDS):
            raw = dict(zip(_TUPLE_FIELDS, raw, strict=True))
        if not isinstance(raw, dict):
            raise ReferencePickleError(f"{where}: unknown training entry {type(raw).__name__}")
        rel = raw.get("rel_scan_filepath", raw.get("query"))
        if not isinstance(rel, str) or "positives" not in raw:
            raise ReferencePickleError(
                f"{where}: needs a path ('rel_scan_filepath' or 'query') and 'positives' "
                f"(keys: {sorted(map(str, raw))})"
            )
        raw_id: Any = raw.get("id", key)  # any pickled value: int() checks it
        try:
            ident = int(raw_id)
        except (TypeError, ValueError):
            raise ReferencePickleError(f"{where}: id {raw_id!r} is not an integer") from None
        position = raw.get("position")
        if position is None and "northing" in raw and "easting" in raw:
            position = [raw["northing"], raw["easting"]]
        entries.append(
            RefTrainingEntry(
                id=ident,
                path=rel,
                positives=_ids(raw["positives"], f"{where} positives"),
                non_negatives=None
                if raw.get("non_negatives") is None
                else _ids(raw["non_negatives"], f"{where} non_negatives"),
                negatives=None
                if raw.get("negatives") is None
                else _ids(raw["negatives"], f"{where} negatives"),
                position=_position(position, where),
            )
        )
    entries.sort(key=lambda e: e.id)
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ReferencePickleError(f"{path}: duplicate training ids")
    return entries


def read_eval_pickle(path: Path) -> list[list[RefItem]]:
    """Runs of a reference evaluation database or query pickle, items in key order.

    Raises:
        ReferencePickleError: unreadable/refused pickle, or an item without a ``query``
            path, with non-numeric northing/easting or neighbour lists.
    """
    data = _load(path)
    runs_raw = [data] if isinstance(data, dict) else data
    if not isinstance(runs_raw, list):
        raise ReferencePickleError(f"{path}: expected a list of {{index: item}} dicts per run")
    runs: list[list[RefItem]] = []
    for r, run in enumerate(runs_raw):
        if not isinstance(run, dict):
            raise ReferencePickleError(f"{path} run {r}: expected a dict {{index: item}}")
        keys = [k for k in run if isinstance(k, int | np.integer) and not isinstance(k, bool)]
        if len(keys) != len(run) or sorted(int(k) for k in keys) != list(range(len(run))):
            raise ReferencePickleError(
                f"{path} run {r}: item keys must be the indices 0..{len(run) - 1} (neighbour "
                f"lists refer to them)"
            )
        items = []
        for key in sorted(keys, key=int):
            item = run[key]
            where = f"{path} run {r} item {key!r}"
            if not isinstance(item, dict) or not isinstance(item.get("query"), str):
                raise ReferencePickleError(f"{where}: expected a dict with a 'query' path")
            en = None
            if "northing" in item and "easting" in item:
                en = (_number(item["easting"], where), _number(item["northing"], where))
            neighbours = {
                int(k): _ids(v, f"{where} neighbours of run {k}")
                for k, v in item.items()
                if isinstance(k, int | np.integer) and not isinstance(k, bool)
            }
            items.append(RefItem(item["query"], en, neighbours))
        runs.append(items)
    return runs


def match_rows(paths: Sequence[str], index: PathIndex, what: str) -> np.ndarray:
    """(N,) int64 our rows of reference paths.

    Raises:
        ReferencePickleError: a path has no submap among ours (names the first few).
    """
    rows = [index.find(p) for p in paths]
    missing = [p for p, r in zip(paths, rows, strict=True) if r is None]
    if missing:
        raise ReferencePickleError(
            f"{what}: {len(missing)} path(s) are not submaps of this dataset folder, e.g. "
            f"{', '.join(missing[:3])}"
        )
    return np.asarray(rows, np.int64)


def compare_sets(
    label: str, ours: np.ndarray, theirs: np.ndarray, relpath: np.ndarray, findings: Findings
) -> dict[str, Any]:
    """Compare two row sets; a difference becomes a warning. Returns a manifest entry."""
    a, b = set(ours.tolist()), set(theirs.tolist())
    only_ours, only_theirs = sorted(a - b), sorted(b - a)
    if only_ours or only_theirs:
        eg = [str(relpath[i]) for i in (only_ours + only_theirs)[:2]]
        findings.warning(
            f"{label}: differs from the reference pickle: {len(only_ours)} submap(s) only in "
            f"ours, {len(only_theirs)} only in the reference (e.g. {', '.join(eg)})"
        )
    return {
        "check": label,
        "ours": len(a),
        "reference": len(b),
        "only_ours": len(only_ours),
        "only_reference": len(only_theirs),
    }


def tuples_from_reference(
    entries: Sequence[RefTrainingEntry], rows: np.ndarray
) -> tuple[np.ndarray, Tuples]:
    """Training rows (ascending) and their tuples taken from a reference training pickle;
    ``rows[k]`` is our row of ``entries[k]``.

    Non-negatives come from ``non_negatives``, or from ``negatives`` as all ids minus the
    negatives (the CrossLoc3D schema); they always include the element itself.

    Raises:
        ReferencePickleError: ids out of range, or neither non-negatives nor negatives.
    """
    order = np.argsort(rows, kind="stable")
    train_index = rows[order]
    if (np.diff(train_index) == 0).any():
        raise ReferencePickleError("training pickle: two entries name the same submap")
    local_of_id = {entries[k].id: j for j, k in enumerate(order)}
    all_local = np.arange(len(entries), dtype=np.int64)

    def local(ids: np.ndarray, what: str) -> np.ndarray:
        try:
            return np.unique(np.array([local_of_id[int(i)] for i in ids], np.int64))
        except KeyError as e:
            raise ReferencePickleError(f"training pickle: {what} names unknown id {e}") from None

    positives, non_negatives = [], []
    for k in order:
        e = entries[k]
        me = local_of_id[e.id]
        pos = local(e.positives, f"entry {e.id} positives")
        if e.non_negatives is not None:
            nn = local(e.non_negatives, f"entry {e.id} non_negatives")
        elif e.negatives is not None:
            nn = np.setdiff1d(all_local, local(e.negatives, f"entry {e.id} negatives"))
        else:
            raise ReferencePickleError(
                f"training pickle entry {e.id}: neither non_negatives nor negatives"
            )
        positives.append(pos[pos != me])
        non_negatives.append(np.union1d(nn, [me]).astype(np.int64))
    return train_index, Tuples(positives=positives, non_negatives=non_negatives)


def compare_tuples(label: str, ours: Tuples, theirs: Tuples, findings: Findings) -> dict[str, Any]:
    """Compare two tuple sets over the same local indices; differences become a warning."""
    pos = sum(
        not np.array_equal(a, b) for a, b in zip(ours.positives, theirs.positives, strict=True)
    )
    nn = sum(
        not np.array_equal(a, b)
        for a, b in zip(ours.non_negatives, theirs.non_negatives, strict=True)
    )
    if pos or nn:
        findings.warning(
            f"{label}: {pos} element(s) have other positives and {nn} other non-negatives than "
            f"the reference pickle (the reference's are used)"
        )
    return {
        "check": label,
        "elements": len(ours),
        "positives_differ": pos,
        "non_negatives_differ": nn,
    }


def compare_neighbours(
    label: str,
    query_xy: np.ndarray,
    query_items: Sequence[RefItem],
    db_index: int,
    db_xy: np.ndarray,
    threshold: float,
    findings: Findings,
) -> dict[str, Any]:
    """Compare the reference's true-neighbour lists (key ``db_index`` of each query item)
    with the database positions within ``threshold`` m; differences become a warning."""
    ours = true_neighbours(query_xy, db_xy, threshold) if len(query_xy) else []
    differ = 0
    for item, mine in zip(query_items, ours, strict=True):
        theirs = item.neighbours.get(db_index)
        if theirs is not None and not np.array_equal(np.sort(theirs), mine):
            differ += 1
    if differ:
        findings.warning(
            f"{label}: {differ} of {len(query_items)} queries have other true neighbours "
            f"within {threshold:g} m than the reference pickle lists"
        )
    return {"check": label, "queries": len(query_items), "neighbours_differ": differ}


def eval_runs_from_pickles(
    label: str,
    db_file: Path | None,
    query_file: Path | None,
    runs: Sequence[EvalRunSpec],
    xy: np.ndarray,
    index: PathIndex,
    relpath: np.ndarray,
    threshold: float,
    findings: Findings,
    checks: list[dict[str, Any]],
    have_queries: bool,
) -> list[EvalRunSpec] | None:
    """Cross-check one location's runs with the reference's evaluation pickles.

    Each pickle run is matched to our run holding its submaps; database memberships, our
    queries (only when ``have_queries``: a rule gave them) and the true-neighbour lists
    (against the database pickle's runs, or against ``runs`` in order when no database
    pickle is given) are compared, each comparison appended to ``checks``.

    Returns ``runs`` with the reference's queries, or ``None`` without a query pickle.

    Raises:
        ReferencePickleError: unreadable pickle, unknown paths, or a pickle run whose
            submaps span several of our runs.
    """
    by_name = {r.name: r for r in runs}

    def run_of(rows: np.ndarray, what: str) -> EvalRunSpec:
        owners = [r for r in runs if np.isin(rows, r.rows).all()]
        if len(owners) != 1:
            raise ReferencePickleError(f"{what}: its submaps do not belong to exactly one run")
        return owners[0]

    db_rows: list[np.ndarray] | None = None
    if db_file is not None:
        db_rows = []
        for i, items in enumerate(read_eval_pickle(db_file)):
            rows = match_rows([it.path for it in items], index, f"{db_file} run {i}")
            db_rows.append(rows)
            if rows.size:
                ours = run_of(rows, f"{db_file} run {i}")
                checks.append(
                    compare_sets(
                        f"{label} database {ours.name}", ours.rows, rows, relpath, findings
                    )
                )
    if query_file is None:
        return None
    new: dict[str, np.ndarray] = {}
    for j, items in enumerate(read_eval_pickle(query_file)):
        if not items:
            continue
        rows = match_rows([it.path for it in items], index, f"{query_file} run {j}")
        ours = run_of(rows, f"{query_file} run {j}")
        if have_queries:
            checks.append(
                compare_sets(f"{label} queries {ours.name}", ours.queries, rows, relpath, findings)
            )
        new[ours.name] = np.union1d(new.get(ours.name, np.zeros(0, np.int64)), rows)
        keys = sorted({k for it in items for k in it.neighbours})
        for i in keys:
            targets = db_rows if db_rows is not None else [r.rows for r in runs]
            if i >= len(targets):
                findings.warning(f"{query_file} run {j}: neighbours of unknown database run {i}")
                continue
            checks.append(
                compare_neighbours(
                    f"{label} true neighbours {ours.name} -> database run {i}",
                    xy[rows],
                    items,
                    i,
                    xy[targets[i]],
                    threshold,
                    findings,
                )
            )
    return [
        EvalRunSpec(r.name, r.rows, new.get(r.name, np.zeros(0, np.int64)))
        for r in by_name.values()
    ]
