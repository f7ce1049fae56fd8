"""What the stages share: the run summary and block-wise processing with resume."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..console import log, progress
from ..store import StageWriter, failure_counts

BLOCK_ROWS = 1024  # rows per crash-safe block for the cheap per-row stages (select, generate, fuse, embed-text)


@dataclass
class StageSummary:
    output: Path
    total: int = 0
    processed: int = 0
    failed: int = 0
    skipped: bool = False           # output already up to date
    resumed_rows: int = 0           # rows taken from an interrupted run
    errors: Counter = field(default_factory=Counter)
    timings: dict = field(default_factory=dict)


def count_failures(summary: StageSummary) -> StageSummary:
    """The failures recorded in the output (rows of a resumed or earlier run included)."""
    summary.errors = failure_counts(summary.output)
    summary.failed = sum(summary.errors.values())
    return summary


def start_stage(output: str | Path, provenance, total: int, force: bool = False,
                replace_stale: bool = False, inputs: tuple | list = (),
                discard_stale_partial: bool = False) -> tuple[StageWriter, StageSummary]:
    """The writer and summary of a stage run; `summary.skipped` when the output is already up to date.

    inputs: the files the command reads. The writer refuses an output that is one of them or an existing
    file that is not a pig stage file, and one that another process is writing (store.StageWriter)."""
    writer = StageWriter(output, provenance, force=force, replace_stale=replace_stale, inputs=inputs,
                         discard_stale_partial=discard_stale_partial)
    summary = StageSummary(Path(output), total=total, skipped=writer.up_to_date() and not force)
    if summary.skipped:
        writer.close()
    return writer, summary


def run_blocks(writer: StageWriter, summary: StageSummary, num_rows: int, compute: Callable[[np.ndarray], dict],
               label: str, unit: str, block_rows: int = BLOCK_ROWS, extra_attrs: dict | None = None) -> StageSummary:
    """Compute and write rows [0, num_rows) in blocks, skipping blocks an interrupted run already wrote.

    `compute(rows)` gets the row numbers of one block and returns that block's columns.
    """
    starts = list(range(0, num_rows, block_rows))
    done = writer.done_blocks()
    summary.resumed_rows = sum(min(block_rows, num_rows - starts[n]) for n in done if n < len(starts))
    if summary.resumed_rows:
        log(f"resuming: {summary.resumed_rows} of {num_rows} {unit} already done")
    start_time = time.perf_counter()
    try:
        with progress(num_rows - summary.resumed_rows, label, unit) as bar:
            for number, start in enumerate(starts):
                if number in done:
                    continue
                rows = np.arange(start, min(start + block_rows, num_rows))
                writer.write_block(number, compute(rows))
                summary.processed += len(rows)
                bar.advance(len(rows))
        summary.timings["wall"] = round(time.perf_counter() - start_time, 3)
        writer.finish({"timings": summary.timings, **(extra_attrs or {})})
    finally:
        writer.close()
    return summary


def batched(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))
