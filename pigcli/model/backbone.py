"""Video encoders over CLIP's vision tower (docs/method.md sections 1 and 2).

`ViPBackbone`: CLIP-ViP style video proxy tokens. One sequence per video:
    [v_cls, proxy_1..P, (frame_cls_f, patches_f) for f in 1..T]
Global tokens (v_cls, proxies) attend to everything; a frame's tokens attend to the globals and to
their own frame. CLIP's own encoder layers run with that additive mask.

`FrameBackbone`: plain CLIP on every frame (CLIP4Clip style), x_v = mean of x_f, no proxies.

Both return `VideoTokens`, including the ITS score of every patch (section 2): the max over heads of
the last layer's attention probability from the pooling query (v_cls, or each frame's CLS in the
frame-wise variant) to that patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .clip_compat import additive_mask, compute_dtype, run_layers


@dataclass
class VideoTokens:
    video: torch.Tensor      # [B, D]      x_v
    proxies: torch.Tensor    # [B, P, D]   x_p (P = 0 for the frame-wise backbone)
    frames: torch.Tensor     # [B, T, D]   x_f
    patches: torch.Tensor    # [B, T*L, D] x_patch
    its_score: torch.Tensor  # [B, T*L]    max_h A[h, patch] of the last layer


def vip_attention_allowed(num_global: int, num_frames: int, tokens_per_frame: int, device=None) -> torch.Tensor:
    """Boolean [S, S]: may row token attend to column token (S = M + T * (1 + L))."""
    size = num_global + num_frames * tokens_per_frame
    frame_of = torch.full((size,), -1, device=device)  # -1 marks global tokens
    frame_of[num_global:] = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    is_global_row = (frame_of == -1)[:, None]
    is_global_col = (frame_of == -1)[None, :]
    same_frame = frame_of[:, None] == frame_of[None, :]
    return is_global_row | is_global_col | same_frame


def last_layer_query_attention(layer: nn.Module, hidden_in: torch.Tensor, query_pos: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Post-softmax attention probabilities [B, heads, S] of one query position in a CLIP layer.

    Recomputes only the query row from the layer's own LayerNorm and projections, instead of asking
    the attention kernel for all S x S probabilities (version-independent, and S times cheaper).
    """
    attn = layer.self_attn
    x = layer.layer_norm1(hidden_in)
    batch, seq, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    q = attn.q_proj(x[:, query_pos]).view(batch, heads, 1, head_dim)
    k = attn.k_proj(x).view(batch, seq, heads, head_dim).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)).float() * attn.scale  # [B, heads, 1, S]
    if mask is not None:
        logits = logits + mask[..., query_pos : query_pos + 1, :].float()
    return logits.softmax(dim=-1)[:, :, 0]


