"""Evaluation report: ``results.json``, PNG figures and a self-contained ``report.html``.

:func:`write_report` takes the :class:`~hotformerloc.eval.benchmark.BenchmarkResult` of one
or more methods on a :class:`~hotformerloc.data.Benchmark` and writes into a folder:

* ``results.json``: title, every method's ``result.to_dict()`` and ``extra`` (NaN/inf -> null);
* ``recall_at_n.png``, ``query_map.png``, ``training.png`` (only with a training log),
  ``examples.png`` (only when a method has a retriever and g2a results);
* ``report.html``: tables and the figures embedded as base64 data URIs (no JS, no external
  assets), written last.

Every file is written atomically. Matplotlib (object API with the Agg canvas, no pyplot)
and the torch-importing :mod:`hotformerloc.eval.benchmark` are imported lazily, so importing
this module stays light.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hotformerloc.io.atomic import atomic_write_bytes, atomic_write_text

from .protocols import LocationsResult, Retriever
from .tables import markdown_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hotformerloc.data.benchmark import Benchmark
    from hotformerloc.eval.benchmark import BenchmarkResult

__all__ = [
    "CORRECT_COLOUR",
    "FIGURES",
    "PROTOCOLS",
    "WRONG_COLOUR",
    "MethodEntry",
    "format_table",
    "plot_examples",
    "plot_query_map",
    "plot_recall_at_n",
    "plot_training",
    "query_colours",
    "query_outcomes",
    "write_report",
]

PROTOCOLS = ("g2g", "g2a")
PROTOCOL_NAMES = {"g2g": "ground-to-ground", "g2a": "ground-to-aerial"}
CORRECT_COLOUR = "#2ca02c"
WRONG_COLOUR = "#d62728"
AERIAL_COLOUR = "#d9d9d9"
GROUND_COLOUR = "#8c8c8c"
#: Figure file names, in report order.
FIGURES = ("recall_at_n.png", "query_map.png", "training.png", "examples.png")
RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
#: Summary columns: (summary() key, header).
SUMMARY_COLUMNS = (
    ("g2g_ar1", "g2g AR@1"),
    ("g2g_ar1pct", "g2g AR@1%"),
    ("g2g_mrr", "g2g MRR"),
    ("g2a_ar1", "g2a AR@1"),
    ("g2a_ar1pct", "g2a AR@1%"),
    ("g2a_mrr", "g2a MRR"),
)
MISSING = "—"
#: Recall@N curves are drawn for N = 1..MAX_N (or the ranking depth if smaller).
MAX_N = 25
#: Points drawn per bird's-eye cloud image (a deterministic subsample beyond).
MAX_BEV_POINTS = 20000
TOP_RETRIEVALS = 3
VAL_KEYS = (
    ("val_ar1", "val AR@1"),
    ("val_g2g_ar1", "val g2g AR@1"),
    ("val_g2a_ar1", "val g2a AR@1"),
)


@dataclass(frozen=True)
class MethodEntry:
    """One method of a report: display ``name`` (unique within a report), its benchmark
    ``result``, and optionally the ``retriever`` that produced it (over the benchmark's
    global submap indices; used only to render example retrievals)."""

    name: str
    result: BenchmarkResult
    retriever: Retriever | None = None


# --------------------------------------------------------------------------------------
# Formatting helpers


def _fmt(value: Any, digits: int = 1) -> str:
    """A metric cell: ``digits`` decimals; None/NaN/inf -> "—"."""
    if value is None:
        return MISSING
    v = float(value)
    return f"{v:.{digits}f}" if math.isfinite(v) else MISSING


def _json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON data: non-finite floats -> None, numpy -> Python, mappings ->
    dicts with str keys, sequences -> lists, paths and unknown objects -> ``str``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in obj]
    return str(obj)


def _mpl_text(text: str) -> str:
    """Text safe for matplotlib labels (no mathtext from ``$``)."""
    return str(text).replace("$", r"\$")


def _check_methods(methods: Sequence[MethodEntry]) -> list[MethodEntry]:
    ms = list(methods)
    if not ms:
        raise ValueError("a report needs at least one method")
    names = [m.name for m in ms]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    return ms


def _protocol_result(result: BenchmarkResult, protocol: str) -> LocationsResult | None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {PROTOCOLS})")
    return result.g2g if protocol == "g2g" else result.g2a


def format_table(methods: Sequence[MethodEntry]) -> str:
    """Markdown table of the methods' summaries (rows = methods; g2g and g2a AR@1, AR@1%,
    MRR in percent with 1 decimal; "—" for a missing protocol), for the terminal."""
    rows = [{"method": m.name, **m.result.summary()} for m in _check_methods(methods)]
    cols = [("method", "Method", None), *[(k, h, _fmt) for k, h in SUMMARY_COLUMNS]]
    return markdown_table(rows, cols)


# --------------------------------------------------------------------------------------
# Per-query outcomes


def _query_table(
    result: BenchmarkResult, bench: Benchmark, protocol: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items (Q,) global indices ascending, correct (Q,) bool, world (Q,) str) of the
    evaluated queries of ``protocol``; see :func:`query_outcomes`."""
    from hotformerloc.eval.benchmark import benchmark_sets

    res = _protocol_result(result, protocol)
    if res is None:
        raise ValueError(f"the result has no {protocol} ({PROTOCOL_NAMES[protocol]}) results")
    g2g_sets, g2a_sets = benchmark_sets(bench)
    outcome: dict[int, bool] = {}
    for world, pres in res.locations.items():
        if protocol == "g2g":
            runs_list = g2g_sets.get(world, [])
        else:
            runs_list = list(g2a_sets[world].ground) if world in g2a_sets else []
        runs = {r.name: r for r in runs_list}
        for (qname, dname), rr in pres.pairs.items():
            run = runs.get(qname)
            assert run is None or run.is_query is not None
            if run is None or run.num_queries != rr.first_hit.shape[0]:
                raise ValueError(
                    f"{protocol} pair {qname!r} -> {dname!r} of world {world!r} does not match "
                    "the benchmark (was the result computed on another benchmark?)"
                )
            for item, fh in zip(run.items[run.is_query], rr.first_hit, strict=True):
                if fh >= 0:  # -1: no true neighbour in that database, not evaluated
                    outcome[int(item)] = outcome.get(int(item), True) and bool(fh == 1)
    items = np.array(sorted(outcome), dtype=np.int64)
    correct = np.array([outcome[i] for i in items.tolist()], dtype=bool)
    return items, correct, bench.world[items].astype(str)


