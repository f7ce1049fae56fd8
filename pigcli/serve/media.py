"""What the page shows of a video: the frames as the model saw them, as a JPEG strip, and the patches
the ITS selector chose (docs/method.md s.2), as boxes on those frames.

Minimal stand-in for pigcli.media (branch `media`), which `pig explain` and `rank --format html` share.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def model_frames(path: str | Path, num_frames: int, image_size: int) -> np.ndarray:
    """[T, S, S, 3] uint8: the T sampled frames, resized and centre-cropped as extract fed the model."""
    from ..video import read_clip

    return read_clip(path, num_frames, image_size).frames.transpose(0, 2, 3, 1)


def frame_strip(frames: np.ndarray, count: int) -> np.ndarray:
    """count evenly spaced frames of [T, S, S, 3] side by side: [S, count * S, 3] (all T if count >= T)."""
    picked = frames if count >= len(frames) else frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]
    return np.concatenate(list(picked), axis=1)


def jpeg(rgb: np.ndarray) -> bytes:
    """[H, W, 3] uint8 as a baseline JPEG (FFmpeg's mjpeg encoder through PyAV: no imaging library needed)."""
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = rgb.shape[1], rgb.shape[0]
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 1)
    codec.options = {"qscale": "3"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in codec.encode(frame) + codec.encode(None))


def patch_boxes(selected_index: np.ndarray, patches_per_frame: int, grid: int) -> list[dict]:
    """Each selected flat patch index (over T * L patches, frame-major) as {frame, row, col} on a grid x grid
    frame (L = grid^2), in the order given (descending ITS score)."""
    frame, within = np.divmod(np.asarray(selected_index, np.int64), patches_per_frame)
    row, col = np.divmod(within, grid)
    return [{"frame": int(f), "row": int(r), "col": int(c)} for f, r, c in zip(frame, row, col)]
