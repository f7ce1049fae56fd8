"""`pig rank`: exact top-K videos per query (METHOD.md sections 5 and 8).

index (two-tower / PIG):  s(t, v) = e_t . e_v over the stored index, blocked scan with a running top-k.
xpool (single tower):     s(t, v) = e_t . fusioner(e_t, [x_v ; x_p ; x_f]) for every (query, video)
                          pair at query time: the upper bound a pseudo-query approximates; slow by design.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ..errors import PigError, UsageError
from ..store import decode_ids, open_stage_file, read_attrs, read_ids, recorded_model, require_same_model
from .common import take_rows

RANK_METHODS = ("index", "xpool")
FORMATS = ("tsv", "jsonl", "trec")
INDEX_HINT = "pig fuse gen.h5 -m MODEL -o index.h5 (or pig index VIDEOS -o index.h5)"
FEATURE_STAGES = ("extract", "select", "generate")


@dataclass
class Ranking:
    query_ids: list[str]
    video_ids: Sequence[str] | Mapping[int, str]  # index row -> video id (at least for the rows below)
    rows: np.ndarray      # [Q, k] row numbers of the index
    scores: np.ndarray    # [Q, k] float32, descending


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


def upstream_file(path: str | Path, stages: tuple[str, ...]) -> Path | None:
    """Follow a stage file's recorded inputs back to the nearest file of one of `stages`."""
    current = Path(path)
    for _ in range(8):
        attrs = read_attrs(current)
        if attrs.get("stage") in stages:
            return current
        parents = [i for i in attrs.get("inputs", []) if "stage" in i and Path(i["path"]).is_file()]
        if not parents:
            return None
        current = Path(parents[0]["path"])
    return None


def load_query_file(path: str | Path, index_handle, index_path) -> tuple[list[str], np.ndarray]:
    with open_stage_file(path, ("embed-text",), "pig embed-text QUERIES -m MODEL -o q.h5") as handle:
        require_same_model(path, handle, json.loads(index_handle.attrs["model"]),
                           f"pig embed-text with the model of {index_path}")
        return read_ids(handle), handle["embedding"][:]


def read_ids_at(index_path, rows: np.ndarray | None = None) -> list[str] | dict[int, str]:
    """Every video id of the index (rows None), or {row: id} for the rows given (any shape)."""
    with open_stage_file(index_path, ("fuse",), INDEX_HINT) as handle:
        if rows is None:
            return read_ids(handle)
        wanted = np.unique(rows)
        return dict(zip(wanted.tolist(), decode_ids(take_rows(handle["ids"], wanted))))


