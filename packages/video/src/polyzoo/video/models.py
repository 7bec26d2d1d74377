"""Video classifiers: a 2D backbone applied per frame (TSN, TSM or any timm model) with a GAP or TCP head.

Papers and official code:
- TCP: Gao et al., "Temporal-attentive Covariance Pooling Networks for Video Recognition", NeurIPS 2021; the
  TCP repository (``ops/models.py``, ``ops/torchvision/resnet.py``: ResNet-50 whose ``layer4`` has stride 1, so
  a 224² frame gives 14×14 features).
- TSN: Wang et al., "Temporal Segment Networks", ECCV 2016 (segment sampling, average consensus).
- TSM: Lin, Gan, Han, "TSM: Temporal Shift Module for Efficient Video Understanding", ICCV 2019; official code
  mit-han-lab/temporal-shift-module (``ops/temporal_shift.py``: 1/8 of the channels shifted one frame back,
  1/8 one frame forward, zero-padded, placed before ``conv1`` of every residual block, "blockres"; of every
  other block for ResNet-101/152, whose ``layer3`` has 23 or more blocks).

Layout: a clip batch ``(N, T, 3, H, W)`` is flattened to frames ``(N·T, 3, H, W)``, the backbone gives
``(N·T, C, h, w)``; then
- ``head="gap"``: average pooling per frame → dropout → FC → mean of the T frame scores (TSN consensus);
- ``head="tcp"``: :class:`polyzoo.video.tcp.TCPHead` → dropout → FC (video level: one representation per
  clip; frame level: per-frame scores averaged over T).

Parameter counts (tested): TSN-R50 + TCP, 400 classes, 8 frames: 27,632,208 (16 frames: 27,697,744);
TSN-R50 + GAP: 24,327,632. The temporal shift adds no parameters.

Official checkpoints (TCP repository, TSM repository; every layout is listed in :func:`checkpoint_filter_fn`)
load through :func:`checkpoint_filter_fn`; :func:`load_official` builds the model a checkpoint file describes
(:func:`config_from_checkpoint`) and loads it strictly; ``polyzoo video eval --checkpoint FILE`` and
``polyzoo video predict --checkpoint FILE`` use it.

Deviations: the classifier is initialised N(0, 0.001) with zero bias as TSM's ``new_fc``; no partial BN
(the TCP recipe disables it with ``--npb``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
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
    "config_from_checkpoint",
    "load_official",
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
        shift: insert TSM's temporal shift before ``conv1`` of residual blocks (needs ``num_frames``): every block,
            or, as TSM's ``make_temporal_shift`` ("blockres"), every other block (indices 0, 2, ...) of every stage
            when ``layer3`` has 23 or more blocks (ResNet-101/152).
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
            n_round = 2 if len(net.layer3) >= 23 else 1
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
                for i, block in enumerate(layer):
                    if i % n_round == 0:
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


# Older official TCP checkpoints (before the module was renamed TCP) store it as ``iSQRT`` with other sub-module
# names; the TCP repository's ``ops/keys_mapping.py`` renames them. Ordered: the longer names first.
_OLD_TCP_NAMES = (
    ("att_module.conv_1d.", "TCP_att.conv_1d."),
    ("att_module.conv_1.", "TCP_att.TCA.g1."),
    ("att_module.conv_2.", "TCP_att.TCA.g2."),
    ("att_module.sp_att.conv_theta.", "TCP_att.TSA.conv_phi_1."),
    ("att_module.sp_att.conv_phi.", "TCP_att.TSA.conv_phi_2."),
    ("att_module.sp_att.conv_g.", "TCP_att.TSA.conv_phi0."),
    ("att_module.sp_att.", "TCP_att.TSA."),
    ("att_module.", "TCP_att."),
    ("layer_reduce1.0.", "layer_reduce1."),  # the reductions as nn.Sequential(conv, BN, ReLU)
    ("layer_reduce1.1.", "layer_reduce_bn1."),
    ("layer_reduce2.0.", "layer_reduce2."),
    ("layer_reduce2.1.", "layer_reduce_bn2."),
)

# where the official layouts keep the TCP module, relative to the TSN wrapper's ``base_model``
_TCP_PREFIXES = ("TCP.", "layer4.iSQRT.", "iSQRT.")


def _tcp_key(name: str) -> str:
    for old, new in _OLD_TCP_NAMES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("state_dict", "model"):
        inner = state_dict.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            return inner
    return state_dict


def checkpoint_filter_fn(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map an official TCP (or TSM) video checkpoint onto :class:`VideoClassifier` with a
    :class:`TorchvisionResNet` backbone (TSN or TSM) and the TCP or GAP head.

    Accepted layouts (each with or without DataParallel's ``module.`` prefix, as a bare state dict or inside
    the ``{"state_dict": ...}`` that the official ``main.py`` saves):

    - the TCP repository's current layout (``ops/models.py`` ``TSN`` → ``base_model`` = the repository's
      ResNet, which holds the TCP module as its attribute ``TCP``): ``base_model.{conv1,bn1,layer1..4}.*``,
      ``base_model.TCP.{layer_reduce1,layer_reduce_bn1,layer_reduce2,layer_reduce_bn2}.*``,
      ``base_model.TCP.TCP_att.{TSA.{conv_phi0,conv_phi_1,conv_phi_2,norm},TCA.{g1,g2},conv_1d}.*`` and the
      classifier ``new_fc.*`` (``base_model.fc.*`` when the model was built with dropout 0, which makes
      ``fc`` the classifier instead of ``new_fc``);
    - older TCP checkpoints (mapped as the repository's ``ops/keys_mapping.py`` does): the module at
      ``base_model.layer4.iSQRT.`` (ResNet-50) or ``base_model.iSQRT.`` (the TEA / pre-activation ResNet-152
      scripts), with ``att_module.conv_1/conv_2`` (TCA ``g1/g2``), ``att_module.sp_att.conv_theta/conv_phi/
      conv_g`` (TSA ``conv_phi_1/conv_phi_2/conv_phi0``), ``att_module.sp_att.*`` (TSA), ``att_module.*``
      (``conv_1d``) and the reductions as ``layer_reduceN.0`` (conv) / ``layer_reduceN.1`` (BN);
    - TSM's layout (mit-han-lab/temporal-shift-module; also TSN/TSM with the GAP head): the same
      ``base_model.*`` / ``new_fc.*`` names, the temporal shift wrapping ``conv1`` as ``conv1.net``;
    - this package's own keys (``backbone.*``, ``head.*``, ``fc.*``) pass through unchanged.

    The backbones of TEA-R50 and of the pre-activation ResNet-152 (TCP's TSN-R152) are not implemented here:
    the latter (``base_model.bn_data``) raises a ``ValueError``; their TCP modules map as above, and the
    backbone mismatch is named by ``load_state_dict(strict=True)``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in _unwrap(state_dict).items():
        k = key.removeprefix("module.")
        if k.startswith("new_fc."):
            k = "fc." + k.removeprefix("new_fc.")
        elif k.startswith("base_model."):
            k = k.removeprefix("base_model.")
            if k.startswith("bn_data."):
                raise ValueError(
                    f"checkpoint key {key!r}: a pre-activation ResNet-152 backbone (TCP's TSN-R152), which polyzoo "
                    "does not implement (supported: TSN/TSM torchvision ResNets with the TCP or GAP head)"
                )
            tcp = next((p for p in _TCP_PREFIXES if k.startswith(p)), None)
            if tcp is not None:
                k = "head." + _tcp_key(k.removeprefix(tcp))
            elif k.startswith("fc."):
                k = "fc." + k.removeprefix("fc.")  # the classifier of a model built with dropout 0
            else:
                k = "backbone." + k
        out[k] = value
    return out


def config_from_checkpoint(state_dict: Mapping[str, Any], num_frames: int | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of an official (or converted) TSN/TSM checkpoint, read from its tensors.

    Read: classes (classifier rows), head (TCP if it has TCP keys, else GAP), TCP's reduced and inner
    dimensions, temporal shift (``conv1.net`` keys: TSM) and the ResNet depth (blocks per stage, bottleneck or
    basic). Frames: ``num_frames`` when given, else from the temporal kernel k = T//2 + 1 as T = 2(k − 1)
    (the official 8 and 16 frames); a checkpoint without the temporal convolution needs ``num_frames``.
    ``last_stride`` is 1 (the TCP repository's ResNet) for the TCP head, 2 (torchvision's, TSM) for GAP.
    """
    sd = checkpoint_filter_fn(state_dict)
    if "fc.weight" not in sd:
        raise ValueError("checkpoint has no classifier (new_fc.weight / fc.weight): not a video classifier")
    tcp = any(k.startswith("head.") for k in sd)
    blocks = [
        1 + max((int(k.split(".")[2]) for k in sd if k.startswith(f"backbone.layer{i}.")), default=-1)
        for i in range(1, 5)
    ]
    bottleneck = any(k.startswith("backbone.layer1.0.conv3.") for k in sd)
    archs = {
        (False, (2, 2, 2, 2)): "resnet18",
        (False, (3, 4, 6, 3)): "resnet34",
        (True, (3, 4, 6, 3)): "resnet50",
        (True, (3, 4, 23, 3)): "resnet101",
        (True, (3, 8, 36, 3)): "resnet152",
    }
    arch = archs.get((bottleneck, tuple(blocks)))
    if arch is None:
        raise ValueError(
            f"checkpoint backbone has {blocks} blocks per stage: not a torchvision ResNet-18/34/50/101/152"
        )
    shift = any(".conv1.net." in k for k in sd)
    cfg = ModelConfig(
        backbone=("tsm_" if shift else "tsn_") + arch,
        num_classes=int(sd["fc.weight"].shape[0]),
        head="tcp" if tcp else "gap",
        last_stride=1 if tcp else 2,
    )
    frames = num_frames
    if tcp:
        cfg.tcp_dim = int(sd["head.layer_reduce2.weight"].shape[0])
        cfg.tcp_inner_dim = int(sd["head.layer_reduce1.weight"].shape[0])
        conv = sd.get("head.TCP_att.conv_1d.weight")
        if conv is not None:
            k = int(conv.shape[2])
            if frames is None:
                frames = 2 * (k - 1)
            elif frames // 2 + 1 != k:
                raise ValueError(
                    f"num_frames={frames} needs a temporal kernel of {frames // 2 + 1}; the checkpoint's is {k}"
                )
    if frames is None:
        if tcp:
            raise ValueError("checkpoint has no temporal convolution to read the frame count from: give num_frames")
        frames = 8
    cfg.num_frames = frames
    return cfg


def load_official(path: str | Path, num_frames: int | None = None) -> tuple[VideoClassifier, ModelConfig]:
    """Build the model an official TCP/TSM checkpoint file describes (:func:`config_from_checkpoint`) and load
    it strictly through :func:`checkpoint_filter_fn`. The file is read with ``torch.load(weights_only=True)``;
    ``.safetensors`` files are read with safetensors. Returns the model in eval mode and its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: Mapping[str, Any] = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a state dict (or {{'state_dict': ...}}), got {type(raw).__name__}")
    cfg = config_from_checkpoint(raw, num_frames)
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(checkpoint_filter_fn(raw), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match {cfg.backbone}: missing {missing}, unexpected {unexpected}")
    return model.eval(), cfg
