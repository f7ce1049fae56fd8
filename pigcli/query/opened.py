"""An index file opened for querying: what `pig rank` and `pig serve` both need, found one way.

OpenedIndex.open reads the index's attributes once (rows, model identity, the stored norm bound),
finds its model folder, decides the rerank (rerank.resolve_rerank) and the extract file the rerank
reads. `scan` is the exact top-k (core.search.exact_topk), over the file block by block (`pig rank`:
an index of any size, nothing held) or over the vectors held in RAM (`in_memory`, `pig serve`: one
read at start, then each query scans memory); `rerank` reorders a coarse ranking with EERCF; `search`
is the two in a row, with the ids of the rows found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import UsageError
from ..stagefiles import open_stage
from ..store import read_ids, recorded_model
from .scoring import rank_index, read_ids_at, stored_norm_bound

FOLDER_HINT = "pig index with this model"  # the rerun named when the index's model folder does not match


def require_texts(texts: Sequence[str], example: str, ids: Sequence[str] | None = None) -> None:
    """Every query must have text to search for: the one check of `pig rank -q` and `pig serve`
    (ids: named in the message where the queries have them)."""
    blank = [i for i, text in enumerate(texts) if not text.strip()]
    if blank:
        named = f" ({', '.join(ids[i] for i in blank)})" if ids is not None else ""
        raise UsageError(f"empty query{named}: give the text to search for, e.g. {example}")


@dataclass
class OpenedIndex:
    path: Path
    rows: int                         # videos in the index
    model: dict | None                # the identity ({name, hash}) the index records
    norm_bound: float | None          # the largest stored row norm (None: older files, no bound)
    folder: object | None = None      # the index's ModelFolder (None: not needed, e.g. a query file alone)
    plan: object | None = None        # rerank.RerankPlan: K (0: off) and weights
    features: Path | None = None      # the extract file the rerank reads (None without rerank)
    head: object | None = None        # the EERCF head (loaded on first rerank unless given)
    vectors: np.ndarray | None = None    # in RAM (in_memory), else scanned from the file
    scan_copy: np.ndarray | None = None  # fp16 copy of `vectors` a one-query scan reads
    ids: list[str] | None = None         # every id (in_memory), else read for the rows found

    @classmethod
    def open(cls, path: str | Path, *, model: str | None = None, need_folder: bool = True, rerank: int | str = 0,
             rerank_weights=None, features: str | Path | None = None, in_memory: bool = False,
             fp16_copy: bool = False) -> "OpenedIndex":
        """Open `path` (a fuse file); model: -m (None: the folder the index records, if need_folder or
        a rerank asks for it); rerank/rerank_weights: as resolve_rerank takes them; features: the
        extract file to rerank with (None: the one the index was built from)."""
        from ..model.resolve import folder_for_file
        from .rerank import find_features, resolve_rerank

        path = Path(path)
        with open_stage(path, "fuse") as handle:
            opened = cls(path, handle["ids"].shape[0], recorded_model(handle), stored_norm_bound(handle))
            if need_folder or rerank:
                opened.folder = folder_for_file(model, handle, path, FOLDER_HINT)
            if in_memory:
                opened.vectors = np.ascontiguousarray(handle["embedding"][:])
                opened.ids = read_ids(handle)
        opened.plan = resolve_rerank(rerank, rerank_weights, opened.folder)
        if opened.plan.k:
            opened.features = Path(find_features(path, features))
        if fp16_copy and opened.vectors is not None and opened.vectors.dtype == np.float32:
            from ..core.search import fp16_scan_copy

            opened.scan_copy = fp16_scan_copy(opened.vectors)  # halves what a one-query scan reads
        return opened

    @property
    def rerank_k(self) -> int:
        return self.plan.k if self.plan is not None else 0

    def rerank_head(self):
        """The EERCF head, read on first use: alone, much faster than loading the whole model."""
        if self.head is None:
            self.head = self.folder.load_eercf_head()
        return self.head

    def scan(self, text: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) [Q, k] of the exact top k of e_t . e_v, best first."""
        from ..core.search import exact_topk

        if self.vectors is None:
            return rank_index(self.path, text, k)
        return exact_topk(self.vectors, text, k, row_norm_bound=self.norm_bound, scan_copy=self.scan_copy)

    def ids_at(self, rows: np.ndarray) -> Sequence[str] | Mapping[int, str]:
        """row -> id for the rows given (every id when held in RAM)."""
        return self.ids if self.ids is not None else read_ids_at(self.path, rows)

    def rerank(self, text: np.ndarray, rows: np.ndarray, scores: np.ndarray, video_ids, k: int):
        """EERCF over the first k columns of a coarse ranking: new (rows, scores)."""
        from .rerank import rerank

        rows, scores, _ = rerank(text, rows, scores, self.features, video_ids, k, self.plan.weights,
                                 self.rerank_head(), self.model)
        return rows, scores

    def search(self, text: np.ndarray, k: int, candidates=None):
        """Top k per query, reranked when the plan says so: (rows, scores [Q, k], row -> id).
        candidates(text, n) -> (scores, rows): where the top n come from instead of the exact scan (ANN)."""
        wanted = max(k, self.rerank_k)
        scores, rows = (candidates or self.scan)(text, wanted)
        # only the ids of the rows found: decoding every id of a 1M-video index took longer than the scan
        video_ids = self.ids_at(rows)
        if self.rerank_k:
            rows, scores = self.rerank(text, rows, scores, video_ids, self.rerank_k)
        return rows[:, :k], scores[:, :k], video_ids

