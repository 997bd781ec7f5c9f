"""Plain-text (markdown) tables of evaluation results, paper style (spec 5)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .protocols import LocationsResult, MeanMetrics, ProtocolResult

__all__ = ["METRICS", "markdown_table", "paper_table"]

MISSING = "—"

# metric key -> (column label, accessor on MeanMetrics / ProtocolResult / LocationsResult)
METRICS: dict[str, tuple[str, Callable[[MeanMetrics], float]]] = {
    "r1": ("AR@1", lambda m: m.r1),
    "r5": ("AR@5", lambda m: float(m.recall[4])),
    "r10": ("AR@10", lambda m: float(m.recall[9])),
    "recall_1pct": ("AR@1%", lambda m: m.recall_1pct),
    "mrr_hits": ("MRR", lambda m: m.mrr_hits),
    "mrr": ("MRR (std)", lambda m: m.mrr),
}

Fmt = str | Callable[[Any], str] | None


def _cell(value: Any, fmt: Fmt) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if fmt is None:
        return str(value)
    if callable(fmt):
        return fmt(value)
    return format(value, fmt)


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, Fmt]]
) -> str:
    """A markdown table: one line per row, one column per ``(key, header, fmt)``.

    ``fmt`` is a format spec (``".1f"``), a callable value -> str, or None (``str``).
    Missing keys, None and NaN print as "—". Cells are padded to the column width.
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    headers = [h for _, h, _ in columns]
    body = [[_cell(r.get(key), fmt) for key, _, fmt in columns] for r in rows]
    widths = [max(3, len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(b) for b in body)
    return "\n".join(out)


def paper_table(
    results: Mapping[str, LocationsResult | ProtocolResult],
    metrics: Sequence[str] = ("r1", "recall_1pct"),
    *,
    group: str | None = None,
    mean_label: str = "Mean",
    digits: int = 1,
    bold_best: bool = False,
) -> str:
    """Paper-style table (spec 5.1): one row per method (``results`` key), then for each
    location the ``metrics`` columns, then the ``mean_label`` columns.

    * ``metrics``: keys of :data:`METRICS` (``"r1"`` AR@1, ``"recall_1pct"`` AR@1%,
      ``"mrr_hits"`` MRR as in the papers (hits only), ``"mrr"`` standard MRR, ...);
    * ``group``: restrict to the locations of that group and use its mean (CS-Wild-Places
      "Baseline" / "Unseen");
    * a :class:`ProtocolResult` (single set, e.g. CS-Campus3D) gives only the metric columns;
    * locations follow the first method's order; a method lacking one shows "—";
    * ``bold_best`` wraps the best value of each column in ``**``.
    """
    if not results:
        raise ValueError("paper_table needs at least one result")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    values = list(results.values())
    multi = [isinstance(v, LocationsResult) for v in values]
    if any(multi) and not all(multi):
        raise ValueError("paper_table: mix of per-location and single-set results")

    columns: list[tuple[str, str]] = []  # (cell key, header)
    table: list[dict[str, Any]] = []
    if all(multi):
        first = values[0]
        assert isinstance(first, LocationsResult)
        if group is not None:
            if group not in first.groups:
                raise ValueError(f"unknown group {group!r}; known: {sorted(first.groups)}")
            members = list(first.group_members[group])
        else:
            members = list(first.locations)
        for loc in members:
            columns += [(f"{loc}/{m}", f"{loc} {METRICS[m][0]}") for m in metrics]
        columns += [(f"mean/{m}", f"{mean_label} {METRICS[m][0]}") for m in metrics]
        for method, res in results.items():
            assert isinstance(res, LocationsResult)
            row: dict[str, Any] = {"method": method}
            for loc in members:
                for m in metrics:
                    loc_res = res.locations.get(loc)
                    row[f"{loc}/{m}"] = None if loc_res is None else METRICS[m][1](loc_res)
            mean: MeanMetrics | None = res if group is None else res.groups.get(group)
            for m in metrics:
                row[f"mean/{m}"] = None if mean is None else METRICS[m][1](mean)
            table.append(row)
    else:
        if group is not None:
            raise ValueError("group needs per-location results")
        columns = [(m, METRICS[m][0]) for m in metrics]
        for method, res in results.items():
            table.append({"method": method, **{m: METRICS[m][1](res) for m in metrics}})

    for key, _ in columns:
        present = [r[key] for r in table if r[key] is not None and not math.isnan(r[key])]
        best = max(present) if present else None
        for r in table:
            v = r[key]
            if v is None or math.isnan(v):
                r[key] = None
                continue
            text = f"{v:.{digits}f}"
            r[key] = f"**{text}**" if bold_best and v == best else text
    return markdown_table(table, [("method", "Method", None), *[(k, h, None) for k, h in columns]])
