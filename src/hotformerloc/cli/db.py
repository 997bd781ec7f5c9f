"""``hotformerloc db build|add|info`` and ``hotformerloc query``: the place database CLI."""

from __future__ import annotations

import typer

db_app = typer.Typer(help="Build and inspect a place database.", no_args_is_help=True)

#: Exception classes of this command group that are user errors (one line, exit 2).
USER_ERRORS: tuple[type[Exception], ...] = ()
