"""The served query path without HTTP: the index in RAM, the query encoder and the rerank head loaded once.

`Searcher.search` gives the ranking `pig rank --query` gives on the same index and model: the same text
embedding (pigcli.core.text), the same exact scan (pigcli.core.search.exact_topk with the index's stored
norm bound, as stages/scoring.rank_index runs it) and the same EERCF rerank (stages/rerank.py), only
over an array held in memory instead of the HDF5 file read block by block.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError

MAX_K = 1000          # results per query a request may ask for
MAX_RERANK = 1000     # candidates a request may rerank


@dataclass
class Hit:
    rank: int
    video: str
    score: float


@dataclass
class Answer:
    hits: list[list[Hit]]                         # per query, best first
    timings: dict = field(default_factory=dict)   # seconds: encode, scan, rerank
    truncated: list[bool] = field(default_factory=list)


class Searcher:
    """Everything a query needs, loaded once. Searches run one at a time (a lock): each already uses
    every torch thread, and two at once would only compete for them."""

    def __init__(self, index: str | Path, *, model: str | None = None, device: str = "cpu", rerank: int | str = 0,
                 rerank_weights=None, features: str | Path | None = None):
        from ..model.resolve import folder_for_file
        from ..stages.rerank import find_features, resolve_rerank
        from ..stages.scoring import INDEX_HINT, stored_norm_bound
        from ..store import open_stage_file, read_ids, recorded_model
        from .text_encoder import load_text_encoder

        self.index_path = Path(index)
        with open_stage_file(self.index_path, ("fuse",), INDEX_HINT) as handle:
            self.embedding = np.ascontiguousarray(handle["embedding"][:])  # the whole index in RAM
            self.norm_bound = stored_norm_bound(handle)
            self.ids = read_ids(handle)
            self.index_model = recorded_model(handle)
            self.folder = folder_for_file(model, handle, self.index_path, "pig index with this model")
        self.encoder = load_text_encoder(self.folder, device)
        plan = resolve_rerank(rerank, rerank_weights, self.folder)
        self.rerank_k, self.rerank_weights = plan.k, plan.weights
        self.features = find_features(self.index_path, features) if plan.k else None
        self.head = self.folder.load_eercf_head() if plan.k else None
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.ids)

    def check_request(self, k: int, rerank: int | None) -> int:
        """The rerank K a request runs with (its own, else the server's); UsageError for values out of range."""
        if not 1 <= k <= MAX_K:
            raise UsageError(f"k must be between 1 and {MAX_K}, not {k}")
        rerank = self.rerank_k if rerank is None else rerank
        if not 0 <= rerank <= MAX_RERANK:
            raise UsageError(f"rerank must be between 0 (off) and {MAX_RERANK}, not {rerank}")
        if rerank and self.features is None:
            raise UsageError("this server reranks nothing: start it with pig serve INDEX --rerank")
        return rerank

    def search(self, texts: list[str], k: int = 10, rerank: int | None = None) -> Answer:
        """Top-k videos of each text (rerank: EERCF on the top `rerank`; None: the server's setting)."""
        from ..core.search import exact_topk

        rerank = self.check_request(k, rerank)
        if not texts or any(not text.strip() for text in texts):
            raise UsageError("empty query: give the text to search for, e.g. q=a red car")
        timings = {}
        with self._lock:
            start = time.perf_counter()
            text, truncated = self.encoder.encode(texts)
            timings["encode"] = time.perf_counter() - start
            scores, rows = exact_topk(self.embedding, text, max(k, rerank), row_norm_bound=self.norm_bound)
            timings["scan"] = time.perf_counter() - start - timings["encode"]
            if rerank:
                rows, scores = self._rerank(text, rows, scores, rerank)
                timings["rerank"] = time.perf_counter() - start - timings["encode"] - timings["scan"]
        hits = [[Hit(position, self.ids[row], float(score))
                 for position, (row, score) in enumerate(zip(rows[q, :k], scores[q, :k]), start=1)]
                for q in range(len(texts))]
        return Answer(hits, timings, [bool(t) for t in truncated])

    def _rerank(self, text, rows, scores, k: int):
        from ..stages.rerank import rerank

        rows, scores, _ = rerank(text, rows, scores, self.features, self.ids, k, self.rerank_weights, self.head,
                                 self.index_model)
        return rows, scores
