"""``hotformerloc dataset prepare|check``: public benchmarks and users' recordings."""

from __future__ import annotations

import typer

dataset_app = typer.Typer(help="Prepare and check datasets.", no_args_is_help=True)

#: Exception classes of this command group that are user errors (one line, exit 2).
USER_ERRORS: tuple[type[Exception], ...] = ()
