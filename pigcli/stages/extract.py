"""`pig extract`: decode videos and run the video backbone (docs/method.md sections 1-2).

Per video the output holds the video token, proxy tokens, frame tokens, the kept patch tokens with
their flat indices, ITS scores of all patches, the sampled frame numbers and timestamps, and a status
with the error text for videos that could not be read (their feature rows are zero).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..inputs.decode_pool import Decoded, resolve_workers
from ..choices import BACKBONES, check_choice
from ..errors import UsageError
from ..core.device import autocast, resolve_device
from ..core.selection import kept_patch_index
from ..model.checkpoint import ModelFolder
from ..model.resolve import resolve_folder
from ..inputs.video import DEFAULT_RESIZE, DEFAULT_SAMPLING, normalize
from .common import StageSummary, count_failures, start_stage
from .shard import Shard
from .videos import (BLOCK_VIDEOS, base_columns, block_videos, check_video_settings, read_paths,
                     run_video_blocks, frame_rule_identity, video_provenance, video_rows)

__all__ = ["BLOCK_VIDEOS", "ExtractSettings", "block_videos", "extract", "parse_patch_setting"]

BATCH_VIDEOS = {"cpu": 4, "cuda": 32}  # default videos per forward: a GPU needs more frames at once to be busy


@dataclass
class ExtractSettings:
    num_frames: int | None = None   # None: the model's default
    backbone: str = "vip"
    patches: str = "all"            # all | none | top-N (by ITS score)
    decoder: str = "auto"
    precision: str = "auto"         # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    sampling: str = DEFAULT_SAMPLING  # uniform (the official code's) | centre: pigcli.inputs.video.sample_indices
    resize: str = DEFAULT_RESIZE      # squash (the official code's) | crop: pigcli.inputs.video.resize_frames

    def identity(self, model: ModelFolder, decoder: str, device_precision: str) -> dict:
        """The settings that change the numbers: they enter the output's fingerprint."""
        settings = {key: value for key, value in asdict(self).items() if key not in ("sampling", "resize")}
        return {**settings, "num_frames": self.num_frames or model.config.num_frames, "decoder": decoder,
                "precision": device_precision, "image_size": model.image_size,
                **frame_rule_identity(self.sampling, self.resize)}


def parse_patch_setting(value: str) -> int | None:
    """'all' -> None (keep all), 'none' -> 0, 'top-N' -> N."""
    if value == "all":
        return None
    if value == "none":
        return 0
    if value.startswith("top-") and value[4:].isdigit() and int(value[4:]) > 0:
        return int(value[4:])
    raise UsageError(f"--patches must be all, none or top-N (e.g. top-64), not {value!r}")


def warn_sampling_mismatch(info: ModelFolder, sampling: str) -> None:
    """Say so when the videos are sampled otherwise than the model's training frames were: the model then
    sees frames it was not trained on, and retrieves worse."""
    from ..console import warn

    trained = info.trained_sampling
    if trained is not None and trained != sampling:
        warn(f"{info.path} was trained on frames sampled with --sampling {trained}, these are sampled with "
             f"--sampling {sampling}: retrieval is usually worse; pass --sampling {trained} to match")


