"""``hotformerloc models``: the registered variants and their pretrained weights."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hotformerloc.cli.options import JsonOpt

console = Console()


def count_parameters(config: Any) -> int:
    """Exact parameter count of the network of ``config``, built on the meta device."""
    import torch

    from hotformerloc.model.network import HOTFormerLoc

    with torch.device("meta"):
        model = HOTFormerLoc(config)
    return sum(p.numel() for p in model.parameters())


def _scale(v: float | None) -> str:
    if v is None:
        return "as read"
    inv = 1.0 / v if v else 0.0
    return f"1/{round(inv)}" if inv and abs(inv - round(inv)) < 1e-6 else f"{v:g}"


def input_summary(config: Any) -> str:
    """A short line of ``config``'s input pipeline: height crop, scale, normalisation,
    coordinates (the octree depth is a column of its own; every field is in the JSON's
    ``input_pipeline``)."""
    norm = "bbox-norm" if config.normalize_points else "no norm"
    crop = f"z <= {config.max_z:g}, " if config.max_z is not None else ""
    return f"{crop}scale {_scale(config.input_scale)}, {norm}, {config.coordinates}"


def _row(name: str, config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "parameters": count_parameters(config),
        "patch_size": config.patch_size,
        "octree_depth": config.octree_depth,
        "input": input_summary(config),
        "input_pipeline": config.input_pipeline(),
    }


def model_rows(pretrained: bool = False) -> list[dict[str, Any]]:
    """The rows of ``hotformerloc models``: one per variant (with its ``ARCH.TAG`` names),
    or with ``pretrained`` one per pretrained entry (config read from its weights file)."""
    from hotformerloc.model.registry import (
        get_model_config,
        get_pretrained,
        list_models,
        pretrained_tags,
    )

    if not pretrained:
        return [
            {**_row(n, get_model_config(n)), "pretrained": pretrained_tags(n)}
            for n in list_models()
        ]
    rows = []
    for n in list_models(pretrained=True):
        e = get_pretrained(n)
        rows.append(
            {
                **_row(n, get_model_config(n)),
                "architecture": e.arch,
                "default": pretrained_tags(e.arch)[0] == n,
                "file": e.file,
                "sha256": e.sha256,
                "description": e.description,
                "expects": e.input,
            }
        )
    return rows


def models(
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Only the ARCH.TAG models with weights.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The registered models: parameters, window size K, octree depth, input pipeline and
    pretrained weights (ARCH.TAG names for any --model option or create_model)."""
    rows = model_rows(pretrained)
    if as_json:
        print(json.dumps(rows, allow_nan=False))
        return
    if pretrained and not rows:
        console.print("no pretrained weights are registered yet")
        return
    title = "pretrained models" if pretrained else "registered models"
    table = Table(title=title)
    cols = ["name", "parameters", "K", "depth", "input pipeline"]
    cols += ["description"] if pretrained else ["pretrained"]
    for c in cols:
        table.add_column(c, no_wrap=c in ("name", "parameters", "K", "depth"))
    for r in rows:
        last = r["description"] if pretrained else ", ".join(r["pretrained"]) or "-"
        table.add_row(
            r["name"],
            f"{r['parameters']:,}",
            str(r["patch_size"]),
            str(r["octree_depth"]),
            r["input"],
            last,
        )
    console.print(table)
