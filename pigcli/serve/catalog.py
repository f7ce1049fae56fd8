"""The indexed videos' own files, the frames the model saw and the ITS choices, by video id.

Files are looked up by id among the paths the index's extract file recorded (pigcli.query.media.SourceVideos),
never built from a request: nothing but an indexed video's own file can be served (no path traversal by
construction). Decoded frames of the last few videos asked for are kept: a page shows each several times.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import PigError

FRAME_CACHE = 64  # videos whose decoded frames are kept (a few pages of results)


class NotAvailable(PigError):
    """The index's files do not have what was asked for this video (answered with 404)."""


class VideoCatalog:
    def __init__(self, index: str | Path):
        from ..query.media import SourceVideos

        self.index = Path(index)
        try:
            self.sources = SourceVideos(index)
        except PigError:  # an index whose extract file is gone: search works, pictures do not
            self.sources = None
        self._frames: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether the videos' files and frames can be shown (the index's extract file was found)."""
        return self.sources is not None

    def video_file(self, video: str) -> Path:
        return self._ask(lambda sources: sources.path(video))

    def frames(self, video: str) -> np.ndarray:
        """[T, S, S, 3] uint8 as the model saw them."""
        with self._lock:
            if video in self._frames:
                self._frames.move_to_end(video)
                return self._frames[video]
        frames = self._ask(lambda sources: sources.frames(video))
        with self._lock:
            self._frames[video] = frames
            while len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)
        return frames

    def patches(self, video: str) -> dict:
        """The ITS-selected patches: {frames: T, image_size: S, boxes: [{frame, x0, y0, x1, y1, score}]},
        in model-frame pixels, best first."""
        from ..query.media import patch_boxes, selected_patches

        view = self._ask(lambda _: selected_patches(self.index, video))
        return {"frames": view.num_frames, "image_size": view.image_size,
                "boxes": [box._asdict() for box in patch_boxes(view)]}

    def _ask(self, question):
        if self.sources is None:
            raise NotAvailable(f"no extract file found for {self.index}: its videos cannot be shown")
        try:
            return question(self.sources)
        except NotAvailable:
            raise
        except PigError as err:
            raise NotAvailable(str(err)) from None
