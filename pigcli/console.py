"""Output conventions: results to stdout, everything else (logs, progress, summaries) to stderr.

Progress bars show only when stderr is a terminal, so pipes, files and CI stay quiet.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def log(message: str) -> None:
    if not os.environ.get("PIG_QUIET"):
        err_console.print(message, markup=False)


def warn(message: str) -> None:
    err_console.print(f"warning: {message}", style="yellow", markup=False)


def progress_enabled() -> bool:
    return sys.stderr.isatty() and not os.environ.get("PIG_QUIET")


class _NoProgress:
    def advance(self, amount: int = 1) -> None:
        pass


class _RichProgress:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task, amount)


@contextmanager
def progress(total: int, description: str, unit: str = "items"):
    """A progress bar with a rate in `unit`/s on stderr; a no-op when stderr is not a terminal."""
    if not progress_enabled():
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} {unit}/s" if task.speed else f"- {unit}/s")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield _RichProgress(bar, task)
