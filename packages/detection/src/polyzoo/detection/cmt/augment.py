"""CMT's training augmentations as mmdet3d 1.x transforms, keeping cameras and LiDAR consistent.

Paper recipe (CMT, ICCV 2023; official ``projects/mmdet3d_plugin/datasets/pipelines/transform_3d.py``): image
resize 0.94–1.25 to 1600×640 with random flip (``ResizeCropFlipImage``), global rotation ±0.785 rad, scale 0.9–1.1
and translation std 0.5 m (``GlobalRotScaleTransAll``), and BEV flips on both axes (``CustomRandomFlip3D``).

Every 3D augmentation moves the points and boxes by an affine map ``A`` of LiDAR space; the cameras did not move,
so the projection is updated as ``lidar2img ← lidar2img · A⁻¹`` (and ``lidar2cam`` likewise): a point keeps its
pixel. The image augmentation moves pixels by a 2-D affine map ``M`` and updates ``cam2img ← M · cam2img`` and
``lidar2img ← M · lidar2img``. Tests check both invariants.

Registered in mmdet3d's ``TRANSFORMS``:

- ``CmtResizeCropFlipImage``: per view (one draw shared by all views, as the official code), resize by
  ``r ~ U(resize_lim)`` relative to ``final_size / raw size``, crop ``final_size`` (bottom fraction
  ``bot_pct_lim``, random horizontal offset), optional horizontal flip; regions outside the source are zero.
  In test mode the resize is the deterministic fit-width one with a centred crop (``bot_pct_lim`` mean).
- ``CmtGlobalRotScaleTrans``: mmdet3d's ``GlobalRotScaleTrans`` (points and boxes) plus the camera update.
- ``CmtRandomFlip3D``: BEV flips ``horizontal`` (y → −y) and ``vertical`` (x → −x) with their probabilities,
  points, boxes and cameras.

Place them before ``ModalMask3D``: a translation of zeroed points would move them off the origin.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.datasets.transforms import GlobalRotScaleTrans
from mmdet3d.registry import TRANSFORMS

__all__ = [
    "CmtGlobalRotScaleTrans",
    "CmtRandomFlip3D",
    "CmtResizeCropFlipImage",
    "image_aug_matrix",
    "lidar2img_matrices",
]

_CAMERA_KEYS = ("lidar2img", "lidar2cam")


def _to4(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def lidar2img_matrices(results: dict) -> np.ndarray:
    """(V, 4, 4) LiDAR → image projections of a sample (``lidar2img``, else ``cam2img @ lidar2cam``)."""
    if "lidar2img" in results and np.asarray(results["lidar2img"]).ndim == 3:
        return np.asarray(results["lidar2img"], dtype=np.float64)
    if "cam2img" in results and "lidar2cam" in results:
        return np.stack([_to4(k) @ _to4(l2c) for k, l2c in zip(results["cam2img"], results["lidar2cam"], strict=True)])
    raise KeyError("a CMT sample needs 'lidar2img' (V, 4, 4) or 'cam2img' and 'lidar2cam'")


def _move_lidar_frame(results: dict, lidar_map: np.ndarray) -> None:
    """The scene moved by ``lidar_map`` (4×4 on LiDAR coordinates): update every LiDAR→camera/image matrix."""
    inv = np.linalg.inv(lidar_map)
    for key in _CAMERA_KEYS:
        if key in results:
            results[key] = np.stack([_to4(m) @ inv for m in results[key]])
    results["lidar_aug_matrix"] = lidar_map @ np.asarray(results.get("lidar_aug_matrix", np.eye(4)))


def image_aug_matrix(resize: float, crop_xy: tuple[int, int], flip: bool, out_w: int) -> np.ndarray:
    """3×3 pixel map of resize by ``resize``, then crop at ``crop_xy`` (top-left), then a horizontal flip of the
    ``out_w``-wide result: ``[u', v', 1]ᵀ = M [u, v, 1]ᵀ``."""
    m = np.array([[resize, 0.0, -crop_xy[0]], [0.0, resize, -crop_xy[1]], [0.0, 0.0, 1.0]])
    if flip:
        m = np.array([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m


@TRANSFORMS.register_module()
class CmtResizeCropFlipImage(BaseTransform):
    """Resize, crop and flip every camera view, updating ``cam2img`` and ``lidar2img`` (module docstring).

    Args:
        final_size: (W, H) of the output views.
        resize_lim: range of the random factor on top of the fit-width scale ``W / raw width`` (training).
        bot_pct_lim: range of the fraction of the resized height cropped away at the bottom.
        flip: draw a horizontal flip with probability 0.5 (training).
        training: random draws (True) or the deterministic test-time transform (False).
        seed: seed of this transform's generator (None: fresh entropy).
    """

    def __init__(
        self,
        final_size: Sequence[int],
        resize_lim: Sequence[float] = (0.94, 1.25),
        bot_pct_lim: Sequence[float] = (0.0, 0.0),
        flip: bool = True,
        training: bool = True,
        seed: int | None = None,
    ) -> None:
        if len(final_size) != 2 or min(final_size) < 1:
            raise ValueError(f"CmtResizeCropFlipImage.final_size: expected (W, H) > 0, got {final_size}")
        if len(resize_lim) != 2 or not 0 < resize_lim[0] <= resize_lim[1]:
            raise ValueError(f"CmtResizeCropFlipImage.resize_lim: expected 0 < lo <= hi, got {resize_lim}")
        if len(bot_pct_lim) != 2 or not 0 <= bot_pct_lim[0] <= bot_pct_lim[1] < 1:
            raise ValueError(f"CmtResizeCropFlipImage.bot_pct_lim: expected 0 <= lo <= hi < 1, got {bot_pct_lim}")
        self.final_size = (int(final_size[0]), int(final_size[1]))
        self.resize_lim, self.bot_pct_lim = tuple(resize_lim), tuple(bot_pct_lim)
        self.flip, self.training = flip, training
        self.rng = np.random.default_rng(seed)

    def _draw(self, h: int, w: int) -> tuple[float, tuple[int, int], bool]:
        fw, fh = self.final_size
        base = fw / w
        if self.training:
            resize = base * float(self.rng.uniform(*self.resize_lim))
            bot = float(self.rng.uniform(*self.bot_pct_lim))
        else:
            resize, bot = base, float(np.mean(self.bot_pct_lim))
        new_w, new_h = int(w * resize), int(h * resize)
        crop_y = int((1 - bot) * new_h) - fh
        crop_x = int(self.rng.uniform(0, max(0, new_w - fw))) if self.training else max(0, new_w - fw) // 2
        flip = bool(self.training and self.flip and self.rng.random() < 0.5)
        return resize, (crop_x, crop_y), flip

    def transform(self, results: dict) -> dict:
        imgs = results["img"]
        if not imgs:
            raise ValueError("CmtResizeCropFlipImage: results['img'] holds no view")
        h, w = imgs[0].shape[:2]
        if any(im.shape[:2] != (h, w) for im in imgs):
            raise ValueError(f"CmtResizeCropFlipImage: views differ in size {[im.shape[:2] for im in imgs]}")
        resize, crop, flip = self._draw(h, w)
        fw, fh = self.final_size
        m = image_aug_matrix(resize, crop, flip, fw)
        # the pixel map on projections (u·z, v·z, z, 1): its offsets scale with depth, i.e. sit in column 2
        m4 = np.eye(4)
        m4[:2, :2], m4[:2, 2] = m[:2, :2], m[:2, 2]
        out = [
            cv2.warpAffine(im, m[:2], (fw, fh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for im in imgs
        ]
        results["img"] = [o if o.ndim == im.ndim else o[..., None] for o, im in zip(out, imgs, strict=True)]
        lidar2img = lidar2img_matrices(results)
        results["cam2img"] = [m4 @ _to4(k) for k in results["cam2img"]]
        results["lidar2img"] = np.stack([m4 @ p for p in lidar2img])
        results["img_shape"] = results["pad_shape"] = (fh, fw)
        results["img_aug_matrix"] = m
        return results

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(final_size={self.final_size}, resize_lim={self.resize_lim}, "
            f"bot_pct_lim={self.bot_pct_lim}, flip={self.flip}, training={self.training})"
        )


@TRANSFORMS.register_module()
class CmtGlobalRotScaleTrans(GlobalRotScaleTrans):
    """mmdet3d's ``GlobalRotScaleTrans`` (rotate, scale, translate points and boxes) that also moves the cameras'
    ``lidar2img``/``lidar2cam`` so every point keeps its pixel. Arguments as mmdet3d's (the paper:
    ``rot_range=[-0.785, 0.785]``, ``scale_ratio_range=[0.9, 1.1]``, ``translation_std=[0.5, 0.5, 0.5]``)."""

    def transform(self, input_dict: dict) -> dict:
        input_dict = super().transform(input_dict)
        rot = np.asarray(input_dict["pcd_rotation"], dtype=np.float64)  # points are rotated as p @ rot
        scale = float(input_dict["pcd_scale_factor"])
        trans = np.asarray(input_dict["pcd_trans"], dtype=np.float64)
        lidar_map = np.eye(4)
        lidar_map[:3, :3] = scale * rot.T
        lidar_map[:3, 3] = trans
        _move_lidar_frame(input_dict, lidar_map)
        return input_dict


@TRANSFORMS.register_module()
class CmtRandomFlip3D(BaseTransform):
    """BEV flips of points, boxes and cameras: ``horizontal`` negates y, ``vertical`` negates x (mmdet3d's names).

    Args:
        flip_ratio_bev_horizontal, flip_ratio_bev_vertical: probabilities of each flip.
        seed: seed of this transform's generator (None: fresh entropy).
    """

    def __init__(
        self, flip_ratio_bev_horizontal: float = 0.5, flip_ratio_bev_vertical: float = 0.5, seed: int | None = None
    ) -> None:
        for name, p in (("horizontal", flip_ratio_bev_horizontal), ("vertical", flip_ratio_bev_vertical)):
            if not 0 <= p <= 1:
                raise ValueError(f"CmtRandomFlip3D.flip_ratio_bev_{name}: expected a probability, got {p}")
        self.p_h, self.p_v = flip_ratio_bev_horizontal, flip_ratio_bev_vertical
        self.rng = np.random.default_rng(seed)

    def transform(self, results: dict) -> dict:
        flips = {"horizontal": bool(self.rng.random() < self.p_h), "vertical": bool(self.rng.random() < self.p_v)}
        for direction, on in flips.items():
            results[f"pcd_{direction}_flip"] = on
            if not on:
                continue
            results["points"].flip(direction)
            if "gt_bboxes_3d" in results:
                results["gt_bboxes_3d"].flip(direction)
            lidar_map = np.diag([1.0, -1.0, 1.0, 1.0] if direction == "horizontal" else [-1.0, 1.0, 1.0, 1.0])
            _move_lidar_frame(results, lidar_map)
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(horizontal={self.p_h}, vertical={self.p_v})"
