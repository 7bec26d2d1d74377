"""Coordinate encoding of CMT: image tokens through camera rays, point tokens through BEV positions.

Paper: Yan et al., "Cross Modal Transformer", ICCV 2023 (Sec. 3.2 "Coordinates Encoding Module",
Sec. 3.3 "Position-guided Query Generator"). Official code: https://github.com/junjie18/CMT
(``CmtHead._rv_pe``, ``_rv_query_embed``, ``_bev_query_embed``, ``pos2embed``).

* Image PE: every feature-map pixel ``(u, v)`` (in padded-image pixels) is lifted at ``depth_num`` uniform depths
  ``d_k = 1 + k (x_max - 1) / depth_num`` through ``inv(lidar2img)`` applied to ``(u d_k, v d_k, d_k, 1)``; the
  points are normalised to the point-cloud range and the ``3 depth_num`` values go through an MLP.
* Point (BEV) PE: normalised BEV cell centres → sin/cos embedding → MLP.
* Query PE of a 3D anchor: BEV term (sin/cos of its (x, y) → the same BEV MLP) plus image term: the anchor is
  projected into every camera, re-lifted along that ray at the same depths, encoded by the same image MLP and summed
  over the views where it is visible.

As in the official code (and unlike the paper's text, which samples several heights per BEV cell) the BEV PE encodes
only (x, y).

Official behaviour kept (it decides what official weights compute):

* ``pos2embed`` uses the official frequencies ``dim_t = 2·⌊i/2⌋/n + 1`` (all in [1, 2); the ``temperature`` argument
  is accepted and unused, as in the official function), output order (y, x), sin on even and cos on odd features.
  The DETR form ``temperature ** (2·⌊i/2⌋/n)`` that the argument suggests is ``form="detr"`` (not the default: the
  official BEV MLPs were trained on the official frequencies).
* The query PE applies the official ``inverse_sigmoid(ref).sigmoid()`` round trip (eps 1e-5) to the anchors first,
  so an anchor coordinate of exactly 0 or 1 is encoded as 1e-5 or 1 - 1e-5.
* Uniform depths ``1 + k (x_max - 1) / D``; pixel grid ``k · pad / feat``; the projection divides by
  ``z ± 1e-6`` (sign of z), visibility needs ``z > 0`` and ``0 ≤ u < pad_w``, ``0 ≤ v < pad_h``; the image term is
  summed over the visible views.

Deliberate deviations (none changes what official weights compute on nuScenes):

* BEV cell centres: the official ``coords_bev`` normalises x by the number of rows and y by the number of columns
  (``grid_size[1]`` and ``grid_size[0]`` swapped); the two agree on square grids (every nuScenes config). Here x is
  divided by the number of columns and y by the number of rows, which is right on non-square grids too. The
  official code also takes the grid from ``train_cfg.grid_size // downsample_scale``; here it is the feature
  map's own size (the same for the official configs).
* Re-lifting an anchor: the official code divides all of (x, y, z) of the projection by ``z ± 1e-6`` and scales that
  by each depth, so its third homogeneous coordinate is ``d · z / (z ± 1e-6)``; here it is exactly ``d`` (a relative
  difference of 1e-6 / z, below float32 resolution for anchors more than a metre away).
* ``inv(lidar2img)`` is computed in float32 by ``torch.linalg.inv`` on the tensors' device; the official code inverts
  the float64 NumPy matrices and then casts to float32 (differences of about 1e-7 relative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

POS2EMBED_FORMS = ("official", "detr")


def pos2embed(
    pos: torch.Tensor, num_pos_feats: int = 128, temperature: float = 10000.0, form: str = "official"
) -> torch.Tensor:
    """Sin/cos embedding of normalised (x, y) positions: (..., ≥2) → (..., 2·num_pos_feats), order (y, x).

    ``form="official"`` (default): frequencies ``dim_t = 2·⌊i/2⌋/n + 1`` as in the official ``pos2embed``;
    ``temperature`` is unused there, as in the official function. ``form="detr"``: ``temperature ** (2·⌊i/2⌋/n)``.
    """
    if form not in POS2EMBED_FORMS:
        raise ValueError(f"pos2embed: form must be one of {POS2EMBED_FORMS}, got {form!r}")
    scale = 2 * math.pi
    pos = pos * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=pos.device)
    exponent = 2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats
    dim_t = exponent + 1 if form == "official" else temperature**exponent
    emb = []
    for axis in (1, 0):
        p = pos[..., axis, None] / dim_t
        emb.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(emb, dim=-1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 - x))`` with x clamped to [0, 1] and both terms to ≥ eps (mmdet's ``inverse_sigmoid``)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def bev_cell_centers(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised (x, y) centres of a BEV map of shape (H=y cells, W=x cells), row-major: (H·W, 2)."""
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).reshape(-1, 2)


