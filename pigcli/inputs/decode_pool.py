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

from .sources import VideoEntry
from .video import DEFAULT_RESIZE, DEFAULT_SAMPLING, SampledClip, VideoError, read_clip


@dataclass
class Decoded:
    entry: VideoEntry
    clip: SampledClip | None
    error: str | None
    seconds: float


def _decode_one(path: str, num_frames: int, image_size: int, decoder: str,
                sampling: str = DEFAULT_SAMPLING, resize: str = DEFAULT_RESIZE) -> tuple[SampledClip | None, str | None, float]:
    start = time.perf_counter()
    try:
        return (read_clip(path, num_frames, image_size, decoder, sampling, resize=resize), None,
                time.perf_counter() - start)
    except VideoError as err:
        return None, str(err), time.perf_counter() - start


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per decoding worker; the model gets the rest


def decode_videos(entries: list[VideoEntry], num_frames: int, image_size: int, decoder: str, workers: int,
                  timeout: float | None, prefetch: int = 0, max_tasks: int = 256,
                  sampling: str = DEFAULT_SAMPLING, resize: str = DEFAULT_RESIZE) -> Iterator[Decoded]:
    """Yield `Decoded` for every entry, in order. workers=0 decodes in this process, with no timeout (named
    pipes, sockets and devices are refused unopened by read_clip, so none can block the run)."""
    if workers <= 0:
        for entry in entries:
            clip, error, seconds = _decode_one(str(entry.path), num_frames, image_size, decoder, sampling, resize)
            yield Decoded(entry, clip, error, seconds)
        return
    yield from _decode_in_pool(entries, num_frames, image_size, decoder, workers, timeout,
                               prefetch or 4 * workers, max_tasks, sampling, resize)


def _decode_in_pool(entries, num_frames, image_size, decoder, workers, timeout, prefetch, max_tasks, sampling, resize):
    import multiprocessing

    from pebble import ProcessExpired, ProcessPool

    context = multiprocessing.get_context("spawn")
    with ProcessPool(max_workers=workers, max_tasks=max_tasks, initializer=_init_worker, context=context) as pool:
        pending: deque = deque()
        queue = iter(entries)

        def submit_next() -> None:
            entry = next(queue, None)
            if entry is not None:
                args = (str(entry.path), num_frames, image_size, decoder, sampling, resize)
                pending.append((entry, pool.schedule(_decode_one, args=args, timeout=timeout)))

        for _ in range(prefetch):
            submit_next()
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
