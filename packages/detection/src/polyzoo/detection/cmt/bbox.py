"""Box coding, Hungarian assignment and the NMS-free top-k decoder of CMT (plain PyTorch + SciPy).

Paper: Yan et al., "Cross Modal Transformer: Towards Fast and Robust 3D Object Detection", ICCV 2023.
Official code: https://github.com/junjie18/CMT (``core/bbox/util.py``, ``assigners/hungarian_assigner_3d.py``,
``coders/multi_task_bbox_coder.py``, ``match_costs/match_cost.py``).

Boxes are mmdet3d LiDAR boxes with the **gravity centre**: ``(x, y, z, dx, dy, dz, yaw[, vx, vy])`` in metres.

Box code order (``order`` argument, head option ``box_code_order``):

* ``"official"`` (default): ``(x, y, log dx, log dy, z, log dz, sin yaw, cos yaw, vx, vy)``, the official
  ``normalize_bbox`` / ``denormalize_bbox``. The official head concatenates its branches as
  ``(center(2), height(1), dim(3), rot(2), vel(2))`` and compares that vector position by position with this code,
  so in the official model the "height" branch (a sigmoid offset on the anchor's z, scaled to the z range) is
  trained to predict ``log dx``, ``dim[0]`` predicts ``log dy``, ``dim[1]`` predicts z and ``dim[2]`` ``log dz``.
  Official weights were trained that way, so only this order reproduces their boxes; it is the default.
* ``"reordered"``: ``(x, y, z, log dx, log dy, log dz, sin, cos, vx, vy)``, which lines the code up with the branch
  names (the height branch predicts z from the anchor's z, the dim branch the three log sizes). It reads better and
  gives z the anchor-relative parametrisation the head was evidently meant to have, but no remapping of official
  weights reproduces official boxes under it: use it only to train from scratch.

Both orders put the same code weights on the same dims (the official weights are symmetric in dims 2-5), so matching
and losses differ only through which branch learns which quantity.

Official behaviour kept: Hungarian cost ``2 · focal(α 0.25, γ 2) + 0.25 · L1`` on the first 8 code-weighted dims
(velocity excluded, IoU cost weight 0); NMS-free decoding = sigmoid, top-k over queries × classes (``max_num``),
then the optional score threshold and the ``post_center_range`` filter.

Deliberate deviations: sizes are clamped to ≥ 1e-6 before the log (the official code takes the log of the raw size;
identical for every real box, and it keeps a degenerate box from producing -inf); one task holding all classes (the
official fusion configs use one task, the multi-task gather of ``MultiTaskBBoxCoder`` reduces to the identity);
``post_center_range=None`` is allowed (the official coder raises ``NotImplementedError``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

CODE_SIZE = 10
CODE_ORDERS = ("official", "reordered")


def _check_order(order: str) -> None:
    if order not in CODE_ORDERS:
        raise ValueError(f"box code order must be one of {CODE_ORDERS}, got {order!r}")


def normalize_bbox(boxes: torch.Tensor, order: str = "official") -> torch.Tensor:
    """(..., 7 or 9) metric boxes → (..., 8 or 10) regression code.

    ``order="official"``: (x, y, log dx, log dy, z, log dz, sin, cos[, vx, vy]); ``"reordered"``:
    (x, y, z, log dx, log dy, log dz, sin, cos[, vx, vy]). See the module docstring.
    """
    _check_order(order)
    if boxes.shape[-1] not in (7, 9):
        raise ValueError(f"normalize_bbox: expected 7 or 9 box values in the last dim, got {boxes.shape[-1]}")
    yaw = boxes[..., 6:7]
    log_size = boxes[..., 3:6].clamp(min=1e-6).log()
    if order == "official":
        parts = [boxes[..., 0:2], log_size[..., 0:2], boxes[..., 2:3], log_size[..., 2:3], yaw.sin(), yaw.cos()]
    else:
        parts = [boxes[..., 0:3], log_size, yaw.sin(), yaw.cos()]
    if boxes.shape[-1] == 9:
        parts.append(boxes[..., 7:9])
    return torch.cat(parts, dim=-1)


def denormalize_bbox(code: torch.Tensor, order: str = "official") -> torch.Tensor:
    """Inverse of :func:`normalize_bbox`: (..., 8 or 10) code in ``order`` → (..., 7 or 9) metric boxes."""
    _check_order(order)
    if code.shape[-1] not in (8, 10):
        raise ValueError(f"denormalize_bbox: expected 8 or 10 code values in the last dim, got {code.shape[-1]}")
    yaw = torch.atan2(code[..., 6:7], code[..., 7:8])
    if order == "official":
        centre = torch.cat([code[..., 0:2], code[..., 4:5]], dim=-1)
        size = torch.cat([code[..., 2:4], code[..., 5:6]], dim=-1).exp()
    else:
        centre, size = code[..., 0:3], code[..., 3:6].exp()
    parts = [centre, size, yaw]
    if code.shape[-1] == 10:
        parts.append(code[..., 8:10])
    return torch.cat(parts, dim=-1)


def focal_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal classification cost (DETR-style). logits (Q, C), labels (G,) → cost (Q, G)."""
    prob = logits.sigmoid()
    eps = 1e-12
    neg = -(1 - prob + eps).log() * (1 - alpha) * prob.pow(gamma)
    pos = -(prob + eps).log() * alpha * (1 - prob).pow(gamma)
    return pos[:, labels] - neg[:, labels]


