"""Pseudo-query generator (docs/method.md section 3).

u = [x_v ; x_p ; x_f ; selected patches]                                  [B, n, D]
seq = [e_BOS ; mapper(u) ; e_EOS] + text position embeddings 0..n+1       [B, n+2, H]
q_hat = text_projection( final_LN( causal CLIP text layers (seq) )[EOS] )  [B, D]

The text layers, final layer norm, position embeddings and projection are a separate copy of CLIP's
text encoder (the real one stays untouched). e_BOS / e_EOS are constants: CLIP's token embeddings of
its start and end tokens at initialisation. The projection is applied (F-Pig code; needed when H != D).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .clip_compat import additive_mask, compute_dtype, run_layers


class PseudoQueryGenerator(nn.Module):
    def __init__(self, text_model: nn.Module, text_projection: nn.Module, embed_dim: int, bos_id: int, eos_id: int):
        super().__init__()
        hidden = text_model.config.hidden_size
        self.mapper = nn.Linear(embed_dim, hidden)
        self.position_embedding = copy.deepcopy(text_model.embeddings.position_embedding)
        self.layers = copy.deepcopy(text_model.encoder.layers)
        self.final_layer_norm = copy.deepcopy(text_model.final_layer_norm)
        self.projection = copy.deepcopy(text_projection)
        token_embedding = text_model.embeddings.token_embedding.weight.detach()
        self.register_buffer("bos_embedding", token_embedding[bos_id].clone())
        self.register_buffer("eos_embedding", token_embedding[eos_id].clone())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, n, D] -> pseudo-query [B, D] (not normalised)."""
        batch, n, _ = tokens.shape
        max_len = self.position_embedding.num_embeddings
        if n + 2 > max_len:
            raise ValueError(f"{n} generator input tokens + BOS/EOS exceed the text encoder's {max_len} positions")
        mapped = self.mapper(tokens)
        bos = self.bos_embedding.to(mapped.dtype).expand(batch, 1, -1)
        eos = self.eos_embedding.to(mapped.dtype).expand(batch, 1, -1)
        seq = torch.cat([bos, mapped, eos], dim=1) + self.position_embedding.weight[: n + 2]
        causal = torch.ones(n + 2, n + 2, dtype=torch.bool, device=seq.device).tril()
        hidden = run_layers(self.layers, seq, additive_mask(causal, compute_dtype(seq)))
        return self.projection(self.final_layer_norm(hidden[:, -1]))
