"""What the stages share: the run summary, block-wise processing with resume, reading rows by id."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..console import log, progress
from ..errors import PigError
from ..store import StageWriter

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


def start_stage(output: str | Path, provenance, total: int, force: bool = False,
                replace_stale: bool = False) -> tuple[StageWriter, StageSummary]:
    """The writer and summary of a stage run; `summary.skipped` when the output is already up to date."""
    writer = StageWriter(output, provenance, force=force, replace_stale=replace_stale)
    summary = StageSummary(Path(output), total=total, skipped=writer.up_to_date() and not force)
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
    return summary


def take_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for increasing row numbers: one slice when they are contiguous; from an HDF5
    dataset, one slice read per run of consecutive rows (h5py's point selection took ~10x longer
    for 50 scattered rows, benchmarks/RESULTS_cost.md)."""
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return dataset[int(rows[0]) : int(rows[-1]) + 1]
    if not hasattr(dataset, "read_direct") or len(rows) == 0:
        return dataset[rows]
    out = np.empty((len(rows),) + tuple(dataset.shape[1:]), dataset.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for first, end in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
        lo, hi = int(rows[first]), int(rows[end - 1]) + 1
        dataset.read_direct(out, np.s_[lo:hi], np.s_[int(first) : int(end)])
    return out


def batched(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def eercf_head_for_file(spec: str | None, handle, path, rerun_hint: str):
    """The EERCF head (W_g, W_F) of -m, else of the model the file records; must be that file's model.
    Read alone from the weights file: much faster than loading the model. Returns (head, ModelInfo)."""
    from ..model.checkpoint import load_eercf_head, peek_model
    from ..store import require_same_model

    info = peek_model(spec or str(handle.attrs.get("model_path", "")) or None)
    if info is None:
        raise PigError(f"the EERCF head comes from {path}'s model, which was not found; "
                       "pass -m MODEL (the pig model folder the file was made with)")
    require_same_model(path, handle, info.identity.to_dict(), rerun_hint)
    return load_eercf_head(info.path), info


def model_for_file(spec: str | None, handle, path, device, rerun_hint: str):
    """The model to continue a stage file with: -m, else the one the file was made with; must match it."""
    from ..model.checkpoint import resolve_model
    from ..store import require_same_model

    recorded_path = str(handle.attrs.get("model_path", "")) or None
    loaded = resolve_model(spec or recorded_path, device)
    require_same_model(path, handle, loaded.identity.to_dict(), rerun_hint)
    return loaded
