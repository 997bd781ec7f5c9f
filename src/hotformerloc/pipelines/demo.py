"""The demo (``hotformerloc demo``, ``make demo``): the shipped pre-trained model on a fresh
synthetic benchmark, against Scan Context, and as a localiser in an aerial place database.

:func:`run_demo` trains nothing. It

1. generates the ``demo`` benchmark (cached and resumable: :mod:`hotformerloc.synth.generate`)
   from a seed that none of the pre-training or validation worlds used (:data:`RESERVED_SEEDS`);
2. evaluates ground-to-ground (15 m) and ground-to-aerial (30 m): the model with one view,
   the model with ``yaw_views`` test-time yaw views (query views, the smallest distance over
   them, for a model trained on co-oriented clouds, ``config.query_views`` > 1; otherwise
   the descriptor averaged over the views), that model with its top ``rerank_top``
   re-ranked by geometric verification (:class:`RerankRetriever`), and Scan Context
   (:func:`hotformerloc.pipelines.evaluate.scan_context_config`);
3. builds a place database of the benchmark's aerial submaps with the model and localises
   ``localize`` ground test scans in their world's aerial map, with re-ranking: the top
   place and the 6-DoF pose it gives, against the ground-truth pose;
4. writes ``report/report.html`` (:func:`hotformerloc.eval.report.write_report`) and
   ``results.json`` (:meth:`DemoResult.to_dict`; :func:`load_result` reads it back).

See ``docs/demo.md``. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hotformerloc.errors import HotformerlocError
from hotformerloc.io.atomic import atomic_write_text
from hotformerloc.pipelines.evaluate import (
    TimedEntry,
    score_model,
    score_reranked,
    score_scan_context,
)

if TYPE_CHECKING:
    from hotformerloc.data.benchmark import Benchmark
    from hotformerloc.eval.report import MethodEntry
    from hotformerloc.model.network import HOTFormerLoc
    from hotformerloc.synth.config import GeneratorConfig

__all__ = [
    "DEFAULT_LOCALIZE",
    "DEFAULT_MODEL",
    "DEFAULT_RERANK_TOP",
    "DEFAULT_YAW_VIEWS",
    "POSE_ROTATION_DEG",
    "POSE_TRANSLATION_M",
    "RESERVED_SEEDS",
    "RESULTS_FILE",
    "DemoError",
    "DemoResult",
    "DemoTimings",
    "LocalizationRow",
    "MethodSummary",
    "check_demo_args",
    "choose_localization_queries",
    "evaluate_demo_methods",
    "load_result",
    "pose_errors",
    "resolve_model",
    "run_demo",
]

#: The shipped weights the demo shows (``hotformerloc models --pretrained``).
DEFAULT_MODEL = "hotformerloc-tiny.synth"
#: Test-time yaw views of the second model row for a model without ``query_views``
#: (docs/demo.md); a model with ``config.query_views`` > 1 uses its own.
DEFAULT_YAW_VIEWS = 4
#: Candidates re-ranked per query by geometric verification (measured: docs/demo.md).
DEFAULT_RERANK_TOP = 25
#: Ground test scans localised in the aerial place database.
DEFAULT_LOCALIZE = 5
#: Generator seeds of the pre-training corpus (1-8) and its validation worlds (101-102):
#: a benchmark from one of them would show the model worlds it has seen.
RESERVED_SEEDS = frozenset({*range(1, 9), 101, 102})
#: A localisation succeeds when the estimated pose is within these of the ground truth.
POSE_TRANSLATION_M = 5.0
POSE_ROTATION_DEG = 5.0
#: The demo's result file, in the run folder.
RESULTS_FILE = "results.json"
RESULTS_FORMAT = "hotformerloc-demo"
RESULTS_VERSION = 1
#: Submaps per forward pass when evaluating.
BATCH_SIZE = 64

Progress = Callable[[str, int, int], None]


class DemoError(HotformerlocError):
    """The demo cannot run with these inputs (reserved seed, model without weights, ...)."""


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class MethodSummary:
    """One row of the methods table: display ``name``, ``kind`` (``model``, ``yaw_views``,
    ``rerank`` or ``scancontext``) and ``metrics`` (:meth:`BenchmarkResult.summary`:
    ``g2g_ar1``, ``g2g_ar1pct``, ``g2g_mrr``, the same for ``g2a``, and ``ar1``, in percent)."""

    name: str
    kind: str
    metrics: Mapping[str, float]

    def summary(self) -> dict[str, float]:
        """The metrics, as :meth:`BenchmarkResult.summary` (what ``format_table`` reads)."""
        return dict(self.metrics)


@dataclass(frozen=True)
class LocalizationRow:
    """One ground test scan localised in its world's aerial map (with re-ranking).

    ``query``/``top_place``: place ids (``world/sequence/timestamp``); ``descriptor_distance``:
    L2 distance of the top place's descriptor; ``fitness``: its verification fitness;
    ``place_distance_m``: horizontal distance from the scan's true position to the top
    place's centre; ``estimated_pose``/``true_pose``: 4x4 (rows) scan frame -> map frame;
    errors between the two (:func:`pose_errors`); ``within``: translation error <=
    :data:`POSE_TRANSLATION_M` and rotation error <= :data:`POSE_ROTATION_DEG`.
    """

    query: str
    world: str
    top_place: str
    descriptor_distance: float
    fitness: float
    place_distance_m: float
    estimated_pose: tuple[tuple[float, ...], ...]
    true_pose: tuple[tuple[float, ...], ...]
    translation_error_m: float
    rotation_error_deg: float
    yaw_error_deg: float
    within: bool
    seconds: float


@dataclass(frozen=True)
class DemoTimings:
    """Wall-clock seconds of each stage (``embed_yaw_s``: the ``yaw_views`` embedding;
    ``database_s``: embedding the aerial submaps and writing the database)."""

    generate_s: float = 0.0
    embed_s: float = 0.0
    embed_yaw_s: float = 0.0
    rerank_s: float = 0.0
    scancontext_s: float = 0.0
    database_s: float = 0.0
    localize_s: float = 0.0
    report_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did and found (``results.json``: :meth:`to_dict`).

    ``model``: the model spec used (``ARCH.TAG``, or the checkpoint path as given);
    ``model_name``: its registered architecture;
    ``weights_sha256``: SHA-256 of the weights file (the registered one for a pretrained
    name); ``benchmark``/``report``/``database``: paths (``database`` None when nothing
    was localised).
    """

    model: str
    model_name: str
    weights_sha256: str
    seed: int
    yaw_views: int
    rerank_top: int
    benchmark: str
    methods: tuple[MethodSummary, ...]
    localization: tuple[LocalizationRow, ...]
    timings: DemoTimings
    report: str
    database: str | None

    def method(self, kind: str) -> MethodSummary:
        """The method row of ``kind``."""
        for m in self.methods:
            if m.kind == kind:
                return m
        raise KeyError(kind)

    def table(self) -> str:
        """The methods table (:func:`hotformerloc.eval.report.format_table`)."""
        from hotformerloc.eval.report import MethodEntry, format_table

        # format_table reads only result.summary(), which a MethodSummary has too
        rows = [MethodEntry(m.name, m) for m in self.methods]  # type: ignore[arg-type]  # duck type
        return format_table(rows)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (non-finite floats -> None)."""
        data = dataclasses.asdict(self)
        return {"format": RESULTS_FORMAT, "format_version": RESULTS_VERSION, **_json_data(data)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DemoResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            DemoError: not a demo result of this version.
        """
        if data.get("format") != RESULTS_FORMAT or data.get("format_version") != RESULTS_VERSION:
            raise DemoError(f"not a {RESULTS_FORMAT} result of version {RESULTS_VERSION}")
        try:
            methods = tuple(
                MethodSummary(m["name"], m["kind"], {k: _float(v) for k, v in m["metrics"].items()})
                for m in data["methods"]
            )
            rows = tuple(
                LocalizationRow(
                    **{
                        **r,
                        "estimated_pose": _pose_tuple(r["estimated_pose"]),
                        "true_pose": _pose_tuple(r["true_pose"]),
                        **{
                            k: _float(r[k])
                            for k in (
                                "descriptor_distance",
                                "fitness",
                                "place_distance_m",
                                "translation_error_m",
                                "rotation_error_deg",
                                "yaw_error_deg",
                                "seconds",
                            )
                        },
                    }
                )
                for r in data["localization"]
            )
            fields = {f.name for f in dataclasses.fields(cls)}
            plain = {k: data[k] for k in fields - {"methods", "localization", "timings"}}
            return cls(
                **plain,
                methods=methods,
                localization=rows,
                timings=DemoTimings(**{k: _float(v) for k, v in data["timings"].items()}),
            )
        except (KeyError, TypeError) as e:
            raise DemoError(f"malformed demo result ({e!r})") from None


