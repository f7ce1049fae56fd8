"""Decoding videos in worker processes, in order, overlapped with the model.

Workers are spawned (never forked: the parent may hold torch threads and open HDF5 files), each video
has a wall-clock timeout (decord can hang holding the GIL), a worker that hangs or crashes is replaced
(pebble), and workers are recycled after `max_tasks` videos to bound leaks in native decoders.
Consecutive shots of one video (entries with a window) are one task, up to GROUP_SHOTS of them: the video
is decoded once for them all; the timeout then covers the group.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..core.device import default_workers
from .sources import VideoEntry
from .video import DEFAULT_RESIZE, DEFAULT_SAMPLING, SampledClip, VideoError, Window, read_clips

GROUP_SHOTS = 16  # shots of one video decoded together: what one task holds in memory is this many clips


@dataclass
class Decoded:
    entry: VideoEntry
    clip: SampledClip | None
    error: str | None
    seconds: float


def resolve_workers(workers: int | None) -> int:
    """`workers` as given (0: decode in this process), None: default_workers()."""
    return default_workers() if workers is None else workers


def _decode_group(path: str, windows: list[Window | None], num_frames: int, image_size: int, decoder: str,
                  sampling: str = DEFAULT_SAMPLING,
                  resize: str = DEFAULT_RESIZE) -> tuple[list[tuple[SampledClip | None, str | None]], float]:
    """(clip, error) per window of one video, and the seconds it took."""
    start = time.perf_counter()
    try:
        clips = read_clips(path, num_frames, image_size, decoder, sampling, windows=windows, resize=resize)
        results = [(None, str(c)) if isinstance(c, VideoError) else (c, None) for c in clips]
    except VideoError as err:
        results = [(None, str(err))] * len(windows)
    return results, time.perf_counter() - start


def _groups(entries: Iterable[VideoEntry]) -> Iterator[list[VideoEntry]]:
    """Consecutive shots of one video together (at most GROUP_SHOTS); a whole video alone."""
    group: list[VideoEntry] = []
    for entry in entries:
        if group and (entry.window is None or entry.path != group[0].path or len(group) == GROUP_SHOTS):
            yield group
            group = []
        group.append(entry)
        if entry.window is None:
            yield group
            group = []
    if group:
        yield group


def _decoded(group: list[VideoEntry], results, seconds: float) -> Iterator[Decoded]:
    for entry, (clip, error) in zip(group, results):
        yield Decoded(entry, clip, error, seconds / len(group))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per decoding worker; the model gets the rest


def decode_videos(entries: Iterable[VideoEntry], num_frames: int, image_size: int, decoder: str, workers: int,
                  timeout: float | None, prefetch: int = 0, max_tasks: int = 256,
                  sampling: str = DEFAULT_SAMPLING, count: int | None = None,
                  resize: str = DEFAULT_RESIZE) -> Iterator[Decoded]:
    """`Decoded` for every entry, in order, decoded by up to `workers` processes; entries are read as they
    are needed (a stream: give `count`, how many there are, when it has no len()). The workers start, and
    the first videos are queued, before this returns: a caller that loads its model next overlaps the
    workers' start (each imports torch: seconds with a CUDA build). workers=0 decodes in this process
    when iterated, with no timeout (named pipes, sockets and devices are refused unopened by read_clip,
    so none can block the run)."""
    count = len(entries) if count is None else count
    if workers <= 0 or not count:
        return _decode_here(entries, num_frames, image_size, decoder, sampling, resize)
    workers = min(workers, count)  # no idle workers to start
    stream = _decode_in_pool(entries, num_frames, image_size, decoder, workers, timeout,
                             prefetch or 4 * workers, max_tasks, sampling, resize)
    next(stream)  # up to the first wait: the pool is started and the prefetch queued
    return stream


def _decode_here(entries, num_frames, image_size, decoder, sampling, resize) -> Iterator[Decoded]:
    for group in _groups(entries):
        results, seconds = _decode_group(str(group[0].path), [e.window for e in group], num_frames, image_size,
                                         decoder, sampling, resize)
        yield from _decoded(group, results, seconds)


def _decode_in_pool(entries, num_frames, image_size, decoder, workers, timeout, prefetch, max_tasks, sampling, resize):
    import multiprocessing

    from pebble import ProcessExpired, ProcessPool

    context = multiprocessing.get_context("spawn")
    with ProcessPool(max_workers=workers, max_tasks=max_tasks, initializer=_init_worker, context=context) as pool:
        pending: deque = deque()
        queue = _groups(entries)

        def submit_next() -> None:
            group = next(queue, None)
            if group is not None:
                args = (str(group[0].path), [e.window for e in group], num_frames, image_size, decoder, sampling,
                        resize)
                pending.append((group, pool.schedule(_decode_group, args=args, timeout=timeout)))

        for _ in range(prefetch):
            submit_next()
        yield None  # started (decode_videos takes this one)
        while pending:
            group, future = pending.popleft()
            submit_next()
            try:
                results, seconds = future.result()
            except FutureTimeout:
                results, seconds = [(None, f"decoding timed out after {timeout:g}s")] * len(group), timeout or 0.0
            except ProcessExpired as err:
                results, seconds = [(None, f"decoder crashed (exit code {err.exitcode})")] * len(group), 0.0
            yield from _decoded(group, results, seconds)
