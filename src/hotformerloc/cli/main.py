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
from pathlib import Path
from typing import Annotated

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

app = typer.Typer(
    name="hotformerloc",
    help="Lidar place recognition across ground and aerial views (HOTFormerLoc).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


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


@app.command()
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
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


def _progress() -> tuple[Progress, callable]:  # type: ignore[valid-type]
    bar = Progress(
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
    preset: str | None, config: Path | None, out: Path, seed: int | None, workers: int | None
) -> None:
    from hotformerloc.synth.config import load_generator_config
    from hotformerloc.synth.generate import generate as run_generate
    from hotformerloc.synth.generate import workers_default

    cfg = load_generator_config(preset, config, seed)
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
        ov = r.get("overlap", {})

        def pair(key: str, ov: dict = ov) -> str:
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
    preset: Annotated[
        str | None, typer.Option(help="Preset: demo, small or large (default demo).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML config, over --preset if given, else over the defaults."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (overrides the config).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPUs).")] = None,
) -> None:
    """Generate a synthetic ground/aerial place-recognition benchmark (resumable)."""
    _generate(preset, config, out, seed, workers)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/demo"),
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPUs).")] = None,
) -> None:
    """The main job on the embedded default: generate (or reuse) the demo benchmark."""
    _generate("demo", None, out / "benchmark", None, workers)


def _load_model(spec: str) -> tuple[object, str, str | None]:
    """(model in eval mode, registered name, weights SHA-256 or None when untrained)."""
    from hotformerloc.model import create_model, list_models
    from hotformerloc.model.checkpoint import load_checkpoint, load_weights

    if spec in list_models():
        return create_model(spec).eval(), spec, None
    path = Path(spec)
    if not path.exists() and path.suffix != ".safetensors":
        raise UserError(
            f"--model {spec!r} is neither a registered model ({', '.join(list_models())}) "
            "nor a checkpoint file"
        )
    ck = load_checkpoint(path)
    if ck.model not in list_models():
        raise UserError(f"{path}: checkpoint of unknown model {ck.model!r}")
    model = create_model(ck.model, **ck.config)
    load_weights(model, ck, path)
    return model.eval(), ck.model, ck.sha256


@app.command()
def embed(
    files: Annotated[list[Path], typer.Argument(help="Point-cloud files (any supported format).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Registered name or checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    batch_size: Annotated[int, typer.Option(help="Clouds per forward pass.")] = 8,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Force a reader (e.g. pnv for PNV .bin).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
) -> None:
    """Compute global descriptors: writes descriptors.npy (N, D) float32, ids.txt, embed.json."""
    import io as _io

    import numpy as np
    import torch

    from hotformerloc.io import read_pointcloud
    from hotformerloc.io.atomic import atomic_write_bytes, atomic_write_text

    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else "cpu"
        if device == "auto"
        else device
    )
    net, name, sha = _load_model(model)
    net = net.to(dev)  # type: ignore[attr-defined]
    if sha is None:
        err.print(f"[yellow]note:[/yellow] {name} has untrained (random) weights")
    descriptors = []
    bar, update = _progress()
    with bar, torch.inference_mode():
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            clouds = []
            for f in chunk:
                cloud = read_pointcloud(f, fmt)
                clouds.append(torch.from_numpy(cloud.xyz).to(dev))
            descriptors.append(net.embed(clouds).float().cpu())  # type: ignore[attr-defined]
            update("embedding", min(start + batch_size, len(files)), len(files))
    desc = torch.cat(descriptors).numpy().astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    buf = _io.BytesIO()
    np.save(buf, desc)
    atomic_write_bytes(out / "descriptors.npy", buf.getvalue())
    atomic_write_text(out / "ids.txt", "".join(f"{f}\n" for f in files))
    meta = {"model": name, "weights_sha256": sha, "count": len(files), "dim": int(desc.shape[1])}
    atomic_write_text(out / "embed.json", json.dumps(meta, indent=1) + "\n")
    console.print(f"{len(files)} descriptors ({desc.shape[1]}-d) from {name} -> {out}")


def entrypoint() -> None:
    """Console-script entry: user errors become one clear line and exit code 2."""
    from hotformerloc.config import ConfigError
    from hotformerloc.io import PointCloudError
    from hotformerloc.model.checkpoint import CheckpointError
    from hotformerloc.octree import OctreeInputError

    user_errors = (ConfigError, PointCloudError, CheckpointError, OctreeInputError, UserError)
    try:
        app(standalone_mode=False)
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
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    entrypoint()
