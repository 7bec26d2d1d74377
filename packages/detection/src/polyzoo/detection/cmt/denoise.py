"""Query denoising of CMT (DN-DETR style), device-agnostic.

Paper: Yan et al., "Cross Modal Transformer", ICCV 2023 (Sec. 3.5, "query denoising" following DN-DETR).
Official code: https://github.com/junjie18/CMT (``CmtHead.prepare_for_dn``), which calls ``.cuda()``; here every
tensor follows the reference points' device.

Ground-truth centres are repeated in ``groups = min(scalar, num_query // max_gt)`` groups, shifted by
``noise_scale · U(-1, 1) · size / 2`` (plus ``noise_trans``), normalised to the point-cloud range and placed
before the matching queries. A noised query whose relative shift has norm > ``split`` is labelled "no object".
Attention mask: matching queries cannot see denoising queries, and denoising groups cannot see each other (the same
mask as the official one).

Deliberate deviations: no ``.cuda()`` (noise drawn on the CPU, moved to the anchors' device); at least one group
(the official ``num_query // max_gt`` can reach 0); no DN when no sample has a ground truth (the official code
divides by zero there); with ``noise_scale == 0`` the centres are still normalised to the point-cloud range (the
official code then leaves them metric, inside its ``if noise_scale > 0`` block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class DenoisingTargets:
    """What the loss needs about the denoising queries.

    pad_size: number of DN query slots (``groups · max_gt``), placed first.
    batch_index, query_index: (K,) where each noised GT copy sits in the (B, pad_size) DN block.
    labels: (K,) class ids, ``num_classes`` for the "no object" ones. boxes: (K, 9) the clean GT boxes.
    num_groups: groups used.
    """

    pad_size: int
    batch_index: torch.Tensor
    query_index: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    num_groups: int


def prepare_denoising(
    reference_points: torch.Tensor,
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    pc_range: Sequence[float],
    num_classes: int,
    scalar: int = 10,
    noise_scale: float = 1.0,
    noise_trans: float = 0.0,
    split: float = 0.75,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, DenoisingTargets | None]:
    """Build padded reference points and the attention mask.

    Args:
        reference_points: (Q, 3) normalised anchors. gt_boxes: per sample (G_i, 9) metric boxes (gravity centre).
        gt_labels: per sample (G_i,).
    Returns:
        refs (B, pad + Q, 3), attn_mask (pad + Q, pad + Q) bool or None, targets or None (no DN when no GT at all
        or ``scalar == 0``).
    """
    batch = len(gt_boxes)
    num_query = reference_points.shape[0]
    dev = reference_points.device
    counts = [int(b.shape[0]) for b in gt_boxes]
    max_gt = max(counts, default=0)
    if scalar <= 0 or max_gt == 0:
        return reference_points.unsqueeze(0).expand(batch, -1, -1), None, None
    groups = max(1, min(scalar, num_query // max_gt))
    boxes = torch.cat([b.to(dev, torch.float32) for b in gt_boxes])  # (G, 9)
    labels = torch.cat([lab.to(dev) for lab in gt_labels]).long()
    batch_idx = torch.cat([torch.full((n,), i, dtype=torch.long, device=dev) for i, n in enumerate(counts)])
    slot = torch.cat([torch.arange(n, device=dev) for n in counts])

    known_boxes = boxes.repeat(groups, 1)
    known_labels = labels.repeat(groups)
    known_batch = batch_idx.repeat(groups)
    known_slot = torch.cat([slot + max_gt * g for g in range(groups)])

    centre = known_boxes[:, :3].clone()
    rel = torch.rand(centre.shape, generator=generator, device="cpu").to(dev) * 2 - 1
    if noise_scale > 0:
        centre = centre + rel * (known_boxes[:, 3:6] / 2 + noise_trans) * noise_scale
        known_labels = torch.where(rel.norm(dim=1) > split, torch.full_like(known_labels, num_classes), known_labels)
    rng = torch.tensor(list(pc_range), dtype=torch.float32, device=dev)
    centre = ((centre - rng[:3]) / (rng[3:] - rng[:3])).clamp(0, 1)

    pad_size = max_gt * groups
    refs = torch.cat([reference_points.new_zeros(pad_size, 3), reference_points]).unsqueeze(0).repeat(batch, 1, 1)
    refs[known_batch, known_slot] = centre.to(refs.dtype)

    size = pad_size + num_query
    mask = torch.zeros(size, size, dtype=torch.bool, device=dev)
    mask[pad_size:, :pad_size] = True
    for g in range(groups):
        lo, hi = max_gt * g, max_gt * (g + 1)
        mask[lo:hi, :lo] = True
        mask[lo:hi, hi:pad_size] = True
    targets = DenoisingTargets(pad_size, known_batch, known_slot, known_labels, known_boxes, groups)
    return refs, mask, targets
