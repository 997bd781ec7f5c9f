"""Options shared by several commands, defined once: one name, one meaning, one help text.

``tests/test_cli.py`` checks that an option name means the same (type, flag or value,
repeatable or not) in every command that has it, and that no concept is visible under two
names. Old spellings stay as hidden aliases for one release (CHANGELOG).
"""

from __future__ import annotations

from typing import Annotated

import typer

from hotformerloc.errors import HotformerlocError

DEVICE_HELP = "Compute device: auto (CUDA when available), cpu, cuda or cuda:N."
JSON_HELP = "Print machine-readable JSON on stdout instead of tables."
SET_HELP = "Override a config key: KEY=VALUE, dotted keys for sections (repeatable)."
BATCH_SIZE_HELP = "Clouds per forward pass."
WORKERS_HELP = (
    "Worker processes: generate and demo run the generator in them (default: the CPUs, at "
    "most 8); embed and db read clouds and build octrees in them beside the forward pass "
    "(default: none)."
)
PRECISION_HELP = (
    "Inference precision: fp32, or bf16 where the device computes it natively (elsewhere "
    "fp32, with a warning)."
)
RERANK_TOP_HELP = (
    "Also re-rank each query's top K candidates by geometric verification (0: off; "
    "docs/reranking.md)."
)

DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
#: ``--device`` where the default comes from a config file (``train``).
ConfigDeviceOpt = Annotated[str | None, typer.Option("--device", help=DEVICE_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help=BATCH_SIZE_HELP)]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=1, help=WORKERS_HELP)]
PrecisionOpt = Annotated[str, typer.Option("--precision", help=PRECISION_HELP)]
POINTS_HELP = "With --bag: the sensor_msgs/PointCloud2 topic."
POSES_HELP = "With --bag: an Odometry / PoseStamped topic or tf:PARENT->CHILD."
#: The scans and poses of a robot log (``--bag``): ``dataset prepare``, ``db build``,
#: ``localize``.
PointsOpt = Annotated[str | None, typer.Option("--points", help=POINTS_HELP)]
PosesOpt = Annotated[str | None, typer.Option("--poses", help=POSES_HELP)]
RerankTopOpt = Annotated[int | None, typer.Option("--rerank-top", min=0, help=RERANK_TOP_HELP)]


def bag_topics(points: str | None, poses: str | None) -> tuple[str, str]:
    """The ``--points`` and ``--poses`` that a ``--bag`` needs (one line if one is missing)."""
    if points is None or poses is None:
        raise HotformerlocError("--bag needs --points TOPIC and --poses TOPIC|tf:PARENT->CHILD")
    return points, poses


# Old spellings (hidden; removed in the next release).
OldBatchOpt = Annotated[int | None, typer.Option("--batch", min=1, hidden=True)]
OldPresetOpt = Annotated[str | None, typer.Option("--preset", hidden=True)]
OldRerankOpt = Annotated[int | None, typer.Option("--rerank", min=0, hidden=True)]
