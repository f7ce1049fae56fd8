"""The indexed videos' own files, the frames the model saw and the ITS choices, by video id.

Files are looked up by id among the paths the index's extract file recorded (pigcli.media.SourceVideos),
never built from a request: nothing but an indexed video's own file can be served (no path traversal by
construction). Decoded frames of the last few videos asked for are kept: a page shows each several times.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import PigError

FRAME_CACHE = 64  # videos whose decoded frames are kept (a few pages of results)
MISSING_CHECK_SECONDS = 60  # /health counts the missing source files again at most this often
EXAMPLES = 4  # example queries on the landing page (captions of that many videos)


class NotAvailable(PigError):
    """The index's files do not have what was asked for this video (answered with 404)."""


class VideoCatalog:
    def __init__(self, index: str | Path, captions: str | Path | None = None):
        from ..media import SourceVideos

        self.index = Path(index)
        try:
            self.sources = SourceVideos(index)
        except PigError:  # an index whose extract file is gone: search works, pictures do not
            self.sources = None
        self.captions = read_caption_map(captions) if captions else {}
        self._frames: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._missing: tuple[float, int] | None = None  # (when counted, how many)
        self._missing_lock = threading.Lock()  # its own: a count does not hold up the frames

    @property
    def available(self) -> bool:
        """Whether the videos' files and frames can be shown (the index's extract file was found)."""
        return self.sources is not None

    def missing_videos(self) -> int | None:
        """How many indexed videos' source files are gone (None: no extract file, so none can be shown).
        Counted again at most every MISSING_CHECK_SECONDS: one stat per video."""
        if self.sources is None:
            return None
        with self._missing_lock:
            if self._missing is None or time.monotonic() - self._missing[0] > MISSING_CHECK_SECONDS:
                self._missing = (time.monotonic(), _count_missing(self.sources.file))
            return self._missing[1]

    def caption(self, video: str) -> str | None:
        return self.captions.get(video)

    def examples(self, count: int = EXAMPLES) -> list[str]:
        """Up to count captions spread over the file (one per video), as example queries; none without one."""
        texts = list(self.captions.values())
        return [texts[i] for i in np.unique(np.linspace(0, len(texts) - 1, min(count, len(texts))).astype(int))]

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
        from ..media import patch_boxes, selected_patches

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


def read_caption_map(path: str | Path) -> dict[str, str]:
    """Each video's first caption in a captions file (any format pigcli.captions reads)."""
    from ..captions import read_captions

    found: dict[str, str] = {}
    for caption in read_captions(path)[0]:
        found.setdefault(caption.video_id, caption.text)
    return found


def _count_missing(extract_file: Path) -> int:
    """Videos extracted ok whose recorded source file is no longer there."""
    from ..media import SOURCE_STAGES
    from ..store import EXTRACT_HINT, decode_ids, open_stage_file

    with open_stage_file(extract_file, SOURCE_STAGES, EXTRACT_HINT) as handle:
        paths, statuses = decode_ids(handle["path"][:]), decode_ids(handle["status"][:])
    return sum(status == "ok" and not Path(path).is_file() for path, status in zip(paths, statuses))
