"""Frame strips for the page, from pigcli.query.media's frames and JPEG encoder."""

from __future__ import annotations

import numpy as np


def frame_strip(frames: np.ndarray, count: int) -> np.ndarray:
    """count evenly spaced frames of [T, S, S, 3] side by side: [S, count * S, 3] (all T if count >= T)."""
    picked = frames if count >= len(frames) else frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]
    return np.concatenate(list(picked), axis=1)


def strip_jpeg(frames: np.ndarray, count: int) -> bytes:
    from ..query.media import jpeg

    strip = frame_strip(frames, count)
    return jpeg(strip, max_side=max(strip.shape[:2]))