def extract(inputs: list[str | Path], output: str | Path, model: str | None = None, *,
            settings: ExtractSettings | None = None, device: str = "auto", batch_size: int | None = None,
            workers: int | None = None, timeout: float = 120.0, relative_ids: bool = False,
            ids_from: str | Path | None = None, force: bool = False, replace_stale: bool = False,
            shard: Shard | None = None, segments: str | Path | None = None) -> StageSummary:
    """Decode the videos and run the backbone (module docstring). ids_from: a captions file whose video ids
    name the videos, found in the input folders as the official loader finds them (sources.videos_by_id).
    shard: only the videos of this shard (stages/shard.py). batch_size: videos per forward (default
    BATCH_VIDEOS of the device type). workers: decoding processes (None: one per CPU but one,
    decode_pool.default_workers). segments: a segments file (inputs/segments.py): one row per shot, its
    frames sampled inside the shot, its id the shot id (sharded by shot id)."""
    settings = settings or ExtractSettings()
    check_choice("--backbone", settings.backbone, BACKBONES)
    keep_patches = parse_patch_setting(settings.patches)
    workers = resolve_workers(workers)
    decoder = check_video_settings(settings.decoder, settings.sampling, settings.resize)
    rows = video_rows(inputs, relative_ids, ids_from, segments, shard)
    torch_device, precision = resolve_device(device, settings.precision)
    batch_size = batch_size or BATCH_VIDEOS.get(torch_device.type, BATCH_VIDEOS["cpu"])
    # Identity first, weights only when there is work: an up-to-date rerun returns at once.
    info = resolve_folder(model)
    warn_sampling_mismatch(info, settings.sampling)
    num_frames = settings.num_frames or info.config.num_frames
    provenance = video_provenance("extract", settings.identity(info, decoder, precision), rows,
                                  model=info.identity.to_dict(), model_path=str(info.path.resolve()), shard=shard)
    writer, summary = start_stage(output, provenance, rows.total, force, replace_stale,
                                  inputs=read_paths(inputs, rows))
    if summary.skipped:
        return count_failures(summary)

    @functools.cache
    def model():  # loaded while the decoding workers start (run_video_blocks' prepare)
        return info.load(torch_device).model

    def encode_block(decoded: list[Decoded], timings: Counter) -> dict:
        return _encode_block(model(), decoded, num_frames, settings.backbone, keep_patches, batch_size, torch_device,
                             precision, timings)

    return run_video_blocks(
        writer, summary, rows, encode_block, num_frames=num_frames, image_size=info.image_size,
        decoder=settings.decoder,  # 'auto' (recorded as the decoder it resolves to) falls back to PyAV
        sampling=settings.sampling, resize=settings.resize, workers=workers, timeout=timeout, label="extract",
        done_word="extracted",
        extra_attrs={"run": {"batch_size": batch_size, "workers": workers, "device": str(torch_device)}}, prepare=model)


def _encode_block(pig, decoded: list[Decoded], num_frames: int, backbone: str, keep_patches: int | None,
                  batch_size: int, device, precision: str, timings: Counter) -> dict:
    """Run the backbone on the decoded videos of one block; returns the block's columns."""
    import torch

    rows = len(decoded)
    dim, patches_total = pig.embed_dim, num_frames * pig.patches_per_frame
    kept = patches_total if keep_patches is None else min(keep_patches, patches_total)
    num_proxies = pig.config.num_proxies if backbone == "vip" else 0
    columns = {
        **base_columns(decoded, num_frames),
        "video": np.zeros((rows, dim), np.float32),
        "proxies": np.zeros((rows, num_proxies, dim), np.float32),
        "frames": np.zeros((rows, num_frames, dim), np.float32),
        "patches": np.zeros((rows, kept, dim), np.float16),
        "patch_index": np.zeros((rows, kept), np.int32),
        "its_score": np.zeros((rows, patches_total), np.float32),
    }
    good = [i for i, d in enumerate(decoded) if d.clip is not None]
    mean, std = pig.config.image_mean, pig.config.image_std
    for start in range(0, len(good), batch_size):
        batch_rows = good[start : start + batch_size]
        pixels = torch.from_numpy(np.stack([decoded[i].clip.frames for i in batch_rows]))
        if device.type == "cuda":  # page-locked memory: the copy overlaps the work queued before it
            pixels = pixels.pin_memory()
        pixels = pixels.to(device, non_blocking=True)
        model_start = time.perf_counter()
        with torch.inference_mode(), autocast(device, precision):
            tokens = pig.encode_video(normalize(pixels, mean, std), backbone)
        tokens = {k: getattr(tokens, k).float().cpu().numpy() for k in ("video", "proxies", "frames", "patches", "its_score")}
        timings["model"] += time.perf_counter() - model_start
        patch_index = kept_patch_index(tokens["its_score"], kept)
        for j, row in enumerate(batch_rows):
            for name in ("video", "proxies", "frames", "its_score"):
                columns[name][row] = tokens[name][j]
            columns["patch_index"][row] = patch_index[j]
            columns["patches"][row] = tokens["patches"][j][patch_index[j]]
    return columns
