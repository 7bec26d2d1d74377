"""Video classifiers: a 2D backbone applied per frame (TSN, TSM or any timm model) with a GAP or TCP head.

Papers and official code:
- TCP: Gao et al., "Temporal-attentive Covariance Pooling Networks for Video Recognition", NeurIPS 2021; the
  TCP repository (``ops/models.py``, ``ops/torchvision/resnet.py``: ResNet-50 whose ``layer4`` has stride 1, so
  a 224² frame gives 14×14 features).
- TSN: Wang et al., "Temporal Segment Networks", ECCV 2016 (segment sampling, average consensus).
- TSM: Lin, Gan, Han, "TSM: Temporal Shift Module for Efficient Video Understanding", ICCV 2019; official code
  mit-han-lab/temporal-shift-module (``ops/temporal_shift.py``: 1/8 of the channels shifted one frame back,
  1/8 one frame forward, zero-padded, placed before ``conv1`` of every residual block, "blockres").

Layout: a clip batch ``(N, T, 3, H, W)`` is flattened to frames ``(N·T, 3, H, W)``, the backbone gives
``(N·T, C, h, w)``; then
- ``head="gap"``: average pooling per frame → dropout → FC → mean of the T frame scores (TSN consensus);
- ``head="tcp"``: :class:`polyzoo.video.tcp.TCPHead` → dropout → FC (video level: one representation per
  clip; frame level: per-frame scores averaged over T).

Parameter counts (tested): TSN-R50 + TCP, 400 classes, 8 frames: 27,632,208 (16 frames: 27,697,744);
TSN-R50 + GAP: 24,327,632. The temporal shift adds no parameters.

Deviations: the classifier is initialised N(0, 0.001) with zero bias as TSM's ``new_fc``; no partial BN
(the TCP recipe disables it with ``--npb``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from polyzoo.video.tcp import TCPHead

__all__ = [
    "ModelConfig",
    "TemporalShift",
    "TimmBackbone",
    "TinyConvNet",
    "TorchvisionResNet",
    "VideoClassifier",
    "build_model",
    "checkpoint_filter_fn",
    "temporal_shift",
]


def temporal_shift(x: torch.Tensor, num_frames: int, fold_div: int = 8) -> torch.Tensor:
    """TSM's shift (zero-padded): (N·T, C, H, W) → same shape. Channels [0, C/fold_div) take the next frame's
    values (shift towards the past), [C/fold_div, 2C/fold_div) the previous frame's; the rest stay."""
    nt, c, h, w = x.shape
    if nt % num_frames:
        raise ValueError(f"temporal_shift: {nt} frames is not a multiple of num_frames={num_frames}")
    v = x.view(nt // num_frames, num_frames, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = v[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = v[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Wraps a module (a block's first conv) with a temporal shift of its input (key names ``<conv>.net.*``
    as in the official TSM/TCP checkpoints)."""

    def __init__(self, net: nn.Module, num_frames: int, fold_div: int = 8):
        super().__init__()
        self.net, self.num_frames, self.fold_div = net, num_frames, fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.num_frames, self.fold_div))

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, fold_div={self.fold_div}"


class TorchvisionResNet(nn.Module):
    """Torchvision ResNet trunk (no pooling, no FC): (N·T, 3, H, W) → (N·T, C, H/s, W/s).

    Args:
        arch: "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152".
        last_stride: stride of ``layer4`` (1 as TCP: s = 16 and 14×14 features at 224²; 2: torchvision's s = 32).
        shift: insert TSM's temporal shift before ``conv1`` of every residual block (needs ``num_frames``).
        num_frames, shift_div: frames per clip and the shifted fraction 1/shift_div per direction.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        last_stride: int = 1,
        shift: bool = False,
        num_frames: int = 8,
        shift_div: int = 8,
    ):
        super().__init__()
        import torchvision

        if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            raise ValueError(f"TorchvisionResNet: unknown arch {arch!r} (expected resnet18/34/50/101/152)")
        if last_stride not in (1, 2):
            raise ValueError(f"TorchvisionResNet: last_stride must be 1 or 2, got {last_stride}")
        net = getattr(torchvision.models, arch)(weights=None)
        if last_stride == 1:
            block = net.layer4[0]
            (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        if shift:
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
                for block in layer:
                    block.conv1 = TemporalShift(block.conv1, num_frames, shift_div)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.num_features = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TimmBackbone(nn.Module):
    """Any timm 2D model's unpooled features: (N·T, 3, H, W) → (N·T, C, h, w) via ``forward_features``.

    NHWC outputs (e.g. Swin) are permuted to NCHW; token outputs (ViT) are rejected with a clear error.
    No weights are downloaded (``pretrained=False``); load a checkpoint with ``checkpoint_path``.
    """

    def __init__(self, name: str, checkpoint_path: str | None = None, **kwargs: Any):
        super().__init__()
        import timm

        self.model = timm.create_model(
            name, pretrained=False, num_classes=0, global_pool="", checkpoint_path=checkpoint_path or "", **kwargs
        )
        self.num_features = self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model.forward_features(x)
        if y.dim() != 4:
            raise ValueError(
                f"TimmBackbone: {type(self.model).__name__}.forward_features returned shape {tuple(y.shape)}; "
                "a video head needs a spatial map (N, C, h, w): use a convolutional or hierarchical model"
            )
        if y.shape[1] != self.num_features and y.shape[-1] == self.num_features:
            y = y.permute(0, 3, 1, 2)
        return y.contiguous()


class TinyConvNet(nn.Module):
    """A small CNN for quick experiments and tests: (N·T, 3, H, W) → (N·T, width·4, H/8, W/8).

    Three stages of 3×3 conv + BN + ReLU with stride 2, doubling the width.
    """

    def __init__(self, width: int = 16, in_chans: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_chans
        for c_out in (width, width * 2, width * 4):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.num_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class VideoClassifier(nn.Module):
    """Backbone per frame + GAP or TCP head + classifier.

    Input: (N, T, 3, H, W) float clips (or already-flattened (N·T, 3, H, W)). Output: (N, num_classes) logits.

    Args:
        backbone: module mapping (N·T, 3, H, W) → (N·T, C, h, w), with ``num_features`` = C.
        num_classes: classes.
        num_frames: T.
        head: "gap" (TSN average pooling + consensus) or "tcp".
        dropout: before the FC (0.5 in TCP/TSN recipes).
        tcp: keyword arguments of :class:`TCPHead` (``dim``, ``level``, ``iters``, ...).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        num_frames: int,
        head: Literal["gap", "tcp"] = "tcp",
        dropout: float = 0.5,
        tcp: dict[str, Any] | None = None,
    ):
        super().__init__()
        if head not in ("gap", "tcp"):
            raise ValueError(f"VideoClassifier: head must be 'gap' or 'tcp', got {head!r}")
        self.backbone, self.num_frames, self.head_type, self.num_classes = backbone, num_frames, head, num_classes
        c = backbone.num_features
        if head == "tcp":
            self.head: nn.Module = TCPHead(in_channels=c, num_frames=num_frames, **(tcp or {}))
            feat = self.head.out_features
        else:
            self.head = nn.AdaptiveAvgPool2d(1)
            feat = c
        self.num_features = feat
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feat, num_classes)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            if x.shape[1] != self.num_frames:
                raise ValueError(
                    f"VideoClassifier: expected clips (N, {self.num_frames}, 3, H, W), got shape {tuple(x.shape)}"
                )
            return x.flatten(0, 1)
        if x.dim() == 4 and x.shape[0] % self.num_frames == 0:
            return x
        raise ValueError(
            f"VideoClassifier: expected (N, T={self.num_frames}, 3, H, W) clips or (N*T, 3, H, W) frames, got "
            f"shape {tuple(x.shape)}"
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled representation: (N, D) for TCP at the video level; (N, T, D) for GAP and TCP at the frame level."""
        f = self.backbone(self.frames(x))
        if self.head_type == "gap":
            return self.head(f).flatten(1).view(-1, self.num_frames, f.shape[1])
        return self.head(f)

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.dropout(z))
        return logits.mean(dim=1) if logits.dim() == 3 else logits  # average consensus over frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@dataclasses.dataclass
class ModelConfig:
    """What :func:`build_model` builds (saved with runs).

    ``backbone``: "tsn_r50" (TSN ResNet-50), "tsm_r50" (TSM ResNet-50), "tsn_<torchvision resnet>" /
    "tsm_<torchvision resnet>" (e.g. "tsn_resnet18"), "tiny" (:class:`TinyConvNet`), or "timm:<name>" for any
    timm model.
    """

    backbone: str = "tsn_r50"
    num_classes: int = 400
    num_frames: int = 8
    head: str = "tcp"
    last_stride: int = 1
    tcp_dim: int = 128
    tcp_inner_dim: int = 256
    tcp_level: str = "video"
    tcp_iters: int = 3
    dropout: float = 0.5
    tiny_width: int = 16
    shift_div: int = 8


def _build_backbone(cfg: ModelConfig) -> nn.Module:
    name = cfg.backbone
    if name == "tiny":
        return TinyConvNet(cfg.tiny_width)
    if name.startswith("timm:"):
        return TimmBackbone(name.removeprefix("timm:"))
    for prefix, shift in (("tsn_", False), ("tsm_", True)):
        if name.startswith(prefix):
            arch = name.removeprefix(prefix)
            arch = {"r18": "resnet18", "r34": "resnet34", "r50": "resnet50", "r101": "resnet101"}.get(arch, arch)
            return TorchvisionResNet(arch, cfg.last_stride, shift, cfg.num_frames, cfg.shift_div)
    raise ValueError(
        f"unknown backbone {name!r}: expected 'tsn_r50', 'tsm_r50', 'tsn_resnetXX', 'tsm_resnetXX', 'tiny' or "
        "'timm:<model name>'"
    )


def build_model(cfg: ModelConfig | None = None, **overrides: Any) -> VideoClassifier:
    """Build a :class:`VideoClassifier` from a :class:`ModelConfig` (copied; ``overrides`` replace fields)."""
    cfg = dataclasses.replace(cfg or ModelConfig(), **overrides)
    tcp = {"dim": cfg.tcp_dim, "inner_dim": cfg.tcp_inner_dim, "level": cfg.tcp_level, "iters": cfg.tcp_iters}
    return VideoClassifier(
        _build_backbone(cfg), cfg.num_classes, cfg.num_frames, head=cfg.head, dropout=cfg.dropout, tcp=tcp
    )


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map key names of the official TSM/TCP checkpoints onto :class:`VideoClassifier` with a
    :class:`TorchvisionResNet` backbone.

    Official layout (TSM's ``TSN`` wrapper, DataParallel): ``module.base_model.<resnet keys>`` (the temporal
    shift wraps ``conv1`` as ``conv1.net``, the same here), the TCP module in place of the ResNet's ``avgpool``
    (``module.base_model.avgpool.<TCP keys>``), and the classifier ``module.new_fc``. Keys of other layouts
    pass through unchanged; ``load_state_dict(strict=True)`` then names any mismatch.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        k = key.removeprefix("module.")
        if k.startswith("new_fc."):
            k = "fc." + k.removeprefix("new_fc.")
        elif k.startswith("base_model.avgpool."):
            k = "head." + k.removeprefix("base_model.avgpool.")
        elif k.startswith("base_model.fc."):
            continue  # the ImageNet classifier of the backbone
        elif k.startswith("base_model."):
            k = "backbone." + k.removeprefix("base_model.")
        out[k] = value
    return out
