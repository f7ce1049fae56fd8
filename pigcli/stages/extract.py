"""`pig extract`: decode videos and run the video backbone (docs/method.md sections 1-2).

Per video the output holds the video token, proxy tokens, frame tokens, the kept patch tokens with
their flat indices, ITS scores of all patches, the sampled frame numbers and timestamps, and a status
with the error text for videos that could not be read (their feature rows are zero).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..decode_pool import Decoded
from ..errors import UsageError
from ..core.device import autocast, resolve_device
from ..core.selection import kept_patch_index
from ..model.checkpoint import ModelFolder
from ..model.pig import BACKBONES
from ..model.resolve import resolve_folder
from ..sources import discover_videos
from ..video import DEFAULT_SAMPLING, normalize
from .common import StageSummary, start_stage
from .shard import Shard, shard_entries
from .videos import (BLOCK_VIDEOS, base_columns, block_videos, check_video_settings, count_failures, run_video_blocks,
                     sampling_identity, video_provenance)

__all__ = ["BLOCK_VIDEOS", "ExtractSettings", "block_videos", "extract", "parse_patch_setting"]

BATCH_VIDEOS = {"cpu": 4, "cuda": 32}  # default videos per forward: a GPU needs more frames at once to be busy


@dataclass
class ExtractSettings:
    num_frames: int | None = None   # None: the model's default
    backbone: str = "vip"
    patches: str = "all"            # all | none | top-N (by ITS score)
    decoder: str = "auto"
    precision: str = "auto"         # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    sampling: str = DEFAULT_SAMPLING  # uniform (the official code's) | centre: pigcli.video.sample_indices

    def identity(self, model: ModelFolder, decoder: str, device_precision: str) -> dict:
        """The settings that change the numbers: they enter the output's fingerprint."""
        settings = {key: value for key, value in asdict(self).items() if key != "sampling"}
        return {**settings, "num_frames": self.num_frames or model.config.num_frames, "decoder": decoder,
                "precision": device_precision, "image_size": model.image_size, **sampling_identity(self.sampling)}


def parse_patch_setting(value: str) -> int | None:
    """'all' -> None (keep all), 'none' -> 0, 'top-N' -> N."""
    if value == "all":
        return None
    if value == "none":
        return 0
    if value.startswith("top-") and value[4:].isdigit() and int(value[4:]) > 0:
        return int(value[4:])
    raise UsageError(f"--patches must be all, none or top-N (e.g. top-64), not {value!r}")


def training_sampling(info: ModelFolder) -> str | None:
    """How the frames the model was trained on were sampled (pig train records it in the model's config;
    runs from before it recorded one sampled segment centres); None for a model pig train did not make."""
    from ..train.config import ADDED_SETTINGS

    train = info.config.extra.get("train")
    if not isinstance(train, dict):
        return None
    return train.get("settings", {}).get("sampling", ADDED_SETTINGS["sampling"])


def warn_sampling_mismatch(info: ModelFolder, sampling: str) -> None:
    """Say so when the videos are sampled otherwise than the model's training frames were: the model then
    sees frames it was not trained on, and retrieves worse."""
    from ..console import warn

    trained = training_sampling(info)
    if trained is not None and trained != sampling:
        warn(f"{info.path} was trained on frames sampled with --sampling {trained}, these are sampled with "
             f"--sampling {sampling}: retrieval is usually worse; pass --sampling {trained} to match")


def extract(inputs: list[str | Path], output: str | Path, model: str | None = None, *,
            settings: ExtractSettings | None = None, device: str = "auto", batch_size: int | None = None,
            workers: int = 2, timeout: float = 120.0, relative_ids: bool = False,
            ids_from: str | Path | None = None, force: bool = False, replace_stale: bool = False,
            shard: Shard | None = None) -> StageSummary:
    """Decode the videos and run the backbone (module docstring). ids_from: a captions file whose video ids
    name the videos, found in the input folders as the official loader finds them (sources.videos_by_id).
    shard: only the videos of this shard (stages/shard.py). batch_size: videos per forward (default
    BATCH_VIDEOS of the device type)."""
    settings = settings or ExtractSettings()
    if settings.backbone not in BACKBONES:
        raise UsageError(f"--backbone must be one of {', '.join(BACKBONES)}, not {settings.backbone!r}")
    keep_patches = parse_patch_setting(settings.patches)
    decoder = check_video_settings(settings.decoder, settings.sampling)
    entries = shard_entries(discover_videos(inputs, relative_ids, ids_from), shard)
    torch_device, precision = resolve_device(device, settings.precision)
    batch_size = batch_size or BATCH_VIDEOS.get(torch_device.type, BATCH_VIDEOS["cpu"])
    # Identity first, weights only when there is work: an up-to-date rerun returns at once.
    info = resolve_folder(model)
    warn_sampling_mismatch(info, settings.sampling)
    num_frames = settings.num_frames or info.config.num_frames
    provenance = video_provenance("extract", settings.identity(info, decoder, precision), entries,
                                  model=info.identity.to_dict(), model_path=str(info.path.resolve()), shard=shard)
    writer, summary = start_stage(output, provenance, len(entries), force, replace_stale,
                                  inputs=[*inputs, *(e.path for e in entries)])
    if summary.skipped:
        return count_failures(summary)
    pig = info.load(torch_device).model

    def encode_block(decoded: list[Decoded], timings: Counter) -> dict:
        return _encode_block(pig, decoded, num_frames, settings.backbone, keep_patches, batch_size, torch_device,
                             precision, timings)

    return run_video_blocks(
        writer, summary, entries, encode_block, num_frames=num_frames, image_size=pig.image_size, decoder=decoder,
        sampling=settings.sampling, workers=workers, timeout=timeout, label="extract", done_word="extracted",
        extra_attrs={"run": {"batch_size": batch_size, "workers": workers, "device": str(torch_device)}})


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
