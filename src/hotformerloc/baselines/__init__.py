"""Classical place-recognition baselines (written from their papers).

See ``docs/scancontext.md``.
"""

from hotformerloc.baselines.scancontext import (
    ScanContextConfig,
    ScanContextRanking,
    ScanContextRetriever,
    ring_key,
    sc_distance,
    sc_distance_pairs,
    scan_context,
    sector_key,
)

__all__ = [
    "ScanContextConfig",
    "ScanContextRanking",
    "ScanContextRetriever",
    "ring_key",
    "sc_distance",
    "sc_distance_pairs",
    "scan_context",
    "sector_key",
]
