"""Differentiable Siamese Augmentation (DSA).

Paper: Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021.
Official code: https://github.com/VICO-UoE/DatasetCondensation (``utils.py::{ParamDiffAug, DiffAugment}``), reused
by https://github.com/liuyugeng/baadd ``DC/utils.py``.

Every transform is differentiable in the images. With ``siamese=True`` one parameter draw is shared by the whole
batch, and calling :func:`diff_augment` with the same ``seed`` on the real and on the synthetic batch applies the
same transform to both (the "Siamese" part). In single mode (``mode="S"``, the official default) one of the
strategy's families is drawn per call.

Deviations: randomness comes from a private ``torch.Generator`` seeded with ``seed`` (the official code reseeds the
global RNG); the default strategy is the DSA paper's ``color_crop_cutout_flip_scale_rotate`` (baadd's ``main.py``
default is ``None``, which silently disables the augmentation for ``--method DSA``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_STRATEGY", "DSAParams", "diff_augment"]

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclasses.dataclass
class DSAParams:
    """Ranges of the official ``ParamDiffAug``."""

    mode: str = "S"  # S: one family per call; M: all families in order
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def _draw(g: torch.Generator, n: int) -> torch.Tensor:
    return torch.rand(n, generator=g)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _scale(x, p, g, n):
    sx = _draw(g, n) * (p.ratio_scale - 1.0 / p.ratio_scale) + 1.0 / p.ratio_scale
    sy = _draw(g, n) * (p.ratio_scale - 1.0 / p.ratio_scale) + 1.0 / p.ratio_scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, theta.expand(x.shape[0], 2, 3) if n == 1 else theta)


def _rotate(x, p, g, n):
    ang = (_draw(g, n) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang), -torch.sin(ang)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang), torch.cos(ang)
    return _affine(x, theta.expand(x.shape[0], 2, 3) if n == 1 else theta)


def _flip(x, p, g, n):
    r = _draw(g, n).view(-1, 1, 1, 1).to(x.device)
    return torch.where(r < p.prob_flip, x.flip(3), x)


def _brightness(x, p, g, n):
    r = _draw(g, n).view(-1, 1, 1, 1).to(x)
    return x + (r - 0.5) * p.brightness


def _saturation(x, p, g, n):
    r = _draw(g, n).view(-1, 1, 1, 1).to(x)
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (r * p.saturation) + m


def _contrast(x, p, g, n):
    r = _draw(g, n).view(-1, 1, 1, 1).to(x)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (r + p.contrast) + m


def _crop(x, p, g, n):
    # translate by an integer shift in [-s, s] along each axis, filling with zeros (pad-and-crop)
    b, _, h, w = x.shape
    sh, sw = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
    tx = (
        torch.randint(-sh, sh + 1, (n,), generator=g).expand(b)
        if n == 1
        else torch.randint(-sh, sh + 1, (n,), generator=g)
    )
    ty = (
        torch.randint(-sw, sw + 1, (n,), generator=g).expand(b)
        if n == 1
        else torch.randint(-sw, sw + 1, (n,), generator=g)
    )
    rows = (torch.arange(h).view(1, h) + tx.view(b, 1) + 1).clamp(0, h + 1)  # (B, H) into the 1-padded image
    cols = (torch.arange(w).view(1, w) + ty.view(b, 1) + 1).clamp(0, w + 1)
    xp = F.pad(x, [1, 1, 1, 1])
    bi = torch.arange(b).view(b, 1, 1)
    out = xp.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1).to(x.device), cols.view(b, 1, w).to(x.device)]
    return out.permute(0, 3, 1, 2)


def _cutout(x, p, g, n):
    b, _, h, w = x.shape
    ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (n,), generator=g)
    oy = torch.randint(0, w + (1 - cw % 2), (n,), generator=g)
    if n == 1:
        ox, oy = ox.expand(b), oy.expand(b)
    r = torch.arange(h).view(1, h, 1)
    c = torch.arange(w).view(1, 1, w)
    r0, c0 = (ox - ch // 2).view(b, 1, 1), (oy - cw // 2).view(b, 1, 1)
    inside = (r >= r0.clamp(min=0)) & (r <= (r0 + ch - 1).clamp(max=h - 1)) & (c >= c0.clamp(min=0))
    inside &= c <= (c0 + cw - 1).clamp(max=w - 1)
    mask = (~inside).to(x.dtype).to(x.device).unsqueeze(1)
    return x * mask


_FAMILIES = {
    "color": (_brightness, _saturation, _contrast),
    "crop": (_crop,),
    "cutout": (_cutout,),
    "flip": (_flip,),
    "scale": (_scale,),
    "rotate": (_rotate,),
}


def diff_augment(
    x: torch.Tensor,
    strategy: str = DEFAULT_STRATEGY,
    seed: int | None = None,
    params: DSAParams | None = None,
    siamese: bool | None = None,
) -> torch.Tensor:
    """Augment ``x`` ``(B, C, H, W)`` differentiably. ``seed`` fixes the draw (same seed → same transform);
    ``siamese`` (default: ``seed is not None``) shares one draw across the batch, as the official code does
    whenever a seed is given."""
    if not strategy or strategy.lower() == "none":
        return x
    params = params or DSAParams()
    families = strategy.split("_")
    for fam in families:
        if fam not in _FAMILIES:
            raise ValueError(f"unknown DSA family {fam!r} in strategy {strategy!r}; known: {sorted(_FAMILIES)}")
    siamese = seed is not None if siamese is None else siamese
    g = torch.Generator()
    # no seed: draw one from the global RNG, so runs seeded with torch.manual_seed repeat exactly
    g.manual_seed(int(torch.randint(0, 2**62, (1,))) if seed is None else int(seed))
    n = 1 if siamese else x.shape[0]
    if params.mode == "S":
        chosen = [families[int(torch.randint(0, len(families), (1,), generator=g))]]
    elif params.mode == "M":
        chosen = families
    else:
        raise ValueError(f"DSA mode must be 'S' or 'M', got {params.mode!r}")
    for fam in chosen:
        for fn in _FAMILIES[fam]:
            x = fn(x, params, g, n)
    return x.contiguous()
