"""PETR-style transformer decoder of CMT over the concatenated BEV and image tokens (plain PyTorch).

Paper: Yan et al., "Cross Modal Transformer", ICCV 2023 (Sec. 3.4). Official code: https://github.com/junjie18/CMT
(``models/utils/cmt_transformer.py``, ``petr_transformer.py``).

Each layer: self-attention over queries (with the denoising attention mask) → LayerNorm → cross-attention from the
queries to all tokens → LayerNorm → FFN → LayerNorm (post-norm, dropout 0.1). Positional embeddings are added to
queries and keys, not to values. Every layer's output goes through a shared final LayerNorm
(``return_intermediate=True``). The official cross-attention is flash-attention (fp16, CUDA only); here it is
``torch.nn.MultiheadAttention``, which computes the same function on any device.
"""

from __future__ import annotations

import torch
from torch import nn


class DecoderLayer(nn.Module):
    """One post-norm PETR decoder layer. Shapes are batch-first: queries (B, Q, h), memory (B, N, h)."""

    def __init__(self, hidden_dim: int = 256, num_heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_dim, ffn_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, hidden_dim),
        )
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.LayerNorm(hidden_dim),
        )

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = k = query + query_pos
        query = self.norm1(
            query + self.dropout1(self.self_attn(q, k, query, attn_mask=attn_mask, need_weights=False)[0])
        )
        out = self.cross_attn(query + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        query = self.norm2(query + self.dropout2(out))
        return self.norm3(query + self.dropout3(self.ffn(query)))


class CmtDecoder(nn.Module):
    """Stack of :class:`DecoderLayer` over concatenated tokens; returns every layer's (normed) queries.

    ``attn_mask`` is a boolean (Q, Q) mask where True forbids attention (query denoising groups).
    """

    def __init__(
        self, num_layers: int = 6, hidden_dim: int = 256, num_heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(hidden_dim, num_heads, ffn_dim, dropout) for _ in range(num_layers)])
        self.post_norm = nn.LayerNorm(hidden_dim)
        self.num_layers = num_layers

    def forward(
        self,
        query_pos: torch.Tensor,
        tokens: list[torch.Tensor],
        token_pos: list[torch.Tensor],
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query_pos (B, Q, h); tokens/token_pos: lists of (B, N_i, h) (BEV tokens, image tokens).

        Returns (L, B, Q, h). The content query starts at zero, as in the official code.
        """
        if not tokens:
            raise ValueError("CmtDecoder: at least one modality's tokens are needed")
        memory = torch.cat(tokens, dim=1)
        memory_pos = torch.cat(token_pos, dim=1)
        query = torch.zeros_like(query_pos)
        outs = []
        for layer in self.layers:
            query = layer(query, query_pos, memory, memory_pos, attn_mask)
            outs.append(self.post_norm(query))
        return torch.stack(outs)
