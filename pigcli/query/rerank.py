"""EERCF coarse-to-fine reranking on top of any index (docs/method.md s.7).

Recall: the index's top K videos per query (the PIG or meanpool score is the coarse score).
Rerank those K by  w_fw S_fw + w_fs S_fs + w_pw S_pw + w_coarse S_coarse ; the rest keep coarse order.
Only the candidates' rows are read from the extract file (frames and kept patches), so the online
cost is K fine scorings per query instead of N. The fine scores are computed once per candidate
(`candidate_scores`) and any weights reorder them (`CandidateScores.reorder`): `pig tune-rerank`
(query/tune_rerank.py) scores its whole grid that way. `resolve_rerank` is the one place that
decides K and the weights: explicit ones, else the model's rerank.json, else RerankWeights().

The EERCF head (W_F mixes the frame weights of S_fw) comes from the index's model: identities until
`pig train --method eercf` or `--eercf-weight` learns it. f~ = x_f (the ViP frame tokens already mix
time). Where extract kept only the top-N patches, S_pw runs over the kept patches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import PigError, UsageError
from ..stagefiles import made_by
from ..store import decode_ids, open_stage_file, read_ids, require_same_model, take_rows

FEATURE_HINT = made_by("extract") + " (the file the index was built from)"
DEFAULT_K = 50  # `--rerank` without a number and no tuned K: EERCF's K (the paper's)
AUTO = "auto"   # `--rerank` without a number: the model's tuned K (rerank.json), else DEFAULT_K


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


@dataclass
class CandidateScores:
    """Each query's coarse top K with their fine scores, scored once. Any weights and any smaller K
    reuse them: a smaller K's candidates are the first columns (the coarse order), and a candidate's
    fine scores do not depend on the others (`pig tune-rerank` scores its whole grid from one of these)."""

    rows: np.ndarray          # [Q, K] index rows, in coarse order (score, then the caller's order)
    coarse: object            # [Q, K] torch float32: the coarse (index) scores
    fine: dict                # {'fw', 'fs', ('pw', 'ps')}: [Q, K] torch float32
    rows_read: int            # rows read from the extract file

    @property
    def k(self) -> int:
        return self.rows.shape[1]

    @property
    def has_patches(self) -> bool:
        return "pw" in self.fine

    def reorder(self, weights, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first k candidates (default all) reranked with `weights` (patch terms off without
        patches): (rows [Q, k], combined scores [Q, k] float32), best first."""
        import torch

        from ..model.eercf import rerank_candidates

        k = self.k if k is None else min(k, self.k)
        if not self.has_patches:
            weights = weights.without_patches()
        with torch.inference_mode():
            order, combined = rerank_candidates(self.coarse[:, :k], {key: v[:, :k] for key, v in self.fine.items()},
                                                weights)
        order, combined = order.cpu().numpy(), combined.cpu().numpy().astype(np.float32)
        return np.take_along_axis(self.rows[:, :k], order, axis=1), np.take_along_axis(combined, order, axis=1)


def candidate_scores(text: np.ndarray, rows: np.ndarray, scores: np.ndarray, features, video_ids, head=None,
                     model: dict | None = None, with_ps: bool = False) -> CandidateScores:
    """Fine scores of every candidate in rows [Q, K] (coarse scores [Q, K] alongside), reading only
    their rows of the extract file. head: the model's EercfHead (None: an untrained one, identities);
    model: the index's model identity (the extract file must match it; None: not checked);
    with_ps: also S_ps (only needed when its weight is not zero)."""
    import torch

    from ..model.eercf import EercfHead, fine_scores_for_pairs

    tokens = read_candidate_tokens(features, video_ids, rows, model)
    head = head if head is not None else EercfHead(tokens.frames.shape[-1], tokens.frames.shape[1])
    device = head.w_f.device  # scored where the head lives (the model's device)

    def to_tensor(array):
        return None if array is None else torch.from_numpy(np.asarray(array, np.float32)).to(device)

    with torch.inference_mode():
        fine = fine_scores_for_pairs(head, to_tensor(text), to_tensor(tokens.frames),
                                     torch.from_numpy(tokens.local).to(device), to_tensor(tokens.patches),
                                     with_ps=with_ps)
    return CandidateScores(np.asarray(rows), to_tensor(scores), fine, tokens.rows_read)


