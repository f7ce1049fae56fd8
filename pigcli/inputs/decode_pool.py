"""Decoding videos in worker processes, in order, overlapped with the model.

Workers are spawned (never forked: the parent may hold torch threads and open HDF5 files), each video
has a wall-clock timeout (decord can hang holding the GIL), a worker that hangs or crashes is replaced
(pebble), and workers are recycled after `max_tasks` videos to bound leaks in native decoders.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Iterator

from ..core.device import default_workers
from .sources import VideoEntry
from .video import DEFAULT_SAMPLING, SampledClip, VideoError, read_clip


@dataclass
class Decoded:
    entry: VideoEntry
    clip: SampledClip | None
    error: str | None
    seconds: float


def resolve_workers(workers: int | None) -> int:
    """`workers` as given (0: decode in this process), None: default_workers()."""
    return default_workers() if workers is None else workers


def _decode_one(path: str, num_frames: int, image_size: int, decoder: str,
                sampling: str = DEFAULT_SAMPLING) -> tuple[SampledClip | None, str | None, float]:
    start = time.perf_counter()
    try:
        return read_clip(path, num_frames, image_size, decoder, sampling), None, time.perf_counter() - start
    except VideoError as err:
        return None, str(err), time.perf_counter() - start


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per decoding worker; the model gets the rest


def decode_videos(entries: list[VideoEntry], num_frames: int, image_size: int, decoder: str, workers: int,
                  timeout: float | None, prefetch: int = 0, max_tasks: int = 256,
                  sampling: str = DEFAULT_SAMPLING) -> Iterator[Decoded]:
    """`Decoded` for every entry, in order, decoded by up to `workers` processes. The workers start, and the
    first videos are queued, before this returns: a caller that loads its model next overlaps the
    workers' start (each imports torch: seconds with a CUDA build). workers=0 decodes in this process
    when iterated, with no timeout (named pipes, sockets and devices are refused unopened by read_clip,
    so none can block the run)."""
    if workers <= 0 or not entries:
        return _decode_here(entries, num_frames, image_size, decoder, sampling)
    workers = min(workers, len(entries))  # no idle workers to start
    stream = _decode_in_pool(entries, num_frames, image_size, decoder, workers, timeout,
                             prefetch or 4 * workers, max_tasks, sampling)
    next(stream)  # up to the first wait: the pool is started and the prefetch queued
    return stream


def _decode_here(entries, num_frames, image_size, decoder, sampling) -> Iterator[Decoded]:
    for entry in entries:
        clip, error, seconds = _decode_one(str(entry.path), num_frames, image_size, decoder, sampling)
        yield Decoded(entry, clip, error, seconds)


def _decode_in_pool(entries, num_frames, image_size, decoder, workers, timeout, prefetch, max_tasks, sampling):
    import multiprocessing

    from pebble import ProcessExpired, ProcessPool

    context = multiprocessing.get_context("spawn")
    with ProcessPool(max_workers=workers, max_tasks=max_tasks, initializer=_init_worker, context=context) as pool:
        pending: deque = deque()
        queue = iter(entries)

        def submit_next() -> None:
            entry = next(queue, None)
            if entry is not None:
                args = (str(entry.path), num_frames, image_size, decoder, sampling)
                pending.append((entry, pool.schedule(_decode_one, args=args, timeout=timeout)))

        for _ in range(prefetch):
            submit_next()
        yield None  # started (decode_videos takes this one)
        while pending:
            entry, future = pending.popleft()
            submit_next()
            try:
                clip, error, seconds = future.result()
            except FutureTimeout:
                clip, error, seconds = None, f"decoding timed out after {timeout:g}s", timeout or 0.0
            except ProcessExpired as err:
                clip, error, seconds = None, f"decoder crashed (exit code {err.exitcode})", 0.0
            yield Decoded(entry, clip, error, seconds)