def depth_bins(depth_num: int, depth_max: float, device: torch.device | None = None) -> torch.Tensor:
    """The official uniform depths ``1 + k (depth_max - 1) / depth_num``, k = 0..depth_num-1: (D,)."""
    return 1 + torch.arange(depth_num, dtype=torch.float32, device=device) * (depth_max - 1) / depth_num


def lift_pixels(uv: torch.Tensor, depths: torch.Tensor, img2lidar: torch.Tensor) -> torch.Tensor:
    """Points on camera rays: pixel ``(u, v)`` at depth d ↦ ``img2lidar @ (u d, v d, d, 1)``.

    Args:
        uv: (..., N, 2) pixels. depths: (D,). img2lidar: (..., 4, 4), broadcast against uv's leading dims.
    Returns:
        (..., N, D, 3) LiDAR-frame points.
    """
    d = depths.view(*([1] * (uv.dim() - 1)), -1, 1)  # (..., 1, D, 1)
    d = d.expand(*uv.shape[:-1], -1, 1)  # (..., N, D, 1)
    pts = torch.cat([uv.unsqueeze(-2) * d, d, torch.ones_like(d)], -1)  # (..., N, D, 4)
    out = torch.einsum("...ij,...ndj->...ndi", img2lidar, pts)
    return out[..., :3]


