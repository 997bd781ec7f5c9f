"""Evaluate a retriever on a prepared public benchmark with the dataset's own protocol.

The evaluation sets of a :class:`~hotformerloc.data.prepared.PreparedDataset` name the
protocol of :mod:`hotformerloc.eval.protocols` to run (spec 4.1-4.5):

* ``pnv`` (Oxford, In-house, CS-Campus3D): :func:`~hotformerloc.eval.protocols.evaluate_pnv`
  per location (``skip_same_run``, ``database_runs``), then the mean over locations;
* ``wild_places_inter`` (Wild-Places):
  :func:`~hotformerloc.eval.protocols.evaluate_wild_places_inter`;
* ``cross_source`` (CS-Wild-Places): :func:`~hotformerloc.eval.protocols.evaluate_cross_source`
  with the Baseline / Unseen groups.

The retriever ranks the dataset's global row indices (e.g. a
:class:`~hotformerloc.eval.protocols.DescriptorRetriever` with one descriptor per row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hotformerloc.data.prepared import EvalRunSpec, PreparedDataset
from hotformerloc.eval.protocols import (
    CrossSourceSet,
    DescriptorRetriever,
    EvalRun,
    LocationsResult,
    ProtocolResult,
    Retriever,
    evaluate_cross_source,
    evaluate_pnv,
    evaluate_wild_places_inter,
    locations_result,
)

if TYPE_CHECKING:
    from hotformerloc.model import HOTFormerLoc

__all__ = ["eval_run", "evaluate_prepared", "evaluate_prepared_model", "evaluation_rows"]


def eval_run(ds: PreparedDataset, spec: EvalRunSpec) -> EvalRun:
    """The protocol run of one evaluation run: items = its global rows, positions =
    ``ds.xy`` of those rows, ``is_query`` = membership in its queries."""
    return EvalRun(
        spec.name, spec.rows, ds.xy[spec.rows], is_query=np.isin(spec.rows, spec.queries)
    )


def evaluate_prepared(
    retriever: Retriever, ds: PreparedDataset, k: int | None = None
) -> LocationsResult:
    """Score ``retriever`` (over ``ds``'s global row indices) with the protocol, threshold,
    query/database runs and groups of ``ds.evaluation``.

    Returns the :class:`~hotformerloc.eval.protocols.LocationsResult` of the protocol:
    per-location pair-averaged metrics, their mean over locations, and group means
    (CS-Wild-Places Baseline / Unseen). ``k``: ranking depth (default: the set's, 25).

    Raises:
        EvaluationError: no evaluable (query, database) pair in a location.
        ValueError: a retriever returning malformed rankings (see the protocols).
    """
    spec = ds.evaluation
    depth = spec.k if k is None else k
    groups = dict(spec.groups) or None
    if spec.protocol == "cross_source":
        sets = {}
        for loc in spec.locations:
            assert loc.aerial is not None  # validated when the set was read
            sets[loc.name] = CrossSourceSet(
                [eval_run(ds, r) for r in loc.runs], eval_run(ds, loc.aerial)
            )
        return evaluate_cross_source(retriever, sets, spec.threshold, groups=groups, k=depth)
    runs = {loc.name: [eval_run(ds, r) for r in loc.runs] for loc in spec.locations}
    if spec.protocol == "wild_places_inter":
        return evaluate_wild_places_inter(retriever, runs, spec.threshold, k=depth, groups=groups)
    per: dict[str, ProtocolResult] = {
        loc.name: evaluate_pnv(
            retriever,
            runs[loc.name],
            spec.threshold,
            skip_same_run=spec.skip_same_run,
            k=depth,
            database_runs=loc.database_runs,
            name=loc.name,
        )
        for loc in spec.locations
    }
    return locations_result(per, groups)


def _evaluation_runs(ds: PreparedDataset) -> list[EvalRunSpec]:
    """Every evaluation set of ``ds``: each location's runs, then its aerial set."""
    runs = [r for loc in ds.evaluation.locations for r in loc.runs]
    return runs + [loc.aerial for loc in ds.evaluation.locations if loc.aerial is not None]


def evaluation_rows(ds: PreparedDataset) -> np.ndarray:
    """(R,) int64 ascending global rows that ``ds``'s evaluation sets use (queries and
    databases): the only submaps a model must embed to score the protocol."""
    runs = _evaluation_runs(ds)
    if not runs:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate([r.rows for r in runs])).astype(np.int64)


def evaluate_prepared_model(
    model: HOTFormerLoc,
    ds: PreparedDataset,
    batch_size: int = 32,
    num_workers: int = 0,
    yaw_views: int = 1,
) -> LocationsResult:
    """Embed the evaluation rows of ``ds`` (prepared by the model config's input
    pipeline; ``yaw_views`` as in :func:`~hotformerloc.eval.benchmark.embed_benchmark`) and
    score its protocol.

    With ``model.config.window_batching == "reference"`` (where a descriptor depends on the
    batch) each evaluation set is embedded on its own, in its order, in batches of
    ``batch_size`` from its first submap, as the reference's evaluation does; otherwise the
    union of the sets' rows is embedded once.
    """
    from hotformerloc.eval.benchmark import embed_benchmark

    dim = model.config.output_dim
    desc = np.zeros((len(ds), dim), np.float32)
    if model.config.window_batching == "reference":
        for run in _evaluation_runs(ds):
            rows = np.asarray(run.rows, np.int64)
            desc[rows] = embed_benchmark(model, ds, rows, batch_size, num_workers, yaw_views)
    else:
        rows = evaluation_rows(ds)
        desc[rows] = embed_benchmark(model, ds, rows, batch_size, num_workers, yaw_views)
    return evaluate_prepared(DescriptorRetriever(desc), ds)
