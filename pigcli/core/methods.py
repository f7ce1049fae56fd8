"""What each retrieval method computes from a video's tokens (docs/method.md sections 3, 4, 7, 8).

    pig:      q_hat = generate([x_v; x_p; x_f; selected patches]);  e_v = fuse(q_hat, [x_v; x_p; x_f])
    meanpool: e_v = norm(mean_f x_f)                                    (two tower, CLIP4Clip meanP)
    eercf:    e_v = W_g norm(mean_f norm(x_f))                          (EERCF's coarse vector)
    xpool:    S_qb = e_t_q . fuse(e_t_q, [x_v; x_p; x_f]_b)              (single tower: no video-only vector)

`pig fuse`, `pig rank --method xpool`, `pig eval`, training and validation all call these.
`pig` is a PigModel (pigcli.model.pig); tensors are [B, ...] batches on the model's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..choices import INDEX_METHODS



def meanpool(frames: torch.Tensor) -> torch.Tensor:
    """norm(mean_f x_f): frames [B, T, D] -> [B, D], in float32."""
    return F.normalize(frames.float().mean(dim=1), dim=-1)


def pseudo_query(pig, video: torch.Tensor, proxies: torch.Tensor, frames: torch.Tensor,
                 selected: torch.Tensor) -> torch.Tensor:
    """q_hat [B, D] from u = [x_v; x_p; x_f; selected patches]."""
    return pig.generate(torch.cat([video[:, None], proxies, frames, selected], dim=1))


def video_embedding(pig, method: str, video: torch.Tensor, proxies: torch.Tensor, frames: torch.Tensor,
                    selected: torch.Tensor | None = None, q_hat: torch.Tensor | None = None) -> torch.Tensor:
    """e_v [B, D] of a method with a query-independent video vector. pig: q_hat, if already
    computed (training needs it for L_gen too), else generated from the selected patches."""
    if method == "pig":
        if q_hat is None:
            q_hat = pseudo_query(pig, video, proxies, frames, selected)
        return pig.fuse(q_hat, video, proxies, frames)
    if method == "meanpool":
        return meanpool(frames)
    if method == "eercf":
        return pig.eercf.video_embed(frames)
    raise ValueError(f"method {method!r} has no query-independent video embedding; expected one of {INDEX_METHODS}")


def xpool_scores(pig, text: torch.Tensor, video: torch.Tensor, proxies: torch.Tensor,
                 frames: torch.Tensor) -> torch.Tensor:
    """S [Q, B]: every normalised text e_t [Q, D] with every video b of the batch, each text as the
    fusioner's query (the fusioner takes a [B, Q, D] query: all pairs in one call)."""
    fused = pig.fuse(text[None].expand(video.shape[0], -1, -1), video, proxies, frames)  # [B, Q, D]
    return torch.einsum("qd,bqd->qb", text.to(fused.dtype), fused)