@torch.no_grad()
def hungarian_assign(
    logits: torch.Tensor,
    code_pred: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    code_weights: Sequence[float],
    cls_weight: float = 2.0,
    reg_weight: float = 0.25,
    alpha: float = 0.25,
    gamma: float = 2.0,
    code_order: str = "official",
) -> torch.Tensor:
    """One-to-one assignment of queries to ground truths with focal + weighted L1 costs.

    Args:
        logits: (Q, C) classification logits. code_pred: (Q, 10) predicted regression code.
        gt_labels: (G,) class ids. gt_boxes: (G, 9) metric boxes (gravity centre).
        code_weights: 10 weights; the L1 cost uses the first 8 code dims (velocity excluded), each scaled.
        code_order: order of ``code_pred`` (see :func:`normalize_bbox`).
    Returns:
        (Q,) long tensor: index of the assigned ground truth, or -1.
    """
    num_query = logits.shape[0]
    assigned = torch.full((num_query,), -1, dtype=torch.long, device=logits.device)
    if gt_labels.numel() == 0 or num_query == 0:
        return assigned
    weights = code_pred.new_tensor(list(code_weights))[:8]
    gt_code = normalize_bbox(gt_boxes, code_order)[:, :8] * weights
    cost = cls_weight * focal_cost(logits.float(), gt_labels, alpha, gamma) + reg_weight * torch.cdist(
        code_pred[:, :8].float() * weights, gt_code.float(), p=1
    )
    cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    assigned[torch.as_tensor(rows, device=logits.device)] = torch.as_tensor(
        np.asarray(cols), dtype=torch.long, device=logits.device
    )
    return assigned


def decode_topk(
    logits: torch.Tensor,
    code_pred: torch.Tensor,
    max_num: int = 300,
    score_threshold: float | None = None,
    post_center_range: Sequence[float] | None = None,
    code_order: str = "official",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NMS-free decoding: sigmoid scores, top-k over queries × classes, optional centre-range filter.

    Args:
        logits: (Q, C). code_pred: (Q, 10) in ``code_order`` (see :func:`normalize_bbox`).
    Returns:
        boxes (K, 9) metric, scores (K,), labels (K,) with K ≤ max_num.
    """
    num_classes = logits.shape[-1]
    scores, index = logits.sigmoid().flatten().topk(min(max_num, logits.numel()))
    labels = index % num_classes
    boxes = denormalize_bbox(code_pred[torch.div(index, num_classes, rounding_mode="floor")], code_order)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if score_threshold is not None:
        keep &= scores > score_threshold
    if post_center_range is not None:
        rng = boxes.new_tensor(list(post_center_range))
        keep &= ((boxes[:, :3] >= rng[:3]) & (boxes[:, :3] <= rng[3:])).all(dim=1)
    return boxes[keep], scores[keep], labels[keep]
