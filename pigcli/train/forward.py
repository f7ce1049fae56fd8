"""The training forward: a batch's losses for the method being trained (docs/method.md s.6, s.7).

The methods' computations are pigcli.core.methods' (the same that `pig fuse` and `pig rank` run):

    pig:      q_hat = generate([x_v; x_p; x_f; top-k patches]);  e_v = fuse(q_hat, [x_v; x_p; x_f])
    meanpool: e_v = norm(mean_f x_f)
    xpool:    S_ij = e_t_i . fuse(e_t_i, [x_v; x_p; x_f]_j)   (every text with every video)
    eercf:    e_v = W_g norm(mean_f norm(x_f)), trained with EERCF's loss

Any method can add EERCF's loss with a weight (--eercf-weight), which trains the rerank head W_g, W_F
(and, through the fine scores, the encoders) next to the method's own loss.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..core.losses import generation_loss, logit_scale_value, retrieval_loss
from ..core.methods import pseudo_query, video_embedding, xpool_scores
from ..core.selection import select_patch_tokens
from ..model.clip_compat import checkpointed_layers
from ..model.eercf import eercf_loss
from ..inputs.video import normalize
from .data import HeadInputs
from .distributed import gather_with_grad


def encode_pixels(pig, pixels: torch.Tensor, backbone: str, selector: str = "its") -> HeadInputs:
    """frames [B, T, 3, S, S] (uint8, or float 0..255: squash decoded from videos) -> the backbone's tokens,
    with the top-k ITS patches selected (the same choice and order as `pig select`, so raw-video and
    frozen-feature training agree)."""
    config = pig.config
    tokens = pig.encode_video(normalize(pixels, config.image_mean, config.image_std), backbone)
    selected = select_patch_tokens(tokens.patches, tokens.its_score, config.select_k, selector)
    return HeadInputs(tokens.video, tokens.proxies, tokens.frames, selected, tokens.patches)


def head_embedding(pig, inputs: HeadInputs, method: str, q_hat: torch.Tensor | None = None) -> torch.Tensor:
    """e_v [B, D] of a two-tower or hybrid method from a batch's tokens."""
    return video_embedding(pig, method, inputs.video, inputs.proxies, inputs.frames, inputs.selected, q_hat)


def _rows(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows a mask keeps; all rows without one."""
    return tensor if mask is None else tensor[mask]


def _grad_if(enabled: bool):
    return contextlib.nullcontext() if enabled else torch.no_grad()


class TrainStep(nn.Module):
    """One training forward: the batch's losses. A module, so that DistributedDataParallel can wrap it.

    Under torchrun, features are gathered across ranks inside the forward (differentiably), so every
    rank computes the same global-batch L_ret and its gradients reach every rank's features: a
    2-process run equals a 1-process run on the same global batch.
    """

    def __init__(self, pig, method: str, phase: int, alpha: float, backbone: str, eercf_weight: float = 0.0,
                 selector: str = "its", grad_checkpointing: bool = False):
        super().__init__()
        self.selector, self.grad_checkpointing = selector, grad_checkpointing
        self.pig, self.method, self.phase, self.alpha, self.backbone = pig, method, phase, alpha, backbone
        # --method eercf trains with EERCF's loss alone; other methods add it with --eercf-weight
        self.eercf_weight = 1.0 if method == "eercf" else eercf_weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, valid: torch.Tensor | None,
                pixels: torch.Tensor | None = None, tokens: HeadInputs | None = None) -> dict[str, torch.Tensor]:
        """valid [b] bool: the rows that hold a video; None when all do (no masking: selecting rows by a
        mask on a GPU makes the host wait for the mask)."""
        with checkpointed_layers(self.grad_checkpointing):
            return self._losses(input_ids, attention_mask, valid, pixels, tokens)

    def _losses(self, input_ids, attention_mask, valid, pixels, tokens) -> dict[str, torch.Tensor]:
        pig = self.pig
        if pixels is not None:
            with _grad_if(pig.clip.visual_projection.weight.requires_grad):
                tokens = encode_pixels(pig, pixels, self.backbone, self.selector)
        with _grad_if(pig.clip.text_projection.weight.requires_grad):
            text = pig.text_features(input_ids, attention_mask)                     # t [b, D], unnormalised
        q_hat = (pseudo_query(pig, tokens.video, tokens.proxies, tokens.frames, tokens.selected)
                 if self.method == "pig" else None)
        zero = text.new_zeros((), dtype=torch.float32)
        l_gen = generation_loss(_rows(q_hat, valid), _rows(text, valid)) if q_hat is not None else zero
        if self.phase == 1:
            return {"loss": l_gen, "l_ret": zero, "l_gen": l_gen, "l_eercf": zero}
        keep = None if valid is None else gather_with_grad(valid.to(torch.uint8)).bool()  # bytes: NCCL has no bool
        l_ret = zero if self.method == "eercf" else self._retrieval(F.normalize(text, dim=-1), tokens, q_hat, keep)
        l_eercf = self._eercf(text, tokens, keep) if self.eercf_weight else zero
        loss = l_ret + self.alpha * l_gen + self.eercf_weight * l_eercf
        return {"loss": loss, "l_ret": l_ret, "l_gen": l_gen, "l_eercf": l_eercf}

    def _retrieval(self, text: torch.Tensor, tokens: HeadInputs, q_hat: torch.Tensor | None,
                   keep: torch.Tensor | None) -> torch.Tensor:
        pig = self.pig
        all_text = _rows(gather_with_grad(text), keep)
        if self.method == "xpool":
            keys = [_rows(gather_with_grad(t), keep) for t in (tokens.video, tokens.proxies, tokens.frames)]
            scores = xpool_scores(pig, all_text, *keys)
        else:
            video = head_embedding(pig, tokens, self.method, q_hat)
            scores = all_text.float() @ _rows(gather_with_grad(video), keep).float().T
        return retrieval_loss(scores, pig.clip.logit_scale)

    def _eercf(self, text: torch.Tensor, tokens: HeadInputs, keep: torch.Tensor | None) -> torch.Tensor:
        """EERCF's loss on the global batch (docs/method.md s.7); the same clamped temperature as L_ret."""
        text, frames, patches = (_rows(gather_with_grad(t), keep) for t in (text, tokens.frames, tokens.eercf_patches()))
        loss, _ = eercf_loss(text, frames, patches, self.pig.eercf, logit_scale_value(self.pig.clip.logit_scale))
        return loss
