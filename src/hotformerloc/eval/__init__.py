"""Evaluation harness: retrieval metrics, protocols and result tables (spec 4, 4.5, 5).

Pure numpy/scipy (no torch). See ``docs/evaluation.md`` for definitions and usage.
"""

from .metrics import (
    EvaluationError,
    Ranking,
    RecallResult,
    f1_max,
    l2_ranking,
    one_percent_threshold,
    pr_curve,
    recall_metrics,
    true_neighbours,
)
from .protocols import (
    CrossSourceSet,
    DescriptorRetriever,
    EvalRun,
    LocationsResult,
    LoopClosureResult,
    MeanMetrics,
    ProtocolResult,
    QueryViewRetriever,
    RankingLike,
    Retriever,
    evaluate_cross_source,
    evaluate_intra_sequence,
    evaluate_loop_closure,
    evaluate_pnv,
    evaluate_wild_places_inter,
)
from .tables import METRICS, markdown_table, paper_table

__all__ = [
    "METRICS",
    "CrossSourceSet",
    "DescriptorRetriever",
    "EvalRun",
    "EvaluationError",
    "LocationsResult",
    "LoopClosureResult",
    "MeanMetrics",
    "ProtocolResult",
    "QueryViewRetriever",
    "Ranking",
    "RankingLike",
    "RecallResult",
    "Retriever",
    "evaluate_cross_source",
    "evaluate_intra_sequence",
    "evaluate_loop_closure",
    "evaluate_pnv",
    "evaluate_wild_places_inter",
    "f1_max",
    "l2_ranking",
    "markdown_table",
    "one_percent_threshold",
    "paper_table",
    "pr_curve",
    "recall_metrics",
    "true_neighbours",
]
