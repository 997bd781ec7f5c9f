"""``hotformerloc db build|add|info`` and ``hotformerloc query``: the place database CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from hotformerloc.cli.options import (
    BatchSizeOpt,
    DeviceOpt,
    JsonOpt,
    OldBatchOpt,
    PointsOpt,
    PosesOpt,
    PrecisionOpt,
    WorkersOpt,
    bag_topics,
)
from hotformerloc.cli.progress import LogProgress
from hotformerloc.index.search import SearchError

db_app = typer.Typer(help="Build and inspect a place database.", no_args_is_help=True)

console = Console()
err = Console(stderr=True)

SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="Benchmark: index only this source. Plain folder: the clouds' source "
        "(default ground).",
    ),
]


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, shown from the first update on (an error before it prints
    only the error line)."""
    bar = LogProgress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    task: TaskID | None = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def _untrained_note(embedder: Any) -> None:
    from hotformerloc.model.registry import list_models

    if embedder.info.spec in list_models():
        err.print(
            f"[yellow]note:[/yellow] {embedder.info.name} has untrained weights (seed 0): "
            "descriptors are reproducible but not meaningful"
        )


def _workers(workers: int | None, default: int) -> int:
    """--workers, or ``default`` when not given."""
    return default if workers is None else workers


DataOpt = Annotated[
    Path, typer.Option("--data", "-d", help="Benchmark folder or folder of clouds.")
]
WorldOpt = Annotated[
    str | None, typer.Option(help="Plain folder: map name (default: folder name).")
]
SequenceOpt = Annotated[
    str | None, typer.Option(help="Plain folder: sequence name (default: folder name).")
]


@db_app.command()
def build(
    model: Annotated[str, typer.Option("--model", "-m", help="Registered name or checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New database folder.")],
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Benchmark folder or folder of clouds.")
    ] = None,
    bag: Annotated[
        Path | None,
        typer.Option(help="Instead of --data: a ROS 1 / ROS 2 bag or MCAP file (ground submaps)."),
    ] = None,
    points: PointsOpt = None,
    poses: PosesOpt = None,
    submaps: Annotated[
        Path | None,
        typer.Option(help="With --bag: where the log's submaps go (default: OUT.submaps)."),
    ] = None,
    source: SourceOpt = None,
    world: WorldOpt = None,
    sequence: SequenceOpt = None,
    batch_size: BatchSizeOpt = 8,
    batch: OldBatchOpt = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    precision: PrecisionOpt = "fp32",
) -> None:
    """Embed every cloud of DIR (or the ground submaps of a robot log, --bag) with the model
    and write a new database (never overwrites).

    With --workers N, N processes read the clouds and build their octrees while the model
    runs (without it: all in this process; docs/database.md "Build throughput")."""
    from hotformerloc.index.database import DatabaseExistsError
    from hotformerloc.index.pipeline import (
        EMBED_WORKERS,
        build_database,
        load_embedder,
        scan_places,
    )

    if out.exists():
        raise DatabaseExistsError(f"{out}: already exists (refusing to overwrite it)")
    if (data is None) == (bag is None):
        raise SearchError("give --data DIR or --bag FILE (one of them)")
    if bag is not None:
        topics = bag_topics(points, poses)
        from hotformerloc.data.recordings.bag import prepare_bag

        data = submaps or out.with_name(out.name + ".submaps")
        prepare_bag(bag, data, *topics)
    elif points is not None or poses is not None or submaps is not None:
        raise SearchError("--points, --poses and --submaps go with --bag")
    assert data is not None
    entries = scan_places(data, source, world, sequence)
    embedder = load_embedder(model, device, precision)
    _untrained_note(embedder)
    with _progress("embedding") as update:
        db = build_database(
            out, embedder, entries, batch or batch_size, update, _workers(workers, EMBED_WORKERS)
        )
    console.print(
        f"{len(db)} places ({db.dim}-d, {db.model.name}) -> {out}", soft_wrap=True, highlight=False
    )


