"""EERCF coarse-to-fine reranking on top of any index (METHOD.md section 7).

Recall: the index's top K videos per query (the PIG or meanpool score is the coarse score).
Rerank those K by  w_fw S_fw + w_fs S_fs + w_pw S_pw + w_coarse S_coarse ; the rest keep coarse order.
Only the candidates' rows are read from the extract file (frames and kept patches), so the online
cost is K fine scorings per query instead of N.

Untrained, the EERCF head is the identity (W_g = I, W_F = I) and f~ = x_f (the ViP frame tokens
already mix time). Where extract kept only the top-N patches, S_pw runs over the kept patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PigError
from ..store import open_stage_file, read_ids
from .common import take_rows

FEATURE_HINT = "pig extract VIDEOS -m MODEL -o feats.h5 (the file the index was built from)"


@dataclass
class CandidateTokens:
    frames: np.ndarray        # [R, T, D] float32, rows of the distinct candidates
    patches: np.ndarray | None  # [R, NP, D] or None when extract kept no patches
    local: np.ndarray         # [Q, K] index into the R rows above
    rows_read: int            # rows read from the extract file (R)


def read_candidate_tokens(features, feature_ids: dict[str, int] | None, video_ids: list[str],
                          candidates: np.ndarray) -> CandidateTokens:
    """Frame and patch tokens of the candidate videos only (distinct rows, read in increasing order)."""
    with open_stage_file(features, ("extract",), FEATURE_HINT) as handle:
        position = feature_ids or {vid: i for i, vid in enumerate(read_ids(handle))}
        wanted = np.unique(candidates)
        try:
            source_rows = np.array([position[video_ids[r]] for r in wanted])
        except KeyError as err:
            raise PigError(f"{features} has no tokens for video {err.args[0]!r} of the index; {FEATURE_HINT}") from None
        order = np.argsort(source_rows)
        frames = np.empty((len(wanted),) + handle["frames"].shape[1:], np.float32)
        frames[order] = take_rows(handle["frames"], source_rows[order])
        patches = None
        if handle["patches"].shape[1] > 0:
            patches = np.empty((len(wanted),) + handle["patches"].shape[1:], np.float16)
            patches[order] = take_rows(handle["patches"], source_rows[order])
    local = np.searchsorted(wanted, candidates)
    return CandidateTokens(frames, patches, local, len(wanted))


def rerank(text: np.ndarray, rows: np.ndarray, scores: np.ndarray, features, video_ids: list[str], k: int,
           weights=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Rerank the first k columns of a coarse ranking (rows/scores [Q, >=k]); returns new (rows, scores)
    where the first k scores are the combined EERCF scores, plus the number of extract rows read."""
    import torch

    from ..model.eercf import EercfHead, RerankWeights, fine_scores_for_pairs, rerank_candidates

    weights = weights or RerankWeights()
    k = min(k, rows.shape[1])
    tokens = read_candidate_tokens(features, None, video_ids, rows[:, :k])
    if tokens.patches is None:
        weights = weights.without_patches()
    head = EercfHead(tokens.frames.shape[-1], tokens.frames.shape[1])
    to_tensor = lambda a: None if a is None else torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    with torch.inference_mode():
        fine = fine_scores_for_pairs(head, to_tensor(text), to_tensor(tokens.frames), torch.from_numpy(tokens.local),
                                     to_tensor(tokens.patches), with_ps=weights.ps != 0)
        order, combined = rerank_candidates(torch.from_numpy(scores[:, :k].astype(np.float32)), fine, weights)
    order = order.numpy()
    new_rows, new_scores = rows.copy(), scores.astype(np.float32).copy()
    new_rows[:, :k] = np.take_along_axis(rows[:, :k], order, axis=1)
    new_scores[:, :k] = np.take_along_axis(combined.numpy(), order, axis=1)
    return new_rows, new_scores, tokens.rows_read