class ViPBackbone(nn.Module):
    """CLIP vision tower + video proxy tokens + temporal embedding (docs/method.md section 1)."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module, num_frames: int, num_proxies: int):
        super().__init__()
        self.vision = vision_model
        self.projection = visual_projection
        width = vision_model.config.hidden_size
        cls = vision_model.embeddings.class_embedding.detach().clone()
        # Proxies and frame CLS start as CLIP's class embedding; temporal embedding as zeros, so an
        # untrained model's tokens of every frame are exactly CLIP's. Its frame outputs are close to
        # frame-wise CLIP but not equal: frame tokens also attend to the global tokens (the mask of
        # docs/method.md section 1); tests/test_backbone.py measures the gap.
        self.proxy_tokens = nn.Parameter(cls.repeat(num_proxies, 1))
        self.frame_cls = nn.Parameter(cls.clone())
        self.temporal_embedding = nn.Parameter(torch.zeros(num_frames, width))

    @property
    def num_global(self) -> int:
        return 1 + self.proxy_tokens.shape[0]

    def temporal(self, num_frames: int) -> torch.Tensor:
        """[T, W]; linearly interpolated when T differs from the trained number of frames.

        align_corners=False, as CLIP-ViP's code (F.interpolate's default): the T new rows sample the
        table at the centres of T equal cells. A model used at its own T is never interpolated."""
        table = self.temporal_embedding
        if table.shape[0] == num_frames:
            return table
        return F.interpolate(table.T[None], size=num_frames, mode="linear", align_corners=False)[0].T

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, T, 3, S, S] -> token sequence [B, M + T*(1+L), W] before pre_layrnorm."""
        emb = self.vision.embeddings
        batch, frames = pixels.shape[:2]
        patches = emb.patch_embedding(pixels.flatten(0, 1).to(emb.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)                      # [B*T, L, W]
        pos = emb.position_embedding.weight                                # [1+L, W]
        temporal = self.temporal(frames)                                   # [T, W]
        patches = patches.view(batch, frames, -1, patches.shape[-1]) + pos[1:] + temporal[:, None]
        frame_cls = (self.frame_cls + pos[0] + temporal)[None, :, None].expand(batch, -1, -1, -1)
        frame_tokens = torch.cat([frame_cls, patches], dim=2).flatten(1, 2)  # [B, T*(1+L), W]
        global_tokens = torch.cat([emb.class_embedding[None], self.proxy_tokens]) + pos[0]
        return torch.cat([global_tokens[None].expand(batch, -1, -1), frame_tokens], dim=1)

    def forward(self, pixels: torch.Tensor) -> VideoTokens:
        batch, frames = pixels.shape[:2]
        hidden = self.vision.pre_layrnorm(self.embed(pixels))
        tokens_per_frame = (hidden.shape[1] - self.num_global) // frames
        allowed = vip_attention_allowed(self.num_global, frames, tokens_per_frame, hidden.device)
        mask = additive_mask(allowed, compute_dtype(hidden))
        layers = self.vision.encoder.layers
        hidden = run_layers(layers[:-1], hidden, mask)
        attention = last_layer_query_attention(layers[-1], hidden, 0, mask)  # [B, heads, S] from v_cls
        hidden = run_layers(layers[-1:], hidden, mask)
        out = self.projection(self.vision.post_layernorm(hidden))           # [B, S, D]

        m = self.num_global
        per_frame = out[:, m:].view(batch, frames, tokens_per_frame, -1)
        patch_attention = attention[:, :, m:].view(batch, -1, frames, tokens_per_frame)[..., 1:]
        return VideoTokens(
            video=out[:, 0],
            proxies=out[:, 1:m],
            frames=per_frame[:, :, 0],
            patches=per_frame[:, :, 1:].flatten(1, 2),
            its_score=patch_attention.amax(dim=1).flatten(1),
        )


class FrameBackbone(nn.Module):
    """Plain CLIP per frame (CLIP4Clip style): x_f = image embeddings, x_v = mean of x_f, no proxies."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module):
        super().__init__()
        self.vision = vision_model
        self.projection = visual_projection

    def forward(self, pixels: torch.Tensor) -> VideoTokens:
        batch, frames = pixels.shape[:2]
        vision = self.vision
        hidden = vision.pre_layrnorm(vision.embeddings(pixels.flatten(0, 1)))  # [B*T, 1+L, W]
        layers = vision.encoder.layers
        hidden = run_layers(layers[:-1], hidden, None)
        attention = last_layer_query_attention(layers[-1], hidden, 0, None)     # [B*T, heads, 1+L]
        hidden = run_layers(layers[-1:], hidden, None)
        out = self.projection(vision.post_layernorm(hidden))                     # [B*T, 1+L, D]
        out = out.view(batch, frames, out.shape[1], -1)
        frame_tokens = out[:, :, 0]
        return VideoTokens(
            video=frame_tokens.mean(dim=1),
            proxies=frame_tokens[:, :0],
            frames=frame_tokens,
            patches=out[:, :, 1:].flatten(1, 2),
            its_score=attention[:, :, 1:].amax(dim=1).view(batch, -1),
        )
