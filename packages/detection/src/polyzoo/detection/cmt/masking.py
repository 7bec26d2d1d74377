"""Masked-modality training (CMT's ``ModalMask3D``) and a device-agnostic GridMask, plain NumPy/PyTorch.

Paper: Yan et al., "Cross Modal Transformer", ICCV 2023 (Sec. 3.6 "Masked-modal training"). Official code:
https://github.com/junjie18/CMT (``datasets/pipelines/transform_3d.py`` ``ModalMask3D``; ``models/utils/grid_mask.py``,
which calls ``.cuda()``).

During training a uniform draw r decides: r > 1 - p_image → all images zeroed; 1 - p_image - p_points < r ≤
1 - p_image → all points zeroed; otherwise both kept (official: 25 % / 25 % / 50 %). Zeroing (rather than removing)
keeps shapes valid, as the author recommends for missing-LiDAR evaluation.
"""

from __future__ import annotations

import numpy as np
import torch


def choose_masked_modality(rng: np.random.Generator, p_image: float = 0.25, p_points: float = 0.25) -> str | None:
    """Return ``'image'``, ``'points'`` or None (keep both)."""
    if p_image < 0 or p_points < 0 or p_image + p_points > 1:
        raise ValueError(f"masked modality probabilities must be ≥ 0 and sum ≤ 1, got {p_image}, {p_points}")
    r = rng.random()
    if r > 1 - p_image:
        return "image"
    if r > 1 - p_image - p_points:
        return "points"
    return None


def grid_mask(
    imgs: torch.Tensor,
    generator: torch.Generator | None = None,
    ratio: float = 0.5,
    prob: float = 0.7,
    rotate: bool = False,
) -> torch.Tensor:
    """GridMask (Chen et al. 2020) as used by CMT/PETR (``use_h=use_w=True, offset=False``, mode 1).

    With probability ``prob``, draw a period d ∈ [2, H) and stripe width l = ratio·d (clamped to [1, d-1]); rows and
    columns in a stripe (random phase) are kept and the (d-l)×(d-l) squares between stripes are zeroed (mode 1), in
    every image. imgs: (N, C, H, W) → same shape. ``rotate`` is not supported (CMT uses rotate=1, i.e. none).
    """
    if rotate:
        raise NotImplementedError("grid_mask: rotation is not implemented")
    _, _, h, w = imgs.shape
    if torch.rand((), generator=generator).item() > prob or min(h, w) < 3:
        return imgs
    d = int(torch.randint(2, h, (), generator=generator))
    stripe = max(1, min(int(d * ratio + 0.5), d - 1))
    sy = int(torch.randint(0, d, (), generator=generator))
    sx = int(torch.randint(0, d, (), generator=generator))
    ys = (torch.arange(h, device=imgs.device) + d - sy) % d < stripe
    xs = (torch.arange(w, device=imgs.device) + d - sx) % d < stripe
    keep = ys[:, None] | xs[None, :]
    return imgs * keep.to(imgs.dtype)
