"""Video decoding, frame sampling and CLIP preprocessing.

Sampling: T frames at segment centres, frame floor((i + 0.5) * n / T) for i in 0..T-1. A video with
fewer than T frames repeats frames (visible in the recorded indices), which is not a failure.
Preprocessing (torch): resize the shortest side to the model's image size (bicubic, antialiased),
centre crop, then CLIP mean/std (`normalize`, on the consumer side so workers ship uint8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".gif")
DECODERS = ("auto", "decord", "pyav")


class VideoError(Exception):
    """A video that cannot be used: recorded with this message and skipped."""


@dataclass
class SampledClip:
    frames: np.ndarray        # [T, 3, S, S] uint8, preprocessed geometry (resized + cropped)
    frame_index: np.ndarray   # [T] int64, frame numbers in the source
    timestamps: np.ndarray    # [T] float64, seconds
    num_frames: int           # frames in the source video
    fps: float


def sample_indices(num_frames: int, count: int) -> np.ndarray:
    """Segment centres: floor((i + 0.5) * n / T)."""
    if num_frames <= 0:
        raise VideoError("video has no frames")
    return np.floor((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_decoder(name: str) -> str:
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    if name == "auto":
        return "decord" if decord_available() else "pyav"
    if name == "decord" and not decord_available():
        raise ValueError("decord is not installed (it has x86-64 wheels only); use --decoder pyav")
    return name


def read_clip(path: str | Path, num_samples: int, image_size: int, decoder: str = "auto") -> SampledClip:
    """Decode T sampled frames of one video and crop/resize them; raises VideoError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    reader = _read_decord if resolve_decoder(decoder) == "decord" else _read_pyav
    try:
        rgb, index, num_frames, fps = reader(path, num_samples)
    except VideoError:
        raise
    except Exception as err:  # decoders raise many types for corrupt input: record, don't crash
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VideoError(f"cannot decode: {message}") from err
    frames = resize_and_crop(rgb, image_size)
    timestamps = index / fps if fps > 0 else np.full(len(index), np.nan)
    return SampledClip(frames, index, timestamps, num_frames, fps)


def _read_decord(path: Path, num_samples: int):
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    num_frames = len(reader)
    index = sample_indices(num_frames, num_samples)
    rgb = reader.get_batch(list(index)).asnumpy()
    return rgb, index, num_frames, float(reader.get_avg_fps())


def _read_pyav(path: Path, num_samples: int):
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError("no video stream (audio-only or not a video)")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        # Frame counts in headers are unreliable: decode everything, keep only what is sampled later.
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    index = sample_indices(len(decoded), num_samples)
    return np.stack([decoded[i] for i in index]), index, len(decoded), fps


def resize_and_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, 3, size, size] uint8: shortest side to `size` (bicubic), centre crop."""
    import torch
    import torch.nn.functional as F

    frames = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()
    height, width = frames.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        frames = F.interpolate(frames, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    frames = frames[:, :, top : top + size, left : left + size]
    return frames.round().clamp(0, 255).to(torch.uint8).numpy()


def normalize(frames, mean, std):
    """uint8 [..., 3, S, S] (torch) -> float, CLIP-normalised."""
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    return (frames.float() / 255.0 - mean_t) / std_t


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")

