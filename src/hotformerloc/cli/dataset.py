"""``hotformerloc dataset prepare|check|evaluate``: public benchmarks and users' recordings.

* ``prepare NAME --root PATH --out DIR``: build the paper's training tuples and evaluation
  sets in our format (``docs/datasets/``); ``kitti`` / ``sequence`` go to
  :mod:`hotformerloc.data.recordings`;
* ``check NAME --root PATH``: one report of every problem found (exit 1 on errors);
* ``evaluate --data DIR --model CKPT``: score a model with the prepared set's protocol.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hotformerloc.cli.options import (
    BatchSizeOpt,
    DeviceOpt,
    JsonOpt,
    PointsOpt,
    PosesOpt,
    SetOpt,
    bag_topics,
)
from hotformerloc.data.prepare.common import PrepareError

dataset_app = typer.Typer(help="Prepare and check datasets.", no_args_is_help=True)
console = Console()


_NAMES = "oxford, inhouse, cs-campus3d, wild-places, cs-wild-places, kitti, sequence"
_STYLE = {"error": "red", "warning": "yellow", "info": "dim"}

NameArg = Annotated[str, typer.Argument(help=f"Dataset: {_NAMES}.")]
RootOpt = Annotated[Path, typer.Option("--root", help="The dataset folder.")]
ReleaseOpt = Annotated[
    str | None, typer.Option(help="wild-places: pcd (the paper's .pcd release) or v3 (.bin).")
]
SubsetOpt = Annotated[
    str | None,
    typer.Option(help="cs-wild-places: the evaluation set, baseline (default) or unseen."),
]
VariantOpt = Annotated[
    str | None, typer.Option(help="cs-wild-places: normalised (default, the paper's) or metric.")
]
RegionsOpt = Annotated[
    Path | None, typer.Option(help="Regions JSON: test squares/polygons, buffer circles.")
]
PicklesOpt = Annotated[
    Path | None, typer.Option(help="Folder with the reference's pickles (usual file names).")
]
PickleOpt = Annotated[
    list[str] | None,
    typer.Option("--pickle", help="One reference pickle: ROLE=FILE (repeatable)."),
]
SampleOpt = Annotated[
    int, typer.Option(min=0, help="Clouds read per run to check dtype/shape/range.")
]
FullOpt = Annotated[bool, typer.Option("--full", help="Read every cloud (slow).")]


def _options(
    name: str,
    release: str | None,
    sets: list[str] | None,
    subset: str | None,
    variant: str | None,
    regions: Path | None,
    pickles: Path | None,
    pickle: list[str] | None,
    sample: int,
    full: bool,
    for_prepare: bool,
) -> Any:
    from hotformerloc.data.prepare import PrepareOptions

    files: dict[str, Path] = {}
    for item in pickle or []:
        role, sep, file = item.partition("=")
        if not sep or not role or not file:
            raise PrepareError(f"--pickle {item!r}: expected ROLE=FILE (e.g. train=train.pickle)")
        files[role] = Path(file)
    if name == "cs-wild-places":
        if sets:  # the old spelling of --subset (kept for one release)
            if subset is not None or len(sets) != 1:
                raise PrepareError(f"cs-wild-places: give one --subset, got {sets}")
            subset = sets[0]
        if subset is not None and subset not in ("baseline", "unseen"):
            raise PrepareError(
                f"cs-wild-places: --subset must be baseline or unseen, got {subset!r}"
            )
        subset = subset or ("baseline" if for_prepare else None)
        if variant is None and for_prepare:
            variant = "normalised"
    elif sets and name not in ("kitti", "sequence"):
        raise PrepareError(f"{name}: --set applies to kitti and sequence only")
    elif subset is not None:
        raise PrepareError(f"{name}: --subset applies to cs-wild-places only")
    if release is not None and release not in ("pcd", "v3"):
        raise PrepareError(f"--release must be pcd or v3, got {release!r}")
    if release is not None and name != "wild-places":
        raise PrepareError(f"{name}: --release applies to wild-places only")
    if variant is not None and variant not in ("normalised", "metric"):
        raise PrepareError(f"--variant must be normalised or metric, got {variant!r}")
    return PrepareOptions(
        release=release,
        subset=subset,
        variant=variant,
        regions=regions,
        pickles=pickles,
        pickle_files=files,
        sample=sample,
        full=full,
    )


def _print_report(report: Any) -> None:
    table = Table(title=f"{report.dataset}: {report.root}", show_lines=False)
    table.add_column("severity")
    table.add_column("finding", overflow="fold")
    for key, value in report.detected.items():
        table.add_row("[cyan]detected[/cyan]", escape(f"{key}: {value}"))
    for f in report.findings:
        style = _STYLE.get(f.severity, "")
        table.add_row(f"[{style}]{f.severity}[/{style}]", escape(f.message))
    console.print(table)
    verdict = "[green]OK[/green]" if report.ok else "[red]ERRORS[/red]"
    console.print(
        f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)",
        highlight=False,
    )


def _recording_config(sets: list[str] | None, sequences: str | None) -> Any:
    from hotformerloc.data.recordings import RecordingConfig

    items = list(sets or [])
    if sequences:
        names = [n.strip() for n in sequences.split(",") if n.strip()]
        items.append(f"sequences=[{', '.join(names)}]")
    return RecordingConfig.from_sets(items)


@dataset_app.command()
def check(
    name: NameArg,
    root: RootOpt,
    release: ReleaseOpt = None,
    set_: SetOpt = None,
    subset: SubsetOpt = None,
    variant: VariantOpt = None,
    regions: RegionsOpt = None,
    pickles: PicklesOpt = None,
    pickle: PickleOpt = None,
    sample: SampleOpt = 3,
    full: FullOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Check a dataset folder: one report of every problem (exit 1 when there are errors)."""
    from hotformerloc.data.prepare import check_dataset

    opts = _options(
        name, release, set_, subset, variant, regions, pickles, pickle, sample, full, False
    )
    report = check_dataset(name, root, opts)
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@dataset_app.command()
def prepare(
    name: NameArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (our format).")],
    root: Annotated[
        Path | None, typer.Option("--root", help="The dataset folder (not with --bag).")
    ] = None,
    bag: Annotated[
        Path | None,
        typer.Option(help="sequence: a ROS 1 / ROS 2 bag or MCAP file instead of --root."),
    ] = None,
    points: PointsOpt = None,
    poses: PosesOpt = None,
    release: ReleaseOpt = None,
    set_: SetOpt = None,
    subset: SubsetOpt = None,
    variant: VariantOpt = None,
    regions: RegionsOpt = None,
    pickles: PicklesOpt = None,
    pickle: PickleOpt = None,
    sequences: Annotated[
        str | None, typer.Option(help="kitti/sequence: comma-separated sequences to convert.")
    ] = None,
    sample: SampleOpt = 3,
    full: FullOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the paper's training tuples and evaluation sets in our format (atomic); for
    `sequence`, ground submaps from a folder of scans (--root) or a robot log (--bag)."""
    from hotformerloc.data.prepare import RECORDING_LAYOUTS, prepare_dataset

    if bag is not None:
        manifest = _prepare_bag(name, bag, root, points, poses, out, set_, force)
        if as_json:
            print(json.dumps(manifest, indent=1))
            return
        _print_counts(name, manifest)
        console.print(f"prepared {name} from {bag} -> {out} (manifest: {out / 'manifest.json'})")
        return
    if points is not None or poses is not None:
        raise PrepareError("--points and --poses go with --bag")
    if root is None:
        raise PrepareError(f"{name}: --root is required (the dataset folder)")
    opts = _options(
        name, release, set_, subset, variant, regions, pickles, pickle, sample, full, True
    )
    if name in RECORDING_LAYOUTS:
        from hotformerloc.data.recordings import RecordingError

        try:
            config = _recording_config(set_, sequences)
            manifest = prepare_dataset(name, root, out, opts, force, recording_config=config)
        except RecordingError as e:
            raise PrepareError(str(e)) from e
    elif sequences is not None:
        raise PrepareError(f"{name}: --sequences applies to kitti and sequence only")
    else:
        manifest = prepare_dataset(name, root, out, opts, force)
    if as_json:
        print(json.dumps(manifest, indent=1))
        return
    _print_counts(name, manifest)
    console.print(f"prepared {name} -> {out} (manifest: {out / 'manifest.json'})")


def _prepare_bag(
    name: str,
    bag: Path,
    root: Path | None,
    points: str | None,
    poses: str | None,
    out: Path,
    sets: list[str] | None,
    force: bool,
) -> dict[str, Any]:
    """``dataset prepare sequence --bag``: checks the options, then
    :func:`hotformerloc.data.recordings.bag.prepare_bag`."""
    if name != "sequence":
        raise PrepareError(f"{name}: --bag applies to sequence only")
    if root is not None:
        raise PrepareError("give --root or --bag, not both")
    points, poses = bag_topics(points, poses)
    from hotformerloc.data.recordings import RecordingError
    from hotformerloc.data.recordings.bag import prepare_bag

    try:
        return prepare_bag(
            bag, out, points, poses, config=_recording_config(sets, None), force=force
        )
    except RecordingError as e:
        raise PrepareError(str(e)) from e


def _print_counts(name: str, manifest: dict[str, Any]) -> None:
    counts = manifest.get("counts", {})
    worlds = counts.get("worlds") if isinstance(counts, dict) else None
    if not isinstance(worlds, dict):
        console.print_json(json.dumps(counts))
        return
    table = Table(title=f"{name}: submaps per location")
    for col in ("location", "runs", "submaps", "ground", "aerial", "train", "buffer", "test"):
        table.add_column(col)
    for w, c in worlds.items():
        table.add_row(
            w,
            str(len(c["sequences"])),
            str(c["submaps"]),
            *(str(c["source"][k]) for k in ("ground", "aerial")),
            *(str(c["split"][k]) for k in ("train", "buffer", "test")),
        )
    console.print(table)
    ev = counts.get("evaluation", {})
    if ev:
        et = Table(
            title=f"evaluation ({manifest['protocol']['name']}, true positive <= "
            f"{manifest['protocol']['threshold']:g} m)"
        )
        for col in ("location", "query runs", "queries", "aerial database"):
            et.add_column(col)
        for loc, c in ev.items():
            et.add_row(loc, str(c["runs"]), str(c["queries"]), str(c.get("database", "-")))
        console.print(et)
    console.print(f"training tuples: {counts.get('train_tuples', 0)}")
    for f in manifest.get("findings", []):
        style = _STYLE.get(f["severity"], "")
        console.print(f"[{style}]{f['severity']}[/{style}]: {escape(f['message'])}")


@dataset_app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", "-d", help="Prepared dataset folder.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint or registered name.")],
    root: Annotated[
        Path | None, typer.Option("--root", help="Dataset folder, if it moved since prepare.")
    ] = None,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    reference_batching: Annotated[
        bool,
        typer.Option(
            "--reference-batching",
            help="Pad each batch once per depth as the reference does (its batched numbers).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed the evaluation submaps of a prepared dataset and score its protocol (AR@1,
    AR@1%, MRR)."""
    import dataclasses

    from hotformerloc.data.prepared import PreparedDataset
    from hotformerloc.eval.prepared import evaluate_prepared_model
    from hotformerloc.model.checkpoint import load_model

    ds = PreparedDataset.load(data, root=root)
    from hotformerloc.model.device import resolve_device

    dev = resolve_device(device)
    net, _ = load_model(model)
    if reference_batching:
        net.config = dataclasses.replace(net.config, window_batching="reference")
    result = evaluate_prepared_model(net.to(dev), ds, batch_size)
    if as_json:
        print(json.dumps({"dataset": ds.dataset, "model": model, **result.to_dict()}))
        return
    table = Table(title=f"{ds.dataset} ({ds.evaluation.protocol}): {model}")
    for col in ("location", "AR@1", "AR@1%", "MRR"):
        table.add_column(col)
    for name, r in result.locations.items():
        table.add_row(name, f"{r.r1:.1f}", f"{r.recall_1pct:.1f}", f"{r.mrr_hits:.1f}")
    for name, g in result.groups.items():
        table.add_row(
            f"[bold]{name}[/bold]", f"{g.r1:.1f}", f"{g.recall_1pct:.1f}", f"{g.mrr_hits:.1f}"
        )
    table.add_row(
        "[bold]mean[/bold]",
        f"{result.r1:.1f}",
        f"{result.recall_1pct:.1f}",
        f"{result.mrr_hits:.1f}",
    )
    console.print(table)
