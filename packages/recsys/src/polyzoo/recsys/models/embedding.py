"""Field embeddings shared by xDeepInt and every baseline.

All fields live in **one** table of ``num_rows`` rows. Row 0 is the shared zero row (``padding_idx``): missing
values and out-of-vocabulary ids map to it, which reproduces the official code's behaviour (OOV ids are dropped
and the ``mean`` combiner of an empty bag gives a zero vector). The data pipeline
(:class:`polyzoo.recsys.features.FeatureMap`) turns raw values into these global row ids, so one embedding row is
one feature value: the group of group-lasso FTRL (:class:`polyzoo.recsys.optim.GroupFTRL`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FieldEmbedding"]


class FieldEmbedding(nn.Module):
    """Look up field embeddings.

    Args:
        num_rows: rows of the table (``FeatureMap.num_rows``), row 0 being the zero row.
        dim: embedding size D.
        sparse: emit sparse gradients (``torch.sparse_coo``), as GFTRL / Adagrad / SparseAdam accept.
        init_std: std of the truncated-normal initialisation; ``None`` = ``1/sqrt(dim)`` (TF's
            ``embedding_column`` default, which the official code uses).

    Shapes: ``ids (B, F) int64 -> (B, F, D)``.
    """

    def __init__(self, num_rows: int, dim: int, sparse: bool = False, init_std: float | None = None) -> None:
        super().__init__()
        if num_rows < 2:
            raise ValueError(f"num_rows must be >= 2 (row 0 is the zero row), got {num_rows}")
        self.num_rows, self.dim = num_rows, dim
        self.weight = nn.Parameter(torch.empty(num_rows, dim))
        self.sparse = sparse
        self.init_std = init_std if init_std is not None else 1.0 / math.sqrt(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.trunc_normal_(self.weight, std=self.init_std, a=-2 * self.init_std, b=2 * self.init_std)
            self.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids (B, F)`` global row ids -> ``(B, F, D)``; id 0 gives the zero vector."""
        return nn.functional.embedding(ids, self.weight, padding_idx=0, sparse=self.sparse)
