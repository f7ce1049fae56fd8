"""`pig rank`: exact top-K videos per query (docs/method.md sections 5, 7 and 8).

--method index scans the stored vectors (two tower or PIG); --method xpool scores every (query, video)
pair with the real query (single tower, slow by design); --rerank K reorders each query's top K with
EERCF's fine scores (query/rerank.py). The index is opened as `pig serve` opens it (query/opened.py);
the scoring itself is in query/scoring.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ..choices import FORMATS, RANK_METHODS, check_choice
from ..errors import PigError, UsageError
from ..store import decode_ids, read_attrs, read_ids, require_same_model
from ..stagefiles import FEATURE_STAGES, open_stage, upstream_file
from .opened import OpenedIndex, require_texts
from .scoring import rank_xpool, read_ids_at

# Up to this many queries are encoded on one CPU thread: their matrices are too small to gain from
# more, and on a busy CPU threads that wait for each other at every op made a ViT-B/32 query's
# encoding several times slower (benchmarks/RESULTS_query.md).
SINGLE_THREAD_QUERIES = 16


@dataclass
class Ranking:
    query_ids: list[str]
    video_ids: Sequence[str] | Mapping[int, str]  # index row -> video id (at least for the rows below)
    rows: np.ndarray      # [Q, k] row numbers of the index
    scores: np.ndarray    # [Q, k] float32, descending
    query_texts: list[str] | None = None  # the query texts, where known (shown by the html format)


def default_index_path(index: str | Path | None) -> Path:
    """The positional argument, else $PIG_INDEX, else ./index.h5."""
    path = Path(index or os.environ.get("PIG_INDEX") or "index.h5")
    if not path.is_file():
        how = "given" if index else ("from $PIG_INDEX" if os.environ.get("PIG_INDEX") else "default ./index.h5")
        raise PigError(f"index {path} ({how}) not found; pass an index file, set PIG_INDEX, or build one with: "
                       "pig index VIDEOS -o index.h5")
    return path


def resolve_rank_inputs(first: Path | None, second: Path | None) -> tuple[Path | None, Path | None]:
    """`pig rank q.h5` (index from $PIG_INDEX or ./index.h5): a lone embed-text file is the queries."""
    if first is not None and second is None and Path(first).is_file():
        try:
            is_queries = read_attrs(first).get("stage") == "embed-text"
        except OSError:
            is_queries = False
        if is_queries:
            return None, first
    return first, second


def load_query_file(path: str | Path, index_model: dict, index_path) -> tuple[list[str], np.ndarray, list[str] | None]:
    """Ids, embeddings and texts (None if the file has none) of an embed-text file made with the index's model."""
    with open_stage(path, "embed-text") as handle:
        require_same_model(path, handle, index_model, f"pig embed-text with the model of {index_path}")
        texts = decode_ids(handle["text"][:]) if "text" in handle else None
        return read_ids(handle), handle["embedding"][:], texts


def check_query_sources(query_file, has_texts: bool) -> None:
    """Exactly one source of queries: an embed-text file, or texts (--query/--queries/--topics)."""
    if query_file is not None and has_texts:
        raise UsageError(f"a query file from pig embed-text ({query_file}) and --query/--queries do not combine: "
                         "give one")
    if query_file is None and not has_texts:
        raise UsageError("give queries: a q.h5 file from pig embed-text, --query TEXT, --queries FILE or "
                         "--topics FILE")


def check_method(method: str) -> None:
    check_choice("--method", method, RANK_METHODS)


def check_rerank(rerank_k: int | str, method: str) -> None:
    from .rerank import check_rerank_k

    check_rerank_k(rerank_k)
    if method == "xpool" and rerank_k:
        raise UsageError("--rerank works on top of the index's scores, not with --method xpool")


