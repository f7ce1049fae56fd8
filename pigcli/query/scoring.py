"""Scoring stage files: the index scan, the single-tower (xpool) scores, and finding files by their
recorded inputs. `pig rank`, `pig eval` and the cost report share these.

index (two-tower / PIG):  s(t, v) = e_t . e_v over the stored index: pigcli.core.search's exact scan
xpool (single tower):     s(t, v) = e_t . fusioner(e_t, [x_v ; x_p ; x_f]) for every (query, video)
                          pair at query time (pigcli.core.methods.xpool_scores); slow by design
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.search import RunningTopK, exact_topk
from ..errors import PigError
from ..stagefiles import FEATURE_STAGES, open_stage
from ..store import decode_ids, read_ids, take_rows



def read_ids_at(index_path, rows: np.ndarray | None = None) -> list[str] | dict[int, str]:
    """Every video id of the index (rows None), or {row: id} for the rows given (any shape)."""
    with open_stage(index_path, "fuse") as handle:
        if rows is None:
            return read_ids(handle)
        wanted = np.unique(rows)
        return dict(zip(wanted.tolist(), decode_ids(take_rows(handle["ids"], wanted))))


def rank_index(index_path: str | Path, query_embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows and scores of e_t . e_v over the index file, read block by block."""
    with open_stage(index_path, "fuse") as handle:
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

    from ..core.methods import xpool_scores

    with open_stage(features, *FEATURE_STAGES) as handle:
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
                scores = xpool_scores(pig, queries, *keys)
            yield start, scores.float().cpu()


def rank_xpool(pig, features, video_ids: list[str], text: np.ndarray, k: int, device) -> tuple[np.ndarray, np.ndarray]:
    import torch

    top = RunningTopK(len(text), min(k, len(video_ids)))
    for start, scores in xpool_scores_blocks(pig, features, video_ids, text, device):
        rows = torch.arange(start, start + scores.shape[1]).expand(scores.shape[0], -1)
        top.merge(scores, rows)
    return top.result()
