"""What the stages that decode videos share (`extract`, `frames`): the block-wise decode loop with resume.

    entries = discover_videos(inputs, relative_ids)
    provenance = video_provenance(stage, identity, entries, ...)     # the block size enters the identity
    writer, summary = start_stage(output, provenance, len(entries), force, replace_stale)
    if summary.skipped: return count_failures(summary)
    run_video_blocks(writer, summary, entries, build_block, ...)     # decode -> build_block -> write -> finish

`run_video_blocks` cuts the videos into blocks of `block_videos()` rows, skips the blocks an interrupted
run already wrote, decodes the rest in the worker pool (in order, overlapped with the block being
built), asks the stage's `build_block(decoded, timings)` for each block's columns, writes the block
crash-safely and joins the blocks into the output at the end. `base_columns` gives the columns every
video stage has: /ids /status /error /path /frame_index /timestamps.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Callable

import numpy as np

from ..console import log, progress
from ..inputs.decode_pool import Decoded, decode_videos
from ..errors import UsageError
from ..inputs.sources import VideoEntry, videos_fingerprint
from ..store import Provenance, StageWriter, failure_counts
from ..choices import RESIZES, SAMPLINGS, check_choice
from ..inputs.video import DEFAULT_RESIZE, UNRECORDED_RESIZE, UNRECORDED_SAMPLING, resolve_decoder
from .common import StageSummary

BLOCK_VIDEOS = 64  # rows per crash-safe block: what a killed run can lose

BlockBuilder = Callable[[list[Decoded], Counter], dict]  # (a block's decoded videos, timings) -> its columns


def block_videos() -> int:
    """Rows per block: BLOCK_VIDEOS, or $PIG_BLOCK_VIDEOS (for tests that need several small blocks).

    A resumed run must cut blocks exactly as the interrupted one did, so a non-default block size is
    recorded in the settings (and so in the fingerprint): a rerun with another size starts over instead
    of mixing up rows.
    """
    value = os.environ.get("PIG_BLOCK_VIDEOS", "")
    if not value:
        return BLOCK_VIDEOS
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"PIG_BLOCK_VIDEOS must be a positive integer, not {value!r}")
    return int(value)


def check_video_settings(decoder: str, sampling: str, resize: str = DEFAULT_RESIZE) -> str:
    """The decoder to use ('auto' resolved); a UsageError for an unknown decoder, sampling or resize."""
    check_choice("--sampling", sampling, SAMPLINGS)
    check_choice("--resize", resize, RESIZES)
    try:
        return resolve_decoder(decoder)
    except ValueError as err:
        raise UsageError(str(err)) from err


def frame_rule_identity(sampling: str, resize: str) -> dict:
    """How the frames were sampled and resized, as a stage file's settings record it: centre sampling and
    crop, pig's only rules before --sampling and --resize existed, stay unrecorded, so files made before
    remain valid (readers: stagefiles.recorded_sampling, recorded_resize)."""
    unrecorded = {"sampling": UNRECORDED_SAMPLING, "resize": UNRECORDED_RESIZE}
    return {key: value for key, value in (("sampling", sampling), ("resize", resize)) if value != unrecorded[key]}


def video_provenance(stage: str, identity: dict, entries: list[VideoEntry], model: dict | None = None,
                     model_path: str | None = None, shard=None) -> Provenance:
    """The provenance of a video stage's output: its identity settings (plus a non-default block size,
    and the shard 'I/N' if any: a resumed run of another shard is refused) and the videos' fingerprint
    as its input (the shard's videos)."""
    block_size = block_videos()
    if block_size != BLOCK_VIDEOS:
        identity = {**identity, "block_videos": block_size}
    if shard is not None:
        identity = {**identity, "shard": str(shard)}
    return Provenance(stage=stage, settings=identity, model=model,
                      inputs=[{"videos": len(entries), "fingerprint": videos_fingerprint(entries)}],
                      model_path=model_path)


def count_failures(summary: StageSummary) -> StageSummary:
    """The failures recorded in the output (rows of a resumed or earlier run included)."""
    summary.errors = failure_counts(summary.output)
    summary.failed = sum(summary.errors.values())
    return summary


def base_columns(decoded: list[Decoded], num_frames: int) -> dict:
    """The columns of every video stage: ids, status, error, path, sampled frame numbers and timestamps
    (-1 and NaN for a video that could not be decoded)."""
    columns = {
        "ids": [d.entry.id for d in decoded],
        "status": ["failed" if d.error else "ok" for d in decoded],
        "error": [d.error or "" for d in decoded],
        "path": [str(d.entry.path.absolute()) for d in decoded],  # absolute: pictures find it from any folder
        "frame_index": np.full((len(decoded), num_frames), -1, np.int64),
        "timestamps": np.full((len(decoded), num_frames), np.nan),
    }
    for i, d in enumerate(decoded):
        if d.clip is not None:
            columns["frame_index"][i] = d.clip.frame_index
            columns["timestamps"][i] = d.clip.timestamps
    return columns


def run_video_blocks(writer: StageWriter, summary: StageSummary, entries: list[VideoEntry], build_block: BlockBuilder,
                     *, num_frames: int, image_size: int, decoder: str, sampling: str, resize: str, workers: int,
                     timeout: float | None, label: str, done_word: str, extra_attrs: dict | None = None,
                     layouts: dict[str, dict] | None = None) -> StageSummary:
    """Decode `entries` block by block, build each block's columns, write them; resume an interrupted run.

    sampling, resize: how each video's frames are chosen and resized (pigcli.inputs.video.sample_indices,
    resize_frames; part of the stage's identity).
    build_block(decoded, timings): the block's columns (rows in the order of `decoded`); it may add its
    own phases to `timings` (seconds). done_word: how the resume message says what was done ('extracted').
    extra_attrs: root attributes of the output besides the provenance and the timings. layouts: chunking
    and compression of some datasets in the output (StageWriter.finish).
    """
    block_size = block_videos()
    blocks = [entries[i : i + block_size] for i in range(0, len(entries), block_size)]
    done = writer.done_blocks()
    todo = [(n, block) for n, block in enumerate(blocks) if n not in done]
    summary.resumed_rows = sum(len(block) for n, block in enumerate(blocks) if n in done)
    if summary.resumed_rows:
        log(f"resuming: {summary.resumed_rows} of {len(entries)} videos already {done_word}")

    timings = Counter()
    start = time.perf_counter()
    try:
        stream = decode_videos([e for _, block in todo for e in block], num_frames, image_size, decoder, workers,
                               timeout, sampling=sampling, resize=resize)
        with progress(len(entries) - summary.resumed_rows, label, "videos") as bar:
            for number, block in todo:
                decoded = [next(stream) for _ in block]
                timings["decode"] += sum(d.seconds for d in decoded)
                columns = build_block(decoded, timings)
                write_start = time.perf_counter()
                writer.write_block(number, columns)
                timings["write"] += time.perf_counter() - write_start
                summary.processed += len(block)
                bar.advance(len(block))
        timings["wall"] = time.perf_counter() - start
        summary.timings = {k: round(v, 3) for k, v in timings.items()}
        writer.finish({"timings": summary.timings, **(extra_attrs or {})}, layouts=layouts)
    finally:
        writer.close()
    return count_failures(summary)