def query_outcomes(
    result: BenchmarkResult, bench: Benchmark, protocol: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 outcome of every evaluated test query of ``protocol`` (``"g2g"``/``"g2a"``).

    Returns ``(positions (Q, 2) float64 xy, correct (Q,) bool, world (Q,) str)``, queries in
    ascending global index order. ``correct``: the top-1 retrieval is a true neighbour
    (``first_hit == 1``). A g2g query is scored against several databases (the other ground
    sequences): it is correct only if it is correct in every pair where it was evaluated.
    Queries without a true neighbour (``first_hit == -1`` everywhere) are left out.

    Raises:
        ValueError: unknown protocol, the result lacks it, or it does not match ``bench``.
    """
    items, correct, world = _query_table(result, bench, protocol)
    return bench.xy[items].astype(np.float64), correct, world


def query_colours(correct: np.ndarray) -> list[str]:
    """Map colours of query outcomes: :data:`CORRECT_COLOUR` (green) for a correct top-1,
    :data:`WRONG_COLOUR` (red) otherwise."""
    return [CORRECT_COLOUR if c else WRONG_COLOUR for c in np.asarray(correct, bool).tolist()]


# --------------------------------------------------------------------------------------
# Figures (matplotlib object API; each returns a Figure, or None when there is nothing to draw)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_recall_at_n(methods: Sequence[MethodEntry]) -> Figure | None:
    """Recall@N (N = 1..25) curves, one panel per protocol present in any method, one line
    per method that has it. None if no method has any protocol result."""
    present = [
        p for p in PROTOCOLS if any(_protocol_result(m.result, p) is not None for m in methods)
    ]
    if not present:
        return None
    fig = _new_figure(5.0 * len(present), 4.0)
    axes = fig.subplots(1, len(present), squeeze=False)[0]
    for ax, p in zip(axes, present, strict=True):
        for m in methods:
            res = _protocol_result(m.result, p)
            if res is None:
                continue
            rec = np.asarray(res.recall, np.float64)[:MAX_N]
            n = np.arange(1, rec.shape[0] + 1)
            ax.plot(n, rec, marker="o", markersize=3, label=_mpl_text(m.name))
        ax.set_title(f"{p}: {PROTOCOL_NAMES[p]}")
        ax.set_xlabel("N (top-N retrievals)")
        ax.set_ylabel("average recall@N [%]")
        ax.set_xlim(0.5, MAX_N + 0.5)
        ax.set_ylim(-2, 102)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_query_map(
    method: MethodEntry, bench: Benchmark, protocol: str | None = None
) -> Figure | None:
    """Per world, a bird's-eye map: aerial submap centres light grey, ground submap centres
    grey, the evaluated test queries green (correct top-1) or red (wrong) for ``method`` on
    ``protocol`` (default g2a, else g2g). None if the method has neither protocol."""
    if protocol is None:
        protocol = next(
            (p for p in ("g2a", "g2g") if _protocol_result(method.result, p) is not None), None
        )
        if protocol is None:
            return None
    items, correct, qworld = _query_table(method.result, bench, protocol)
    worlds = bench.worlds
    ncols = min(len(worlds), 3)
    nrows = math.ceil(len(worlds) / ncols)
    fig = _new_figure(5.0 * ncols, 4.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colours = np.array(query_colours(correct), dtype=object)
    for ax, world in zip(axes, worlds, strict=False):
        for source, colour, size in (("aerial", AERIAL_COLOUR, 6), ("ground", GROUND_COLOUR, 4)):
            xy = bench.xy[bench.select(world=world, source=source)]
            ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colour, label=f"{source} submaps")
        sel = qworld == world
        qxy = bench.xy[items[sel]]
        ok = correct[sel]
        for flag, label in ((True, "correct @1"), (False, "wrong @1")):
            m = ok == flag
            if not m.any():
                continue
            ax.scatter(
                qxy[m, 0],
                qxy[m, 1],
                s=14,
                c=list(colours[sel][m]),
                edgecolors="black",
                linewidths=0.3,
                label=f"query, {label} ({int(m.sum())})",
                zorder=3,
            )
        acc = f", top-1 {100.0 * ok.mean():.1f}%" if ok.size else ""
        ax.set_title(_mpl_text(f"{world} ({protocol}{acc})"))
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="best", fontsize="x-small")
    for ax in axes[len(worlds) :]:
        ax.set_axis_off()
    fig.suptitle(_mpl_text(f"{method.name}: {PROTOCOL_NAMES[protocol]} queries"))
    return fig


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def plot_training(training_log: Sequence[Mapping[str, Any]] | None) -> Figure | None:
    """Training loss and validation AR@1 (``val_ar1``, ``val_g2g_ar1``, ``val_g2a_ar1``,
    whichever are present) per ``epoch``. Missing, None or NaN values are skipped; None if
    the log holds no finite value."""
    if not training_log:
        return None
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, row in enumerate(training_log):
        epoch = row.get("epoch", i + 1)
        if not _finite(epoch):
            continue
        for key in ("loss", *(k for k, _ in VAL_KEYS)):
            if _finite(row.get(key)):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(float(epoch))
                ys.append(float(row[key]))
    if not series:
        return None
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(10.0, 3.8)
    ax_loss, ax_val = fig.subplots(1, 2)
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if "loss" in series:
        ax_loss.plot(*series["loss"], marker="o", markersize=3, color="tab:blue")
    ax_loss.set_title("training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(True, alpha=0.3)
    drawn = False
    for key, label in VAL_KEYS:
        if key in series:
            ax_val.plot(*series[key], marker="o", markersize=3, label=label)
            drawn = True
    ax_val.set_title("validation AR@1")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("AR@1 [%]")
    ax_val.grid(True, alpha=0.3)
    if drawn:
        ax_val.legend(fontsize="small")
    else:
        ax_val.text(0.5, 0.5, "no validation scores", ha="center", va="center")
    return fig


def _pick_examples(correct: np.ndarray, num: int, seed: int) -> np.ndarray:
    """Up to ``num`` positions into ``correct``, alternating success / failure (each list
    shuffled with ``seed``) while both last, then the rest of the other."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(np.flatnonzero(correct)).tolist()
    fail = rng.permutation(np.flatnonzero(~correct)).tolist()
    picked: list[int] = []
    while len(picked) < num and (succ or fail):
        for pool in (succ, fail):
            if pool and len(picked) < num:
                picked.append(pool.pop(0))
    return np.array(picked, dtype=np.int64)


def _bev(ax: Any, cloud: np.ndarray, title: str, rng: np.random.Generator) -> None:
    """Bird's-eye image of ``cloud`` (M, 3) on ``ax``: x/y in metres, colour = height."""
    pts = np.asarray(cloud, np.float64).reshape(-1, 3)
    if pts.shape[0] > MAX_BEV_POINTS:
        pts = pts[np.sort(rng.choice(pts.shape[0], MAX_BEV_POINTS, replace=False))]
    pts = pts[np.argsort(pts[:, 2], kind="stable")]  # high points drawn on top
    size = float(np.clip(4000.0 / max(pts.shape[0], 1), 0.3, 8.0))  # dense clouds: small dots
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=pts[:, 2], s=size, cmap="viridis", linewidths=0)
    ax.figure.colorbar(sc, ax=ax, shrink=0.8, label="z [m]")
    ax.set_title(title, fontsize="small")
    ax.set_xlabel("x [m]", fontsize="small")
    ax.set_ylabel("y [m]", fontsize="small")
    ax.set_aspect("equal", adjustable="datalim")
    ax.tick_params(labelsize="x-small")


