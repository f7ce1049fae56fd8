"""EERCF coarse-to-fine reranking on top of any index (docs/method.md s.7).

Recall: the index's top K videos per query (the PIG or meanpool score is the coarse score).
Rerank those K by  w_fw S_fw + w_fs S_fs + w_pw S_pw + w_coarse S_coarse ; the rest keep coarse order.
Only the candidates' rows are read from the extract file (frames and kept patches), so the online
cost is K fine scorings per query instead of N.

The EERCF head (W_F mixes the frame weights of S_fw) comes from the index's model: identities until
`pig train --method eercf` or `--eercf-weight` learns it. f~ = x_f (the ViP frame tokens already mix
time). Where extract kept only the top-N patches, S_pw runs over the kept patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PigError
from ..store import decode_ids, open_stage_file, read_ids, require_same_model, take_rows

FEATURE_HINT = "pig extract VIDEOS -m MODEL -o feats.h5 (the file the index was built from)"


@dataclass
class CandidateTokens:
    frames: np.ndarray        # [R, T, D] float32, rows of the distinct candidates
    patches: np.ndarray | None  # [R, NP, D] or None when extract kept no patches
    local: np.ndarray         # [Q, K] index into the R rows above
    rows_read: int            # rows read from the extract file (R)


def read_candidate_tokens(features, video_ids, candidates: np.ndarray, model: dict | None = None) -> CandidateTokens:
    """Frame and patch tokens of the candidate videos only (distinct rows, read in increasing order).
    video_ids: index row -> video id (a list, or a dict holding at least the candidates' rows);
    model: the index's model identity, which the extract file must have been made with."""
    with open_stage_file(features, ("extract",), FEATURE_HINT, random_access=True) as handle:
        if model is not None:
            require_same_model(features, handle, model, FEATURE_HINT)
        wanted = np.unique(candidates)
        source_rows = feature_rows(handle, features, [video_ids[r] for r in wanted], wanted)
        order = np.argsort(source_rows)
        frames = np.empty((len(wanted),) + handle["frames"].shape[1:], np.float32)
        frames[order] = take_rows(handle["frames"], source_rows[order])
        patches = None
        if handle["patches"].shape[1] > 0:
            patches = np.empty((len(wanted),) + handle["patches"].shape[1:], np.float16)
            patches[order] = take_rows(handle["patches"], source_rows[order])
    local = np.searchsorted(wanted, candidates)
    return CandidateTokens(frames, patches, local, len(wanted))


def feature_rows(handle, features, names: list[str], index_rows: np.ndarray) -> np.ndarray:
    """Rows of the extract file holding these videos. Fast path: the index rows themselves, when the
    extract file has these ids there (an index built from it with no failed video; checked by reading
    only those ids). Otherwise every id is read and the videos are found by id."""
    if len(index_rows) and index_rows[-1] < handle["ids"].shape[0]:
        if decode_ids(take_rows(handle["ids"], index_rows)) == names:
            return index_rows
    position = {vid: i for i, vid in enumerate(read_ids(handle))}
    try:
        return np.array([position[name] for name in names], dtype=np.int64)
    except KeyError as err:
        raise PigError(f"{features} has no tokens for video {err.args[0]!r} of the index; {FEATURE_HINT}") from None


def rerank(text: np.ndarray, rows: np.ndarray, scores: np.ndarray, features, video_ids, k: int,
           weights=None, head=None, model: dict | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Rerank the first k columns of a coarse ranking (rows/scores [Q, >=k]); returns new (rows, scores)
    where the first k scores are the combined EERCF scores, plus the number of extract rows read.
    head: the model's EercfHead (None: an untrained one, identities); model: the index's model identity
    (the extract file must match it; None: not checked)."""
    import torch

    from ..model.eercf import EercfHead, RerankWeights, fine_scores_for_pairs, rerank_candidates

    weights = weights or RerankWeights()
    k = min(k, rows.shape[1])
    tokens = read_candidate_tokens(features, video_ids, rows[:, :k], model)
    if tokens.patches is None:
        weights = weights.without_patches()
    head = head if head is not None else EercfHead(tokens.frames.shape[-1], tokens.frames.shape[1])
    device = head.w_f.device  # scored where the head lives (the model's device)

    def to_tensor(array):
        return None if array is None else torch.from_numpy(np.asarray(array, np.float32)).to(device)

    with torch.inference_mode():
        fine = fine_scores_for_pairs(head, to_tensor(text), to_tensor(tokens.frames),
                                     torch.from_numpy(tokens.local).to(device), to_tensor(tokens.patches),
                                     with_ps=weights.ps != 0)
        order, combined = rerank_candidates(to_tensor(scores[:, :k]), fine, weights)
    order, combined = order.cpu().numpy(), combined.cpu()
    new_rows, new_scores = rows.copy(), scores.astype(np.float32).copy()
    new_rows[:, :k] = np.take_along_axis(rows[:, :k], order, axis=1)
    new_scores[:, :k] = np.take_along_axis(combined.numpy(), order, axis=1)
    return new_rows, new_scores, tokens.rows_read


def reranked_similarity(sim: np.ndarray, text: np.ndarray, features, video_ids, k: int,
                        weights=None, head=None, model: dict | None = None) -> np.ndarray:
    """sim [Q, N] whose row order is the reranked ranking, for metrics: each row's coarse top k get their
    combined rerank scores, lifted above the row's other scores (so rows are no longer comparable with
    each other: use it for text-to-video ranks only)."""
    k = min(k, sim.shape[1])
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.lexsort((top, -np.take_along_axis(sim, top, axis=1)), axis=1)  # by score, then video index
    rows = np.take_along_axis(top, order, axis=1)
    new_rows, new_scores, _ = rerank(text, rows, np.take_along_axis(sim, rows, axis=1), features, video_ids, k,
                                     weights, head, model)
    combined = new_scores[:, :k].astype(np.float64)
    lift = sim.max(axis=1, keepdims=True) - combined.min(axis=1, keepdims=True) + 1.0
    lifted = sim.astype(np.float64)
    np.put_along_axis(lifted, new_rows[:, :k], combined + lift, axis=1)
    return lifted
