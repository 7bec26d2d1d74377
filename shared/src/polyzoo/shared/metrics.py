"""Classification metrics shared by the image and video domains: cross-entropy and top-k accuracy.

:func:`topk_accuracy` computes what ``timm.utils.accuracy`` computes (a row counts as correct at k when its target
is among its k highest scores, ties broken by ``torch.topk``; k is capped at the number of classes), as a fraction
in [0, 1] instead of timm's percent. It lives here, in plain torch, because polyzoo-shared does not depend on timm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["topk_accuracy", "topk_metrics"]


@torch.no_grad()
def topk_accuracy(outputs: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1,)) -> list[float]:
    """For each k in ``ks``, the fraction of rows of ``outputs`` ``(N, K)`` whose ``targets`` ``(N,)`` is among the
    ``min(k, K)`` highest scores."""
    if outputs.dim() != 2 or targets.shape != outputs.shape[:1]:
        raise ValueError(
            f"topk_accuracy: expected scores (N, K) and targets (N,), got {tuple(outputs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if len(targets) == 0:
        raise ValueError("topk_accuracy: no samples (an empty evaluation has no accuracy)")
    maxk = min(max(ks), outputs.shape[1])
    hit = outputs.topk(maxk, dim=1).indices == targets[:, None]  # (N, maxk)
    return [float(hit[:, : min(k, maxk)].any(1).float().mean()) for k in ks]


def topk_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """``loss`` (cross-entropy of the logits), ``top1`` and, with at least 5 classes, ``top5`` (a top-5 over fewer
    classes is 1 by construction and is left out)."""
    ks = (1, 5) if outputs.shape[1] >= 5 else (1,)
    accs = topk_accuracy(outputs, targets, ks)
    return {
        "loss": float(F.cross_entropy(outputs.float(), targets)),
        **{f"top{k}": a for k, a in zip(ks, accs, strict=True)},
    }
