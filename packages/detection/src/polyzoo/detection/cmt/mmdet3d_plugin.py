"""CMT registered in mmdet3d 1.x (the plugin a config loads with ``custom_imports``).

Paper: Yan et al., "Cross Modal Transformer: Towards Fast and Robust 3D Object Detection", ICCV 2023.
Official code (OpenMMLab 1.x stack): https://github.com/junjie18/CMT. Layout follows mmdet3d's ``projects/PETR``.

Config use::

    custom_imports = dict(imports=["polyzoo.detection.cmt.mmdet3d_plugin"], allow_failed_imports=False)

Registered here (thin adapters over the plain-PyTorch modules of :mod:`polyzoo.detection.cmt`):

* ``MODELS``: ``CmtDetector`` (an ``MVXTwoStageDetector``), ``CmtHead``, ``VoVNet``, ``CPFPN``;
* ``METRICS``: ``CenterDistanceAP``, ``CmtNuScenesMetric`` (``NuScenesMetric`` reading its info file safely);
* ``DATASETS``: ``CmtNuScenesDataset`` (``NuScenesDataset`` reading its info file safely);
* ``TRANSFORMS``: ``CmtMultiViewResize`` (resize all views, update ``cam2img`` and ``lidar2img``),
  ``ModalMask3D`` (masked-modality training and missing-sensor tests), and the paper's training augmentations
  from :mod:`polyzoo.detection.cmt.augment` (``CmtResizeCropFlipImage``, ``CmtGlobalRotScaleTrans``,
  ``CmtRandomFlip3D``), which keep ``lidar2img`` consistent with the moved points, boxes and pixels.

Importing this module also applies :func:`polyzoo.detection.spconv_cpu.patch_spconv_cpu` so mmdet3d's
``SparseEncoder`` trains on CPU with the PyPI spconv build, and registers the ``cmt-official://`` checkpoint scheme
(:mod:`polyzoo.detection.cmt.official_checkpoint`): ``load_from = "cmt-official://PATH"`` or
``tools/test.py CONFIG cmt-official://PATH`` loads an official junjie18/CMT checkpoint.

``CmtNuScenesDataset`` is mmdet3d's ``NuScenesDataset`` reading its info ``.pkl`` through a restricted unpickler
(:mod:`polyzoo.detection.cmt.safe_pickle`), so an info file cannot run code.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.evaluation.metrics import NuScenesMetric
from mmdet3d.models.detectors import MVXTwoStageDetector
from mmdet3d.registry import DATASETS, METRICS, MODELS, TRANSFORMS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModule
from mmengine.structures import InstanceData

from polyzoo.detection.cmt import augment, gt_paste  # noqa: F401  (register the training augmentations)
from polyzoo.detection.cmt.evaluation import center_distance_ap
from polyzoo.detection.cmt.head import CmtHeadConfig, CmtHeadCore
from polyzoo.detection.cmt.masking import choose_masked_modality, grid_mask
from polyzoo.detection.cmt.official_checkpoint import register_mmengine_scheme
from polyzoo.detection.cmt.safe_pickle import restricted_mmengine_load
from polyzoo.detection.cmt.vovnet import CPFPNCore, VoVNetCore
from polyzoo.detection.spconv_cpu import patch_spconv_cpu

patch_spconv_cpu()
register_mmengine_scheme()


@MODELS.register_module()
class VoVNet(BaseModule):
    """mmdet3d wrapper of :class:`~polyzoo.detection.cmt.vovnet.VoVNetCore` (``spec='V-99-eSE'``).

    ``frozen_stages`` (official VoVNet): ``-1`` trains everything, ``0`` freezes the stem, ``k ≥ 1`` the stem and
    stage2 … stage{k+1} (weights without gradient, their BatchNorms in eval mode). ``norm_eval``: every BatchNorm of
    the backbone stays in eval mode (running statistics frozen) while the model trains, as mmdet's ResNet.
    """

    def __init__(
        self,
        spec: str = "V-99-eSE",
        in_channels: int = 3,
        out_features: Sequence[str] = ("stage4", "stage5"),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.body = VoVNetCore(spec, in_channels, out_features)
        if not -1 <= frozen_stages <= len(self.body.stage_names):
            raise ValueError(f"VoVNet.frozen_stages: expected -1..{len(self.body.stage_names)}, got {frozen_stages}")
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def _frozen_modules(self) -> list[torch.nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.body.stem, *(getattr(self.body, n) for n in self.body.stage_names[: self.frozen_stages])]

    def train(self, mode: bool = True) -> VoVNet:
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.body(x)


@MODELS.register_module()
class CPFPN(BaseModule):
    """mmdet3d wrapper of :class:`~polyzoo.detection.cmt.vovnet.CPFPNCore`."""

    def __init__(
        self, in_channels: Sequence[int], out_channels: int, num_outs: int | None = None, init_cfg: dict | None = None
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.body = CPFPNCore(in_channels, out_channels, num_outs)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return self.body(inputs)


@MODELS.register_module()
class CmtHead(BaseModule):
    """mmdet3d wrapper of :class:`~polyzoo.detection.cmt.head.CmtHeadCore`.

    Keyword arguments are the fields of :class:`~polyzoo.detection.cmt.head.CmtHeadConfig`; ``test_cfg`` may
    override ``max_num``, ``score_threshold`` and ``post_center_range``; ``train_cfg`` is accepted for mmdet3d's
    builder and unused (matching and loss settings are head fields).
    """

    def __init__(
        self, train_cfg: dict | None = None, test_cfg: dict | None = None, init_cfg: dict | None = None, **kwargs
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        for key in ("max_num", "score_threshold", "post_center_range"):
            if test_cfg and key in test_cfg:
                kwargs[key] = test_cfg[key]
        for key in ("pc_range", "code_weights", "post_center_range"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(float(v) for v in kwargs[key])
        if "common_heads" in kwargs:
            kwargs["common_heads"] = {k: tuple(v) for k, v in kwargs["common_heads"].items()}
        try:
            config = CmtHeadConfig(**kwargs)
        except TypeError as err:
            raise TypeError(f"CmtHead config: {err}; valid fields are those of CmtHeadConfig") from err
        self.core = CmtHeadCore(config)


def _lidar2img(meta: dict, device: torch.device) -> torch.Tensor:
    """(V, 4, 4) LiDAR → image projection from a sample's metainfo (``lidar2img`` or ``cam2img @ lidar2cam``)."""
    return torch.as_tensor(augment.lidar2img_matrices(meta), dtype=torch.float32, device=device)


