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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def pos2embed(pos: torch.Tensor, num_pos_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """Sin/cos embedding of normalised (x, y) positions: (..., ≥2) → (..., 2·num_pos_feats), order (y, x)."""
    scale = 2 * math.pi
    pos = pos * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    emb = []
    for axis in (1, 0):
        p = pos[..., axis, None] / dim_t
        emb.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(emb, dim=-1)


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
    """

    def __init__(self, hidden_dim: int, depth_num: int, pc_range: Sequence[float]) -> None:
        super().__init__()
        if len(pc_range) != 6:
            raise ValueError(f"pc_range must have 6 values (x_min, y_min, z_min, x_max, y_max, z_max), got {pc_range}")
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
        return self.bev_embedding(pos2embed(centres, self.hidden_dim))

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
        """Query PE of normalised anchors ref (B, Q, 3): BEV term + image term summed over visible views."""
        emb = self.bev_embedding(pos2embed(ref, self.hidden_dim))
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
