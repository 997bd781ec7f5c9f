"""The ``hotformerloc`` command line.

``OMP_WAIT_POLICY=PASSIVE`` is set before anything imports torch: on a shared 2-core
machine OpenMP spin-waiting slows small ops 30-80x.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hotformerloc import __version__
from hotformerloc.cli.options import (
    BatchSizeOpt,
    ConfigDeviceOpt,
    DeviceOpt,
    JsonOpt,
    OldPresetOpt,
    OldRerankOpt,
    PrecisionOpt,
    RerankTopOpt,
    SetOpt,
    WorkersOpt,
)
from hotformerloc.cli.progress import LogProgress
from hotformerloc.errors import HotformerlocError

if TYPE_CHECKING:
    from hotformerloc.train.trainer import TrainResult

app = typer.Typer(
    name="hotformerloc",
    help="Lidar place recognition across ground and aerial views (HOTFormerLoc).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


class UserError(HotformerlocError):
    """A bad command line (options that do not go together): one line, exit code 2."""


#: Whether :func:`~hotformerloc.model.device.retain_freed_memory` applied (``info``).
_MALLOC_RETAINED = False


def _version(value: bool) -> None:
    if value:
        console.print(f"hotformerloc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Lidar place recognition across ground and aerial views (HOTFormerLoc)."""
    from hotformerloc.model.device import retain_freed_memory

    global _MALLOC_RETAINED
    _MALLOC_RETAINED = retain_freed_memory()


@app.command()
def info(
    as_json: JsonOpt = False,
) -> None:
    """Versions, threads and compute device."""
    import numpy
    import torch

    cuda = torch.cuda.is_available()
    data = {
        "hotformerloc": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "malloc_retains_freed_memory": _MALLOC_RETAINED,
        "device": "cuda" if cuda else "cpu",
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(show_header=False, box=None)
    for k, v in data.items():
        table.add_row(k, str(v))
    console.print(table)


def _progress() -> tuple[Progress, Callable[[str, int, int], None]]:
    bar = LogProgress(
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


def _generate(
    preset: str | None,
    config: list[str] | None,
    overrides: dict[str, Any],
    out: Path,
    seed: int | None,
    workers: int | None,
) -> None:
    from hotformerloc.synth.config import load_generator_config
    from hotformerloc.synth.generate import generate as run_generate
    from hotformerloc.synth.generate import workers_default

    cfg = load_generator_config(preset, config, seed, overrides)
    bar, update = _progress()
    t0 = time.perf_counter()
    with bar:
        res = run_generate(cfg, out, workers or workers_default(), update)
    dt = time.perf_counter() - t0
    table = Table(title=f"benchmark in {out}")
    for col in ("world", "sequence / split", "submaps"):
        table.add_column(col)
    for world, c in res.counts.items():
        for k, v in c.items():
            table.add_row(world, k, str(v))
    console.print(table)
    rt = Table(title="revisits of ground test queries")
    cols = (
        "world",
        "queries",
        "aerial <= r",
        "ground <= r",
        "r (m)",
        "max nearest ground",
        "overlap g-g (far)",
        "overlap g-a (far)",
    )
    for col in cols:
        rt.add_column(col)
    for world, r in res.revisits.items():
        mg = r["max_nearest_ground"]
        overlap = r.get("overlap")
        ov: dict[str, Any] = overlap if isinstance(overlap, dict) else {}

        def pair(key: str, ov: dict[str, Any] = ov) -> str:
            a, b = ov.get(f"median_overlap_{key}"), ov.get(f"median_overlap_{key}_far")
            return "-" if a is None else f"{a:.2f} ({b:.2f})" if b is not None else f"{a:.2f}"

        rt.add_row(
            world,
            str(r["queries"]),
            str(r["with_aerial_within"]),
            str(r["with_ground_within"]),
            str(r["radius"]),
            "-" if mg is None else f"{mg:.1f}",
            pair("ground"),
            pair("aerial"),
        )
    console.print(rt)
    total = res.generated + res.skipped_existing
    console.print(
        f"{res.generated} submaps generated, {res.skipped_existing} already present, "
        f"{res.discarded} discarded (too few points) in {dt:.1f} s "
        f"({res.generated / max(dt, 1e-9):.1f} submaps/s); {total} on disk; "
        f"manifest: {res.manifest}"
    )


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            help="Preset (demo, small, large; default demo) or YAML file; repeat to merge "
            "a file over a preset (-c small -c my.yaml).",
        ),
    ] = None,
    set_: SetOpt = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (overrides the config).")] = None,
    workers: WorkersOpt = None,
    preset: OldPresetOpt = None,
) -> None:
    """Generate a synthetic ground/aerial place-recognition benchmark (resumable)."""
    from hotformerloc.config import parse_overrides
    from hotformerloc.synth.config import GeneratorConfig

    _generate(preset, config, parse_overrides(set_, GeneratorConfig), out, seed, workers)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/demo"),
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Trained weights: pretrained ARCH.TAG or a checkpoint file."
        ),
    ] = "hotformerloc-tiny.synth",
    seed: Annotated[
        int,
        typer.Option(
            min=0, help="Benchmark seed (not a pre-training seed: 1-8, 101-102 are refused)."
        ),
    ] = 0,
    workers: WorkersOpt = None,
    rerank_top: RerankTopOpt = None,
) -> None:
    """The shipped pre-trained model on an unseen synthetic benchmark, against Scan Context.

    Generate the demo benchmark (cached), evaluate the model (1 view and its test-time yaw
    views, + geometric re-ranking) against Scan Context ground-to-ground and
    ground-to-aerial, localise ground scans in an aerial place database, and write
    report/report.html and results.json. Trains nothing (training: `hotformerloc train -c
    pretrain`, docs/training.md). Re-ranks the top 25 unless --rerank-top says otherwise."""
    _demo(out, model, seed, workers, rerank_top)


