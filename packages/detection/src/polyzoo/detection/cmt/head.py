"""The CMT head as a plain PyTorch module: tokens → position-guided queries → decoder → boxes, losses, decoding.

Paper: Yan et al., "Cross Modal Transformer: Towards Fast and Robust 3D Object Detection", ICCV 2023.
Official code: https://github.com/junjie18/CMT (``models/dense_heads/cmt_head.py``: ``CmtHead``,
``SeparateTaskHead``).

What it does, per the official fusion config:

* BEV features go through ``shared_conv`` (3×3 conv + BN + ReLU) to ``hidden_dim`` and become point tokens with the
  BEV PE; image features (already ``hidden_dim`` wide, one level) become image tokens with the ray PE.
* ``num_query`` learnable 3D anchors (``nn.Embedding(Q, 3)``, U(0, 1)) give the query PE (BEV + image terms);
  content queries start at zero. During training, DN queries are prepended (:mod:`.denoising`).
* A grouped separate head (one weight set per decoder layer, Conv1d pairs with a per-group LayerNorm) predicts
  centre (2), height (1), dims (3, log), rot (sin, cos), velocity (2) and class logits (bias -2.19). Centre and
  height are offsets on ``inverse_sigmoid(anchor)``; anchors are not refined layer by layer.
* Loss per decoder layer: sigmoid focal (γ 2, α 0.25, weight 2, ``avg_factor = pos + 0.1 neg``) and weighted L1
  (weight 0.25, code weights [2,2,1,1,1,1,1,1,.2,.2]) after Hungarian matching (focal cost 2 + L1 cost 0.25 on
  8 dims); DN loss with the official ``avg_factor = K·π/6·split³`` for classes and K for boxes.
* Decoding: NMS-free top-k on the last layer.

Official behaviour kept (each decides what official weights compute):

* the official box code order ``(x, y, log dx, log dy, z, log dz, sin, cos, vx, vy)`` against the branch order
  ``(center, height, dim, rot, vel)`` (``box_code_order="official"``; see :mod:`.bbox` for what it implies and for
  the ``"reordered"`` option);
* the official ``pos2embed`` frequencies and the ``inverse_sigmoid(ref).sigmoid()`` round trip of the query PE
  (:mod:`.positional`);
* the grouped task head: per output a grouped Conv1d (no bias) → ``GroupLayerNorm1d`` (biased variance, **eps 1e-6**)
  → ReLU → grouped Conv1d (bias), one group per decoder layer, ``cls_logits`` bias -2.19;
* the official dropout placement in the decoder (:mod:`.transformer`);
* ``nan_to_num`` on the decoder output and on each loss; the DN classification ``avg_factor`` uses the official
  constant 3.14159 for π.

Deliberate deviations:

* One task group holding all classes (the official fusion configs use one task); heads with several ``tasks``
  are not supported.
* ``nn.MultiheadAttention`` instead of flash attention; no ``.cuda()`` anywhere; DN noise is drawn on the CPU and
  moved to the anchors' device.
* Initialisation: task-head convs and ``shared_conv`` keep PyTorch's default init (official: Kaiming-normal,
  fan-out), decoder linears keep PyTorch's default (official: Xavier-uniform, zero bias). Only training from scratch
  is affected; loaded weights compute the same.
* The official L1 ``avg_factor`` is the number of positives (0 gives a NaN that ``nan_to_num`` turns into 0); here
  it is at least 1, which gives the same 0.
* The official head ignores ``loss_heatmap`` (built, never used); there is none here.
* Official checkpoints load through :mod:`polyzoo.detection.cmt.official_checkpoint` (key names differ).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from polyzoo.detection.cmt.bbox import CODE_ORDERS, decode_topk, hungarian_assign, normalize_bbox
from polyzoo.detection.cmt.denoise import DenoisingTargets, prepare_denoising
from polyzoo.detection.cmt.positional import POS2EMBED_FORMS, CoordinateEncoder, inverse_sigmoid
from polyzoo.detection.cmt.transformer import CmtDecoder


@dataclass
class CmtHeadConfig:
    """Sizes and loss settings of :class:`CmtHeadCore` (defaults: the paper's nuScenes fusion model)."""

    in_channels: int = 512
    hidden_dim: int = 256
    num_query: int = 900
    depth_num: int = 64
    num_classes: int = 10
    pc_range: tuple[float, ...] = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1  # self-attention weights + output of both attentions (official placement)
    cross_attn_weight_dropout: float = 0.0  # official: none (FlashMHA's attention_dropout stays 0)
    ffn_dropout: float = 0.0  # official: FFN ffn_drop=0
    group_norm_eps: float = 1e-6  # official GroupLayerNorm1d eps
    box_code_order: str = "official"  # or "reordered" (see polyzoo.detection.cmt.bbox)
    pos_form: str = "official"  # pos2embed frequencies, or "detr"
    head_conv: int = 64
    final_kernel: int = 1
    init_bias: float = -2.19
    # query denoising
    scalar: int = 10
    noise_scale: float = 1.0
    noise_trans: float = 0.0
    split: float = 0.75
    dn_weight: float = 1.0
    # losses and matching
    code_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2)
    loss_cls_weight: float = 2.0
    loss_bbox_weight: float = 0.25
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    match_cls_weight: float = 2.0
    match_reg_weight: float = 0.25
    # decoding
    max_num: int = 300
    score_threshold: float | None = None
    post_center_range: tuple[float, ...] | None = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    common_heads: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"center": (2, 2), "height": (1, 2), "dim": (3, 2), "rot": (2, 2), "vel": (2, 2)}
    )

    def __post_init__(self) -> None:
        if len(self.pc_range) != 6:
            raise ValueError(f"CmtHeadConfig.pc_range: expected 6 values, got {self.pc_range}")
        if len(self.code_weights) != 10:
            raise ValueError(f"CmtHeadConfig.code_weights: expected 10 values, got {self.code_weights}")
        if self.box_code_order not in CODE_ORDERS:
            raise ValueError(
                f"CmtHeadConfig.box_code_order: expected one of {CODE_ORDERS}, got {self.box_code_order!r}"
            )
        if self.pos_form not in POS2EMBED_FORMS:
            raise ValueError(f"CmtHeadConfig.pos_form: expected one of {POS2EMBED_FORMS}, got {self.pos_form!r}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"CmtHeadConfig: hidden_dim {self.hidden_dim} not divisible by num_heads {self.num_heads}")


class GroupLayerNorm1d(nn.Module):
    """LayerNorm over the channels of each of ``groups`` channel groups of a (B, groups·C, N) tensor.

    As the official ``GroupLayerNorm1d``: biased variance, ``eps`` inside the square root, default 1e-6, per-channel
    affine weight and bias.
    """

    def __init__(self, num_channels: int, groups: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        g = x.view(b, self.groups, c // self.groups, n)
        g = (g - g.mean(dim=2, keepdim=True)) / torch.sqrt(g.var(dim=2, unbiased=False, keepdim=True) + self.eps)
        return g.view(b, c, n) * self.weight[None, :, None] + self.bias[None, :, None]


class GroupConv1d(nn.Conv1d):
    """Grouped Conv1d whose kernel-1 case runs as one batched matmul (CPU oneDNN is slow on tiny grouped convs).

    Same parameters and state-dict layout as ``nn.Conv1d(c_in·G, c_out·G, k, groups=G)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size[0] != 1:
            return super().forward(x)
        g = self.groups
        b, _, n = x.shape
        w = self.weight.view(g, self.out_channels // g, self.in_channels // g)
        y = torch.einsum("goi,bgin->bgon", w, x.view(b, g, -1, n)).reshape(b, self.out_channels, n)
        return y if self.bias is None else y + self.bias[None, :, None]


class SeparateTaskHead(nn.Module):
    """Per-output grouped Conv1d stacks; group l holds the weights for decoder layer l.

    heads: name → (out_channels, num_conv). Input (L, B, Q, h) → dict of (L, B, Q, out).
    """

    def __init__(
        self,
        in_channels: int,
        heads: dict[str, tuple[int, int]],
        groups: int,
        head_conv: int = 64,
        final_kernel: int = 1,
        init_bias: float = -2.19,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.heads = dict(heads)
        pad = final_kernel // 2
        for name, (out_ch, num_conv) in self.heads.items():
            layers: list[nn.Module] = []
            c_in = in_channels
            for _ in range(num_conv - 1):
                layers += [
                    GroupConv1d(
                        c_in * groups, head_conv * groups, final_kernel, padding=pad, groups=groups, bias=False
                    ),
                    GroupLayerNorm1d(head_conv * groups, groups, norm_eps),
                    nn.ReLU(inplace=True),
                ]
                c_in = head_conv
            final = GroupConv1d(c_in * groups, out_ch * groups, final_kernel, padding=pad, groups=groups)
            if name == "cls_logits":
                nn.init.constant_(final.bias, init_bias)
            layers.append(final)
            setattr(self, name, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        num_layers, b, q, h = x.shape
        if num_layers != self.groups:
            raise ValueError(f"SeparateTaskHead: built for {self.groups} decoder layers, got {num_layers}")
        flat = x.permute(1, 0, 3, 2).reshape(b, num_layers * h, q)
        out = {}
        for name, (out_ch, _) in self.heads.items():
            y = getattr(self, name)(flat)  # (B, L·out, Q)
            out[name] = y.view(b, num_layers, out_ch, q).permute(1, 0, 3, 2)
        return out


def sigmoid_focal_loss_sum(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float, gamma: float
) -> torch.Tensor:
    """Summed sigmoid focal loss; labels == num_classes means background. logits (N, C), labels (N,)."""
    target = F.one_hot(labels.clamp(max=num_classes), num_classes + 1)[:, :num_classes].to(logits.dtype)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t).pow(gamma) * ce).sum()


class CmtHeadCore(nn.Module):
    """CMT head without any OpenMMLab dependency. See the module docstring for the mechanism."""

    def __init__(self, config: CmtHeadConfig) -> None:
        super().__init__()
        self.cfg = copy.deepcopy(config)
        cfg = self.cfg
        self.shared_conv = nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.hidden_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.hidden_dim),
            nn.ReLU(inplace=True),
        )
        self.coords = CoordinateEncoder(cfg.hidden_dim, cfg.depth_num, cfg.pc_range, cfg.pos_form)
        self.reference_points = nn.Embedding(cfg.num_query, 3)
        self.decoder = CmtDecoder(
            cfg.num_layers,
            cfg.hidden_dim,
            cfg.num_heads,
            cfg.ffn_dim,
            cfg.dropout,
            cfg.cross_attn_weight_dropout,
            cfg.ffn_dropout,
        )
        heads = dict(cfg.common_heads)
        heads["cls_logits"] = (cfg.num_classes, 2)
        self.task_head = SeparateTaskHead(
            cfg.hidden_dim, heads, cfg.num_layers, cfg.head_conv, cfg.final_kernel, cfg.init_bias, cfg.group_norm_eps
        )
        nn.init.uniform_(self.reference_points.weight, 0, 1)

    def forward(
        self,
        bev_feat: torch.Tensor | None,
        img_feat: torch.Tensor | None,
        lidar2img: torch.Tensor | None,
        pad_hw: tuple[int, int] | None,
        gt_boxes: Sequence[torch.Tensor] | None = None,
        gt_labels: Sequence[torch.Tensor] | None = None,
    ) -> dict:
        """Run the head.

        Args:
            bev_feat: (B, in_channels, H, W) BEV features, or None without LiDAR.
            img_feat: (B, V, hidden_dim, h, w) image features, or None without cameras.
            lidar2img: (B, V, 4, 4) LiDAR → padded-image projection (needed with img_feat).
            pad_hw: padded input image size (H, W) in pixels.
            gt_boxes, gt_labels: per-sample (G_i, 9) metric boxes / (G_i,) labels; DN runs when given in training.
        Returns:
            dict with ``logits`` (L, B, Q, C), ``code`` (L, B, Q, 10) and, with DN, ``dn_logits``, ``dn_code``,
            ``dn`` (:class:`DenoisingTargets`).
        """
        cfg = self.cfg
        tokens, token_pos = [], []
        batch = None
        if bev_feat is not None:
            x = self.shared_conv(bev_feat)
            batch, _, h, w = x.shape
            tokens.append(x.flatten(2).transpose(1, 2))
            token_pos.append(self.coords.bev_pe(h, w).unsqueeze(0).expand(batch, -1, -1))
        if img_feat is not None:
            if lidar2img is None or pad_hw is None:
                raise ValueError("CmtHeadCore: image features need lidar2img and pad_hw")
            batch, v, c, h, w = img_feat.shape
            if c != cfg.hidden_dim:
                raise ValueError(f"CmtHeadCore: image features have {c} channels, expected hidden_dim {cfg.hidden_dim}")
            tokens.append(img_feat.permute(0, 1, 3, 4, 2).reshape(batch, v * h * w, c))
            token_pos.append(self.coords.image_pe(lidar2img, (h, w), pad_hw))
        if batch is None:
            raise ValueError("CmtHeadCore: both modalities are missing (bev_feat and img_feat are None)")

        anchors = self.reference_points.weight
        dn: DenoisingTargets | None = None
        mask = None
        if self.training and gt_boxes is not None and gt_labels is not None:
            refs, mask, dn = prepare_denoising(
                anchors,
                gt_boxes,
                gt_labels,
                cfg.pc_range,
                cfg.num_classes,
                cfg.scalar,
                cfg.noise_scale,
                cfg.noise_trans,
                cfg.split,
            )
        else:
            refs = anchors.unsqueeze(0).expand(batch, -1, -1)
        query_pos = self.coords.query_pe(refs, lidar2img if img_feat is not None else None, pad_hw or (1, 1))
        dec = torch.nan_to_num(self.decoder(query_pos, tokens, token_pos, mask))
        outs = self.task_head(dec)
        ref_logit = inverse_sigmoid(refs)[None]
        rng = self.coords.pc_range
        centre = (outs["center"] + ref_logit[..., :2]).sigmoid() * (rng[3:5] - rng[0:2]) + rng[0:2]
        height = (outs["height"] + ref_logit[..., 2:3]).sigmoid() * (rng[5:6] - rng[2:3]) + rng[2:3]
        code = torch.cat([centre, height, outs["dim"], outs["rot"], outs["vel"]], dim=-1)
        logits = outs["cls_logits"]
        if dn is None:
            return {"logits": logits, "code": code}
        p = dn.pad_size
        return {
            "logits": logits[:, :, p:],
            "code": code[:, :, p:],
            "dn_logits": logits[:, :, :p],
            "dn_code": code[:, :, :p],
            "dn": dn,
        }

    # ------------------------------------------------------------------ losses
    def _layer_loss(
        self,
        logits: torch.Tensor,
        code: torch.Tensor,
        gt_boxes: Sequence[torch.Tensor],
        gt_labels: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        b, q, num_classes = logits.shape
        labels = torch.full((b, q), num_classes, dtype=torch.long, device=logits.device)
        targets = code.new_zeros(b, q, 10)
        weights = code.new_zeros(b, q, 10)
        for i in range(b):
            boxes_i = gt_boxes[i].to(code.device, torch.float32)
            labels_i = gt_labels[i].to(code.device).long()
            assigned = hungarian_assign(
                logits[i].detach(),
                code[i].detach(),
                labels_i,
                boxes_i,
                cfg.code_weights,
                cfg.match_cls_weight,
                cfg.match_reg_weight,
                cfg.focal_alpha,
                cfg.focal_gamma,
                cfg.box_code_order,
            )
            pos = assigned >= 0
            if pos.any():
                labels[i, pos] = labels_i[assigned[pos]]
                targets[i, pos] = _pad_code(normalize_bbox(boxes_i[assigned[pos]], cfg.box_code_order))
                weights[i, pos] = 1.0
        num_pos = int((labels < num_classes).sum())
        num_neg = b * q - num_pos
        cls_avg = max(num_pos + 0.1 * num_neg, 1.0)
        loss_cls = sigmoid_focal_loss_sum(
            logits.reshape(-1, num_classes), labels.flatten(), num_classes, cfg.focal_alpha, cfg.focal_gamma
        )
        loss_cls = cfg.loss_cls_weight * loss_cls / cls_avg
        loss_bbox = self._l1(code, targets, weights, max(num_pos, 1))
        return torch.nan_to_num(loss_cls), torch.nan_to_num(loss_bbox)

    def _l1(self, pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, avg: float) -> torch.Tensor:
        weights = weights * pred.new_tensor(self.cfg.code_weights)
        finite = torch.isfinite(target).all(dim=-1, keepdim=True)
        diff = torch.where(finite, (pred - torch.nan_to_num(target)).abs() * weights, torch.zeros_like(pred))
        return self.cfg.loss_bbox_weight * diff.sum() / avg

    def _dn_layer_loss(
        self, logits: torch.Tensor, code: torch.Tensor, dn: DenoisingTargets
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        num_classes = logits.shape[-1]
        sel_logits = logits[dn.batch_index, dn.query_index]
        sel_code = code[dn.batch_index, dn.query_index]
        k = dn.labels.numel()
        cls_avg = max(k * 3.14159 / 6 * cfg.split**3, 1.0)  # the official constant
        loss_cls = sigmoid_focal_loss_sum(sel_logits, dn.labels, num_classes, cfg.focal_alpha, cfg.focal_gamma)
        loss_cls = cfg.loss_cls_weight * loss_cls / cls_avg
        target = _pad_code(normalize_bbox(dn.boxes.to(code.dtype), cfg.box_code_order))
        loss_bbox = self._l1(sel_code, target, torch.ones_like(sel_code), max(k, 1))
        return cfg.dn_weight * torch.nan_to_num(loss_cls), cfg.dn_weight * torch.nan_to_num(loss_bbox)

    def loss(
        self, outputs: dict, gt_boxes: Sequence[torch.Tensor], gt_labels: Sequence[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Losses named like the official head: ``loss_cls``/``loss_bbox`` for the last layer, ``d{i}.`` for the
        others, ``dn_`` for denoising."""
        losses: dict[str, torch.Tensor] = {}
        num_layers = outputs["logits"].shape[0]
        for layer in range(num_layers):
            prefix = "" if layer == num_layers - 1 else f"d{layer}."
            cls, box = self._layer_loss(outputs["logits"][layer], outputs["code"][layer], gt_boxes, gt_labels)
            losses[f"{prefix}loss_cls"], losses[f"{prefix}loss_bbox"] = cls, box
            if "dn" in outputs:
                cls, box = self._dn_layer_loss(outputs["dn_logits"][layer], outputs["dn_code"][layer], outputs["dn"])
                losses[f"{prefix}dn_loss_cls"], losses[f"{prefix}dn_loss_bbox"] = cls, box
        return losses

    @torch.no_grad()
    def decode(self, outputs: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """NMS-free top-k boxes per sample from the last layer: list of (boxes (K, 9), scores (K,), labels (K,))."""
        cfg = self.cfg
        logits, code = outputs["logits"][-1], outputs["code"][-1]
        return [
            decode_topk(logits[i], code[i], cfg.max_num, cfg.score_threshold, cfg.post_center_range, cfg.box_code_order)
            for i in range(logits.shape[0])
        ]


def _pad_code(code: torch.Tensor) -> torch.Tensor:
    """Boxes without velocity (8-dim code) get zero velocity targets."""
    if code.shape[-1] == 10:
        return code
    return torch.cat([code, code.new_zeros(*code.shape[:-1], 10 - code.shape[-1])], dim=-1)