class CoordinateEncoder(nn.Module):
    """The three position embeddings of CMT, sharing the image MLP (``rv_embedding``) and BEV MLP.

    Args:
        hidden_dim: token width h. depth_num: D depths per ray.
        pc_range: (x_min, y_min, z_min, x_max, y_max, z_max) in metres.
        pos_form: frequencies of :func:`pos2embed` (``"official"`` default, or ``"detr"``).
    """

    def __init__(self, hidden_dim: int, depth_num: int, pc_range: Sequence[float], pos_form: str = "official") -> None:
        super().__init__()
        if len(pc_range) != 6:
            raise ValueError(f"pc_range must have 6 values (x_min, y_min, z_min, x_max, y_max, z_max), got {pc_range}")
        if pos_form not in POS2EMBED_FORMS:
            raise ValueError(f"CoordinateEncoder: pos_form must be one of {POS2EMBED_FORMS}, got {pos_form!r}")
        self.pos_form = pos_form
        self.hidden_dim = hidden_dim
        self.depth_num = depth_num
        self.register_buffer("pc_range", torch.tensor(list(pc_range), dtype=torch.float32), persistent=False)
        self.bev_embedding = nn.Sequential(
            nn.Linear(hidden_dim * 2, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, hidden_dim)
        )
        self.rv_embedding = nn.Sequential(
            nn.Linear(depth_num * 3, hidden_dim * 4), nn.ReLU(inplace=True), nn.Linear(hidden_dim * 4, hidden_dim)
        )

    def _depths(self) -> torch.Tensor:
        return depth_bins(self.depth_num, float(self.pc_range[3]), self.pc_range.device)

    def _normalise(self, pts: torch.Tensor) -> torch.Tensor:
        return (pts - self.pc_range[:3]) / (self.pc_range[3:] - self.pc_range[:3])

    def denormalise(self, ref: torch.Tensor) -> torch.Tensor:
        """Normalised [0, 1]^3 → metric LiDAR coordinates."""
        return ref * (self.pc_range[3:] - self.pc_range[:3]) + self.pc_range[:3]

    def bev_pe(self, height: int, width: int) -> torch.Tensor:
        """Point-token PE: (H·W, h)."""
        centres = bev_cell_centers(height, width, self.pc_range.device)
        return self.bev_embedding(pos2embed(centres, self.hidden_dim, form=self.pos_form))

    def image_pe(self, lidar2img: torch.Tensor, feat_hw: tuple[int, int], pad_hw: tuple[int, int]) -> torch.Tensor:
        """Image-token PE. lidar2img: (B, V, 4, 4) → (B, V·H·W, h) in (view, row, column) order."""
        (h, w), (pad_h, pad_w) = feat_hw, pad_hw
        dev = lidar2img.device
        vs = torch.arange(h, dtype=torch.float32, device=dev) * pad_h / h
        us = torch.arange(w, dtype=torch.float32, device=dev) * pad_w / w
        grid_v, grid_u = torch.meshgrid(vs, us, indexing="ij")
        uv = torch.stack((grid_u, grid_v), -1).reshape(1, 1, -1, 2)  # (1, 1, HW, 2)
        img2lidar = torch.linalg.inv(lidar2img.float())  # (B, V, 4, 4)
        pts = lift_pixels(uv, self._depths(), img2lidar)  # (B, V, HW, D, 3)
        emb = self.rv_embedding(self._normalise(pts).flatten(-2))  # (B, V, HW, h)
        return emb.flatten(1, 2)

    def query_pe(self, ref: torch.Tensor, lidar2img: torch.Tensor | None, pad_hw: tuple[int, int]) -> torch.Tensor:
        """Query PE of normalised anchors ref (B, Q, 3): BEV term + image term summed over visible views.

        As the official ``query_embed``, the anchors first go through ``inverse_sigmoid(ref).sigmoid()``.
        """
        ref = inverse_sigmoid(ref).sigmoid()
        emb = self.bev_embedding(pos2embed(ref, self.hidden_dim, form=self.pos_form))
        if lidar2img is None:
            return emb
        return emb + self.rv_query_pe(ref, lidar2img, pad_hw)

    def rv_query_pe(self, ref: torch.Tensor, lidar2img: torch.Tensor, pad_hw: tuple[int, int]) -> torch.Tensor:
        """Image term of the query PE: (B, Q, 3), (B, V, 4, 4) → (B, Q, h)."""
        pad_h, pad_w = pad_hw
        pts = self.denormalise(ref)
        homo = torch.cat([pts, torch.ones_like(pts[..., :1])], -1)  # (B, Q, 4)
        proj = torch.einsum("bvij,bqj->bvqi", lidar2img.float(), homo)  # (B, V, Q, 4)
        depth = proj[..., 2:3].detach()
        in_front = depth > 0
        uv = proj[..., :2] / (depth + torch.where(in_front, 1e-6, -1e-6))
        visible = (
            in_front.squeeze(-1) & (uv[..., 0] >= 0) & (uv[..., 0] < pad_w) & (uv[..., 1] >= 0) & (uv[..., 1] < pad_h)
        )
        img2lidar = torch.linalg.inv(lidar2img.float())  # (B, V, 4, 4)
        lifted = lift_pixels(uv, self._depths(), img2lidar)  # (B, V, Q, D, 3)
        emb = self.rv_embedding(self._normalise(lifted).flatten(-2))  # (B, V, Q, h)
        return (emb * visible.unsqueeze(-1)).sum(dim=1)