def _json_data(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_data(v) for v in obj]
    return obj


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def _pose_tuple(pose: Any) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in np.asarray(pose, np.float64).tolist())


def load_result(path: str | Path) -> DemoResult:
    """The :class:`DemoResult` of a ``results.json`` written by :func:`run_demo` (or of the
    run folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    return DemoResult.from_dict(json.loads(p.read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- the model
def resolve_model(spec: str | Path) -> str:
    """The loadable spec of trained weights: ``ARCH.TAG`` as given, a bare ``ARCH`` as its
    default pretrained tag, anything else as a checkpoint path (checked on load).

    Raises:
        DemoError: a registered name without pretrained weights (one line naming
            ``hotformerloc models --pretrained``).
    """
    from hotformerloc.model.registry import list_models, pretrained_tags, split_model_name

    s = str(spec)
    known = list_models()
    shipped = list_models(pretrained=True)
    hint = (
        f"pretrained models: {', '.join(shipped) or 'none yet'} "
        "(`hotformerloc models --pretrained`); or pass a checkpoint with --model"
    )
    if s in shipped:
        return s
    if s in known:
        tags = pretrained_tags(s)
        if not tags:
            raise DemoError(f"the demo shows trained weights, and model {s!r} has none; {hint}")
        return tags[0]
    arch, tag = split_model_name(s)
    if tag is not None and arch in known and not Path(s).exists():
        raise DemoError(f"no weights {s!r} are registered yet; {hint}")
    return s


# --------------------------------------------------------------------------- evaluation
def _noop(stage: str, done: int, total: int) -> None:
    pass


def _model_label(spec: str, name: str) -> str:
    """A pretrained name as itself; a checkpoint as ``ARCH (file name)``."""
    from hotformerloc.model.registry import list_models

    return spec if spec in list_models(pretrained=True) else f"{name} ({Path(spec).name})"


def evaluate_demo_methods(
    bench: Benchmark,
    model: HOTFormerLoc,
    label: str,
    yaw_views: int,
    rerank_top: int,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> tuple[list[MethodEntry], list[str], dict[str, float]]:
    """(report entries, their kinds, seconds per stage): ``model`` (eval mode) with one
    view, with ``yaw_views`` views (query views when ``model.config.query_views`` > 1, else
    averaged), the latter with its top ``rerank_top`` re-ranked, and Scan Context; each
    scored on both protocols (:mod:`hotformerloc.pipelines.evaluate`)."""
    co_oriented = model.config.query_views > 1
    kind_of_views = "query views" if co_oriented else "yaw views"
    views = [(1, "model", "embed_s", label)]
    if yaw_views > 1:
        views.append(
            (yaw_views, "yaw_views", "embed_yaw_s", f"{label}, {yaw_views} {kind_of_views}")
        )
    scored: list[tuple[TimedEntry, str, str]] = []
    for n, kind, key, name in views:
        yaw, query = (1, n) if co_oriented else (n, 1)
        scored.append(
            (score_model(bench, model, name, yaw, query, batch_size, progress), kind, key)
        )
    if rerank_top > 0:
        base = scored[-1][0].entry
        scored.append((score_reranked(bench, base, rerank_top, progress), "rerank", "rerank_s"))
    scored.append((score_scan_context(bench, progress), "scancontext", "scancontext_s"))
    entries = [t.entry for t, _, _ in scored]
    kinds = [k for _, k, _ in scored]
    return entries, kinds, {key: t.seconds for t, _, key in scored}


# ------------------------------------------------------------------------- localisation
def choose_localization_queries(bench: Benchmark, count: int) -> list[int]:
    """``count`` ground test submaps (global indices), deterministic and spread: worlds in
    turn (sorted names; the first worlds take the remainder), and within a world evenly
    spaced over its test queries in index order (centred in equal shares)."""
    if count <= 0:
        return []
    per_world = {w: bench.select(world=w, source="ground", split="test") for w in bench.worlds}
    per_world = {w: q for w, q in per_world.items() if len(q)}
    if not per_world:
        raise DemoError(f"{bench.root}: the benchmark has no ground test scans to localise")
    share = dict.fromkeys(per_world, 0)
    left = min(count, sum(len(q) for q in per_world.values()))
    while left:
        for w, q in per_world.items():
            if left and share[w] < len(q):
                share[w] += 1
                left -= 1
    out: list[int] = []
    for w, q in per_world.items():
        m = share[w]
        out += [int(q[int((j + 0.5) * len(q) / m)]) for j in range(m)]
    return sorted(out)


def pose_errors(estimated: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """(translation error m, rotation error deg (angle of ``R_est^T R_true``), |yaw
    difference| deg in [0, 180]) between two 4x4 poses."""
    from hotformerloc.index.rerank import yaw_of

    e, t = np.asarray(estimated, np.float64), np.asarray(true, np.float64)
    trans = float(np.linalg.norm(e[:3, 3] - t[:3, 3]))
    cos = (float(np.trace(e[:3, :3].T @ t[:3, :3])) - 1.0) / 2.0
    rot = math.degrees(math.acos(min(1.0, max(-1.0, cos))))
    dyaw = (yaw_of(e) - yaw_of(t) + 180.0) % 360.0 - 180.0
    return trans, rot, abs(dyaw)


def _localize(
    bench: Benchmark,
    db_path: Path,
    spec: str,
    queries: Sequence[int],
    top: int,
    update: Progress,
) -> tuple[list[LocalizationRow], float, float]:
    """(rows, database seconds, localisation seconds)."""
    from hotformerloc.index import Localizer, SearchFilter, build_database, load_embedder
    from hotformerloc.index.pipeline import scan_places

    t0 = time.perf_counter()
    embedder = load_embedder(spec)
    aerial = scan_places(bench.root, source="aerial")
    if db_path.exists():  # the demo's own database of an earlier run: rebuilt every time
        if not (db_path / "database.json").is_file():
            raise DemoError(f"{db_path} exists and is not a place database: move it away")
        shutil.rmtree(db_path)
    db = build_database(
        db_path, embedder, aerial, progress=lambda d, n: update("place database", d, n)
    )
    t_db = time.perf_counter() - t0
    t1 = time.perf_counter()
    loc = Localizer(db, embedder)
    db.search_index()
    ground = {e.id: e for e in scan_places(bench.root, source="ground")}
    rows = []
    for n, i in enumerate(queries):
        world, seq = str(bench.world[i]), str(bench.sequence[i])
        q = ground[f"{world}/{seq}/{float(bench.timestamp[i]):.6f}"]
        assert q.pose is not None and q.path is not None
        tq = time.perf_counter()
        res = loc.query_file(q.path, k=top, where=SearchFilter(world=world), rerank=True)
        dt = time.perf_counter() - tq
        best = res.candidates[0]
        assert best.map_pose is not None and best.verification is not None
        assert best.metadata.pose is not None
        trans, rot, yaw = pose_errors(best.map_pose, q.pose)
        rows.append(
            LocalizationRow(
                query=q.id,
                world=world,
                top_place=best.id,
                descriptor_distance=float(best.distance),
                fitness=float(best.verification.fitness),
                place_distance_m=float(np.linalg.norm(best.metadata.pose[:2, 3] - q.pose[:2, 3])),
                estimated_pose=_pose_tuple(best.map_pose),
                true_pose=_pose_tuple(q.pose),
                translation_error_m=trans,
                rotation_error_deg=rot,
                yaw_error_deg=yaw,
                within=trans <= POSE_TRANSLATION_M and rot <= POSE_ROTATION_DEG,
                seconds=dt,
            )
        )
        update("localising", n + 1, len(queries))
    return rows, t_db, time.perf_counter() - t1


# ----------------------------------------------------------------------------- the demo
def check_demo_args(
    model: str | Path, seed: int, yaw_views: int | None, rerank_top: int, localize: int
) -> str:
    """Validate :func:`run_demo`'s arguments without doing any work; returns the model
    spec to load (:func:`resolve_model`).

    Raises:
        DemoError: a reserved or negative seed, an invalid count, a name without weights.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DemoError(f"seed must be an integer >= 0, got {seed!r}")
    if seed in RESERVED_SEEDS:
        raise DemoError(
            f"seed {seed} is a seed of the pre-training corpus (training 1-8, validation "
            "101-102): the demo must show worlds the model has not seen, choose another seed"
        )
    if yaw_views is not None and (not isinstance(yaw_views, int) or yaw_views < 1):
        raise DemoError(f"yaw_views must be an integer >= 1, got {yaw_views!r}")
    if not isinstance(rerank_top, int) or rerank_top < 0:
        raise DemoError(
            f"rerank_top must be an integer >= 0 (0: no re-ranking), got {rerank_top!r}"
        )
    if not isinstance(localize, int) or localize < 0:
        raise DemoError(f"localize must be an integer >= 0, got {localize!r}")
    return resolve_model(model)