def _demo(out: Path, model: str, seed: int, workers: int | None, rerank_top: int | None) -> None:
    from hotformerloc.pipelines import demo as lib

    top = lib.DEFAULT_RERANK_TOP if rerank_top is None else rerank_top
    bar, update = _progress()
    try:
        lib.check_demo_args(model, seed, None, top, lib.DEFAULT_LOCALIZE)
        with bar:
            res = lib.run_demo(
                out,
                model=model,
                seed=seed,
                workers=workers,
                rerank_top=top,
                progress=update,
            )
    except lib.DemoError as e:
        raise UserError(str(e)) from None

    console.print(
        f"model {res.model} (weights sha256 {res.weights_sha256}), seed {seed}",
        soft_wrap=True,
        markup=False,
    )
    console.print(res.table(), soft_wrap=True, markup=False, highlight=False)
    if res.localization:
        console.print(
            f"localisation of {len(res.localization)} ground test scans in their world's aerial "
            f"map (top {top or 5} re-ranked): top place, pose error against the ground truth",
            soft_wrap=True,
        )
    for r in res.localization:
        ok = "within" if r.within else "NOT within"
        console.print(
            f"  {r.query} -> {r.top_place} ({r.place_distance_m:.1f} m away, fitness "
            f"{r.fitness:.2f}): {r.translation_error_m:.2f} m, {r.rotation_error_deg:.1f} deg "
            f"(yaw {r.yaw_error_deg:.1f} deg), {ok} 5 m / 5 deg",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    t = res.timings
    console.print(
        f"report: {res.report}; results: {Path(out) / lib.RESULTS_FILE} (total {t.total_s:.0f} s: "
        f"generate {t.generate_s:.0f} s, embed {t.embed_s + t.embed_yaw_s:.0f} s, re-rank "
        f"{t.rerank_s:.0f} s, Scan Context {t.scancontext_s:.0f} s, database {t.database_s:.0f} s, "
        f"localise {t.localize_s:.0f} s, report {t.report_s:.0f} s)",
        soft_wrap=True,
    )


@app.command()
def embed(
    files: Annotated[list[Path], typer.Argument(help="Point-cloud files (any supported format).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Registered name or checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    batch_size: BatchSizeOpt = 8,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Force a reader (e.g. pnv for PNV .bin).")
    ] = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    precision: PrecisionOpt = "fp32",
) -> None:
    """Compute global descriptors: writes descriptors.npy (N, D) float32, ids.txt, embed.json.

    With --workers N, N processes read the clouds and build their octrees while the model
    runs (without it: all in this process)."""
    import io as _io

    import numpy as np

    from hotformerloc.index import load_embedder
    from hotformerloc.index.pipeline import EMBED_WORKERS, embed_files
    from hotformerloc.io.atomic import atomic_write_bytes, atomic_write_text

    embedder = load_embedder(model, device, precision)
    name, sha = embedder.info.name, embedder.file_sha256
    if sha is None:
        err.print(f"[yellow]note:[/yellow] {name} has untrained (random) weights")
    bar, update = _progress()
    with bar:
        desc = embed_files(
            embedder,
            files,
            batch_size,
            lambda done, total: update("embedding", done, total),
            EMBED_WORKERS if workers is None else workers,
            fmt,
        )
    out.mkdir(parents=True, exist_ok=True)
    buf = _io.BytesIO()
    np.save(buf, desc)
    atomic_write_bytes(out / "descriptors.npy", buf.getvalue())
    atomic_write_text(out / "ids.txt", "".join(f"{f}\n" for f in files))
    meta = {
        "model": name,
        "weights_sha256": sha,
        "input_pipeline": embedder.model.config.input_pipeline(),
        "precision": embedder.precision.name,
        "count": len(files),
        "dim": int(desc.shape[1]),
    }
    atomic_write_text(out / "embed.json", json.dumps(meta, indent=1) + "\n")
    console.print(f"{len(files)} descriptors ({desc.shape[1]}-d) from {name} -> {out}")


def _train_progress(bar: Progress) -> Callable[[int, int, int, dict[str, float]], None]:
    tasks: dict[int, TaskID] = {}

    def update(epoch: int, done: int, total: int, stats: dict[str, float]) -> None:
        if epoch not in tasks:
            tasks[epoch] = bar.add_task(f"epoch {epoch + 1}", total=total)
        loss = stats.get("loss", float("nan"))
        bar.update(
            tasks[epoch], completed=done, total=total, description=f"epoch {epoch + 1} L={loss:.3f}"
        )

    return update


def _train(
    config: str,
    out: Path,
    resume: bool,
    sets: dict[str, object],
    device: str | None,
    nproc: int = 1,
) -> TrainResult:
    """Load the config (with overrides), train, print the log table; returns TrainResult."""
    from hotformerloc.train.config import load_train_config
    from hotformerloc.train.trainer import fit_local

    if device is not None:
        sets = {**sets, "device": device}
    if nproc < 1:
        raise UserError("--nproc must be >= 1")
    cfg = load_train_config(config, sets)
    bar, _ = _progress()
    with bar:
        res = fit_local(cfg, out, nproc, resume, progress=_train_progress(bar))
    table = Table(title=f"training {cfg.model} -> {out}")
    keys = ["epoch", "loss", "lr", "seconds", "val_ar1", "val_g2g_ar1", "val_g2a_ar1"]
    keys = [k for k in keys if any(k in row for row in res.log)]
    for k in keys:
        table.add_column(k)
    for row in res.log:
        table.add_row(*[_fmt(row.get(k)) for k in keys])
    console.print(table)
    console.print(
        f"best validation AR@1 {_fmt(res.best_score)} at epoch {res.best_epoch}; "
        f"checkpoints: {out / 'best.safetensors'}, {out / 'last.safetensors'}"
        + (" (stopped by the time budget)" if res.stopped_by_budget else "")
    )
    return res


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@app.command()
def train(
    config: Annotated[
        str,
        typer.Option(
            "--config", "-c", help="Preset (demo, pretrain, paper settings) or a YAML file."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, logs).")],
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out after its last finished epoch.")
    ] = False,
    set_: SetOpt = None,
    device: ConfigDeviceOpt = None,
    nproc: Annotated[
        int, typer.Option(help="Data-parallel processes on this machine (CPU: gloo).")
    ] = 1,
) -> None:
    """Train a model (Truncated Smooth-AP, multi-staged backprop); torchrun for multi-GPU."""
    from hotformerloc.config import parse_overrides
    from hotformerloc.train.config import TrainConfig

    _train(config, out, resume, parse_overrides(set_, TrainConfig), device, nproc)


@app.command(name="eval")
def eval_(
    data: Annotated[Path, typer.Option("--data", "-d", help="Benchmark folder.")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Registered name or checkpoint (repeatable)."),
    ] = None,
    scancontext: Annotated[
        bool, typer.Option("--scancontext", help="Also evaluate the Scan Context baseline.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write results.json and report.html here.")
    ] = None,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    yaw_views: Annotated[
        int,
        typer.Option(
            min=1, help="Average each model descriptor over this many yaw rotations of the input."
        ),
    ] = 1,
    query_views: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Embed each query at this many yaw rotations; its distance to a database "
            "submap is the smallest over them (default: the model's query_views).",
        ),
    ] = None,
    rerank_top: RerankTopOpt = None,
    as_json: JsonOpt = False,
    rerank_old: OldRerankOpt = None,
) -> None:
    """Evaluate methods on a benchmark: ground-to-ground and ground-to-aerial AR@N, MRR."""
    from hotformerloc.eval.report import format_table, write_report
    from hotformerloc.pipelines.evaluate import evaluate_benchmark

    rerank = rerank_top if rerank_top is not None else rerank_old or 0
    if not model and not scancontext:
        raise UserError("nothing to evaluate: give --model and/or --scancontext")
    if rerank and not model:
        raise UserError("--rerank-top re-ranks a model's retrievals: give --model too")
    if yaw_views > 1 and query_views is not None and query_views > 1:
        raise UserError("--yaw-views and --query-views cannot be combined")
    bar, update = _progress()
    with bar:
        res = evaluate_benchmark(
            data,
            model or [],
            scancontext,
            batch_size,
            device,
            yaw_views,
            query_views,
            rerank,
            update,
        )
    entries = res.entries
    if out is not None:
        write_report(out, res.benchmark, entries, title=f"Evaluation on {data}")
    if as_json:
        print(json.dumps({e.name: e.result.to_dict() for e in entries}, allow_nan=False))
    else:
        console.print(format_table(entries))


def _register_groups() -> None:
    from hotformerloc.cli.bag import bag_app
    from hotformerloc.cli.convert import convert
    from hotformerloc.cli.dataset import dataset_app
    from hotformerloc.cli.db import db_app, localize, query
    from hotformerloc.cli.models import models

    app.add_typer(dataset_app, name="dataset")
    app.add_typer(db_app, name="db")
    app.add_typer(bag_app, name="bag")
    app.command(name="query")(query)
    app.command(name="localize")(localize)
    app.command(name="convert")(convert)
    app.command(name="models")(models)


_register_groups()


def _warning_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Library warnings as one line on stderr (no file, line or source echo)."""
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True, highlight=False)


def entrypoint() -> None:
    """Console-script entry: user errors become one clear line and exit code 2; warnings
    one line each."""
    import warnings

    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        _run_app()


def _run_app() -> None:
    user_errors = (HotformerlocError, FileExistsError)
    try:
        # without standalone mode, click returns a typer.Exit's code instead of exiting
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except user_errors as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow] (finished files are kept; rerun to resume)")
        sys.exit(130)
    except Exception as e:
        # usage errors of the (vendored) click layer carry show() and exit_code
        show, exit_code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise


if __name__ == "__main__":
    entrypoint()
