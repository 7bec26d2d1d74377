"""PETR-style transformer decoder of CMT over the concatenated BEV and image tokens (plain PyTorch).

Paper: Yan et al., "Cross Modal Transformer", ICCV 2023 (Sec. 3.4). Official code: https://github.com/junjie18/CMT
(``models/utils/cmt_transformer.py``: ``CmtTransformer``; ``petr_transformer.py``: ``PETRTransformerDecoder``,
``PETRTransformerDecoderLayer``, ``PETRMultiheadFlashAttention``; ``attention.py``: ``FlashMHA``), built from mmcv
1.x's ``BaseTransformerLayer``, ``MultiheadAttention`` and ``FFN`` as the fusion config sets them up.

Official behaviour kept:

* Each layer is post-norm: self-attention over the queries (with the denoising attention mask) → LayerNorm →
  cross-attention from the queries to all tokens → LayerNorm → FFN (ReLU, width ``ffn_dim``) → LayerNorm, each
  block with a residual connection. Positional embeddings are added to queries and keys, never to values.
* Every layer's output goes through one shared final LayerNorm (``return_intermediate=True``); the content query
  starts at zero; the memory is the BEV tokens followed by the image tokens in (view, row, column) order.
* Dropout where the official model has it (fusion config, training only):

  - self-attention (mmcv ``MultiheadAttention(dropout=0.1)``): ``dropout`` on the attention weights **and**
    ``dropout`` on its output before the residual add;
  - cross-attention (``PETRMultiheadFlashAttention(dropout=0.1)``): the wrapper passes its ``attn_drop`` as the
    third positional argument of ``FlashMHA``, which is ``bias`` (so it only switches the projection biases on),
    and ``FlashMHA``'s own ``attention_dropout`` stays 0: **no dropout on the attention weights**, only
    ``dropout`` on the output before the residual add (``cross_attn_weight_dropout``, default 0.0, restores
    weight dropout if wanted);
  - FFN (mmcv ``FFN(ffn_drop=0.)`` without ``dropout_layer``): **no dropout** (``ffn_dropout``, default 0.0, puts
    mmcv's two FFN dropouts, after the ReLU and after the second linear, back).
* LayerNorm eps 1e-5 (mmcv ``LN``), attention projections with biases, 8 heads in the paper's model.

Deliberate deviations (none changes what official weights compute in eval mode):

* The official cross-attention is flash-attention in fp16 (CUDA only); here it is ``torch.nn.MultiheadAttention``
  in the input's precision, which computes the same function on any device (fp32 is more exact).
* The official decoder layer can wrap itself in activation checkpointing (``with_cp``; the fusion config sets it
  False); there is none here.
* mmcv's ``key_padding_mask`` of all zeros (nothing padded) is dropped.
* Initialisation: the official ``CmtTransformer.init_weights`` re-initialises every linear layer with Xavier-uniform
  weights and zero biases; here the layers keep PyTorch's defaults (this only matters when training from scratch).
"""

from __future__ import annotations

import torch
from torch import nn


class DecoderLayer(nn.Module):
    """One post-norm PETR decoder layer. Shapes are batch-first: queries (B, Q, h), memory (B, N, h).

    Args:
        dropout: self-attention weight dropout and the output dropout of both attentions (official: 0.1).
        cross_attn_weight_dropout: dropout on the cross-attention weights (official: none, 0.0).
        ffn_dropout: mmcv FFN ``ffn_drop`` after the ReLU and after the second linear (official: 0.0).
    """

    def __init__(
        self,
        hidden_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        cross_attn_weight_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(
            hidden_dim, num_heads, dropout=cross_attn_weight_dropout, batch_first=True
        )
        # indices 0 and 3 hold the weights (state-dict layout ffn.0 / ffn.3), as mmcv's FFN layers.0.0 / layers.1
        self.ffn = nn.Sequential(
            nn.Linear(hidden_dim, ffn_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(ffn_dropout),
            nn.Linear(ffn_dim, hidden_dim),
            nn.Dropout(ffn_dropout),
        )
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
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
        return self.norm3(query + self.ffn(query))


class CmtDecoder(nn.Module):
    """Stack of :class:`DecoderLayer` over concatenated tokens; returns every layer's (normed) queries.

    ``attn_mask`` is a boolean (Q, Q) mask where True forbids attention (query denoising groups).
    """

    def __init__(
        self,
        num_layers: int = 6,
        hidden_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        cross_attn_weight_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                DecoderLayer(hidden_dim, num_heads, ffn_dim, dropout, cross_attn_weight_dropout, ffn_dropout)
                for _ in range(num_layers)
            ]
        )
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
