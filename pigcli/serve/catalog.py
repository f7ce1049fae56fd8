"""The indexed videos' own files, the frames the model saw and the ITS choices, by video id.

Files are looked up by id among the paths the index's extract file recorded (pigcli.query.media.SourceVideos),
never built from a request (no path traversal by construction). A recorded path is opened only if,
resolved when asked (symlinks followed), it is a regular file inside the folders the index recorded,
resolved at startup (the allowed roots): a video replaced after indexing by a symlink to /etc/passwd, or
to any file elsewhere, is refused. Why a video is refused goes to the server's log (stderr); the client
gets a message that names no path and no id. Decoded frames of the last few videos asked for are kept: a
page shows each several times.
"""

from __future__ import annotations

import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

import numpy as np

from ..console import warn
from ..errors import PigError

FRAME_CACHE = 64  # videos whose decoded frames are kept (a few pages of results)
MISSING_CHECK_SECONDS = 60  # /health counts the missing source files again at most this often
EXAMPLES = 4  # example queries on the landing page (captions of that many videos)


UNKNOWN = "no video with this id in the index"
CANNOT_SHOW = "this video's file cannot be shown (the server's log says why)"
MISSING = "this video's source file is missing: moved or deleted since it was indexed"
NO_PICTURES = "this server cannot show videos: the index's extract file was not found (the server's log says why)"


class NotAvailable(PigError):
    """What was asked for this video cannot be shown (answered with 404); the message is for the client."""


class VideoCatalog:
    def __init__(self, index: str | Path, captions: str | Path | None = None):
        from ..query.media import SourceVideos

        self.index = Path(index)
        try:
            self.sources = SourceVideos(index)
        except PigError as err:  # an index whose extract file is gone: search works, pictures do not
            warn(f"serve: videos cannot be shown: {err}")
            self.sources = None
        self.roots = allowed_roots(self.sources.folders() if self.sources else ())
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
                self._missing = (time.monotonic(), self.sources.missing_count())
            return self._missing[1]

    def caption(self, video: str) -> str | None:
        return self.captions.get(video)

    def examples(self, count: int = EXAMPLES) -> list[str]:
        """Up to count captions spread over the file (one per video), as example queries; none without one."""
        texts = list(self.captions.values())
        return [texts[i] for i in np.unique(np.linspace(0, len(texts) - 1, min(count, len(texts))).astype(int))]

    def video_file(self, video: str) -> Path:
        """The video's file, resolved: what was checked is what is opened."""
        return self._ask(video, lambda sources: self._checked_file(sources, video))

    def frames(self, video: str) -> np.ndarray:
        """[T, S, S, 3] uint8 as the model saw them."""
        with self._lock:
            if video in self._frames:
                self._frames.move_to_end(video)
                return self._frames[video]
        frames = self._ask(video, lambda sources: sources.frames(video, self._checked_file(sources, video)))
        with self._lock:
            self._frames[video] = frames
            while len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)
        return frames

    def patches(self, video: str) -> dict:
        """The ITS-selected patches: {frames: T, image_size: S, boxes: [{frame, x0, y0, x1, y1, score}]},
        in model-frame pixels, best first."""
        from ..query.media import patch_boxes, selected_patches

        view = self._ask(video, lambda _: selected_patches(self.index, video))
        return {"frames": view.num_frames, "image_size": view.image_size,
                "boxes": [box._asdict() for box in patch_boxes(view)]}

    def _checked_file(self, sources, video: str) -> Path:
        return confined(sources.path(video), self.roots)

    def _ask(self, video: str, question):
        if self.sources is None:
            raise NotAvailable(NO_PICTURES)
        if video not in self.sources:
            raise NotAvailable(UNKNOWN)
        try:
            return question(self.sources)
        except NotAvailable:
            raise
        except PigError as err:
            from ..query.media import SourceMissing

            warn(f"serve: video {video!r} not shown: {err}")
            # a missing file is the one reason the page shows (without its path); others: see the log
            raise NotAvailable(MISSING if isinstance(err, SourceMissing) else CANNOT_SHOW) from None


def allowed_roots(folders: Iterable[str | Path]) -> frozenset[Path]:
    """The folders resolved now (symlinks followed); one that is gone is left out (its videos are refused)."""
    roots = set()
    for folder in folders:
        try:
            roots.add(Path(folder).resolve(strict=True))
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
            continue
    return frozenset(roots)


def confined(path: Path, roots: frozenset[Path]) -> Path:
    """`path` resolved now (symlinks followed), if that is a regular file inside one of `roots`; raises
    PigError saying why not."""
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except (OSError, RuntimeError) as err:
        raise PigError(f"{path} cannot be resolved: {err}") from None
    if not stat.S_ISREG(mode):
        raise PigError(f"{path} resolves to {real}, not a regular file")
    if roots.isdisjoint(real.parents):
        raise PigError(f"{path} resolves to {real}, outside the folders the index recorded")
    return real


def read_caption_map(path: str | Path) -> dict[str, str]:
    """Each video's first caption in a captions file (any format pigcli.inputs.captions reads)."""
    from ..inputs.captions import read_captions

    found: dict[str, str] = {}
    for caption in read_captions(path)[0]:
        found.setdefault(caption.video_id, caption.text)
    return found
