"""`PigModel`: CLIP + video backbones + pseudo-query generator + fusioner + EERCF head (its settings,
`PigConfig`, are in config.py and importable from here too)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FrameBackbone, ViPBackbone, VideoTokens
from ..choices import BACKBONES
from .config import PigConfig
from .eercf import EercfHead
from .fusioner import Fusioner
from .generator import PseudoQueryGenerator


class PigModel(nn.Module):
    def __init__(self, clip: nn.Module, config: PigConfig):
        super().__init__()
        self.config = config
        self.clip = clip
        embed_dim = clip.config.projection_dim
        self.backbone = ViPBackbone(clip.vision_model, clip.visual_projection, config.num_frames, config.num_proxies)
        self.frame_backbone = FrameBackbone(clip.vision_model, clip.visual_projection)
        self.generator = PseudoQueryGenerator(
            clip.text_model, clip.text_projection, embed_dim, config.bos_token_id, config.eos_token_id
        )
        self.fusioner = Fusioner(embed_dim, config.fusion_heads, config.fusion_dropout)
        # EERCF rerank weights W_g, W_F (docs/method.md section 7): identities until `pig train` learns them
        # (--method eercf or --eercf-weight); `pig rank --rerank` and `pig fuse --method eercf` use them.
        self.eercf = EercfHead(embed_dim, config.num_frames)

    @property
    def embed_dim(self) -> int:
        return self.clip.config.projection_dim

    @property
    def image_size(self) -> int:
        return self.clip.config.vision_config.image_size

    @property
    def patches_per_frame(self) -> int:
        vision = self.clip.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    def encode_video(self, pixels: torch.Tensor, backbone: str = "vip") -> VideoTokens:
        """pixels [B, T, 3, S, S], normalised -> VideoTokens (docs/method.md sections 1-2)."""
        if backbone == "vip":
            return self.backbone(pixels)
        if backbone == "frames":
            return self.frame_backbone(pixels)
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected, unnormalised EOS features [B, D] of CLIP's real text encoder."""
        out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.clip.text_projection(out.pooler_output)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """e_t [B, D], normalised (docs/method.md section 5)."""
        return F.normalize(self.text_features(input_ids, attention_mask), dim=-1)

    def generate(self, generator_tokens: torch.Tensor) -> torch.Tensor:
        """u [B, n, D] -> q_hat [B, D] (section 3)."""
        return self.generator(generator_tokens)

    def fuse(self, query: torch.Tensor, video: torch.Tensor, proxies: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """e_v = fusioner(query, [x_v ; x_p ; x_f]) (section 4); query [B, D] or [B, Q, D]."""
        keys = torch.cat([video[:, None], proxies, frames], dim=1)
        return self.fusioner(query, keys)