def rank_index(index_path: str | Path, query_embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows and scores of e_t . e_v over the index file, read block by block."""
    from ..search import exact_topk

    with open_stage_file(index_path, ("fuse",), INDEX_HINT) as handle:
        return exact_topk(handle["embedding"], query_embedding, k, row_norm_bound=stored_norm_bound(handle))


def stored_norm_bound(handle) -> float | None:
    """The largest of the per-row norm bounds `pig fuse` stores (/norm), or None (older index files)."""
    if "norm" not in handle or handle["norm"].shape[0] == 0:
        return None
    bound = float(np.max(handle["norm"][:]))
    return bound if np.isfinite(bound) else None


def xpool_scores_blocks(pig, features: str | Path, video_ids: list[str], text: np.ndarray, device,
                        block_videos: int = 256):
    """Yield (first row, scores [Q, block]) of the single-tower score, video block by video block."""
    import torch

    with open_stage_file(features, FEATURE_STAGES, "pig extract VIDEOS -m MODEL -o feats.h5") as handle:
        position = {vid: i for i, vid in enumerate(read_ids(handle))}
        missing = [v for v in video_ids if v not in position]
        if missing:
            raise PigError(f"{features} lacks {len(missing)} videos of the index (e.g. {missing[0]}); "
                           "pass the extract file the index was built from with --features")
        queries = torch.from_numpy(np.asarray(text, np.float32)).to(device)
        for start in range(0, len(video_ids), block_videos):
            rows = np.array([position[v] for v in video_ids[start : start + block_videos]])
            order = np.argsort(rows)  # h5py reads increasing rows
            keys = [torch.from_numpy(np.asarray(take_rows(handle[n], rows[order]), np.float32)).to(device)
                    for n in ("video", "proxies", "frames")]
            inverse = torch.from_numpy(np.argsort(order)).to(device)
            keys = [k[inverse] for k in keys]
            with torch.inference_mode():
                fused = pig.fuse(queries.expand(len(rows), -1, -1), *keys)           # [B, Q, D]
                scores = torch.einsum("qd,bqd->qb", queries, fused)
            yield start, scores.float().cpu()


def rank_xpool(pig, features, video_ids: list[str], text: np.ndarray, k: int, device) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from ..search import RunningTopK

    top = RunningTopK(len(text), min(k, len(video_ids)))
    for start, scores in xpool_scores_blocks(pig, features, video_ids, text, device):
        rows = torch.arange(start, start + scores.shape[1]).expand(scores.shape[0], -1)
        top.merge(scores, rows)
    return top.result()


def check_method(method: str) -> None:
    if method not in RANK_METHODS:
        raise UsageError(f"--method must be one of {', '.join(RANK_METHODS)}, not {method!r}")


def check_rerank(rerank_k: int, method: str) -> None:
    if rerank_k < 0:
        raise UsageError(f"--rerank must be 0 (off) or a number of videos K >= 1, not {rerank_k}")
    if method == "xpool" and rerank_k:
        raise UsageError("--rerank works on top of the index's scores, not with --method xpool")


def write_ranking(ranking: Ranking, fmt: str, stream: TextIO, run_name: str = "pig") -> None:
    """TSV: query, rank, video, score (rank from 1). JSONL: one object per line. TREC: qid Q0 doc rank score run."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    for qi, query_id in enumerate(ranking.query_ids):
        for position, (row, score) in enumerate(zip(ranking.rows[qi], ranking.scores[qi]), start=1):
            video = ranking.video_ids[row]
            if fmt == "tsv":
                stream.write(f"{query_id}\t{position}\t{video}\t{score:.6f}\n")
            elif fmt == "jsonl":
                stream.write(json.dumps({"query": query_id, "rank": position, "video": video,
                                         "score": round(float(score), 6)}) + "\n")
            else:
                stream.write(f"{query_id} Q0 {video} {position} {score:.6f} {run_name}\n")


def rank(index: str | Path | None = None, *, query_file: str | Path | None = None, queries=None, k: int = 10,
         method: str = "index", features: str | Path | None = None, model: str | None = None,
         device: str = "auto", rerank_k: int = 0, rerank_weights=None, cost: bool = False) -> Ranking:
    """Rank the index's videos for queries given as an embed-text file or as `Query` objects (embedded
    on the fly with the index's model). rerank_k > 0: EERCF rerank of the top rerank_k (METHOD.md s.7).
    cost: also print each method's online cost per query on these queries to stderr."""
    from .common import eercf_head_for_file, model_for_file
    from .embed_text import embed_texts, report_truncated
    from .runtime import resolve_device

    check_method(method)
    if (query_file is None) == (queries is None):
        raise UsageError("give queries: a q.h5 file from pig embed-text, --query TEXT, or --queries FILE")
    if k < 1:
        raise UsageError(f"--top must be at least 1, not {k}")
    check_rerank(rerank_k, method)
    index_path = default_index_path(index)
    torch_device, _ = resolve_device(device)
    with open_stage_file(index_path, ("fuse",), INDEX_HINT) as handle:
        n_videos = handle["ids"].shape[0]
        loaded = None
        if queries is not None or method == "xpool" or cost:
            loaded = model_for_file(model, handle, index_path, torch_device, "pig index with this model")
        if query_file is not None:
            query_ids, text = load_query_file(query_file, handle, index_path)
        else:
            text, truncated = embed_texts(loaded, [q.text for q in queries], device=torch_device)
            report_truncated(queries, truncated, loaded.model.config.max_text_tokens)
            query_ids = [q.id for q in queries]
        head, index_model = None, recorded_model(handle)
        if rerank_k:  # the model's rerank head; read alone unless the whole model is loaded anyway
            head = (loaded.model.eercf if loaded is not None
                    else eercf_head_for_file(model, handle, index_path, "pig index with this model")[0])
    if cost:
        _report_cost(index_path, text, features or upstream_file(index_path, ("extract",)), loaded.model,
                     torch_device, rerank_k or 50, k, n_videos)
    if method == "xpool" or rerank_k:
        needed = ("extract",) if rerank_k else FEATURE_STAGES
        features = features or upstream_file(index_path, needed)
        if features is None:
            raise PigError(f"--method xpool and --rerank need the token features of {index_path}'s videos: "
                           "pass --features feats.h5")
    if method == "xpool":
        video_ids = read_ids_at(index_path)
        scores, rows = rank_xpool(loaded.model, features, video_ids, text, k, torch_device)
        return Ranking(query_ids, video_ids, rows, scores)
    scores, rows = rank_index(index_path, text, max(k, rerank_k))
    # only the ids of the rows found: decoding every id of a 1M-video index took longer than the scan
    video_ids = read_ids_at(index_path, rows)
    if rerank_k:
        from .rerank import rerank

        rows, scores, _ = rerank(text, rows, scores, features, video_ids, rerank_k, rerank_weights, head,
                                  index_model)
    return Ranking(query_ids, video_ids, rows[:, :k], scores[:, :k])


def _report_cost(index_path, text, features, pig, device, rerank_k: int, top: int, n_videos: int) -> None:
    from ..console import err_console, warn
    from .cost import format_costs, measure_costs

    if features is None:
        warn("no extract file found for the index: only the index scan is measured (pass --features)")
    err_console.print(format_costs(measure_costs(index_path, text, features, pig, device, rerank_k, top), n_videos),
                      markup=False)
