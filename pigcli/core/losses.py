"""Training losses (docs/method.md sections 6 and 7).

    symCE(Z) = CE(Z) + CE(Z^T)            Z [B, B] logits, positives on the diagonal, each CE a batch mean
    L_ret    = symCE(s * S)               S [B_text, B_video] cosine scores, s = exp(theta)
    symCE_mean(Z) = symCE(Z) / 2          the mean of the two directions: EERCF's CE terms
    L_gen    = mean_i || norm(q_hat_i) - norm(t_i) ||^2 = mean_i (2 - 2 cos(q_hat_i, t_i))

theta is CLIP's `logit_scale` parameter, clamped to [0, log 200] both in the forward (so a step that
pushed it out cannot change the loss before it is clamped) and on the parameter after every step.
EERCF's loss (pigcli.model.eercf) averages the two directions instead, as the spec and EERCF's public
code do (docs/method.md s.7); L_ret sums them, as docs/method.md s.6 writes it.
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


def symmetric_ce(logits: torch.Tensor) -> torch.Tensor:
    """CE over rows + CE over columns, targets on the diagonal: logits [B, B] -> scalar.

    Both directions are summed, as docs/method.md s.6 writes L_ret."""
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be square [B, B] with the pairs on the diagonal, got {tuple(logits.shape)}")
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def mean_symmetric_ce(logits: torch.Tensor) -> torch.Tensor:
    """(CE over rows + CE over columns) / 2: EERCF's symCE, the mean of the two directions (docs/method.md s.7)."""
    return symmetric_ce(logits) / 2


def retrieval_loss(scores: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """L_ret from a square score matrix [B_text, B_video] whose diagonal holds the pairs."""
    return symmetric_ce(logit_scale_value(logit_scale) * scores.float())


def generation_loss(q_hat: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """L_gen = mean_i ||norm(q_hat_i) - norm(t_i)||^2; t = projected, unnormalised text EOS feature.

    No stop-gradient on t (docs/method.md s.6): in phase 2 the text encoder also moves towards the
    pseudo-query.
    """
    diff = F.normalize(q_hat.float(), dim=-1) - F.normalize(text_features.float(), dim=-1)
    return diff.pow(2).sum(dim=-1).mean()
