"""References of a RefT support set (class centres per level, selected support object queries); plain PyTorch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SupportRefs"]


@dataclass
class SupportRefs:
    """References from a support set.

    Attributes:
        centres: list over decoder feature levels of (num_classes, C) class centres.
        present: (num_classes,) bool, classes with at least one support instance.
        queries: (P, C) selected support object queries; ``query_labels`` (P,) their classes.
    """

    centres: list[Tensor]
    present: Tensor
    queries: Tensor
    query_labels: Tensor

    def detach(self) -> SupportRefs:
        return SupportRefs([c.detach() for c in self.centres], self.present, self.queries.detach(), self.query_labels)

    def merge(self, other: SupportRefs) -> SupportRefs:
        """Union of two reference sets; centres of classes present in ``other`` replace ours."""
        centres = [torch.where(other.present[:, None], o, c) for c, o in zip(self.centres, other.centres, strict=True)]
        keep = ~other.present[self.query_labels] if self.query_labels.numel() else self.query_labels.bool()
        return SupportRefs(
            centres,
            self.present | other.present,
            torch.cat([self.queries[keep], other.queries]),
            torch.cat([self.query_labels[keep], other.query_labels]),
        )

    def with_num_classes(self, num_classes: int) -> SupportRefs:
        """The same references in a label space of ``num_classes`` ≥ ours: the added classes are absent (iFSIS: a
        base model's bank used by the grown base + novel model; class ids of the base classes are unchanged)."""
        have = int(self.present.numel())
        if num_classes < have:
            raise ValueError(f"cannot shrink references from {have} to {num_classes} classes")
        extra = num_classes - have
        return SupportRefs(
            [torch.cat([c, c.new_zeros(extra, c.shape[1])]) for c in self.centres],
            torch.cat([self.present, self.present.new_zeros(extra)]),
            self.queries,
            self.query_labels,
        )

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"centres.{i}": c for i, c in enumerate(self.centres)}
        out.update(present=self.present, queries=self.queries, query_labels=self.query_labels)
        return out

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor]) -> SupportRefs:
        n = sum(1 for k in sd if k.startswith("centres."))
        return cls([sd[f"centres.{i}"] for i in range(n)], sd["present"].bool(), sd["queries"], sd["query_labels"])
