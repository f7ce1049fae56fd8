"""What each method computes from a batch, for training (`TrainStep`) and validation (the helpers).

    pig:      q_hat = generate([x_v; x_p; x_f; top-k patches]);  e_v = fuse(q_hat, [x_v; x_p; x_f])
    meanpool: e_v = norm(mean_f x_f)
    xpool:    S_ij = e_t_i . fuse(e_t_i, [x_v; x_p; x_f]_j)   (every text with every video)
    eercf:    e_v = W_g norm(mean_f norm(x_f)), trained with EERCF's loss (METHOD.md section 7)

Any method can add EERCF's loss with a weight (--eercf-weight), which trains the rerank head W_g, W_F
(and, through the fine scores, the encoders) next to the method's own loss.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..model.eercf import eercf_loss
from ..model.pig import generator_tokens
from ..stages.select import top_k_patches
from ..video import normalize
from .data import HeadInputs
from .distributed import gather_with_grad
from .losses import generation_loss, logit_scale_value, retrieval_loss_from_scores

METHODS = ("pig", "meanpool", "xpool", "eercf")


def encode_pixels(pig, pixels: torch.Tensor, backbone: str) -> HeadInputs:
    """uint8 frames [B, T, 3, S, S] -> the backbone's tokens, with the top-k ITS patches selected.

    Selection reuses `top_k_patches` (the same ordering and ties as `pig select`), so raw-video and
    frozen-feature training feed the generator the same patches.
    """
    config = pig.config
    tokens = pig.encode_video(normalize(pixels, config.image_mean, config.image_std), backbone)
    chosen = top_k_patches(tokens.its_score.detach().float().cpu().numpy(), config.select_k)
    index = torch.from_numpy(chosen).to(tokens.patches.device)
    selected = tokens.patches.gather(1, index[..., None].expand(-1, -1, tokens.patches.shape[-1]))
    return HeadInputs(tokens.video, tokens.proxies, tokens.frames, selected, tokens.patches)


def pseudo_query(pig, inputs: HeadInputs) -> torch.Tensor:
    return pig.generate(generator_tokens(inputs.video, inputs.proxies, inputs.frames, inputs.selected))


def meanpool_embedding(frames: torch.Tensor) -> torch.Tensor:
    """norm(mean_f x_f): the torch twin of stages.fuse.meanpool."""
    return F.normalize(frames.float().mean(dim=1), dim=-1)


def video_embedding(pig, inputs: HeadInputs, method: str) -> torch.Tensor:
    """e_v [B, D] of a two-tower or hybrid method (xpool has no query-free video embedding)."""
    if method == "pig":
        return pig.fuse(pseudo_query(pig, inputs), inputs.video, inputs.proxies, inputs.frames)
    if method == "meanpool":
        return meanpool_embedding(inputs.frames)
    if method == "eercf":
        return pig.eercf.video_embed(inputs.frames)
    raise ValueError(f"method {method!r} has no query-independent video embedding")


def xpool_scores(pig, text: torch.Tensor, video: torch.Tensor, proxies: torch.Tensor,
                 frames: torch.Tensor) -> torch.Tensor:
    """S [Q, B]: S_qb = e_t_q . fuse(e_t_q, keys_b), using the fusioner's [B, Q, D] query support."""
    fused = pig.fuse(text[None].expand(video.shape[0], -1, -1), video, proxies, frames)  # [B, Q, D]
    return torch.einsum("qd,bqd->qb", text.to(fused.dtype), fused)


def _grad_if(enabled: bool):
    return contextlib.nullcontext() if enabled else torch.no_grad()


class TrainStep(nn.Module):
    """One training forward: the batch's losses. A module, so that DistributedDataParallel can wrap it.

    Under torchrun, features are gathered across ranks inside the forward (differentiably), so every
    rank computes the same global-batch L_ret and its gradients reach every rank's features: a
    2-process run equals a 1-process run on the same global batch.
    """

    def __init__(self, pig, method: str, phase: int, alpha: float, backbone: str, eercf_weight: float = 0.0):
        super().__init__()
        self.pig, self.method, self.phase, self.alpha, self.backbone = pig, method, phase, alpha, backbone
        # --method eercf trains with EERCF's loss alone; other methods add it with --eercf-weight
        self.eercf_weight = 1.0 if method == "eercf" else eercf_weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, valid: torch.Tensor,
                pixels: torch.Tensor | None = None, tokens: HeadInputs | None = None) -> dict[str, torch.Tensor]:
        pig = self.pig
        if pixels is not None:
            with _grad_if(pig.clip.visual_projection.weight.requires_grad):
                tokens = encode_pixels(pig, pixels, self.backbone)
        with _grad_if(pig.clip.text_projection.weight.requires_grad):
            text = pig.text_features(input_ids, attention_mask)                     # t [b, D], unnormalised
        q_hat = pseudo_query(pig, tokens) if self.method == "pig" else None
        zero = text.new_zeros((), dtype=torch.float32)
        l_gen = generation_loss(q_hat[valid], text[valid]) if q_hat is not None else zero
        if self.phase == 1:
            return {"loss": l_gen, "l_ret": zero, "l_gen": l_gen, "l_eercf": zero}
        keep = gather_with_grad(valid.to(torch.uint8)).bool()  # gathered as bytes: NCCL has no bool
        l_ret = zero if self.method == "eercf" else self._retrieval(F.normalize(text, dim=-1), tokens, q_hat, keep)
        l_eercf = self._eercf(text, tokens, keep) if self.eercf_weight else zero
        loss = l_ret + self.alpha * l_gen + self.eercf_weight * l_eercf
        return {"loss": loss, "l_ret": l_ret, "l_gen": l_gen, "l_eercf": l_eercf}

    def _retrieval(self, text: torch.Tensor, tokens: HeadInputs, q_hat: torch.Tensor | None,
                   keep: torch.Tensor) -> torch.Tensor:
        pig = self.pig
        all_text = gather_with_grad(text)[keep]
        if self.method == "xpool":
            keys = [gather_with_grad(t)[keep] for t in (tokens.video, tokens.proxies, tokens.frames)]
            scores = xpool_scores(pig, all_text, *keys)
        else:
            video = (pig.fuse(q_hat, tokens.video, tokens.proxies, tokens.frames) if self.method == "pig"
                     else meanpool_embedding(tokens.frames))
            scores = all_text.float() @ gather_with_grad(video)[keep].float().T
        return retrieval_loss_from_scores(scores, pig.clip.logit_scale)

    def _eercf(self, text: torch.Tensor, tokens: HeadInputs, keep: torch.Tensor) -> torch.Tensor:
        """EERCF's loss on the global batch (METHOD.md section 7); the same clamped temperature as L_ret."""
        text, frames, patches = (gather_with_grad(t)[keep] for t in (text, tokens.frames, tokens.eercf_patches()))
        loss, _ = eercf_loss(text, frames, patches, self.pig.eercf, logit_scale_value(self.pig.clip.logit_scale))
        return loss
