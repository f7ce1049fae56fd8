"""The served query path without HTTP: the index in RAM, the query encoder and the rerank head loaded once.

`Searcher.search` gives the ranking `pig rank --query` gives on the same index and model: the index is
opened the same way (pigcli.query.opened.OpenedIndex: model folder, rerank plan, features), the same
text embedding (pigcli.model.text_encoder, the model's text side alone), the same exact scan (with the
index's stored norm bound) and the same EERCF rerank (query/rerank.py), only over an array held in
memory instead of the HDF5 file read block by block.
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


class UnknownVideo(UsageError):
    """A request named a video the index does not hold (answered with 404)."""


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
    batch: int = 1                                # queries in the scan that answered these


@dataclass
class _Request:
    """One caller's queries, waiting for the next scan; `done` once answer or error is set. Texts are
    encoded for the scan; vectors (a video's stored vector: "more like this") are the queries as they are."""
    texts: list[str] | None
    k: int
    rerank: int
    vectors: np.ndarray | None = None
    answer: Answer | None = None
    error: BaseException | None = None
    done: bool = False


class Searcher:
    """Everything a query needs, loaded once.

    Scans run one at a time, and requests that arrive while one runs share the next: each caller's
    texts are encoded on their own (so each gets exactly the embedding `pig rank` computes for them),
    then one exact scan serves them all (a scan reads the whole index once, whatever the number of
    queries: benchmarks/RESULTS_rank.md). The first caller to get the lock runs every request queued."""

    def __init__(self, index: str | Path, *, model: str | None = None, device: str = "auto", rerank: int | str = 0,
                 rerank_weights=None, features: str | Path | None = None, fp16_copy: bool = True):
        from ..model.text_encoder import load_text_encoder
        from ..query.opened import OpenedIndex

        # the whole index in RAM, and an fp16 copy that halves what a one-query scan reads (same results)
        self.index = OpenedIndex.open(index, model=model, rerank=rerank, rerank_weights=rerank_weights,
                                      features=features, in_memory=True, fp16_copy=fp16_copy)
        self.encoder = load_text_encoder(self.index.folder.path, device)  # the text side alone
        if self.index.rerank_k:
            self.index.rerank_head()  # read at start, not by the first request
        self.size, self.rerank_k, self.index_model = self.index.rows, self.index.rerank_k, self.index.model
        self._lock = threading.Lock()        # one batch at a time
        self._queue: list[_Request] = []
        self._queue_lock = threading.Lock()

    def check_request(self, k: int, rerank: int | None) -> int:
        """The rerank K a request runs with (its own, else the server's); UsageError for values out of range."""
        if not 1 <= k <= MAX_K:
            raise UsageError(f"k must be between 1 and {MAX_K}, not {k}")
        rerank = self.rerank_k if rerank is None else rerank
        if not 0 <= rerank <= MAX_RERANK:
            raise UsageError(f"rerank must be between 0 (off) and {MAX_RERANK}, not {rerank}")
        if rerank and self.index.features is None:
            raise UsageError("this server reranks nothing: start it with pig serve INDEX --rerank")
        return rerank

    def search(self, texts: list[str], k: int = 10, rerank: int | None = None) -> Answer:
        """Top-k videos of each text (rerank: EERCF on the top `rerank`; None: the server's setting)."""
        from ..query.opened import require_texts

        rerank = self.check_request(k, rerank)
        require_texts(texts or [""], "q=a red car")  # no text at all is an empty query too
        return self._wait_for(_Request(list(texts), k, rerank))

    def search_like(self, video: str, k: int = 10) -> Answer:
        """Top-k videos for a video's own stored vector as the query ("more like this"): the ranking `pig
        rank` gives with that vector as a query file's embedding. Never reranked (EERCF scores a text)."""
        self.check_request(k, 0)
        return self._wait_for(_Request(None, k, 0, vectors=self.vector_of(video)[None]))

    def vector_of(self, video: str) -> np.ndarray:
        """[D] float32: the index's stored vector of `video` (UsageError for an id not in the index)."""
        try:
            row = self.index.ids.index(video)  # a scan of the ids: 13 ms for the last of 1M on a busy core
        except ValueError:
            raise UnknownVideo("no video with this id in the index") from None  # no id or path echoed back
        return self.index.vectors[row].astype(np.float32)

    def _wait_for(self, request: _Request) -> Answer:
        """Queue the request for the next scan, run that scan unless another caller already runs it."""
        with self._queue_lock:
            self._queue.append(request)
        with self._lock:
            if not request.done:  # nobody took it along yet: run everything waiting
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run(batch)
        if request.error is not None:
            raise request.error
        return request.answer

    def _run(self, batch: list[_Request]) -> None:
        try:
            start = time.perf_counter()
            encoded = [self._encode(request.texts) if request.vectors is None
                       else (request.vectors, [False] * len(request.vectors)) for request in batch]
            encode = time.perf_counter() - start
            text = np.concatenate([embedding for embedding, _ in encoded])
            widest = max(max(request.k, request.rerank) for request in batch)
            scores, rows = self.index.scan(text, widest)
            scan = time.perf_counter() - start - encode
            first = 0
            for request, (embedding, truncated) in zip(batch, encoded):
                mine = slice(first, first + len(embedding))
                first = mine.stop
                request.answer = self._answer(request, embedding, rows[mine], scores[mine], truncated,
                                              {"encode": encode, "scan": scan})
                request.answer.batch = len(text)
                request.done = True
        except BaseException as err:  # every caller of the batch gets the error, none waits forever
            for request in batch:
                if not request.done:
                    request.error, request.done = err, True

    def _encode(self, texts: list[str]):
        """(e_t, truncated), on the threads `pig rank` encodes that many queries with (the same numbers)."""
        from ..query.rank import query_threads

        with query_threads(self.encoder.device, len(texts)):
            return self.encoder.encode(texts)

    def _answer(self, request: _Request, text, rows, scores, truncated, timings: dict) -> Answer:
        ids = self.index.ids
        if request.rerank:
            start = time.perf_counter()
            rows, scores = self.index.rerank(text, rows, scores, ids, request.rerank)
            timings["rerank"] = time.perf_counter() - start
        k = request.k
        hits = [[Hit(position, ids[row], float(score))
                 for position, (row, score) in enumerate(zip(rows[q, :k], scores[q, :k]), start=1)]
                for q in range(len(rows))]
        return Answer(hits, timings, [bool(t) for t in truncated])
