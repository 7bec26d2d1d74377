"""Helpers for tests that compare polyzoo's models with transcriptions of official code on random weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["randomize_"]


def randomize_(model: nn.Module, seed: int = 0, skip: Callable[[str], bool] = lambda name: False) -> nn.Module:
    """Overwrite every parameter and buffer of ``model`` with seeded random values, so that every tensor of a
    checkpoint matters when two implementations are compared (zero-initialised gates and identity BN statistics
    would hide a mis-mapped key). BN running variances are drawn in [0.5, 1.5), running means and biases with
    std 0.1, other 1-D tensors (norm weights) in [0.5, 1), weights with std 1/sqrt(fan-in); ``num_batches_tracked``
    and names for which ``skip(name)`` is true are left as they are."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked") or skip(name):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / t[0].numel()) ** 0.5)
    return model
