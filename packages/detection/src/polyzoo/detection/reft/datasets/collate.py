"""``reft_collate``: flattens episode lists into one batch (registered in mmengine's ``FUNCTIONS``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["reft_collate"]


def reft_collate(batch: Sequence) -> dict:
    """Flatten lists of items (from :class:`RefTEpisodeDataset`) then collate as mmengine's ``pseudo_collate``."""
    from mmengine.dataset import pseudo_collate

    flat = []
    for item in batch:
        flat.extend(item if isinstance(item, list) else [item])
    return pseudo_collate(flat)


try:  # register the collate function for configs: collate_fn=dict(type='reft_collate')
    from mmengine.registry import FUNCTIONS

    if "reft_collate" not in FUNCTIONS.module_dict:
        FUNCTIONS.register_module(name="reft_collate", module=reft_collate)
except ImportError:  # pragma: no cover - mmengine is a dependency
    pass