@MODELS.register_module()
class CmtDetector(MVXTwoStageDetector):
    """CMT detector: image branch (backbone + neck, first level), LiDAR branch (voxels → voxel encoder → sparse
    encoder → SECOND → SECONDFPN), and :class:`CmtHead` over both token sets.

    A modality is skipped when its input is absent from ``batch_inputs_dict`` (no ``imgs`` / no ``voxels``);
    zeroed inputs (``ModalMask3D``) keep both branches running, as in the paper.

    Args:
        use_grid_mask: apply GridMask to the images in training (official fusion config: True).
    """

    def __init__(self, use_grid_mask: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.use_grid_mask = use_grid_mask

    def extract_img_feat(self, img: torch.Tensor, input_metas: list[dict]) -> torch.Tensor | None:
        """(B, V, 3, H, W) → first neck level as (B, V, C, h, w)."""
        if img is None or not self.with_img_backbone:
            return None
        b, v = img.shape[:2]
        x = img.flatten(0, 1)
        if self.use_grid_mask and self.training:
            x = grid_mask(x)
        feats = self.img_backbone(x)
        if self.with_img_neck:
            feats = self.img_neck(feats)
        first = feats[0] if isinstance(feats, (list, tuple)) else feats
        return first.view(b, v, *first.shape[1:])

    def extract_pts_feat(self, voxel_dict: dict | None, *args, **kwargs) -> torch.Tensor | None:
        """Voxels → (B, C, H, W) BEV map (the concatenated SECONDFPN output)."""
        if voxel_dict is None or not self.with_pts_backbone:
            return None
        if self.training and voxel_dict["voxels"].shape[0] < 2:
            # every point zeroed (ModalMask3D) in a batch of one: a single voxel at the origin, on which the sparse
            # encoder's BatchNorm cannot compute batch statistics; use its running statistics for this step
            encoder = self.pts_middle_encoder
            encoder.eval()
            try:
                return super().extract_pts_feat(voxel_dict, *args, **kwargs)[0]
            finally:
                encoder.train()
        return super().extract_pts_feat(voxel_dict, *args, **kwargs)[0]

    def _features(self, batch_inputs_dict: dict, metas: list[dict]) -> dict:
        imgs = batch_inputs_dict.get("imgs")
        if imgs is not None and imgs.dim() == 4:  # a single view per sample
            imgs = imgs.unsqueeze(1)
        voxels = batch_inputs_dict.get("voxels")
        img_feat = self.extract_img_feat(imgs, metas) if imgs is not None else None
        bev = (
            self.extract_pts_feat(voxels, points=batch_inputs_dict.get("points"), batch_input_metas=metas)
            if (voxels is not None)
            else None
        )
        lidar2img = pad_hw = None
        if img_feat is not None:
            lidar2img = torch.stack([_lidar2img(m, img_feat.device) for m in metas])
            pad_hw = (int(imgs.shape[-2]), int(imgs.shape[-1]))
        return {"bev_feat": bev, "img_feat": img_feat, "lidar2img": lidar2img, "pad_hw": pad_hw}

    @staticmethod
    def _gt(batch_data_samples: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        boxes, labels = [], []
        for sample in batch_data_samples:
            gt = sample.gt_instances_3d
            b = gt.bboxes_3d
            t = b.tensor
            if t.shape[1] == 7:
                t = torch.cat([t, t.new_zeros(t.shape[0], 2)], dim=1)
            boxes.append(torch.cat([b.gravity_center, t[:, 3:9]], dim=1))
            labels.append(gt.labels_3d)
        return boxes, labels

    def loss(self, batch_inputs_dict: dict, batch_data_samples: list, **kwargs) -> dict:
        metas = [s.metainfo for s in batch_data_samples]
        feats = self._features(batch_inputs_dict, metas)
        gt_boxes, gt_labels = self._gt(batch_data_samples)
        head = self.pts_bbox_head.core
        outputs = head(**feats, gt_boxes=gt_boxes, gt_labels=gt_labels)
        return head.loss(outputs, gt_boxes, gt_labels)

    def predict(self, batch_inputs_dict: dict, batch_data_samples: list, **kwargs) -> list:
        metas = [s.metainfo for s in batch_data_samples]
        head = self.pts_bbox_head.core
        decoded = head.decode(head(**self._features(batch_inputs_dict, metas)))
        results = []
        for (boxes, scores, labels), meta in zip(decoded, metas, strict=True):
            boxes = boxes.clone()
            boxes[:, 2] = boxes[:, 2] - boxes[:, 5] * 0.5  # gravity centre → bottom centre
            inst = InstanceData()
            box_type = meta.get("box_type_3d", LiDARInstance3DBoxes)
            inst.bboxes_3d = box_type(boxes, box_dim=boxes.shape[-1])
            inst.scores_3d = scores
            inst.labels_3d = labels
            results.append(inst)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs_dict: dict, batch_data_samples: list | None = None, **kwargs) -> dict:
        metas = [s.metainfo for s in batch_data_samples] if batch_data_samples else [{}]
        return self.pts_bbox_head.core(**self._features(batch_inputs_dict, metas))


@TRANSFORMS.register_module()
class CmtMultiViewResize(BaseTransform):
    """Bring every view to ``size=(W, H)``, update ``cam2img`` and set ``lidar2img`` (V, 4, 4).

    ``mode='stretch'`` resizes to (W, H) directly. ``mode='crop_top'`` (the official test-time
    ``ResizeCropFlipImage`` with ``bot_pct_lim=(0, 0)``) scales by W / width, keeping the aspect ratio, then
    crops the top rows so the height is H. Reads ``img`` (list of H×W×C arrays), ``cam2img`` and ``lidar2cam``.
    """

    def __init__(self, size: Sequence[int], mode: str = "stretch") -> None:
        if len(size) != 2:
            raise ValueError(f"CmtMultiViewResize.size: expected (W, H), got {size}")
        if mode not in ("stretch", "crop_top"):
            raise ValueError(f"CmtMultiViewResize.mode: expected 'stretch' or 'crop_top', got {mode!r}")
        self.size = (int(size[0]), int(size[1]))
        self.mode = mode

    def transform(self, results: dict) -> dict:
        w, h = self.size
        imgs, cam2img = [], []
        for img, k in zip(results["img"], results["cam2img"], strict=True):
            k4 = np.eye(4)
            k = np.asarray(k, dtype=np.float64)
            k4[: k.shape[0], : k.shape[1]] = k
            if self.mode == "stretch":
                sy, sx = h / img.shape[0], w / img.shape[1]
                out = mmcv.imresize(img, (w, h))
                crop = 0
            else:
                sx = sy = w / img.shape[1]
                new_h = round(img.shape[0] * sy)
                if new_h < h:
                    raise ValueError(f"CmtMultiViewResize: image {img.shape[:2]} too short for {self.size} crop_top")
                crop = new_h - h
                out = mmcv.imresize(img, (w, new_h))[crop:]
            k4[0] *= sx
            k4[1] *= sy
            k4[1, 2] -= crop
            imgs.append(out)
            cam2img.append(k4)
        results["img"] = imgs
        results["cam2img"] = cam2img
        results["lidar2img"] = np.stack(
            [k @ np.asarray(l2c) for k, l2c in zip(cam2img, results["lidar2cam"], strict=True)]
        )
        results["img_shape"] = results["pad_shape"] = (h, w)
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(size={self.size}, mode={self.mode!r})"


@TRANSFORMS.register_module()
class ModalMask3D(BaseTransform):
    """Masked-modality training (official ``ModalMask3D``): zero all images or all points.

    Args:
        mode: ``'train'`` draws per sample (``p_image`` images zeroed, ``p_points`` points zeroed);
            ``'test'`` zeroes ``mask_modal`` (``'image'``, ``'points'`` or None) every time.
        seed: seed of this transform's generator (None: fresh entropy).
    """

    def __init__(
        self,
        mode: str = "train",
        mask_modal: str | None = None,
        p_image: float = 0.25,
        p_points: float = 0.25,
        seed: int | None = None,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"ModalMask3D.mode: expected 'train' or 'test', got {mode!r}")
        if mask_modal not in (None, "image", "points"):
            raise ValueError(f"ModalMask3D.mask_modal: expected None, 'image' or 'points', got {mask_modal!r}")
        self.mode, self.mask_modal, self.p_image, self.p_points = mode, mask_modal, p_image, p_points
        self.rng = np.random.default_rng(seed)

    def transform(self, results: dict) -> dict:
        which = (
            choose_masked_modality(self.rng, self.p_image, self.p_points) if self.mode == "train" else self.mask_modal
        )
        if which == "image" and "img" in results:
            results["img"] = [np.zeros_like(img) for img in results["img"]]
        elif which == "points" and "points" in results:
            pts = results["points"]
            pts.tensor = torch.zeros_like(pts.tensor)
        results["masked_modality"] = which
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(mode={self.mode!r}, mask_modal={self.mask_modal!r})"


@METRICS.register_module()
class CenterDistanceAP(BaseMetric):
    """Centre-distance AP (BEV, nuScenes-style thresholds) over the evaluated samples; see
    :func:`polyzoo.detection.cmt.evaluation.center_distance_ap`. Needs ``gt_instances_3d`` in the data samples
    (pack ``gt_bboxes_3d`` and ``gt_labels_3d`` in the test pipeline) or ``eval_ann_info``."""

    default_prefix = "cda"

    def __init__(self, thresholds: Sequence[float] = (0.5, 1.0, 2.0, 4.0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.thresholds = tuple(float(t) for t in thresholds)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample["pred_instances_3d"]
            if "eval_ann_info" in sample and sample["eval_ann_info"] is not None:
                gt_boxes = sample["eval_ann_info"]["gt_bboxes_3d"]
                gt_labels = np.asarray(sample["eval_ann_info"]["gt_labels_3d"])
            else:
                gt = sample["gt_instances_3d"]
                gt_boxes, gt_labels = gt["bboxes_3d"], gt["labels_3d"].cpu().numpy()
            self.results.append(
                (
                    pred["bboxes_3d"].gravity_center.cpu().numpy(),
                    pred["scores_3d"].cpu().numpy(),
                    pred["labels_3d"].cpu().numpy(),
                    gt_boxes.gravity_center.cpu().numpy(),
                    gt_labels,
                )
            )

    def compute_metrics(self, results: list) -> dict[str, float]:
        preds = [(r[0], r[1], r[2]) for r in results]
        gts = [(r[3], r[4]) for r in results]
        return center_distance_ap(preds, gts, self.thresholds)


@DATASETS.register_module()
class CmtNuScenesDataset(NuScenesDataset):
    """mmdet3d's ``NuScenesDataset`` whose info ``.pkl`` is read by a restricted unpickler (NumPy arrays and builtins
    only; anything else raises a one-line ``ValueError`` naming the file). Same arguments and behaviour otherwise."""

    def load_data_list(self) -> list[dict]:
        import mmengine.dataset.base_dataset as base_dataset

        with restricted_mmengine_load(base_dataset):
            return super().load_data_list()


@METRICS.register_module()
class CmtNuScenesMetric(NuScenesMetric):
    """mmdet3d's ``NuScenesMetric`` whose ``ann_file`` info ``.pkl`` is read by the same restricted unpickler."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        import mmdet3d.evaluation.metrics.nuscenes_metric as nuscenes_metric

        with restricted_mmengine_load(nuscenes_metric):
            return super().compute_metrics(results)
