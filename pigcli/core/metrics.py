"""Retrieval evaluation: ranks with pessimistic ties, R@K / MdR / MnR, optional DSL.

Protocol: the rank of the ground truth (0-based) is the number of OTHER candidates that
score >= it, so a tie with a wrong candidate always counts against the model and
degenerate all-equal scores give the worst rank, never a lucky 0.
R@K = 100 * mean(rank < K), MdR = median(rank) + 1, MnR = mean(rank) + 1.

Every function walks the similarity matrix in row blocks, so memory beyond inputs and
outputs stays at one block; sim may be anything 2-D that slices by rows (numpy array,
memmap, h5py dataset).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from pigcli.errors import PigError

BLOCK_ELEMENTS = 1 << 22  # elements of sim per block: 16 MB of float32, 4 MB of bool
COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")
DIRECTIONS = ("t2v", "v2t")


def gt_ranks(sim: Any, gt: np.ndarray) -> np.ndarray:
    """int64 rank of column gt[i] in row i of sim: other columns scoring >= it (pessimistic ties)."""
    n_rows, n_cols = _shape(sim)
    gt = _column_index(gt, n_rows, n_cols, "gt")
    ranks = np.empty(n_rows, np.int64)
    for rows in _row_blocks(n_rows, n_cols):
        block = _load_block(sim, rows)
        target = _take_per_row(block, gt[rows])
        # >= also counts the ground truth itself once; subtract it.
        ranks[rows] = (block >= target[:, None]).sum(axis=1) - 1
    return ranks


def v2t_ranks(sim: Any, caption_video: np.ndarray) -> np.ndarray:
    """Video-to-text ranks for sim [captions x videos], one per video that has a caption, in column order.

    CLIP4Clip / X-Pool convention (docs/method.md s.9): the captions of each video u form one group, and
    the group's score for video v is the max over u's captions of sim[c, v]; video v ranks the groups,
    so its rank is the number of OTHER groups scoring >= its own group (pessimistic ties). Ranks are
    among videos, not captions: a video whose two captions both beat v's best counts once.
    With one caption per video this is gt_ranks(sim.T, ...).
    """
    n_caps, n_videos = _shape(sim)
    caption_video = _column_index(caption_video, n_caps, n_videos, "caption_video")
    own = np.concatenate([_take_per_row(_load_block(sim, rows), caption_video[rows])
                          for rows in _row_blocks(n_caps, n_videos)]).astype(np.float64)
    best = np.full(n_videos, -np.inf)  # float64 holds any float32/float16 score exactly
    np.maximum.at(best, caption_video, own)  # v's own group score: its best caption
    beaten_by = np.zeros(n_videos, np.int64)  # per video: other groups scoring >= its own group
    for rows, regroup, group_video, starts in _group_blocks(caption_video, n_videos):
        hits = _load_block(sim, rows)[regroup] >= best  # [rows, videos]: caption scores >= the column's own group
        group_hits = np.logical_or.reduceat(hits, starts, axis=0)  # [groups, videos]: any caption of the group
        group_hits[np.arange(len(group_video)), group_video] = False  # a video's own group is no competitor
        beaten_by += group_hits.sum(axis=0)
    has_caption = np.bincount(caption_video, minlength=n_videos) > 0
    return beaten_by[has_caption]


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float | int]:
    """{'R@1', 'R@5', 'R@10' (percent), 'MdR', 'MnR' (1-based), 'count'} from 0-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise PigError("nothing to evaluate: no ranks (is the query or video set empty?)")
    summary: dict[str, float | int] = {f"R@{k}": 100.0 * float(np.mean(ranks < k)) for k in ks}
    summary["MdR"] = float(np.median(ranks)) + 1.0
    summary["MnR"] = float(np.mean(ranks)) + 1.0
    summary["count"] = int(ranks.size)
    return summary


def retrieval_metrics(sim: Any, caption_video: np.ndarray) -> dict[str, dict[str, float | int]]:
    """{'t2v': summary over all captions, 'v2t': summary over videos with >= 1 caption}.

    sim is [captions x videos]; caption_video[i] is the column of caption i's video.
    Videos without captions stay in t2v as distractors but are left out of v2t.
    """
    return {"t2v": summarize(gt_ranks(sim, caption_video)),
            "v2t": summarize(v2t_ranks(sim, caption_video))}