def plot_examples(
    method: MethodEntry, bench: Benchmark, num_examples: int = 4, seed: int = 0
) -> Figure | None:
    """Example g2a retrievals of ``method`` (needs its ``retriever`` and g2a results, else
    None): ``num_examples`` evaluated test queries picked with ``seed`` (alternating correct
    and wrong top-1 when both exist), one row each: the query cloud's bird's-eye image, then
    its top-3 aerial retrievals titled with the distance (m) between submap centres and ✓
    (within the g2a threshold) or ✗."""
    retriever, res = method.retriever, method.result.g2a
    if retriever is None or res is None or num_examples < 1:
        return None
    items, correct, qworld = _query_table(method.result, bench, "g2a")
    picked = _pick_examples(correct, num_examples, seed)
    if picked.size == 0:
        return None
    threshold = float(method.result.config.g2a_threshold)
    ncols = 1 + TOP_RETRIEVALS
    fig = _new_figure(3.4 * ncols, 3.1 * picked.size)
    axes = fig.subplots(picked.size, ncols, squeeze=False)
    rng = np.random.default_rng(seed)
    for row, p in zip(axes, picked.tolist(), strict=True):
        q = int(items[p])
        world = str(qworld[p])
        db = bench.select(world=world, source="aerial")
        ranking = retriever.rank(np.array([q], np.int64), db, TOP_RETRIEVALS)
        top = np.asarray(ranking.indices)[0]
        mark = "✓" if correct[p] else "✗"
        _bev(
            row[0],
            bench.load_cloud(q),
            _mpl_text(f"query {world}/{bench.sequence[q]} #{q} (top-1 {mark})"),
            rng,
        )
        for r, ax in enumerate(row[1:]):
            pos = int(top[r]) if r < top.shape[0] else -1
            if pos < 0:
                ax.set_axis_off()
                ax.set_title(f"#{r + 1}: none", fontsize="small")
                continue
            j = int(db[pos])
            dist = float(np.linalg.norm(bench.xy[j] - bench.xy[q]))
            ok = "✓" if dist <= threshold else "✗"
            _bev(ax, bench.load_cloud(j), f"#{r + 1} aerial #{j}: {dist:.1f} m {ok}", rng)
    fig.suptitle(
        _mpl_text(
            f"{method.name}: ground query vs top-{TOP_RETRIEVALS} aerial retrievals "
            f"(✓ within {threshold:g} m)"
        )
    )
    return fig


