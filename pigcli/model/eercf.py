"""EERCF coarse-to-fine scores, rerank and training loss.

After Tian et al., "Towards Efficient and Effective Text-to-Video Retrieval with Coarse-to-Fine
Visual Representation Learning" (AAAI 2024). For a text t and one video, with frame tokens
F [T, D], patch tokens P [NP, D] (NP = T*L) and temporally mixed frames f~ [T, D] (f~ = F unless
a temporal block is trained), all L2-normalised here:

    S_v  = t . (W_g v),   v = norm(mean_f f~_f)                      coarse (W_g not renormalised)
    S_fw = sum_f (t.F_f) a'_f,  a = softmax_f((t.F)/0.01), a' = a @ W_F^T  (a'_f = sum_g W_F[f,g] a_g)
    S_pw = sum_p (t.P_p) softmax_p((t.P)/0.01)_p                     over all T*L patches
    S_fs = t . norm(sum_f softmax_f((t.F_f)/0.1) f~_f)               text-gated block (TIB), frames
    S_ps = t . norm(sum_p softmax_p((t.P_p)/0.01) P_p)               TIB, patches

Rerank: the top K of a coarse ranking are reordered by
w_fw S_fw + w_fs S_fs + w_pw S_pw + w_ps S_ps + w_coarse S_coarse (S_coarse = the caller's
index score); ties keep the coarse order; ranks below K are untouched.

Where this follows pig's spec rather than the public EERCF code (adxcreative/EERCF,
modules/modeling_fineclip_patches_cdcl.py):
- W_F mixes the frame weights as `a @ W_F^T`; the public code uses `a @ W_F` (their matrix is
  our W_F transposed).
- Training S_fs gates video j with text i for every pair (i, j), and the gate is not detached;
  the public code, while training, gates video j with its own caption j, detached.
- The Pearson constraint standardises with the biased std (so PC(a, a) = 0) and has only the
  video-level and TIB-frame terms; the public code uses the unbiased std and adds a patch term.
- No frame/patch masks: all T frames and NP patches count (the public code masks padded frames
  in the mean).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.losses import mean_symmetric_ce

TAU_FW = 0.01  # frame-wise weighted-sum softmax
TAU_PW = 0.01  # patch-wise weighted-sum softmax
TAU_FS = 0.1  # TIB frame gate
TAU_PS = 0.01  # TIB patch gate

LOSS_MAIN, LOSS_TIB, LOSS_PC = 0.8, 0.2, 0.001
MIX_V, MIX_FW, MIX_PW = 0.5, 0.5, 0.05  # inside the main symCE term
PC_ALPHA = 0.14
PC_EPS = 1e-8  # added to the batch variance

# Elements of one gathered feature tensor per chunk in fine_scores_for_pairs (2**25 fp32 = 128 MiB).
PAIR_CHUNK_ELEMENTS = 2**25


@dataclass(frozen=True)
class _Layout:
    """einsum equations for one way of pairing texts with videos; n = frame or patch axis."""

    sim: str  # text, feats [.., n, D] -> sims [.., n]
    pool: str  # gate [.., n], feats -> pooled [.., D]
    dot: str  # text, pooled -> score [..]


# Each query q has its own K candidates: text [Q, D], feats [Q, K, n, D] -> scores [Q, K].
_PAIRS = _Layout("qd,qknd->qkn", "qkn,qknd->qkd", "qd,qkd->qk")
# Every text i of a batch against every video j: text [B, D], feats [B, n, D] -> scores [B, B].
# Never builds a [B, B, n, D] tensor: sims are [B, B, n], pooled [B, B, D].
_ALL = _Layout("id,jnd->ijn", "ijn,jnd->ijd", "id,ijd->ij")


def l2n(x: Tensor) -> Tensor:
    """L2-normalise the last axis, in float32."""
    return F.normalize(x.float(), dim=-1)


def _l2n_opt(x: Tensor | None) -> Tensor | None:
    return None if x is None else l2n(x)


def _weighted_sum(sims: Tensor, tau: float, mix: Tensor | None = None) -> Tensor:
    """sum_n sims_n w_n, w = softmax(sims / tau) (@ mix^T when given): [.., n] -> [..]."""
    w = torch.softmax(sims / tau, dim=-1)
    if mix is not None:
        w = w @ mix.T
    return (sims * w).sum(-1)


def _tib_pool(lay: _Layout, sims: Tensor, feats: Tensor, tau: float) -> Tensor:
    """norm(sum_n softmax(sims / tau)_n feats_n): the text-gated video feature [.., D]."""
    return l2n(torch.einsum(lay.pool, torch.softmax(sims / tau, dim=-1), feats))


def _tib_score(lay: _Layout, text: Tensor, sims: Tensor, feats: Tensor, tau: float) -> Tensor:
    """t . norm(sum_n softmax(sims / tau)_n feats_n): [..]."""
    return torch.einsum(lay.dot, text, _tib_pool(lay, sims, feats, tau))


class EercfHead(nn.Module):
    """Learnable W_g [D, D] (coarse projection) and W_F [T, T] (frame-weight mixing), identity at init."""

    def __init__(self, dim: int, num_frames: int):
        super().__init__()
        self.w_g = nn.Parameter(torch.eye(dim))
        self.w_f = nn.Parameter(torch.eye(num_frames))

    def video_embed(self, frames_mixed: Tensor) -> Tensor:
        """W_g v, v = norm(mean_f norm(f~_f)): [.., T, D] -> [.., D]; not renormalised after W_g."""
        return l2n(l2n(frames_mixed).mean(-2)) @ self.w_g.T

    def fine_scores(self, text: Tensor, frames: Tensor, patches: Tensor | None,
                    frames_mixed: Tensor | None = None, with_ps: bool = True) -> dict[str, Tensor]:
        """Fine scores of each query's own candidates, each [Q, K].

        text [Q, D], frames [Q, K, T, D], patches [Q, K, NP, D] | None, frames_mixed like frames
        (None: f~ = frames). Keys 'fw', 'fs', and with patches 'pw' and (with_ps) 'ps'.
        """
        return self._fine(_PAIRS, l2n(text), l2n(frames), _l2n_opt(patches), _l2n_opt(frames_mixed), with_ps)

    def _fine(self, lay: _Layout, text: Tensor, frames: Tensor, patches: Tensor | None,
              frames_mixed: Tensor | None, with_ps: bool) -> dict[str, Tensor]:
        """The fine scores in layout `lay`; all inputs already normalised."""
        self._check_frames(frames)
        mixed = frames if frames_mixed is None else frames_mixed
        sims_f = torch.einsum(lay.sim, text, frames)
        out = {"fw": _weighted_sum(sims_f, TAU_FW, self.w_f), "fs": _tib_score(lay, text, sims_f, mixed, TAU_FS)}
        if patches is not None:
            sims_p = torch.einsum(lay.sim, text, patches)
            out["pw"] = _weighted_sum(sims_p, TAU_PW)
            if with_ps:
                out["ps"] = _tib_score(lay, text, sims_p, patches, TAU_PS)
        return out

    def _check_frames(self, frames: Tensor) -> None:
        if frames.shape[-2] != self.w_f.shape[0]:
            raise ValueError(f"EERCF head was built for {self.w_f.shape[0]} frames, got {frames.shape[-2]}")


@torch.no_grad()
def fine_scores_for_pairs(head: EercfHead, text: Tensor, frames: Tensor, candidates: Tensor,
                          patches: Tensor | None = None, frames_mixed: Tensor | None = None,
                          with_ps: bool = True, chunk_size: int | None = None) -> dict[str, Tensor]:
    """Fine scores when each query has its own candidates, gathered a chunk of queries at a time.

    text [Q, D]; frames [N, T, D], patches [N, NP, D], frames_mixed [N, T, D] for all N videos (any
    float dtype, any device the head is on); candidates [Q, K] video indices. Returns [Q, K] per key.
    chunk_size: queries per chunk; None keeps each gathered tensor under PAIR_CHUNK_ELEMENTS.
    """
    q, k = candidates.shape
    if chunk_size is None:
        tokens = max(frames.shape[1], 0 if patches is None else patches.shape[1])
        chunk_size = max(1, PAIR_CHUNK_ELEMENTS // max(1, k * tokens * frames.shape[-1]))
    parts: list[dict[str, Tensor]] = []
    for lo in range(0, q, chunk_size):
        idx = candidates[lo:lo + chunk_size]  # [c, K]
        parts.append(head.fine_scores(text[lo:lo + chunk_size], frames[idx], _gather(patches, idx),
                                      _gather(frames_mixed, idx), with_ps))
    if not parts:
        return {}
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def _gather(bank: Tensor | None, idx: Tensor) -> Tensor | None:
    """bank [N, n, D], idx [c, K] -> [c, K, n, D]."""
    return None if bank is None else bank[idx]


# ---------------------------------------------------------------- rerank


@dataclass(frozen=True)
class RerankWeights:
    """Weights of the rerank score; a zero weight skips its term."""

    fw: float = 0.8
    fs: float = 0.2
    pw: float = 0.2
    coarse: float = 0.5
    ps: float = 0.0

    def without_patches(self) -> RerankWeights:
        """These weights with the patch terms off, for indexes stored without patch tokens."""
        return replace(self, pw=0.0, ps=0.0)

    def fine_terms(self) -> dict[str, float]:
        """The fine-score keys with a non-zero weight."""
        terms = {"fw": self.fw, "fs": self.fs, "pw": self.pw, "ps": self.ps}
        return {key: w for key, w in terms.items() if w != 0.0}


def combine_scores(coarse: Tensor, fine: dict[str, Tensor], weights: RerankWeights) -> Tensor:
    """w_coarse coarse + sum of weighted fine scores: all [Q, K]. A weighted key missing from `fine` raises."""
    total = weights.coarse * coarse.float()
    for key, w in weights.fine_terms().items():
        if key not in fine:
            raise ValueError(f"rerank weight {key}={w} needs fine score '{key}'; without patches use "
                             "RerankWeights.without_patches()")
        total = total + w * fine[key]
    return total


def rerank_candidates(coarse: Tensor, fine: dict[str, Tensor], weights: RerankWeights) -> tuple[Tensor, Tensor]:
    """New order of each query's K candidates, best first.

    coarse [Q, K], fine {key: [Q, K]} -> (order [Q, K] long, a permutation of 0..K-1 per row,
    combined [Q, K] in the input's candidate order). Ties in `combined` go to the higher coarse
    score, then the earlier candidate.
    """
    combined = combine_scores(coarse, fine, weights)
    by_coarse = torch.argsort(coarse, dim=1, descending=True, stable=True)
    by_combined = torch.argsort(combined.gather(1, by_coarse), dim=1, descending=True, stable=True)
    return by_coarse.gather(1, by_combined), combined


# ---------------------------------------------------------------- training loss


def pearson_constraint(a: Tensor, b: Tensor) -> Tensor:
    """PC_ALPHA * sum_d (C_dd - 1)^2, C = z_a^T z_b / B, z batch-standardised (biased std): [B, D] x2 -> scalar."""
    c_diag = (_standardise(a) * _standardise(b)).mean(0)  # [D], only the diagonal of C
    return PC_ALPHA * (c_diag - 1).pow(2).sum()


def _standardise(x: Tensor) -> Tensor:
    """(x - batch mean) / batch std per dimension: [B, D] -> [B, D]."""
    return (x - x.mean(0)) / (x.var(0, unbiased=False) + PC_EPS).sqrt()


def eercf_loss(text: Tensor, frames: Tensor, patches: Tensor | None, head: EercfHead, logit_scale: Tensor,
               frames_mixed: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """EERCF training loss over a batch of B matched pairs (B >= 2).

    L = 0.8 symCE(s (0.5 S_v + 0.5 S_fw + 0.05 S_pw)) + 0.2 symCE(s S_fs) + 0.001 (PC(t, v) + PC(t, v_fs))
    text [B, D], frames [B, T, D], patches [B, NP, D] | None (then the S_pw term is dropped, the
    others keep their weights), frames_mixed [B, T, D] | None (f~ = frames). logit_scale s: the
    already exponentiated scale (clamp it before if wanted). v = W_g norm(mean f~); v_fs = TIB
    frame-pooled video for its own text. Scores are [B, B] (text i, video j) for all pairs.
    symCE is the mean of the two directions, as in the spec and EERCF's public code.
    Returns (loss, parts) with parts detached: ce_main, ce_tib, pc_video, pc_tib, loss.
    """
    t, fr, pa = l2n(text), l2n(frames), _l2n_opt(patches)
    mixed = fr if frames_mixed is None else l2n(frames_mixed)
    fine = head._fine(_ALL, t, fr, pa, mixed, with_ps=False)  # each [B, B]
    v = head.video_embed(mixed)  # [B, D]
    main = MIX_V * (t @ v.T) + MIX_FW * fine["fw"]
    if "pw" in fine:
        main = main + MIX_PW * fine["pw"]
    v_fs = _tib_pool(_PAIRS, torch.einsum(_PAIRS.sim, t, fr[:, None]), mixed[:, None], TAU_FS)[:, 0]  # [B, D]
    parts = {
        "ce_main": mean_symmetric_ce(logit_scale * main),
        "ce_tib": mean_symmetric_ce(logit_scale * fine["fs"]),
        "pc_video": pearson_constraint(t, v),
        "pc_tib": pearson_constraint(t, v_fs),
    }
    loss = (LOSS_MAIN * parts["ce_main"] + LOSS_TIB * parts["ce_tib"]
            + LOSS_PC * (parts["pc_video"] + parts["pc_tib"]))
    parts["loss"] = loss
    return loss, {key: value.detach() for key, value in parts.items()}