def dsl(sim: Any, tau: float = 1.0 / 100) -> np.ndarray:
    """Dual softmax (DSL) re-scoring: sim * softmax(sim / tau, axis=0).

    For each video the softmax runs over ALL queries (axis 0), so a query's new scores
    depend on every other test query: DSL needs all test queries at once and is therefore
    NOT a valid online (one query at a time) retrieval method. Keep it off by default and
    label numbers that use it. tau is a temperature (default 1/100, i.e. 100 * sim).
    Numerically stable: each column is shifted by its max before exp.
    """
    if not tau > 0:
        raise PigError(f"DSL temperature must be positive, got {tau}")
    n_rows, n_cols = _shape(sim)
    dtype = np.result_type(np.asarray(sim[:0]).dtype, np.float32)
    col_max = np.full(n_cols, -np.inf, dtype)
    for rows in _row_blocks(n_rows, n_cols):
        np.maximum(col_max, _load_block(sim, rows).max(axis=0), out=col_max)
    out = np.empty((n_rows, n_cols), dtype)
    col_sum = np.zeros(n_cols, np.float64)
    for rows in _row_blocks(n_rows, n_cols):  # out holds exp((sim - max) / tau) for now
        part = out[rows]
        np.subtract(_load_block(sim, rows), col_max, out=part)
        part /= tau
        np.exp(part, out=part)
        col_sum += part.sum(axis=0, dtype=np.float64)
    col_sum_t = col_sum.astype(dtype)  # >= 1: every column's max term is exp(0)
    for rows in _row_blocks(n_rows, n_cols):
        out[rows] /= col_sum_t
        out[rows] *= _load_block(sim, rows)
    return out


def format_table(results: dict[str, dict[str, float | int]], title: str) -> str:
    """Fixed-width table: rows t2v/v2t (those present), columns R@1 R@5 R@10 MdR MnR."""
    lines = [title, f"{'':<5}" + "".join(f"{column:>8}" for column in COLUMNS)]
    for direction in DIRECTIONS:
        if direction in results:
            row = results[direction]
            lines.append(f"{direction:<5}" + "".join(
                f"{row[c]:>8.1f}" if c in row else f"{'-':>8}" for c in COLUMNS))
    lines.append("ties ranked pessimistically")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def _shape(sim: Any) -> tuple[int, int]:
    shape = getattr(sim, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise PigError(f"similarity matrix must be 2-D and non-empty [queries x videos], got shape {shape}")
    return int(shape[0]), int(shape[1])


def _column_index(index: np.ndarray, n_rows: int, n_cols: int, what: str) -> np.ndarray:
    index = np.asarray(index)
    if index.shape != (n_rows,) or not np.issubdtype(index.dtype, np.integer):
        raise PigError(f"{what} must be {n_rows} integer column indices (one per similarity row), "
                       f"got {index.dtype} array of shape {index.shape}")
    if index.min() < 0 or index.max() >= n_cols:
        raise PigError(f"{what} has column indices outside 0..{n_cols - 1}: videos and similarity columns disagree")
    return index.astype(np.int64, copy=False)


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, BLOCK_ELEMENTS // n_cols)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _load_block(sim: Any, rows: slice) -> np.ndarray:
    block = np.asarray(sim[rows])
    # NaN compares False with everything and would silently give rank -1 or a perfect score.
    if np.issubdtype(block.dtype, np.floating) and np.isnan(block).any():
        raise PigError("similarity matrix contains NaN; check the embeddings (e.g. zero vectors divided by their norm)")
    return block


def _group_blocks(caption_video: np.ndarray, n_cols: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Caption rows in blocks of whole groups (a group = one video's captions): (the block's rows, in
    increasing order as readers like h5py need; the permutation that puts the loaded rows in group order;
    the video of each group; where each group starts in the regrouped block)."""
    order = np.argsort(caption_video, kind="stable")
    videos, starts, counts = np.unique(caption_video[order], return_index=True, return_counts=True)
    budget = max(1, BLOCK_ELEMENTS // n_cols)
    first = 0
    while first < len(videos):
        last, size = first + 1, counts[first]
        while last < len(videos) and size + counts[last] <= budget:
            size += counts[last]
            last += 1
        block = order[starts[first] : starts[first] + size]
        rows = np.sort(block)
        yield rows, np.argsort(caption_video[rows], kind="stable"), videos[first:last], starts[first:last] - starts[first]
        first = last


def _take_per_row(block: np.ndarray, columns: np.ndarray) -> np.ndarray:
    return block[np.arange(block.shape[0]), columns]
