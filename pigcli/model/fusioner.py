"""Pseudo-interaction fusioner: X-Pool cross attention with the pseudo-query as query (docs/method.md section 4).

    t' = LN1(t)    V' = LN1(V)                                  (LN1 shared)
    a  = softmax_j( (Wk v'_j) . (Wq t') / sqrt(d_head) )         per head; one head by default (d_head = D)
    o  = LN2( Wo * sum_j a_j (Wv v'_j) )
    y  = LN3( o + Dropout(Wl o) )
    e_v = norm(y)

Wq, Wk, Wv, Wo, Wl start as identity with zero bias. There is no residual to t.
The same module is the single-tower baseline (`xpool`) when the query is a real text embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


class Fusioner(nn.Module):
    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_proj, self.k_proj, self.v_proj = _identity_linear(dim), _identity_linear(dim), _identity_linear(dim)
        self.out_proj = _identity_linear(dim)
        self.linear = _identity_linear(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query [B, D] (or [B, Q, D]: several queries per video), keys [B, K, D] -> e_v normalised, query's shape."""
        squeeze = query.dim() == 2
        if squeeze:
            query = query[:, None]
        batch, nq, dim = query.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q_proj(self.ln1(query)).view(batch, nq, heads, head_dim).transpose(1, 2)   # [B, h, Q, d]
        keys = self.ln1(keys)
        k = self.k_proj(keys).view(batch, -1, heads, head_dim).transpose(1, 2)               # [B, h, K, d]
        v = self.v_proj(keys).view(batch, -1, heads, head_dim).transpose(1, 2)
        # softmax(q k^T / sqrt(d)) v in PyTorch's fused kernel (no attention dropout: the formula has none)
        pooled = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, nq, dim)
        o = self.ln2(self.out_proj(pooled))
        y = self.ln3(o + self.dropout(self.linear(o)))
        y = F.normalize(y, dim=-1)
        return y[:, 0] if squeeze else y