def run_demo(
    out: str | Path,
    model: str | Path = DEFAULT_MODEL,
    seed: int = 0,
    workers: int | None = None,
    yaw_views: int | None = None,
    rerank_top: int = DEFAULT_RERANK_TOP,
    localize: int = DEFAULT_LOCALIZE,
    progress: Progress | None = None,
    config: GeneratorConfig | None = None,
) -> DemoResult:
    """Run the demo into the folder ``out`` (see the module docstring and ``docs/demo.md``).

    Args:
        out: run folder: ``benchmark/`` (kept between runs; a second run only checks it),
            ``places.db`` (rebuilt every run), ``report/``, ``results.json``.
        model: trained weights: ``ARCH.TAG`` (default :data:`DEFAULT_MODEL`), a bare
            ``ARCH`` (its default tag) or a checkpoint file.
        seed: benchmark seed; not one of :data:`RESERVED_SEEDS`.
        workers: generator processes (default: the CPUs, at most 8).
        yaw_views: test-time yaw views of the second model row (1: that row is left out;
            default: the model's ``config.query_views`` when > 1, else
            :data:`DEFAULT_YAW_VIEWS`).
        rerank_top: candidates re-ranked per query (0: no re-ranking row, and the
            localisation verifies the top 5).
        localize: ground test scans to localise (0: no database).
        progress: ``(stage, done, total)`` callback.
        config: the benchmark's generator config instead of the ``demo`` preset (its seed
            is replaced by ``seed``), e.g. a small one for tests.

    Raises:
        DemoError: a reserved seed, an invalid count, or a model name without weights
            (checked before any work).
        CheckpointError: an unreadable checkpoint or corrupt pretrained weights.
        ConfigError: ``out/benchmark`` holds another benchmark.
    """
    from hotformerloc.data import Benchmark
    from hotformerloc.eval.report import write_report
    from hotformerloc.model.checkpoint import load_model
    from hotformerloc.synth.config import load_generator_config
    from hotformerloc.synth.generate import generate, workers_default

    spec = check_demo_args(model, seed, yaw_views, rerank_top, localize)
    t_start = time.perf_counter()
    update = progress or _noop
    net, ck = load_model(spec)
    if ck is None:
        raise DemoError(f"{spec!r} has no trained weights; the demo needs a pretrained model")
    sha = ck.sha256  # of the file's bytes (for ARCH.TAG: verified against the registry)
    if yaw_views is None:
        own = net.config.query_views
        yaw_views = own if own > 1 else DEFAULT_YAW_VIEWS
    out = Path(out)
    bench_dir = out / "benchmark"

    t0 = time.perf_counter()
    cfg = (
        load_generator_config("demo", None, seed)
        if config is None
        else dataclasses.replace(config, seed=seed)
    )
    generate(cfg, bench_dir, workers or workers_default(), update)
    bench = Benchmark.load(bench_dir)
    t_gen = time.perf_counter() - t0

    label = _model_label(spec, ck.model)
    entries, kinds, sec = evaluate_demo_methods(bench, net, label, yaw_views, rerank_top, update)

    rows: list[LocalizationRow] = []
    t_db = t_loc = 0.0
    db_path: Path | None = None
    if localize:
        db_path = out / "places.db"
        queries = choose_localization_queries(bench, localize)
        rows, t_db, t_loc = _localize(bench, db_path, spec, queries, rerank_top or 5, update)

    t0 = time.perf_counter()
    extra: dict[str, Any] = {
        "model": spec,
        "weights_sha256": sha,
        "seed": seed,
    }
    for n, r in enumerate(rows, start=1):
        extra[f"localisation {n}: {r.query}"] = (
            f"top place {r.top_place} ({r.place_distance_m:.1f} m away), pose error "
            f"{r.translation_error_m:.2f} m / {r.rotation_error_deg:.1f} deg"
            + (" (within 5 m / 5 deg)" if r.within else "")
        )
    report = write_report(
        out / "report",
        bench,
        entries,
        title=f"hotformerloc demo: {label} vs Scan Context on an unseen synthetic benchmark",
        extra=extra,
    )
    t_report = time.perf_counter() - t0
    timings = DemoTimings(
        generate_s=t_gen,
        embed_s=sec.get("embed_s", 0.0),
        embed_yaw_s=sec.get("embed_yaw_s", 0.0),
        rerank_s=sec.get("rerank_s", 0.0),
        scancontext_s=sec.get("scancontext_s", 0.0),
        database_s=t_db,
        localize_s=t_loc,
        report_s=t_report,
        total_s=time.perf_counter() - t_start,
    )
    result = DemoResult(
        model=spec,
        model_name=ck.model,
        weights_sha256=sha,
        seed=seed,
        yaw_views=yaw_views,
        rerank_top=rerank_top,
        benchmark=str(bench_dir),
        methods=tuple(
            MethodSummary(e.name, k, e.result.summary())
            for e, k in zip(entries, kinds, strict=True)
        ),
        localization=tuple(rows),
        timings=timings,
        report=str(report),
        database=None if db_path is None else str(db_path),
    )
    text = json.dumps(result.to_dict(), indent=1, allow_nan=False)
    atomic_write_text(out / RESULTS_FILE, text + "\n")
    return result