@db_app.command()
def add(
    db: Annotated[Path, typer.Option("--db", help="Database folder.")],
    data: DataOpt,
    source: SourceOpt = None,
    world: WorldOpt = None,
    sequence: SequenceOpt = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="The database's model from another location."),
    ] = None,
    batch_size: BatchSizeOpt = 8,
    batch: OldBatchOpt = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    precision: PrecisionOpt = "fp32",
) -> None:
    """Append the clouds of DIR to a database, with the model it was built with (--workers
    as in db build)."""
    from hotformerloc.index.database import PlaceDatabase
    from hotformerloc.index.pipeline import (
        EMBED_WORKERS,
        add_places,
        database_embedder,
        scan_places,
    )

    pdb = PlaceDatabase.open(db)
    embedder = database_embedder(pdb, model, device, precision)
    entries = scan_places(data, source, world, sequence)
    with _progress("embedding") as update:
        n = add_places(
            pdb, embedder, entries, batch or batch_size, update, _workers(workers, EMBED_WORKERS)
        )
    console.print(f"{n} places added; {len(pdb)} in {db}", soft_wrap=True, highlight=False)


@db_app.command()
def info(
    db: Annotated[Path, typer.Argument(help="Database folder.")],
    as_json: JsonOpt = False,
) -> None:
    """Schema, counts by source and sequence, and a full checksum verification."""
    from hotformerloc.index.database import DatabaseCorruptError, PlaceDatabase

    pdb = PlaceDatabase.open(db, verify=False)
    s = pdb.schema
    try:
        pdb.verify()
        status = "ok (every file's SHA-256 and the descriptor checksum match)"
        problem: DatabaseCorruptError | None = None
    except DatabaseCorruptError as e:
        status, problem = f"FAILED: {e}", e
    counts_by = pdb.counts()
    data = {
        "path": str(db),
        "format_version": s.format_version,
        "dim": s.dim,
        "metric": s.metric,
        "model": s.model.to_dict(),
        "count": s.count,
        "descriptors_sha256": s.descriptors_sha256,
        "generation": s.generation,
        "created": s.created,
        "updated": s.updated,
        "counts": counts_by,
        "checksums": status,
    }
    if as_json:
        print(json.dumps(data))
    else:
        table = Table(title=f"place database {db}", show_header=False)
        for key in ("format_version", "dim", "metric", "count", "generation", "created"):
            table.add_row(key, str(data[key]))
        table.add_row("updated", s.updated)
        table.add_row("model", f"{s.model.name} ({s.model.spec})")
        table.add_row("tensors sha256", s.model.tensors_sha256)
        table.add_row("input scale", str(s.model.data_scale))
        table.add_row("descriptors sha256", s.descriptors_sha256)
        table.add_row("checksums", status)
        console.print(table)
        counts = Table(title="entries")
        for col in ("by", "value", "entries"):
            counts.add_column(col)
        for by, tally in counts_by.items():
            for value, n in tally.items():
                counts.add_row(by, value, str(n))
        console.print(counts)
    if problem is not None:
        raise problem


def _floats(text: str, n: int, option: str) -> list[float]:

    parts = text.split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) != n:
        raise SearchError(f"{option} {text!r}: expected {n} comma-separated numbers")
    return vals


def query(
    scans: Annotated[list[Path], typer.Argument(help="Query point-cloud files.")],
    db: Annotated[Path, typer.Option("--db", help="Database folder.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates per scan.")] = 5,
    rerank: Annotated[
        bool, typer.Option("--rerank", help="Re-rank by geometric verification (with pose).")
    ] = False,
    source: Annotated[
        str | None, typer.Option(help="Only places of this source (ground, aerial).")
    ] = None,
    world: Annotated[str | None, typer.Option(help="Only places of this map.")] = None,
    sequence: Annotated[str | None, typer.Option(help="Only places of this sequence.")] = None,
    near: Annotated[
        str | None, typer.Option(help="Only places within X,Y,R (m) in map xy.")
    ] = None,
    box: Annotated[
        str | None, typer.Option(help="Only places inside XMIN,YMIN,XMAX,YMAX (m) in map xy.")
    ] = None,
    index: Annotated[str, typer.Option(help="auto, exact, hnsw or ivf.")] = "auto",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="The database's model from another location."),
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    as_json: JsonOpt = False,
) -> None:
    """Where was each scan taken? Top-k places of the database, optionally re-ranked."""
    from hotformerloc.index.pipeline import Localizer
    from hotformerloc.index.search import Box, Circle, SearchFilter

    if top_k < 1:
        raise SearchError(f"--top-k must be >= 1, got {top_k}")
    if near is not None and box is not None:
        raise SearchError("give --near or --box, not both")
    region = (
        Circle(*_floats(near, 3, "--near"))
        if near is not None
        else Box(*_floats(box, 4, "--box"))
        if box is not None
        else None
    )
    where = SearchFilter(source=source, world=world, sequence=sequence, region=region)
    loc = Localizer.open(db, model, device, index=index, precision=precision)
    results = [loc.query_file(s, top_k, where, rerank) for s in scans]
    if as_json:
        out = {
            "database": str(db),
            "model": loc.db.model.name,
            "results": [r.to_dict() for r in results],
        }
        print(json.dumps(out, allow_nan=False))
        return
    for r in results:
        t = r.timings
        title = f"{r.query}: embed {t.embed_s * 1e3:.0f} ms, search {t.search_s * 1e3:.1f} ms" + (
            f", re-rank {t.rerank_s * 1e3:.0f} ms" if rerank else ""
        )
        table = Table(title=title)
        cols = ["rank", "id", "distance", "source", "x", "y"]
        if rerank:
            cols += ["fitness", "rmse (m)", "yaw (deg)", "map x", "map y"]
        for c in cols:
            table.add_column(c, overflow="fold")
        for cand in r.candidates:
            pose = cand.metadata.pose
            row = [
                str(cand.rank),
                cand.id,
                f"{cand.distance:.4f}",
                cand.metadata.source,
                "-" if pose is None else f"{pose[0, 3]:.1f}",
                "-" if pose is None else f"{pose[1, 3]:.1f}",
            ]
            if rerank:
                v, mp = cand.verification, cand.map_pose
                assert v is not None
                row += [
                    f"{v.fitness:.3f}",
                    f"{v.rmse:.3f}",
                    f"{v.yaw_deg:.1f}",
                    "-" if mp is None else f"{mp[0, 3]:.1f}",
                    "-" if mp is None else f"{mp[1, 3]:.1f}",
                ]
            table.add_row(*row)
        if not r.candidates:
            console.print(f"{r.query}: no place passes the filters")
        else:
            console.print(table)


