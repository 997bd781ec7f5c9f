"""Progress bars that also show in logs.

On a terminal :class:`LogProgress` is rich's live progress bar. When the console is not a
terminal (output redirected to a file, a CI log, ``nohup``), rich draws nothing until the
end, so a long job would look dead: instead every task prints one plain line at most every
:data:`LOG_EVERY_S` seconds, and once when it completes::

    re-ranking the top 25: 120/508 (2.41/s, eta 161 s)
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

#: Seconds between two log lines of one task (when the console is not a terminal).
LOG_EVERY_S = 30.0


class LogProgress(Progress):
    """:class:`rich.progress.Progress`, with plain throttled lines when ``console`` is not a
    terminal (the live display is then disabled). ``get_time`` (seconds) is rich's clock."""

    def __init__(self, *columns: str | ProgressColumn, console: Console, **kwargs: Any) -> None:
        self.plain = not console.is_terminal
        super().__init__(*columns, console=console, disable=self.plain, **kwargs)
        self._logged: dict[TaskID, float] = {}
        self._finished: set[TaskID] = set()

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        if self.plain:
            self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        now = self.get_time()
        done = task.total is not None and task.completed >= task.total
        start = now if task.start_time is None else task.start_time
        if task_id in self._finished or (
            not done and now - self._logged.get(task_id, start) < LOG_EVERY_S
        ):
            return
        self._logged[task_id] = now
        if done:
            self._finished.add(task_id)
        elapsed = task.elapsed or 0.0
        total = "?" if task.total is None else f"{task.total:g}"
        line = f"{task.description}: {task.completed:g}/{total}"
        if elapsed > 0 and task.completed > 0 and (task.total is None or task.total > 1):
            rate = task.completed / elapsed
            line += f" ({rate:.3g}/s"
            if task.total is not None and not done:
                line += f", eta {(task.total - task.completed) / rate:.0f} s"
            line += ")"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
