"""Video decoding, frame sampling and CLIP preprocessing.

Sampling (`sample_indices`, docs/method.md s.1), T of the n decoded frames:
- uniform (default): the official PIG / CLIP-ViP sampler, linspace(0, n - 1, T) truncated to integers, so
  the first and last frames are always in. Training on raw videos jitters it as the official code does:
  the first index is drawn from [0, d] and the last from [n - 1 - d, n - 1], with d = n // (T - 1), and
  the T indices are spread evenly between them (pig caps d at (n - 1) // 2, which changes nothing for
  T >= 4 and keeps the indices in order and in range for T <= 3, where the official rule can fail).
- centre: segment centres, floor((i + 0.5) * n / T) for i in 0..T-1 (pig's only sampler before
  --sampling existed; stage files that record no sampling were made with it).
A video with fewer than T frames repeats frames (visible in the recorded indices), which is not a failure.
Preprocessing (`resize_frames`, torch), then CLIP mean/std (`normalize`, on the consumer side):
- squash (default): the official test transform (CLIP-ViP's `init_transform_dict_simple`, which PIG imports:
  Resize((S, S), bicubic) on float frames, torchvision 0.12, which does not antialias tensors): every frame
  resized to S x S, the aspect ratio squashed, bicubic, align_corners=False, no antialiasing; the result
  stays float (0..255, neither rounded nor clamped), as the official frames stay float until normalised.
- crop: the shortest side to S (bicubic, antialiased), centre crop, rounded to uint8 (pig's only rule before
  --resize existed; stage files that record no resize were made with it).
`pig frames` stores uint8, so its squash frames are rounded and clamped (`to_uint8`; docs/method.md s.1).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from ..choices import DECODERS, RESIZES, SAMPLINGS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".gif")


class VideoError(Exception):
    """A video that cannot be used: recorded with this message and skipped."""


@dataclass
class SampledClip:
    frames: np.ndarray        # [T, 3, S, S], preprocessed geometry: float32 (squash) or uint8 (crop)
    frame_index: np.ndarray   # [T] int64, frame numbers in the source
    timestamps: np.ndarray    # [T] float64, seconds
    num_frames: int           # frames in the source video
    fps: float


DEFAULT_SAMPLING = "uniform"      # the official code's sampler: what a run compared with the paper needs
UNRECORDED_SAMPLING = "centre"    # what a stage file that records no sampling was made with
DEFAULT_RESIZE = "squash"         # the official code's preprocessing: what a run compared with the paper needs
UNRECORDED_RESIZE = "crop"        # what a stage file that records no resize was made with

Jitter = Sequence[int] | None     # a seed (e.g. run seed, phase, epoch, video): jittered uniform sampling


def sample_indices(num_frames: int, count: int, sampling: str = DEFAULT_SAMPLING, jitter: Jitter = None) -> np.ndarray:
    """T frame numbers of n (see the module docstring). jitter: a seed for training's jittered uniform
    sampling (reproducible: the same seed gives the same frames); ignored by centre sampling."""
    if num_frames <= 0:
        raise VideoError("video has no frames")
    if sampling == "centre":
        return np.floor((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)
    if sampling != "uniform":
        raise ValueError(f"unknown frame sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    first, last = 0, num_frames - 1
    if jitter is not None:
        spread = min(num_frames // max(count - 1, 1), (num_frames - 1) // 2)
        rng = np.random.default_rng(list(jitter))
        first = int(rng.integers(0, spread + 1))
        last = int(rng.integers(num_frames - 1 - spread, num_frames))
    return np.linspace(first, last, count).astype(np.int64)  # truncation, as the official astype(int)


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


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"))


def check_regular_file(path: Path) -> None:
    """Raise VideoError unless `path` is a non-empty regular file (symlinks followed), without opening it.

    A named pipe, socket or device is never handed to a decoder: opening a pipe with no writer blocks
    forever, and with --workers 0 there is no per-video timeout to stop it.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise VideoError(f"broken symlink -> {os.readlink(path)}") from None
        raise VideoError(f"file not found: {path}") from None
    except OSError as err:
        raise VideoError(f"cannot read: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise VideoError(f"is a folder, not a video: {path}")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(info.st_mode)), "not a regular file")
        raise VideoError(f"not a regular file ({kind}): not opened")
    if info.st_size == 0:
        raise VideoError("empty file (0 bytes)")


def read_clip(path: str | Path, num_samples: int, image_size: int, decoder: str = "auto",
              sampling: str = DEFAULT_SAMPLING, jitter: Jitter = None, resize: str = DEFAULT_RESIZE) -> SampledClip:
    """Decode T sampled frames of one video and resize them; raises VideoError on bad input.
    sampling, jitter: how the T frames are chosen (`sample_indices`); resize: `resize_frames`."""
    path = Path(path)
    choose = partial(sample_indices, count=num_samples, sampling=sampling, jitter=jitter)
    check_regular_file(path)
    chosen = resolve_decoder(decoder)
    # With 'auto', a file that decord fails on is retried with PyAV: decord cannot read some valid
    # videos (e.g. frame widths of 16, 24, 48 or 72 px: dmlc/decord#336), and the two give the same
    # frames where both work (tests/test_video.py).
    readers = [_read_decord, _read_pyav] if chosen == "decord" and decoder == "auto" else (
        [_read_decord] if chosen == "decord" else [_read_pyav])
    for attempt, reader in enumerate(readers, start=1):
        try:
            rgb, index, num_frames, fps = reader(path, choose)
            break
        except VideoError:
            raise
        except Exception as err:  # decoders raise many types for corrupt input: record, don't crash
            if attempt == len(readers):
                raise VideoError(_decoder_message(err)) from err
    frames = resize_frames(rgb, image_size, resize)
    timestamps = index / fps if fps > 0 else np.full(len(index), np.nan)
    return SampledClip(frames, index, timestamps, num_frames, fps)


# decord's errors start with a clock time and a source location ("[11:38:45] .../video_reader.cc:151: "),
# and checks add "Check failed: a >= b (x vs. y)": both removed, so that equal errors group in summaries.
_DECORD_NOISE = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] \S+:\d+: |Check failed: .*? vs\. [^)]*\) ")