# Ids come from file names and query files and may hold any character. TSV escapes the four that would
# break a row; TREC fields cannot hold whitespace at all, so ids there are percent-encoded (URL style).
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_TSV_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def tsv_escape(value: str) -> str:
    """Backslash, tab, newline and CR as \\\\, \\t, \\n, \\r; everything else as is."""
    return value.translate(_TSV_ESCAPES)


def tsv_unescape(value: str) -> str:
    """The inverse of tsv_escape (a backslash before any other character is kept as is)."""
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            after = next(chars, "")
            char = _TSV_UNESCAPES.get(after, "\\" + after)
        out.append(char)
    return "".join(out)


def trec_escape(value: str) -> str:
    """'%', whitespace (anything str.split splits on) and non-printable characters as %XX of their UTF-8
    bytes; urllib.parse.unquote gives the id back. Other characters (é included) stay as they are."""
    return "".join("".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                   if c == "%" or c.isspace() or not c.isprintable() else c for c in value)


def write_ranking(ranking: Ranking, fmt: str, stream: TextIO, run_name: str = "pig",
                  thumbnails: Callable[[str], Sequence[bytes]] | None = None) -> None:
    """TSV: query, rank, video, score (rank from 1), ids escaped by tsv_escape. JSONL: one object per line,
    {"query": TEXT (null where the query file holds no texts), "query_id", "rank", "video", "score"}.
    TREC: qid Q0 doc rank score run, ids percent-encoded by trec_escape (always 6 fields). HTML: one
    self-contained page (pigcli.query.media.ranking_html), with thumbnails(video_id)'s JPEGs where given."""
    check_choice("--format", fmt, FORMATS)
    if fmt == "html":
        from .media import ranking_html

        stream.write(ranking_html(ranking, thumbnails, title=f"{run_name} rank"))
        return
    texts = ranking.query_texts or [None] * len(ranking.query_ids)
    for qi, query_id in enumerate(ranking.query_ids):
        for position, (row, score) in enumerate(zip(ranking.rows[qi], ranking.scores[qi]), start=1):
            video = ranking.video_ids[row]
            if fmt == "tsv":
                stream.write(f"{tsv_escape(query_id)}\t{position}\t{tsv_escape(video)}\t{score:.6f}\n")
            elif fmt == "jsonl":
                stream.write(json.dumps({"query": texts[qi], "query_id": query_id, "rank": position,
                                         "video": video, "score": round(float(score), 6)}) + "\n")
            else:
                stream.write(f"{trec_escape(query_id)} Q0 {trec_escape(video)} {position} {score:.6f} {run_name}\n")


def rank(index: str | Path | None = None, *, query_file: str | Path | None = None, queries=None, k: int = 10,
         method: str = "index", features: str | Path | None = None, model: str | None = None,
         device: str = "auto", rerank_k: int | str = 0, rerank_weights=None, cost: bool = False,
         ann: str | Path | None = None, ann_options: dict | None = None) -> Ranking:
    """Rank the index's videos for queries given as an embed-text file or as `Query` objects (embedded
    on the fly with the index's model). ann: an ANN file from `pig index-ann` to take the candidates
    from instead of the exact scan (query/ann.py; ann_options: its nprobe, ef_search, refine).
    rerank_k > 0: EERCF rerank of the top rerank_k (docs/method.md s.7), candidates from the ANN when
    given; "auto": the model's tuned K (rerank.json), else 50. rerank_weights: see query.rerank.resolve_rerank
    (None: the model's rerank.json, else the defaults). cost: also print each method's online cost per
    query on these queries to stderr."""
    from ..core.device import resolve_device
    from .rerank import DEFAULT_K

    check_method(method)
    check_query_sources(query_file, queries is not None)
    if queries is not None:
        require_texts([q.text for q in queries], '-q "a red car"', [q.id for q in queries])
    if k < 1:
        raise UsageError(f"--top must be at least 1, not {k}")
    check_rerank(rerank_k, method)
    index_path = default_index_path(index)
    if ann is not None:
        _check_ann(ann, method)
    torch_device, _ = resolve_device(device)
    needs_model = method == "xpool" or cost  # the whole model: xpool's fusioner, every method's cost
    opened = OpenedIndex.open(index_path, model=model, need_folder=needs_model or queries is not None,
                              rerank=rerank_k, rerank_weights=rerank_weights, features=features)
    loaded = opened.folder.load(torch_device) if needs_model else None
    if loaded is not None and opened.rerank_k:
        opened.head = loaded.model.eercf
    if query_file is not None:
        query_ids, text, query_texts = load_query_file(query_file, opened.model, index_path)
    else:
        text = embed_queries(queries, opened.folder, loaded, torch_device)
        query_ids, query_texts = [q.id for q in queries], [q.text for q in queries]
    if cost:
        _report_cost(index_path, text, features or upstream_file(index_path, ("extract",)), loaded.model,
                     torch_device, opened.rerank_k or DEFAULT_K, k, opened.rows)
    if method == "xpool":
        return _rank_xpool(opened, features, loaded.model, text, k, torch_device, query_ids, query_texts)
    candidates = None
    if ann is not None:
        from .ann import rank_ann

        def candidates(text, wanted):
            return rank_ann(index_path, ann, text, wanted, **(ann_options or {}))
    rows, scores, video_ids = opened.search(text, k, candidates)
    return Ranking(query_ids, video_ids, rows, scores, query_texts)


