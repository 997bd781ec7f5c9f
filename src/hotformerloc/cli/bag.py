"""``hotformerloc bag info``: what a ROS 1 / ROS 2 bag holds (no ROS install needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hotformerloc.cli.options import JsonOpt

bag_app = typer.Typer(help="Inspect ROS 1 / ROS 2 bags (robot logs).", no_args_is_help=True)

console = Console()


@bag_app.command()
def info(
    bag: Annotated[
        Path, typer.Argument(help="A ROS 1 .bag file, a ROS 2 bag folder or a .mcap/.db3 file.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Storage kind, time span, and each topic's message type and count."""
    from hotformerloc.io.bags import bag_info

    summary = bag_info(bag)
    if as_json:
        print(json.dumps(summary.to_dict(), allow_nan=False))
        return
    span = (
        "empty"
        if summary.start is None or summary.end is None
        else f"{summary.start:.3f} .. {summary.end:.3f} s ({summary.duration:.3f} s)"
    )
    console.print(f"[bold]{summary.path}[/bold]  storage {summary.storage}")
    console.print(f"{summary.message_count} messages, time span {span}")
    table = Table("topic", "type", "count")
    for t in summary.topics:
        table.add_row(t.name, t.msgtype, str(t.count))
    console.print(table)
