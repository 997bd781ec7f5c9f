"""In-process CLI runner shared by the tests (``from cli_helpers import run_cli``)."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path


def run_cli(*args: str | Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``hotformerloc *args``, run in this process."""
    from hotformerloc.cli.main import entrypoint

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["hotformerloc", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entrypoint()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()
