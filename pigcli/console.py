"""Output conventions: results to stdout, everything else (logs, progress, summaries) to stderr.

Progress bars show only when stderr is a terminal, so pipes, files and CI stay quiet.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def env_flag(name: str) -> bool:
    """A yes/no environment variable: 1, true, yes or on (any case) is yes; unset, empty, 0, false,
    no, off or anything else is no (so that PIG_DEBUG=0 means off)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


TOP_REASONS = 5  # failure messages listed in a summary (stderr, --json), then "N more"


def top_reasons(counts) -> tuple[list[tuple[str, int]], int, int]:
    """The TOP_REASONS most frequent messages of a Counter {message: rows}, with how many other
    messages there are and how many rows they cover."""
    listed = counts.most_common(TOP_REASONS)
    return listed, len(counts) - len(listed), sum(counts.values()) - sum(n for _, n in listed)


def log(message: str) -> None:
    if not env_flag("PIG_QUIET"):
        err_console.print(message, markup=False)


def warn(message: str) -> None:
    err_console.print(f"warning: {message}", style="yellow", markup=False)


def progress_enabled() -> bool:
    return sys.stderr.isatty() and not env_flag("PIG_QUIET")


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