def localize(
    db: Annotated[Path, typer.Option("--db", help="Database folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            "-d",
            help="The drive: submap clouds named by timestamp + odometry poses.csv, or a "
            "benchmark sequence (clouds/ + poses.csv).",
        ),
    ] = None,
    bag: Annotated[
        Path | None,
        typer.Option(
            help="Instead of --data: a ROS 1 / ROS 2 bag or MCAP file (submaps -> OUT/submaps)."
        ),
    ] = None,
    scans: Annotated[
        Path | None,
        typer.Option(
            help="Instead of --data: single scans named by timestamp + poses.csv "
            "(submaps -> OUT/submaps)."
        ),
    ] = None,
    points: PointsOpt = None,
    poses: PosesOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Candidates per scan.")] = 25,
    source: Annotated[
        str | None, typer.Option(help="Only places of this source (ground, aerial).")
    ] = None,
    min_confidence: Annotated[
        float, typer.Option(help="Lowest verification fitness the track accepts.")
    ] = 0.5,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="The database's model from another location."),
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
) -> None:
    """Localise a drive submap after submap: retrieve, re-rank, keep the track consistent
    with the odometry (docs/robot-logs.md). Writes trajectory.csv and track.html."""
    from hotformerloc.index.pipeline import Localizer
    from hotformerloc.index.search import SearchFilter
    from hotformerloc.index.track import TrackConfig
    from hotformerloc.pipelines.localize import (
        localize_drive,
        localize_log,
        localize_scans,
        write_outputs,
    )

    if top_k < 1:
        raise SearchError(f"--top-k must be >= 1, got {top_k}")
    if sum(x is not None for x in (data, bag, scans)) != 1:
        raise SearchError("give one of --data DRIVE, --scans DIR or --bag FILE")
    topics = bag_topics(points, poses) if bag is not None else None
    if bag is None and (points is not None or poses is not None):
        raise SearchError("--points and --poses go with --bag")
    config = TrackConfig(min_confidence=min_confidence)
    loc = Localizer.open(db, model, device, precision=precision)
    where = SearchFilter(source=source)
    with _progress("localising") as update:
        if bag is not None and topics is not None:
            run = localize_log(loc, bag, *topics, out / "submaps", top_k, where, config, update)
        elif scans is not None:
            run = localize_scans(loc, scans, out / "submaps", top_k, where, config, update)
        else:
            assert data is not None
            run = localize_drive(loc, data, top_k, where, config, update)
    write_outputs(run, list(loc.db.entries()), out)
    matched = sum(s.point.status == "matched" for s in run)
    predicted = sum(s.point.status == "predicted" for s in run)
    console.print(
        f"{len(run)} submaps: {matched} matched, {predicted} predicted by odometry, "
        f"{len(run) - matched - predicted} not localised -> {out}/trajectory.csv, "
        f"{out}/track.html",
        soft_wrap=True,
        highlight=False,
    )