# --------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0}img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:.92em;margin-top:.3em}.note{color:#555;font-size:.9em}
code{background:#f6f6f6;padding:0 .2em}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, bool]]]) -> str:
    """A table; each cell is (text, numeric); all text escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{_e(t)}</td>' if num else f"<td>{_e(t)}</td>" for t, num in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_html(methods: Sequence[MethodEntry]) -> str:
    rows = []
    for m in methods:
        s = m.result.summary()
        rows.append([(m.name, False), *[(_fmt(s.get(k)), True) for k, _ in SUMMARY_COLUMNS]])
    return _html_table(["Method", *[h for _, h in SUMMARY_COLUMNS]], rows)


def _per_world_html(methods: Sequence[MethodEntry]) -> str:
    worlds: list[str] = []
    for m in methods:
        for p in PROTOCOLS:
            res = _protocol_result(m.result, p)
            for w in res.locations if res is not None else ():
                if w not in worlds:
                    worlds.append(w)
    rows = []
    for w in worlds:
        for m in methods:
            cells: list[tuple[str, bool]] = [(w, False), (m.name, False)]
            for p in PROTOCOLS:
                res = _protocol_result(m.result, p)
                loc = res.locations.get(w) if res is not None else None
                vals = (
                    (None, None, None) if loc is None else (loc.r1, loc.recall_1pct, loc.mrr_hits)
                )
                cells += [(_fmt(v), True) for v in vals]
            rows.append(cells)
    return _html_table(["World", "Method", *[h for _, h in SUMMARY_COLUMNS]], rows)


def _extra_value(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}" if math.isfinite(float(v)) else MISSING
    if isinstance(v, (Mapping, list, tuple, np.ndarray)):
        return json.dumps(_json_safe(v), ensure_ascii=False, allow_nan=False)
    return str(v)


def _figure_html(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(name)}">'
        f"<figcaption>{_e(caption)} (also saved as <code>{_e(name)}</code>)</figcaption></figure>"
    )


def _captions(
    methods: Sequence[MethodEntry], map_method: MethodEntry | None, ex_method: MethodEntry | None
) -> dict[str, str]:
    cfg = methods[0].result.config
    qm = map_method.name if map_method is not None else ""
    ex = ex_method.name if ex_method is not None else ""
    return {
        "recall_at_n.png": (
            "Average recall@N for N = 1..25: the percentage of test queries with a true "
            "neighbour among their top-N retrievals, averaged over query/database pairs and "
            f"then over worlds. Left to right: ground-to-ground (true neighbour within "
            f"{cfg.g2g_threshold:g} m) and ground-to-aerial (within {cfg.g2a_threshold:g} m)."
        ),
        "query_map.png": (
            f"Bird's-eye map of each world for {qm}: aerial submap centres in light grey, "
            "ground submap centres in grey, test queries green where the top-1 retrieval is a "
            "true neighbour and red where it is not (ground-to-aerial protocol when "
            "available, else ground-to-ground, where a query must be correct against every "
            "other sequence)."
        ),
        "training.png": (
            "Training curves: the training loss per epoch (left) and the validation AR@1 "
            "(right) when it was computed."
        ),
        "examples.png": (
            f"Example ground-to-aerial retrievals of {ex}: each row is a test query's "
            "bird's-eye image (points coloured by height, x/y in metres, submap frame) "
            "followed by its top-3 aerial retrievals, titled with the distance between the "
            "submap centres and ✓ when within the "
            f"{cfg.g2a_threshold:g} m threshold (✗ otherwise). Queries are picked at random "
            "with a fixed seed, alternating correct and wrong top-1 retrievals when both exist."
        ),
    }


def _bench_summary(bench: Benchmark) -> str:
    n_test = int(((bench.source == "ground") & (bench.split == "test")).sum())
    n_aerial = int((bench.source == "aerial").sum())
    return (
        f"Benchmark {bench.root}: {len(bench.worlds)} world(s) ({', '.join(bench.worlds)}), "
        f"{len(bench)} submaps, {n_test} ground test queries, {n_aerial} aerial submaps."
    )


def _render_html(
    title: str,
    bench: Benchmark,
    methods: Sequence[MethodEntry],
    figures: Sequence[tuple[str, bytes, str]],
    extra: Mapping[str, Any] | None,
) -> str:
    cfg = methods[0].result.config
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{_e(_bench_summary(bench))}</p>',
        "<h2>Summary</h2>",
        _summary_html(methods),
        f'<p class="note">{_e(_metric_note(cfg))}</p>',
        "<h2>Per world</h2>",
        _per_world_html(methods),
    ]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_figure_html(name, png, cap) for name, png, cap in figures]
    if extra:
        parts.append("<h2>Details</h2>")
        parts.append(
            _html_table(
                ["Key", "Value"], [[(k, False), (_extra_value(v), False)] for k, v in extra.items()]
            )
        )
    parts.append(f'<p class="note">Raw numbers: <code>{_e(RESULTS_FILE)}</code>.</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _metric_note(cfg: Any) -> str:
    return (
        "Percentages. AR@1: average recall@1; AR@1%: average recall@1% (top 1% of the "
        "database); MRR: mean reciprocal rank over queries with a hit in the top "
        f"{cfg.k} (the papers' convention). g2g: ground test queries against the other ground "
        f"sequences of their world, true neighbour within {cfg.g2g_threshold:g} m; g2a: ground "
        f"test queries against the world's aerial submaps, within {cfg.g2a_threshold:g} m. "
        "Means are over query/database pairs, then over worlds; — = not evaluated."
    )


# --------------------------------------------------------------------------------------
# Entry point


def write_report(
    out_dir: Path,
    bench: Benchmark,
    methods: Sequence[MethodEntry],
    *,
    title: str,
    training_log: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    num_examples: int = 4,
    seed: int = 0,
) -> Path:
    """Write ``results.json``, the figures and ``report.html`` into ``out_dir`` (created).

    The first method is the main one (the trained model): the query map shows its
    outcomes; the example retrievals use the first method with a ``retriever`` and g2a
    results. Figures without data are skipped (no training log, no retriever).

    Order: ``results.json`` first (the numbers survive a plotting failure), any previous
    ``report.html`` removed, all figures rendered in memory, PNGs written, stale figure
    files of an earlier run removed, ``report.html`` written last. Every write is atomic,
    so if anything fails no ``report.html`` is left. Returns the path of ``report.html``.

    Raises:
        ValueError: no method, duplicate method names, or a result that does not match
            ``bench``.
    """
    ms = _check_methods(methods)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "title": title,
        "methods": {m.name: m.result.to_dict() for m in ms},
        "extra": dict(extra) if extra is not None else {},
    }
    text = json.dumps(_json_safe(payload), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_text(out_dir / RESULTS_FILE, text + "\n")
    report = out_dir / REPORT_FILE
    report.unlink(missing_ok=True)

    has_any = ms[0].result.g2a is not None or ms[0].result.g2g is not None
    map_method = ms[0] if has_any else None
    ex_method = next((m for m in ms if m.retriever is not None and m.result.g2a is not None), None)
    captions = _captions(ms, map_method, ex_method)
    makers: dict[str, Callable[[], Figure | None]] = {
        "recall_at_n.png": lambda: plot_recall_at_n(ms),
        "query_map.png": lambda: plot_query_map(map_method, bench) if map_method else None,
        "training.png": lambda: plot_training(training_log),
        "examples.png": lambda: (
            plot_examples(ex_method, bench, num_examples, seed) if ex_method else None
        ),
    }
    figures: list[tuple[str, bytes, str]] = []
    for name in FIGURES:
        fig = makers[name]()
        if fig is not None:
            figures.append((name, _png_bytes(fig), captions[name]))
    for name, png, _ in figures:
        atomic_write_bytes(out_dir / name, png)
    written = {name for name, _, _ in figures}
    for name in FIGURES:
        if name not in written:
            (out_dir / name).unlink(missing_ok=True)
    atomic_write_text(report, _render_html(title, bench, ms, figures, extra))
    return report
