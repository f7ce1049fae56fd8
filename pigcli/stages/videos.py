"""What the stages that decode videos share (`extract`, `frames`): the block-wise decode loop with resume.

    rows = video_rows(inputs, relative_ids, ids_from, segments, shard)   # videos, or the shots of a segments file
    provenance = video_provenance(stage, identity, rows, ...)        # the block size enters the identity
    writer, summary = start_stage(output, provenance, rows.total, force, replace_stale)
    if summary.skipped: return count_failures(summary)
    run_video_blocks(writer, summary, rows, build_block, ...)        # decode -> build_block -> write -> finish

The rows are whole videos, or shots (`--segments`, inputs/segments.py): those are read from the file as a
stream, so no list of all rows is ever held. `run_video_blocks` cuts the rows into blocks of `block_videos()` rows, skips the blocks an interrupted
run already wrote, decodes the rest in the worker pool (in order, overlapped with the block being
built), asks the stage's `build_block(decoded, timings)` for each block's columns, writes the block
crash-safely and joins the blocks into the output at the end. `base_columns` gives the columns every
video stage has: /ids /status /error /path /frame_index /timestamps (+ /shot_video /shot_frames for shots:
the shot's video id and its first and last frame, as placed in the decoded video).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..console import log, progress
from ..inputs.decode_pool import Decoded, decode_videos
from ..errors import UsageError
from ..inputs.segments import scan_segments, shot_entries
from ..inputs.sources import VideoEntry, discover_videos, videos_fingerprint
from ..store import Provenance, StageWriter
from ..choices import RESIZES, SAMPLINGS, check_choice
from ..inputs.video import DEFAULT_RESIZE, UNRECORDED_RESIZE, UNRECORDED_SAMPLING, resolve_decoder, window_frames
from .common import StageSummary, count_failures
from .shard import Shard, shard_entries

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


@dataclass
class VideoRows:
    """The rows of a video stage: whole videos, or the shots of a segments file."""
    stream: Callable[[], Iterable[VideoEntry]]  # the rows in order, afresh at each call
    total: int
    videos: list[VideoEntry]   # the videos read (whole: one per row)
    segments: dict | None = None   # the segments file's identity (SegmentsInfo.identity)
    segments_path: Path | None = None


def video_rows(inputs: list, relative_ids: bool = False, ids_from=None, segments=None,
               shard: Shard | None = None) -> VideoRows:
    """The videos given (a shard's), or with `segments` the shots of that file (a shard's: by shot id) in
    the videos given, found by id (file name without extension, or relative path with relative_ids)."""
    if segments is None:
        entries = shard_entries(discover_videos(inputs, relative_ids, ids_from), shard)
        return VideoRows(lambda: entries, len(entries), entries)
    if ids_from is not None:
        raise UsageError("--segments names the video of every shot: drop --ids")
    found = {entry.id: entry.path for entry in discover_videos(inputs, relative_ids)}
    holds = shard.holds if shard is not None else None
    info = scan_segments(segments, found, holds)
    if shard is not None:
        log(f"shard {shard}: {info.rows} of {info.shots} shots")
    return VideoRows(lambda: shot_entries(segments, found, holds), info.rows,
                     [VideoEntry(video, found[video]) for video in info.videos], info.identity(), Path(segments))


def video_provenance(stage: str, identity: dict, rows: VideoRows, model: dict | None = None,
                     model_path: str | None = None, shard=None) -> Provenance:
    """The provenance of a video stage's output: its identity settings (plus a non-default block size,
    the segments file's hash, and the shard 'I/N' if any: a resumed run of another shard or segments
    file is refused) and the videos' fingerprint as its input (the shard's videos)."""
    block_size = block_videos()
    if block_size != BLOCK_VIDEOS:
        identity = {**identity, "block_videos": block_size}
    if rows.segments is not None:
        identity = {**identity, "segments": rows.segments}
    if shard is not None:
        identity = {**identity, "shard": str(shard)}
    record = {"videos": len(rows.videos), "fingerprint": videos_fingerprint(rows.videos)}
    if rows.segments is not None:
        record = {**record, "shots": rows.total, "segments": str(rows.segments_path.resolve())}
    return Provenance(stage=stage, settings=identity, model=model, inputs=[record], model_path=model_path)


def read_paths(inputs: list, rows: VideoRows) -> list:
    """Every file a video stage reads: its -o may be none of them."""
    return [*inputs, *(entry.path for entry in rows.videos), *([rows.segments_path] if rows.segments_path else [])]


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
    if decoded and decoded[0].entry.window is not None:
        columns.update(shot_columns(decoded))
    return columns


def shot_columns(decoded: list[Decoded]) -> dict:
    """A shot's video id and its first and last frame in the decoded video (-1 where it failed)."""
    bounds = np.full((len(decoded), 2), -1, np.int64)
    for i, d in enumerate(decoded):
        if d.clip is not None:
            bounds[i] = window_frames(d.entry.window, d.clip.num_frames, d.clip.fps)
    return {"shot_video": [d.entry.video_id for d in decoded], "shot_frames": bounds}


