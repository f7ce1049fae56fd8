"""`pig frames`: decode videos once and store the model's input frames, for training many epochs.

Per video the output holds `/pixels`, uint8 [T, 3, S, S]: the T sampled frames resized to S px by --resize,
what `pigcli.inputs.video.read_clip` returns and what extract and raw-video training feed the backbone before
normalisation, rounded to uint8 where the rule keeps floats (squash: docs/method.md s.1, input frames); plus /ids /status /error /path
/frame_index /timestamps as in extract. A video that cannot be read is recorded as failed, with zero
pixels. `pig train --frames FILE` trains from it (backbone included) without decoding again.

The file depends on the videos, T, S, the decoder, the frame sampling and the resize only, not on a model's weights:
one frames file serves every model with the same num_frames and image size. `-m` only supplies the
defaults of T and S. Its frames are fixed: training from it has no sampling jitter (pig train --videos).

Storage: /pixels is chunked by one video and not compressed. Training reads whole videos at random, so a
chunk of several videos would read (and decompress) videos it does not need; lossless compression saved
2% (lzf) to 14% (gzip 1) on frames of a real photograph while reading random batches 9x (lzf) to 22x
(gzip 1) slower (benchmarks/frames_storage.py, recorded in benchmarks/RESULTS_train.md). Size:
N * T * 3 * S * S bytes, 1.8 MB per video at T = 12, S = 224.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..inputs.decode_pool import Decoded, resolve_workers
from ..errors import UsageError
from ..model.resolve import resolve_folder
from ..inputs.video import DEFAULT_RESIZE, DEFAULT_SAMPLING, to_uint8
from .common import StageSummary, count_failures, start_stage
from .shard import Shard
from .videos import (base_columns, check_video_settings, read_paths, run_video_blocks,
                     frame_rule_identity, video_provenance, video_rows)

PIXEL_LAYOUT = {"chunk_rows": 1}  # one video per chunk, uncompressed (see the module docstring)


@dataclass
class FramesSettings:
    num_frames: int | None = None   # T; None: the model's num_frames
    image_size: int | None = None   # S; None: the model's image size
    decoder: str = "auto"
    sampling: str = DEFAULT_SAMPLING  # uniform (the official code's) | centre: pigcli.inputs.video.sample_indices
    resize: str = DEFAULT_RESIZE      # squash (the official code's) | crop: pigcli.inputs.video.resize_frames


def frames(inputs: list[str | Path], output: str | Path, model: str | None = None, *,
           settings: FramesSettings | None = None, workers: int | None = None, timeout: float = 120.0,
           relative_ids: bool = False, ids_from: str | Path | None = None, force: bool = False,
           replace_stale: bool = False, shard: Shard | None = None,
           segments: str | Path | None = None) -> StageSummary:
    """Decode every video once and store its sampled and resized frames (uint8) in `output`.

    ids_from: a captions file whose video ids name the videos, found in the input folders as the official
    loader finds them (sources.videos_by_id).
    model: only read (its json files, never its weights) for the defaults of T and S; not needed when
    both are given. shard: only the videos of this shard (stages/shard.py). workers: decoding processes
    (None: one per CPU but one, decode_pool.default_workers). segments: a segments file: one row per shot
    (as extract's).
    """
    settings = settings or FramesSettings()
    decoder = check_video_settings(settings.decoder, settings.sampling, settings.resize)
    workers = resolve_workers(workers)
    for name, value in (("--frames", settings.num_frames), ("--size", settings.image_size)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be a positive integer, not {value}")
    rows = video_rows(inputs, relative_ids, ids_from, segments, shard)
    num_frames, image_size = settings.num_frames, settings.image_size
    defaults_from = None
    if num_frames is None or image_size is None:
        info = resolve_folder(model)
        num_frames, image_size = num_frames or info.config.num_frames, image_size or info.image_size
        defaults_from = str(info.path.resolve())
    identity = {"num_frames": num_frames, "image_size": image_size, "decoder": decoder,
                **frame_rule_identity(settings.sampling, settings.resize)}
    provenance = video_provenance("frames", identity, rows, shard=shard)
    writer, summary = start_stage(output, provenance, rows.total, force, replace_stale,
                                  inputs=read_paths(inputs, rows))
    if summary.skipped:
        return count_failures(summary)

    def pixel_block(decoded: list[Decoded], timings: Counter) -> dict:
        pixels = np.zeros((len(decoded), num_frames, 3, image_size, image_size), np.uint8)
        for i, d in enumerate(decoded):
            if d.clip is not None:
                pixels[i] = to_uint8(d.clip.frames)
        return {**base_columns(decoded, num_frames), "pixels": pixels}

    return run_video_blocks(
        writer, summary, rows, pixel_block, num_frames=num_frames, image_size=image_size,
        decoder=settings.decoder,  # 'auto' (recorded as the decoder it resolves to) falls back to PyAV
        sampling=settings.sampling, resize=settings.resize, workers=workers, timeout=timeout, label="frames",
        done_word="decoded",
        extra_attrs={"run": {"workers": workers, "defaults_from": defaults_from}}, layouts={"pixels": PIXEL_LAYOUT})
