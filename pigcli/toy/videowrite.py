"""Writing real video files with PyAV (its own FFmpeg): for the toy corpus and the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# container suffix -> (codec, pixel format) that PyAV's bundled FFmpeg can encode
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("mpeg4", "yuv420p"),
    ".avi": ("mjpeg", "yuvj420p"),
    ".webm": ("libvpx", "yuv420p"),
    ".mov": ("mpeg4", "yuv420p"),
}


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, codec: str | None = None) -> Path:
    """frames [N, H, W, 3] uint8 (H, W even) -> a video file whose codec follows the suffix."""
    import av

    path = Path(path)
    default_codec, pix_fmt = CODECS.get(path.suffix.lower(), ("libx264", "yuv420p"))
    codec = codec or default_codec
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "ultrafast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
