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
A shot (`Window`: first and last frame, or start and end in seconds) is sampled by the same rule over its
own frames only: the indices are offset by its first frame (`window_indices`).
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
import sys
from contextlib import contextmanager
from dataclasses import dataclass
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


FRAME_UNITS = ("frames", "seconds")


@dataclass(frozen=True)
class Window:
    """A shot's bounds in its video, both included: frame numbers (from 0) or seconds."""
    start: float
    end: float
    unit: str = "frames"


def window_frames(window: Window, num_frames: int, fps: float) -> tuple[int, int]:
    """The first and last frame of a shot (a window past the video's end is cut at its last frame);
    seconds cover the frames whose time i / fps lies in [start, end]."""
    if window.unit == "frames":
        first, last = int(window.start), int(window.end)
    else:
        if fps <= 0:
            raise VideoError("the video has no frame rate: shots in seconds cannot be placed")
        first = int(np.ceil(window.start * fps - 1e-6))
        last = max(first, int(np.floor(window.end * fps + 1e-6)))
    if first >= num_frames:
        raise VideoError(f"shot starts at frame {first}, the video has {num_frames} frames")
    return first, min(last, num_frames - 1)


def window_indices(window: Window | None, num_frames: int, fps: float, count: int,
                   sampling: str = DEFAULT_SAMPLING, jitter: Jitter = None) -> np.ndarray:
    """T frame numbers of a video (window None) or of one shot of it, by `sample_indices`'s rule."""
    if window is None:
        return sample_indices(num_frames, count, sampling, jitter)
    first, last = window_frames(window, num_frames, fps)
    return first + sample_indices(last - first + 1, count, sampling, jitter)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode here (None: it can). Its wheels load FFmpeg's shared libraries
    (4 to 7) and the libraries of the torch build they were made for, so an import can fail with an
    OSError as well as an ImportError."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except ImportError:
        return "torchcodec is not installed (pip install torchcodec; it needs FFmpeg's shared libraries)"
    except (OSError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"torchcodec is installed but cannot load ({first}): it needs FFmpeg 4-7 and its own torch build"
    return None


def resolve_decoder(name: str) -> str:
    """The decoder to use: 'auto' is decord where installed, else PyAV (torchcodec only when named)."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    if name == "auto":
        return "decord" if decord_available() else "pyav"
    if name == "decord" and not decord_available():
        raise ValueError("decord is not installed (it has x86-64 wheels only); use --decoder pyav")
    if name == "torchcodec" and (problem := torchcodec_problem()):
        raise ValueError(f"{problem}; use --decoder pyav")
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
              sampling: str = DEFAULT_SAMPLING, jitter: Jitter = None, *, window: Window | None = None,
              resize: str = DEFAULT_RESIZE) -> SampledClip:
    """Decode T sampled frames of one video (or of one shot of it: window) and resize them; raises
    VideoError on bad input. sampling, jitter: how the T frames are chosen (`sample_indices`); resize:
    `resize_frames`."""
    (clip,) = read_clips(path, num_samples, image_size, decoder, sampling, jitter, windows=[window], resize=resize)
    if isinstance(clip, VideoError):
        raise clip
    return clip


def read_clips(path: str | Path, num_samples: int, image_size: int, decoder: str = "auto",
               sampling: str = DEFAULT_SAMPLING, jitter: Jitter = None,
               *, windows: Sequence[Window | None] = (None,),
               resize: str = DEFAULT_RESIZE) -> list[SampledClip | VideoError]:
    """T sampled frames of each window of one video (None: the whole video), decoding the video once.
    Raises VideoError when the video cannot be read; a window that does not fit it (it starts after
    the last frame) gets its VideoError in its place, the others their clips."""
    path = Path(path)
    plans: list[np.ndarray | VideoError] = []

    def choose(num_frames: int, fps: float) -> np.ndarray:
        for window in windows:
            try:
                plans.append(window_indices(window, num_frames, fps, num_samples, sampling, jitter))
            except VideoError as err:
                if window is None:
                    raise
                plans.append(err)
        wanted = [plan for plan in plans if not isinstance(plan, VideoError)]
        return np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)

    check_regular_file(path)
    chosen = resolve_decoder(decoder)
    # With 'auto', a file that decord fails on is retried with PyAV: decord cannot read some valid
    # videos (e.g. frame widths of 16, 24, 48 or 72 px: dmlc/decord#336), and the two give the same
    # frames where both work (tests/test_video.py).
    readers = [_read_decord, _read_pyav] if chosen == "decord" and decoder == "auto" else [_READERS[chosen]]
    for attempt, reader in enumerate(readers, start=1):
        plans.clear()
        try:
            rgb, index, num_frames, fps = reader(path, choose)
            break
        except VideoError:
            raise
        except Exception as err:  # decoders raise many types for corrupt input: record, don't crash
            if attempt == len(readers):
                raise VideoError(_decoder_message(err)) from err
    frames = resize_frames(rgb, image_size, resize) if len(index) else None
    position = {int(frame): row for row, frame in enumerate(index)}
    clips: list[SampledClip | VideoError] = []
    for plan in plans:
        if isinstance(plan, VideoError):
            clips.append(plan)
            continue
        timestamps = plan / fps if fps > 0 else np.full(len(plan), np.nan)
        clips.append(SampledClip(frames[[position[int(i)] for i in plan]], plan, timestamps, num_frames, fps))
    return clips


# decord's errors start with a clock time and a source location ("[11:38:45] .../video_reader.cc:151: "),
# and checks add "Check failed: a >= b (x vs. y)": both removed, so that equal errors group in summaries.
# PyAV's start with an errno ("[Errno 1094995529] Invalid data found ..."): removed too.
_DECORD_NOISE = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] \S+:\d+: |Check failed: .*? vs\. [^)]*\) |^\[Errno -?\d+\] ")


def _decoder_message(err: Exception) -> str:
    text = str(err).strip()
    message = _DECORD_NOISE.sub("", text.splitlines()[0]).strip() if text else type(err).__name__
    if "cannot find video stream" in message:  # decord on an audio-only file
        return "no video stream (audio-only or not a video)"
    return f"cannot decode: {message}"


def _read_decord(path: Path, choose):
    import decord

    with native_stderr_dropped():
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        num_frames, fps = len(reader), float(reader.get_avg_fps())
        index = choose(num_frames, fps)
        rgb = reader.get_batch(list(index)).asnumpy() if len(index) else None
    return rgb, index, num_frames, fps


@contextmanager
def native_stderr_dropped():
    """decord and its FFmpeg print their own lines on file descriptor 2 (not through Python: '[mov @ 0x..]
    moov atom not found', '[12:00:00] video_reader.cc:83: ERROR opening'). What a failure means is in
    the exception, recorded with the video; their lines are dropped so pig's stderr stays its own."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_pyav(path: Path, choose):
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError("no video stream (audio-only or not a video)")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        # Frame counts in headers are unreliable: decode everything, then convert to RGB only the sampled
        # frames (converting all of them took most of the time; the decoded frames are half RGB's size)
        decoded = list(container.decode(stream))
        index = choose(len(decoded), fps)
        rgb = np.stack([decoded[i].to_ndarray(format="rgb24") for i in index]) if len(index) else None
    return rgb, index, len(decoded), fps


def _read_torchcodec(path: Path, choose):
    from torchcodec.decoders import VideoDecoder

    # exact mode scans the file once for the true frame count (headers are unreliable, as for PyAV),
    # then decodes only the sampled frames; one thread, as the other decoders in a worker
    decoder = VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1)
    num_frames, fps = int(decoder.metadata.num_frames or 0), float(decoder.metadata.average_fps or 0)
    index = choose(num_frames, fps)
    rgb = decoder.get_frames_at(indices=[int(i) for i in index]).data.numpy() if len(index) else None
    return rgb, index, num_frames, fps


_READERS = {"decord": _read_decord, "pyav": _read_pyav, "torchcodec": _read_torchcodec}


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