def run_video_blocks(writer: StageWriter, summary: StageSummary, rows: VideoRows, build_block: BlockBuilder,
                     *, num_frames: int, image_size: int, decoder: str, sampling: str, resize: str, workers: int,
                     timeout: float | None, label: str, done_word: str, extra_attrs: dict | None = None,
                     layouts: dict[str, dict] | None = None, prepare: Callable[[], object] | None = None) -> StageSummary:
    """Decode the rows block by block, build each block's columns, write them; resume an interrupted run.

    sampling, resize: how each video's frames are chosen and resized (pigcli.inputs.video.sample_indices,
    resize_frames; part of the stage's identity).
    build_block(decoded, timings): the block's columns (rows in the order of `decoded`); it may add its
    own phases to `timings` (seconds). done_word: how the resume message says what was done ('extracted').
    extra_attrs: root attributes of the output besides the provenance and the timings. layouts: chunking
    and compression of some datasets in the output (StageWriter.finish). prepare: called once the decoding
    workers are starting, before the first block (e.g. loading the model: the two overlap); not called when
    there is nothing left to do. The rows are read as a stream: what is held is the blocks being decoded
    and built, never all rows.
    """
    block_size = block_videos()
    done = writer.done_blocks()
    summary.resumed_rows = sum(min(block_size, rows.total - n * block_size) for n in done if n * block_size < rows.total)
    unit = "shots" if rows.segments is not None else "videos"
    if summary.resumed_rows:
        log(f"resuming: {summary.resumed_rows} of {rows.total} {unit} already {done_word}")
    todo: deque = deque()  # (block number, rows) of the blocks handed to the decoders, in order

    def todo_entries():
        for number, block in enumerate(_chunks(rows.stream(), block_size)):
            if number not in done:
                todo.append((number, len(block)))
                yield from block

    timings = Counter()
    start = time.perf_counter()
    try:
        left = rows.total - summary.resumed_rows
        stream = decode_videos(todo_entries(), num_frames, image_size, decoder, workers, timeout, sampling=sampling,
                               resize=resize, count=left)
        if prepare is not None and left:
            prepare()
        with progress(left, label, unit) as bar:
            for first in stream:
                number, size = todo.popleft()
                decoded = [first, *itertools.islice(stream, size - 1)]
                timings["decode"] += sum(d.seconds for d in decoded)
                columns = build_block(decoded, timings)
                write_start = time.perf_counter()
                writer.write_block(number, columns)
                timings["write"] += time.perf_counter() - write_start
                summary.processed += size
                bar.advance(size)
        timings["wall"] = time.perf_counter() - start
        summary.timings = {k: round(v, 3) for k, v in timings.items()}
        writer.finish({"timings": summary.timings, **(extra_attrs or {})}, layouts=layouts)
    finally:
        writer.close()
    return count_failures(summary)


def _chunks(items: Iterable, size: int):
    iterator = iter(items)
    while block := list(itertools.islice(iterator, size)):
        yield block