def _decoder_message(err: Exception) -> str:
    text = str(err).strip()
    message = _DECORD_NOISE.sub("", text.splitlines()[0]).strip() if text else type(err).__name__
    if "cannot find video stream" in message:  # decord on an audio-only file
        return "no video stream (audio-only or not a video)"
    return f"cannot decode: {message}"


def _read_decord(path: Path, choose):
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    num_frames = len(reader)
    index = choose(num_frames)
    rgb = reader.get_batch(list(index)).asnumpy()
    return rgb, index, num_frames, float(reader.get_avg_fps())


def _read_pyav(path: Path, choose):
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError("no video stream (audio-only or not a video)")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        # Frame counts in headers are unreliable: decode everything, keep only what is sampled later.
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    index = choose(len(decoded))
    return np.stack([decoded[i] for i in index]), index, len(decoded), fps


def resize_frames(rgb: np.ndarray, size: int, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, 3, size, size] by one of RESIZES (module docstring): float32 for squash,
    uint8 for crop."""
    if resize == "squash":
        return squash_frames(rgb, size)
    if resize == "crop":
        return resize_and_crop(rgb, size)
    raise ValueError(f"unknown resize {resize!r}; choose one of {', '.join(RESIZES)}")


def frames_dtype(resize: str) -> type:
    """The dtype `resize_frames` returns for `resize`."""
    return np.float32 if resize == "squash" else np.uint8


def squash_frames(rgb: np.ndarray, size: int) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, 3, size, size] float32 in 0..255: the official test transform, unrounded.

    The official code divides by 255 before resizing; resizing is linear, so this differs from it by
    float rounding only (tests/test_video.py). At H = W = size the resize is the identity."""
    import torch
    import torch.nn.functional as F

    frames = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()
    frames = F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    return frames.numpy()


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames of either rule as uint8: float frames rounded (half to even) and clamped to 0..255."""
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


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
    """uint8 or float (0..255) [..., 3, S, S] (torch) -> float, CLIP-normalised."""
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    return (frames.float() / 255.0 - mean_t) / std_t


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")