def _rank_xpool(opened: OpenedIndex, features, pig, text, k: int, device, query_ids, query_texts) -> Ranking:
    """--method xpool: every (query, video) pair scored with the fusioner over the index's token features."""
    features = features or upstream_file(opened.path, FEATURE_STAGES)
    if features is None:
        raise PigError(f"--method xpool needs the token features of {opened.path}'s videos: pass --features feats.h5")
    video_ids = read_ids_at(opened.path)
    scores, rows = rank_xpool(pig, features, video_ids, text, k, device)
    return Ranking(query_ids, video_ids, rows, scores, query_texts)


def embed_queries(queries, folder, loaded, device) -> np.ndarray:
    """e_t of the queries: with the whole model where it is loaded anyway (xpool, --cost), else with the
    model's text side alone (pigcli.model.text_encoder: the same embeddings, without reading the video
    side), a few queries on one CPU thread. Says which queries were truncated."""
    from ..core.text import embed_texts
    from ..model.text_encoder import load_text_encoder
    from ..inputs.captions import report_truncated

    texts = [q.text for q in queries]
    with query_threads(device, len(texts)):
        if loaded is not None:
            text, truncated = embed_texts(loaded, texts, device=device)
        else:
            text, truncated = load_text_encoder(folder.path, device).encode(texts)
    report_truncated([q.id for q in queries], truncated, folder.config.max_text_tokens)
    return text


def query_threads(device, count: int):
    """Where `count` queries are encoded: one CPU thread for up to SINGLE_THREAD_QUERIES (`pig serve` too)."""
    from contextlib import nullcontext

    from ..core.device import cpu_threads

    return cpu_threads(device, 1) if count <= SINGLE_THREAD_QUERIES else nullcontext()


def _check_ann(ann: str | Path, method: str) -> None:
    """Before any model is loaded: --ann replaces the index scan, so it needs --method index, and a
    readable ANN file."""
    from .ann import read_meta

    if method != "index":
        raise UsageError(f"--ann replaces the exact index scan; --method {method} scores every video "
                         "and does not use it")
    read_meta(ann)


def _report_cost(index_path, text, features, pig, device, rerank_k: int, top: int, n_videos: int) -> None:
    from ..console import err_console, warn
    from .cost import format_costs, measure_costs

    if features is None:
        warn("no extract file found for the index: only the index scan is measured (pass --features)")
    err_console.print(format_costs(measure_costs(index_path, text, features, pig, device, rerank_k, top), n_videos),
                      markup=False)