def rerank(text: np.ndarray, rows: np.ndarray, scores: np.ndarray, features, video_ids, k: int,
           weights=None, head=None, model: dict | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Rerank the first k columns of a coarse ranking (rows/scores [Q, >=k]); returns new (rows, scores)
    where the first k scores are the combined EERCF scores, plus the number of extract rows read.
    weights: RerankWeights as they are (None: RerankWeights(); `resolve_rerank` decides them for the
    commands); head, model: as in `candidate_scores`."""
    from ..model.eercf import RerankWeights

    weights = weights or RerankWeights()
    k = min(k, rows.shape[1])
    candidates = candidate_scores(text, rows[:, :k], scores[:, :k], features, video_ids, head, model,
                                  with_ps=weights.ps != 0)
    top_rows, top_scores = candidates.reorder(weights)
    new_rows, new_scores = rows.copy(), scores.astype(np.float32).copy()
    new_rows[:, :k], new_scores[:, :k] = top_rows, top_scores
    return new_rows, new_scores, candidates.rows_read


def coarse_top(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best columns of sim [Q, N], by score, ties to the lower column: (rows [Q, k], scores
    [Q, k]). Deterministic, so the top k of any smaller k is this one's first k columns."""
    k = min(k, sim.shape[1])
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(sim, top, axis=1).min(axis=1, keepdims=True)
    crossing = (sim >= kth).sum(axis=1) > k  # a tie at the k-th score: which ones argpartition kept is arbitrary
    if crossing.any():
        top[crossing] = np.argsort(-sim[crossing], axis=1, kind="stable")[:, :k]
    order = np.lexsort((top, -np.take_along_axis(sim, top, axis=1)), axis=1)  # by score, then video index
    rows = np.take_along_axis(top, order, axis=1)
    return rows, np.take_along_axis(sim, rows, axis=1)


def lift_reranked(sim: np.ndarray, rows: np.ndarray, combined: np.ndarray) -> np.ndarray:
    """sim [Q, N] (float64 copy) with each row's reranked candidates rows [Q, k] given their combined
    scores [Q, k], lifted above the row's other scores: its row order is the reranked ranking."""
    combined = combined.astype(np.float64)
    lift = sim.max(axis=1, keepdims=True) - combined.min(axis=1, keepdims=True) + 1.0
    lifted = sim.astype(np.float64)
    np.put_along_axis(lifted, rows, combined + lift, axis=1)
    return lifted


def reranked_similarity(sim: np.ndarray, text: np.ndarray, features, video_ids, k: int,
                        weights=None, head=None, model: dict | None = None) -> np.ndarray:
    """sim [Q, N] whose row order is the reranked ranking, for metrics: each row's coarse top k get their
    combined rerank scores, lifted above the row's other scores (so rows are no longer comparable with
    each other: use it for text-to-video ranks only)."""
    k = min(k, sim.shape[1])
    rows, scores = coarse_top(sim, k)
    new_rows, new_scores, _ = rerank(text, rows, scores, features, video_ids, k, weights, head, model)
    return lift_reranked(sim, new_rows[:, :k], new_scores[:, :k])


def find_features(index, features=None):
    """The extract file a rerank of `index` reads: `features`, else the one the index was built from."""
    from ..stagefiles import upstream_file

    features = features or upstream_file(index, ("extract",))
    if features is None:
        raise PigError(f"--rerank needs the token features of {index}'s videos: pass --features feats.h5")
    return features


# ---------------------------------------------------------------- which K and weights


def check_rerank_k(k) -> None:
    """K must be 0 (off), a number of videos, or AUTO."""
    if k != AUTO and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
        raise UsageError(f"--rerank must be 0 (off) or a number of videos K >= 1, not {k}")


@dataclass(frozen=True)
class RerankPlan:
    """The rerank a command runs: K (0: off) and the weights, with where they came from (one line)."""

    k: int
    weights: object  # RerankWeights
    source: str


def resolve_rerank(k: int | str, weights=None, folder=None, report: bool = True) -> RerankPlan:
    """The one place that decides a rerank's K and weights (pig rank, pig eval and their functions).

    k: a number of videos (0: off) or AUTO (`--rerank` without a number): the model's tuned K, else
    DEFAULT_K; a tuned "off" (K = 0) keeps the plain ranking, with a note. weights: a RerankWeights,
    used as it is; or {'fw'|'fs'|'pw'|'coarse': value} (None values ignored) overriding those of the
    model's rerank.json, else of RerankWeights(); None: the model's rerank.json, else RerankWeights().
    folder: the index's ModelFolder (None: no rerank.json). report: say on stderr, once, what is used.
    """
    from ..console import log
    from ..model.eercf import RerankWeights

    check_rerank_k(k)
    if k == 0:
        return RerankPlan(0, RerankWeights(), "")
    tuned = folder.rerank if folder is not None else None
    tuned_source = f"{folder.rerank_file} (tuned on {tuned.tuned_on})" if tuned is not None else ""
    if isinstance(weights, RerankWeights):
        chosen, source = weights, "weights given"
    else:
        given = {key: float(value) for key, value in (weights or {}).items() if value is not None}
        unknown = set(given) - {"fw", "fs", "pw", "coarse"}
        if unknown:
            raise UsageError(f"unknown rerank weight(s) {', '.join(sorted(unknown))}: fw, fs, pw or coarse")
        chosen = replace(tuned.weights if tuned is not None else RerankWeights(), **given)
        if len(given) == 4:
            source = "weights given"
        elif tuned is not None:
            source = f"weights from {tuned_source}"
        else:
            where = folder.path if folder is not None else "the model"
            source = f"default weights ({where} has no rerank.json; pig tune-rerank chooses them on validation)"
        if 0 < len(given) < 4:
            source += "; given: " + " ".join(f"--w-{key}" for key in given)
    if k == AUTO and tuned is not None and tuned.k == 0:
        plan = RerankPlan(0, chosen, f"rerank: off: {tuned_source} found no rerank better than the plain index; "
                                     "ranking by the index alone (--rerank K reranks anyway)")
    else:
        if k == AUTO:
            k, k_source = (tuned.k, "tuned K") if tuned is not None else (DEFAULT_K, "default K")
        else:
            k_source = "K given"
        plan = RerankPlan(int(k), chosen, f"rerank: top {k} ({k_source}), {source}: {format_weights(chosen)}")
    if report:
        log(plan.source)
    return plan


def format_weights(weights) -> str:
    return " ".join(f"w_{key}={getattr(weights, key):g}" for key in ("fw", "fs", "pw", "coarse")) + \
        (f" w_ps={weights.ps:g}" if weights.ps else "")
