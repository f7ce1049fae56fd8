"""The indexed videos' own files and ITS choices, found from the index's recorded inputs.

Files are looked up by video id in the paths the extract file recorded, never built from a request:
nothing but an indexed video's own file can be served (no path traversal by construction).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import PigError

FRAME_CACHE = 32  # videos whose decoded frames are kept (a page of results)


class NotAvailable(PigError):
    """The index's files do not have what was asked for this video (answered with 404)."""


class VideoCatalog:
    def __init__(self, index: str | Path, patch_size: int):
        """patch_size: the model's (pixels); frames and their size are the extract file's settings."""
        from ..stages.scoring import upstream_file
        from ..store import read_attrs

        extract = upstream_file(index, ("extract",))
        self.paths = _video_paths(extract) if extract else {}
        settings = read_attrs(extract)["settings"] if extract else {}
        self.num_frames, self.image_size = settings.get("num_frames", 0), settings.get("image_size", patch_size)
        self.grid = self.image_size // patch_size
        self.select_file = upstream_file(index, ("select",))
        self._select_rows = _row_of_id(self.select_file) if self.select_file else {}
        self._frames: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def video_file(self, video: str) -> Path:
        path = self.paths.get(video)
        if path is None:
            raise NotAvailable(f"no video file recorded for {video!r}")
        if not path.is_file():
            raise NotAvailable(f"the file of {video!r} is gone ({path})")
        return path

    def frames(self, video: str) -> np.ndarray:
        """[T, S, S, 3] uint8 as the model saw them (decoded once, a few videos kept)."""
        from ..video import VideoError
        from .media import model_frames

        with self._lock:
            if video in self._frames:
                self._frames.move_to_end(video)
                return self._frames[video]
        try:
            frames = model_frames(self.video_file(video), self.num_frames, self.image_size)
        except VideoError as err:
            raise NotAvailable(f"cannot decode {video!r}: {err}") from None
        with self._lock:
            self._frames[video] = frames
            while len(self._frames) > FRAME_CACHE:
                self._frames.popitem(last=False)
        return frames

    def patches(self, video: str) -> dict:
        """The ITS-selected patches of a video: {frames, grid, patches: [{frame, row, col}, ...]}."""
        from ..store import open_stage_file
        from .media import patch_boxes

        row = self._select_rows.get(video)
        if row is None:
            raise NotAvailable(f"no ITS selection recorded for {video!r} (the index has no select file)")
        with open_stage_file(self.select_file, ("select",), "pig select feats.h5 -o sel.h5") as handle:
            chosen = handle["selected_index"][row]
        return {"frames": self.num_frames, "grid": self.grid,
                "patches": patch_boxes(chosen, self.grid * self.grid, self.grid)}


def _video_paths(extract: Path) -> dict[str, Path]:
    """id -> file of every video extract read successfully."""
    from ..store import decode_ids, ok_rows, open_stage_file, read_ids

    with open_stage_file(extract, ("extract",), "pig extract VIDEOS -o feats.h5") as handle:
        if "path" not in handle:
            return {}
        ids, paths, ok = read_ids(handle), decode_ids(handle["path"][:]), set(ok_rows(handle).tolist())
    return {vid: Path(path) for row, (vid, path) in enumerate(zip(ids, paths)) if row in ok}


def _row_of_id(stage_file: Path) -> dict[str, int]:
    from ..store import open_stage_file, read_ids

    with open_stage_file(stage_file, ("select",), "pig select feats.h5 -o sel.h5") as handle:
        return {vid: row for row, vid in enumerate(read_ids(handle))}
