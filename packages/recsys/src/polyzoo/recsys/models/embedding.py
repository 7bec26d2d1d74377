"""Field embeddings shared by xDeepInt and every baseline.

All fields live in **one** table of ``num_rows`` rows. Row 0 is the shared zero row (``padding_idx``): missing
values and out-of-vocabulary ids map to it, which reproduces the official code's behaviour (OOV ids are dropped
and the ``mean`` combiner of an empty bag gives a zero vector). The data pipeline
(:class:`polyzoo.recsys.features.FeatureMap`) turns raw values into these global row ids, so one embedding row is
one feature value: the group of group-lasso FTRL (:class:`polyzoo.recsys.optim.GroupFTRL`).

**Multi-hot (bag) fields** (``field_widths``): a field of width L > 1 takes L id columns (padded with 0) and is
reduced with the official ``mean`` combiner, TF's ``embedding_column(combiner="mean")`` as the official code
builds its columns: ``safe_embedding_lookup_sparse`` drops invalid (OOV, here 0) ids, averages the remaining
embeddings and gives a zero vector to an empty bag. So a bag's vector is the sum of its non-zero ids' rows over
their count, and 0 when it has none. A width-1 field is the plain lookup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
        field_widths: id columns of each field (1 = one id; L > 1 = a bag of up to L ids, mean combiner);
            ``None``: every field has width 1.

    Shapes: ``ids (B, Σ widths) int32/int64 -> (B, F, D)``.
    """

    def __init__(
        self,
        num_rows: int,
        dim: int,
        sparse: bool = False,
        init_std: float | None = None,
        field_widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        widths = list(field_widths) if field_widths is not None else None
        if widths is not None and any(w < 1 for w in widths):
            raise ValueError(f"field_widths must be >= 1, got {widths}")
        self.field_widths = widths if widths is not None and any(w > 1 for w in widths) else None
        if self.field_widths is not None:
            cols = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
            self.register_buffer("column_field", cols, persistent=False)
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
        """``ids (B, Σ widths)`` global row ids -> ``(B, F, D)``; id 0 gives the zero vector, a bag the mean of its
        non-zero ids' rows (zero when empty)."""
        e = nn.functional.embedding(ids, self.weight, padding_idx=0, sparse=self.sparse)
        if self.field_widths is None:
            return e
        b, num_fields = ids.shape[0], len(self.field_widths)
        cols = self.column_field
        counts = torch.zeros(b, num_fields, dtype=e.dtype, device=e.device)
        counts.index_add_(1, cols, (ids != 0).to(e.dtype))
        sums = torch.zeros(b, num_fields, e.shape[2], dtype=e.dtype, device=e.device).index_add_(1, cols, e)
        return sums / counts.clamp_min(1.0).unsqueeze(2)
