"""Progress in logs: when the console is not a terminal, one line per task at most every
30 s and one at completion, with rate and ETA; nothing of the kind on a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from hotformerloc.cli.progress import LOG_EVERY_S, LogProgress


def _run(terminal: bool) -> list[str]:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=120)
    now = [0.0]
    bar = LogProgress(console=console, get_time=lambda: now[0])
    with bar:
        task = bar.add_task("re-ranking", total=100)
        for i in range(1, 101):
            now[0] = 0.5 * i  # two items a second
            bar.update(task, completed=i)
            bar.update(task, completed=i)  # repeated updates add no line
    return buf.getvalue().splitlines()


def test_plain_lines_every_30_seconds_and_at_the_end() -> None:
    assert LOG_EVERY_S == 30.0
    assert _run(terminal=False) == [
        "re-ranking: 60/100 (2/s, eta 20 s)",
        "re-ranking: 100/100 (2/s)",
    ]


def test_terminal_keeps_the_live_bar() -> None:
    assert not any("(2/s" in line for line in _run(terminal=True))
