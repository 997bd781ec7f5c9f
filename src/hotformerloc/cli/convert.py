"""``hotformerloc convert FILE --out OUT.safetensors``: reference weights -> our checkpoint.

Reads a ``.pth`` (released weights) or ``.ckpt`` (training checkpoint) of the official
implementation with safe loading only, checks every key and shape against the variant
(``--variant``, or detected among the four paper models) and writes our safetensors
checkpoint atomically. Any problem is one line naming the file, exit code 2, nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hotformerloc.cli.options import SetOpt

console = Console()


def convert(
    file: Annotated[Path, typer.Argument(help="Reference weights: .pth or training .ckpt.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output checkpoint (.safetensors).")],
    variant: Annotated[
        str | None,
        typer.Option(help="Registered model name; default: detect among the paper models."),
    ] = None,
    set_: SetOpt = None,
    ema: Annotated[
        bool, typer.Option("--ema", help="Use a .ckpt's EMA weights (model_ema_state_dict).")
    ] = False,
) -> None:
    """Convert official HOTFormerLoc weights (.pth / .ckpt) into a checkpoint of ours."""
    from hotformerloc.cli.main import UserError
    from hotformerloc.config import parse_overrides
    from hotformerloc.model.config import ModelConfig
    from hotformerloc.model.reference import convert_reference, save_converted

    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: the output must be a .safetensors file")
    if out.resolve() == file.resolve():
        raise UserError(f"--out {out}: would overwrite the input file")
    overrides = parse_overrides(set_, ModelConfig)
    ck = convert_reference(file, variant, overrides, ema)
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = save_converted(ck, out)
    source = ck.extra["source"]
    params = sum(t.numel() for t in ck.state_dict.values())
    console.print(
        f"{file.name} ({source['layout']}) -> {out}\n"
        f"  variant {ck.model}, {len(ck.state_dict)} tensors, {params:,} parameters\n"
        f"  sha256 {sha}",
        highlight=False,
        soft_wrap=True,
    )
