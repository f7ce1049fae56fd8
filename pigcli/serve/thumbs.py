"""Frame strips for the page, from pigcli.query.media's frames and JPEG encoder."""

from __future__ import annotations

import numpy as np


def frame_strip(frames: np.ndarray, count: int) -> np.ndarray:
    """`count` of [T, S, S, 3]'s frames (media.thumbnail_frames) side by side: [S, count * S, 3]."""
    from ..query.media import thumbnail_frames

    return np.concatenate(list(frames[thumbnail_frames(len(frames), count)]), axis=1)


def strip_jpeg(frames: np.ndarray, count: int) -> bytes:
    from ..query.media import jpeg

    strip = frame_strip(frames, count)
    return jpeg(strip, max_side=max(strip.shape[:2]))
