"""Training losses (METHOD.md section 6).

    L_ret = CE(s * S) + CE(s * S^T)       S [B_text, B_video], positives on the diagonal, s = exp(theta)
    L_gen = mean_i || norm(q_hat_i) - norm(t_i) ||^2 = mean_i (2 - 2 cos(q_hat_i, t_i))
    L     = L_ret + alpha * L_gen

theta is CLIP's `logit_scale` parameter, clamped to [0, log 200] both in the forward (so a step that
pushed it out cannot change the loss before it is clamped) and on the parameter after every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOGIT_SCALE_MAX = math.log(200.0)


def logit_scale_value(logit_scale: torch.Tensor) -> torch.Tensor:
    """s = exp(clamp(theta, 0, log 200))."""
    return logit_scale.clamp(0.0, LOGIT_SCALE_MAX).exp()


@torch.no_grad()
def clamp_logit_scale_(logit_scale: torch.Tensor) -> None:
    """Clamp the parameter itself, after each optimiser step."""
    logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)


def retrieval_loss_from_scores(scores: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a square score matrix [B_text, B_video] whose diagonal holds the pairs.

    Both directions are summed (not averaged), as METHOD.md writes it; each CE is a batch mean.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square [B, B] with the pairs on the diagonal, got {tuple(scores.shape)}")
    logits = logit_scale_value(logit_scale) * scores.float()
    target = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def retrieval_loss(text: torch.Tensor, video: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Two-tower L_ret from normalised embeddings e_t [B, D] and e_v [B, D]."""
    return retrieval_loss_from_scores(text.float() @ video.float().T, logit_scale)


def generation_loss(q_hat: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """L_gen = mean_i ||norm(q_hat_i) - norm(t_i)||^2; t = projected, unnormalised text EOS feature.

    No stop-gradient on t (METHOD.md): in stage 2 the text encoder also moves towards the pseudo-query.
    """
    diff = F.normalize(q_hat.float(), dim=-1) - F.normalize(text_features.float(), dim=-1)
    return diff.pow(2).sum(dim=-1).mean()
