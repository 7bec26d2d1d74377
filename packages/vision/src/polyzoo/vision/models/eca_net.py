"""ECA-Net as timm models: ``eca_resnet18/34/50/101/152`` and ``eca_mobilenetv2``.

Paper: Q. Wang, B. Wu, P. Zhu, P. Li, W. Zuo, Q. Hu. "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020 (arXiv 1910.03151).
Official code: https://github.com/BangguWu/ECANet (``models/eca_resnet.py``, ``models/eca_mobilenetv2.py``).

Architecture. The ResNets are plain torchvision-style v1.5 ResNets (stride on the 3×3 conv, 7×7 stem, 1×1
projection shortcuts) with one ECA module (:class:`polyzoo.shared.ops.attention.ECA`) after the last BN of
each residual branch, before the residual add: exactly where timm's ResNet blocks put their ``attn_layer``,
so the models are timm :class:`~timm.models.resnet.ResNet` instances (and inherit its whole model contract:
``forward_features``, ``forward_head(pre_logits=)``, ``reset_classifier``, ``feature_info``,
``forward_intermediates``, ``features_only``). The ECA module lives at ``layerX.Y.se`` (timm's attribute
name for a block's attention; the official code calls it ``eca``).

Kernel sizes. ``k_size=None`` (default) applies the paper's adaptive formula ψ(C) (Eq. 12) to the channels
that each ECA module sees; a per-stage list ``k_size=[3, 5, 5, 7]`` gives one odd kernel per stage, as the
released checkpoints need (R18 3577, R34 3357, R50 3557, R101 3357, R152 3357; see ``OFFICIAL_KERNELS``).
MobileNetV2 uses k=1 for blocks with at most 64 output channels and k=3 above: the blocks that the current
official code selects with ``c < 96`` (the same blocks: the widths are 16, 24, 32, 64, 96, 160, 320), and the
ones the released checkpoint loads with (3,504,903 parameters). An earlier official version used ``c <= 96``,
which also gave the 96-channel blocks k=1 and does not load the released weights (official issue #22).

Deviations from the official code:
- weights are initialised as timm's ResNet does (Kaiming normal, fan-out, ReLU gain: the same distribution
  as the official N(0, √(2/n)) with n = k²·C_out), without zero-initialising the last BN of each branch.

(An earlier version of the official ``eca_resnet18`` ignored its ``k_size`` argument and always built 3,3,3,3;
the current official code honours it, as this one does.)

Official checkpoints: the pretrained config of each model (tag ``official_in1k``, the default) names the
released file, where it is published and the ``k_size`` it needs (``OFFICIAL_RELEASES``); nothing is downloaded.
With the file at hand, timm's own mechanism loads it::

    timm.create_model("eca_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file="eca_resnet50_k3557.pth.tar"))

builds the model with the release's kernels (here 3,5,5,7) and passes the checkpoint through the checkpoint
filter, which unwraps ``{"state_dict": ...}``, strips the ``module.`` (DataParallel) prefix, renames ``.eca.`` to
``.se.``, and checks the per-stage kernel sizes (an error names the ``k_size`` list to build with when they do
not match). ``checkpoint_path=`` works too, with ``k_size`` given by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from polyzoo.shared.ops.attention import ECA, eca_kernel_size
from polyzoo.vision.models._checkpoint import resolve_official_cfg, strip_prefixes

__all__ = [
    "OFFICIAL_KERNELS",
    "OFFICIAL_RELEASES",
    "EcaMobileNetV2",
    "EcaResNet",
    "eca_kernels_from_state_dict",
    "eca_mobilenetv2_checkpoint_filter",
    "eca_resnet_checkpoint_filter",
]

# Per-stage kernel sizes of the released ECA-ResNet checkpoints (README of BangguWu/ECANet).
OFFICIAL_KERNELS: dict[str, tuple[int, int, int, int]] = {
    "eca_resnet18": (3, 5, 7, 7),
    "eca_resnet34": (3, 3, 5, 7),
    "eca_resnet50": (3, 5, 5, 7),
    "eca_resnet101": (3, 3, 5, 7),
    "eca_resnet152": (3, 3, 5, 7),
}

# The released ImageNet checkpoints (README of BangguWu/ECANet: Google Drive and Baidu Pan links, not fetched here).
OFFICIAL_RELEASES: dict[str, str] = {
    "eca_resnet18": "eca_resnet18_k3577.pth.tar",
    "eca_resnet34": "eca_resnet34_k3357.pth.tar",
    "eca_resnet50": "eca_resnet50_k3557.pth.tar",
    "eca_resnet101": "eca_resnet101_k3357.pth.tar",
    "eca_resnet152": "eca_resnet152_k3357.pth.tar",
    "eca_mobilenetv2": "eca_mobilenetv2_k13.pth.tar",
}
_SOURCE = "BangguWu/ECANet README (Google Drive / Baidu Pan links; polyzoo downloads nothing)"

_ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "eca_resnet18": (BasicBlock, (2, 2, 2, 2)),
    "eca_resnet34": (BasicBlock, (3, 4, 6, 3)),
    "eca_resnet50": (Bottleneck, (3, 4, 6, 3)),
    "eca_resnet101": (Bottleneck, (3, 4, 23, 3)),
    "eca_resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def _stage_eca(kernels: Mapping[int, int], channels: int, **_: Any) -> ECA:
    """ECA for a block with ``channels`` outputs, its kernel looked up per stage (channels differ per stage)."""
    return ECA(channels, kernel_size=kernels[channels])


def _parse_k_size(k_size: Sequence[int | str] | str | int | None) -> list[int] | None:
    """Accept [3, 5, 5, 7], "3557" or ['3', '5', '5', '7'] (the official ``--ksize`` arrives as a list of
    characters); None keeps the adaptive formula."""
    if k_size is None:
        return None
    if isinstance(k_size, int):
        return [k_size] * 4
    ks = [int(k) for k in (list(k_size) if isinstance(k_size, str) else k_size)]
    if len(ks) != 4 or any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(f"k_size must be four positive odd kernel sizes, one per stage, got {k_size!r}")
    return ks


class EcaResNet(ResNet):
    """A timm ResNet with ECA in every residual block.

    Args:
        block: timm ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        k_size: None for the adaptive kernel ψ(C) of each block's channels, or four odd kernels, one per stage.
        **kwargs: the other arguments of :class:`timm.models.resnet.ResNet` (``num_classes``, ``in_chans``,
            ``drop_rate``, ``drop_path_rate``, ``global_pool``, ``output_stride``, ...).

    Shape: (B, in_chans, H, W) → logits (B, num_classes); ``forward_features`` gives (B, C, H/32, W/32).
    """

    def __init__(
        self,
        block: type[nn.Module],
        layers: Sequence[int],
        k_size: Sequence[int | str] | str | int | None = None,
        **kwargs: Any,
    ):
        ks = _parse_k_size(k_size)
        expansion = block.expansion
        if ks is None:
            attn: Callable[..., nn.Module] = partial(_adaptive_eca)
        else:
            kernels = {64 * (2**i) * expansion: k for i, k in enumerate(ks)}
            attn = partial(_stage_eca, kernels)
        block_args = dict(kwargs.pop("block_args", None) or {})
        block_args["attn_layer"] = attn
        kwargs.setdefault("zero_init_last", False)
        super().__init__(block, tuple(layers), block_args=block_args, **kwargs)
        self.k_size = ks if ks is not None else [eca_kernel_size(64 * (2**i) * expansion) for i in range(4)]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load our own state dicts or the official ECANet layout (see :func:`eca_resnet_checkpoint_filter`)."""
        return super().load_state_dict(eca_resnet_checkpoint_filter(state_dict, self), strict=strict, assign=assign)


def _adaptive_eca(channels: int, **_: Any) -> ECA:
    return ECA(channels)


def eca_kernels_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    """Per-stage ECA kernel sizes stored in an ECA-ResNet state dict (official or ours), e.g. [3, 5, 5, 7]."""
    kernels: dict[int, int] = {}
    for key, value in state_dict.items():
        m = re.search(r"layer(\d)\.\d+\.(?:eca|se)\.conv\.weight$", key)
        if m:
            kernels.setdefault(int(m.group(1)), int(value.shape[-1]))
    if sorted(kernels) != [1, 2, 3, 4]:
        raise ValueError(f"no ECA kernels for all four stages in this state dict (found stages {sorted(kernels)})")
    return [kernels[i] for i in range(1, 5)]


def eca_resnet_checkpoint_filter(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """Map an official ECANet ResNet state dict onto :class:`EcaResNet` (idempotent on our own keys).

    - unwraps ``{"state_dict": ...}``/``{"model": ...}`` and strips the ``module.`` prefix (official issue #43);
    - ``layerX.Y.eca.conv.weight`` → ``layerX.Y.se.conv.weight``;
    - checks the per-stage ECA kernels against the model's and raises a ``ValueError`` naming the ``k_size``
      to build with when they differ (the official checkpoints use e.g. 3557 for R50, not the formula).
    """
    sd = strip_prefixes(state_dict)
    out = {re.sub(r"\.eca\.conv\.weight$", ".se.conv.weight", k): v for k, v in sd.items()}
    if any(k.endswith(".se.conv.weight") for k in out):
        own = model.state_dict()
        for key, value in out.items():
            if key.endswith(".se.conv.weight") and key in own and own[key].shape != value.shape:
                theirs = eca_kernels_from_state_dict(out)
                raise ValueError(
                    f"checkpoint ECA kernel at {key} is {value.shape[-1]} but the model has {own[key].shape[-1]}: "
                    f"the checkpoint's per-stage kernels are {theirs}; build the model with k_size={theirs}"
                )
    return out


def _pretrained_setup(variant: str, pretrained: bool, kwargs: dict[str, Any]) -> None:
    """For ``pretrained=True``: check that a file (or state dict) was given, since nothing is downloaded, and build
    an official release's model with the kernels that release needs (unless ``k_size`` is given)."""
    if not pretrained:
        return
    cfg = resolve_official_cfg(variant, kwargs, f"{OFFICIAL_RELEASES[variant]} ({_SOURCE})")
    if cfg.get("tag", "").startswith("official") and variant in OFFICIAL_KERNELS:
        kwargs.setdefault("k_size", list(OFFICIAL_KERNELS[variant]))


def _create_eca_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    _pretrained_setup(variant, pretrained, kwargs)
    block, layers = _ARCHS[variant]
    return build_model_with_cfg(
        partial(EcaResNet, block, layers),
        variant,
        pretrained,
        pretrained_filter_fn=eca_resnet_checkpoint_filter,
        **kwargs,
    )


class _ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class EcaInvertedResidual(nn.Module):
    """MobileNetV2 inverted residual with ECA after the pw-linear BN (official ``InvertedResidual``).

    Layout of ``self.conv`` (kept for checkpoint compatibility): [pw (if expand)], dw, pw-linear conv, BN, ECA.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: float, k_size: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"EcaInvertedResidual: stride must be 1 or 2, got {stride}")
        hidden = round(cin * expand_ratio)
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_ConvBNReLU6(cin, hidden, kernel_size=1))
        layers += [
            _ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
            ECA(cout, kernel_size=k_size),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# t (expansion), c (channels), n (blocks), s (first stride): MobileNetV2 Table 2.
_MBV2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class EcaMobileNetV2(nn.Module):
    """ECA-MobileNetV2 (width 1.0) following timm's model contract.

    Args:
        num_classes: classifier outputs (0 for none).
        in_chans: input channels.
        drop_rate: dropout before the classifier (official: 0.25).
        eca_threshold: blocks with at most this many output channels get k=1, the others k=3.

    Shape: (B, in_chans, H, W) → (B, num_classes); ``forward_features``: (B, 1280, H/32, W/32).
    """

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.25, eca_threshold: int = 64, **_: Any
    ):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = 1280
        features: list[nn.Module] = [_ConvBNReLU6(in_chans, 32, stride=2)]
        self.feature_info: list[dict[str, Any]] = []
        cin, reduction = 32, 2
        for t, c, n, s in _MBV2_SETTING:
            if s == 2:  # record the last block before each downsampling
                self.feature_info.append(dict(num_chs=cin, reduction=reduction, module=f"features.{len(features) - 1}"))
                reduction *= 2
            for i in range(n):
                k = 1 if c <= eca_threshold else 3
                features.append(EcaInvertedResidual(cin, c, s if i == 0 else 1, t, k))
                cin = c
        self.feature_info.append(dict(num_chs=cin, reduction=reduction, module=f"features.{len(features) - 1}"))
        features.append(_ConvBNReLU6(cin, self.num_features, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )
        self.grad_checkpointing = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^features\.0\.", blocks=r"^features\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier[1]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (``num_classes=0``: none; ``forward`` then returns pooled features)."""
        if global_pool not in (None, "avg", ""):
            raise ValueError(f"EcaMobileNetV2 supports global_pool 'avg' only, got {global_pool!r}")
        self.num_classes = num_classes
        self.classifier[1] = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, 1280, H/32, W/32)."""
        if self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models import checkpoint_seq

            return checkpoint_seq(self.features, x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, 1280, h, w) → pooled (B, 1280) when ``pre_logits``, else logits (B, num_classes)."""
        x = x.mean((2, 3))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load our own state dicts or the official layout (``module.`` prefix stripped)."""
        return super().load_state_dict(
            eca_mobilenetv2_checkpoint_filter(state_dict, self), strict=strict, assign=assign
        )


def eca_mobilenetv2_checkpoint_filter(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """The official ECA-MobileNetV2 keys equal ours once the ``module.`` prefix is removed; a kernel-size
    mismatch (e.g. a model built with ``eca_threshold=96``, the earlier official ``c <= 96``) is reported with
    the fix."""
    out = strip_prefixes(state_dict)
    own = model.state_dict()
    for key, value in out.items():
        if key in own and key.endswith(".conv.weight") and own[key].dim() == 3 and own[key].shape != value.shape:
            raise ValueError(
                f"checkpoint ECA kernel at {key} is {value.shape[-1]} but the model has {own[key].shape[-1]}: "
                "adjust eca_threshold (blocks with at most this many channels use k=1)"
            )
    return out


def _create_eca_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> EcaMobileNetV2:
    _pretrained_setup(variant, pretrained, kwargs)
    return build_model_with_cfg(
        EcaMobileNetV2,
        variant,
        pretrained,
        pretrained_filter_fn=eca_mobilenetv2_checkpoint_filter,
        feature_cfg=dict(flatten_sequential=True),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


def _official_cfg(variant: str, **kwargs: Any) -> dict[str, Any]:
    """The pretrained config of an official release: no ``url``/``file`` (nothing downloads); the release is named
    in ``description``/``notes`` (file, source, the ``k_size`` it needs)."""
    kernels = OFFICIAL_KERNELS.get(variant)
    k_note = f"k_size: {list(kernels)}" if kernels else "k_size: 1 up to 64 channels, 3 above (eca_threshold=64)"
    return _cfg(
        description=f"official ImageNet-1k weights {OFFICIAL_RELEASES[variant]}",
        notes=(f"file: {OFFICIAL_RELEASES[variant]}", f"source: {_SOURCE}", k_note),
        origin_url="https://github.com/BangguWu/ECANet",
        paper_ids="arXiv:1910.03151",
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        "eca_resnet18.official_in1k": _official_cfg("eca_resnet18"),
        "eca_resnet34.official_in1k": _official_cfg("eca_resnet34"),
        "eca_resnet50.official_in1k": _official_cfg("eca_resnet50"),
        "eca_resnet101.official_in1k": _official_cfg("eca_resnet101"),
        "eca_resnet152.official_in1k": _official_cfg("eca_resnet152"),
        "eca_mobilenetv2.official_in1k": _official_cfg(
            "eca_mobilenetv2", first_conv="features.0.0", classifier="classifier.1"
        ),
    }
)


@register_model
def eca_resnet18(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-18. Official checkpoint kernels 3,5,7,7: 11,689,556 params, top-1 70.92."""
    return _create_eca_resnet("eca_resnet18", pretrained, **kwargs)


@register_model
def eca_resnet34(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-34. Official checkpoint kernels 3,3,5,7: 21,797,744 params, top-1 74.21."""
    return _create_eca_resnet("eca_resnet34", pretrained, **kwargs)


@register_model
def eca_resnet50(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-50. Official checkpoint kernels 3,5,5,7: 25,557,112 params (ECA adds 80), top-1 77.42."""
    return _create_eca_resnet("eca_resnet50", pretrained, **kwargs)


@register_model
def eca_resnet101(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-101. Official checkpoint kernels 3,3,5,7: 44,549,317 params, top-1 78.65."""
    return _create_eca_resnet("eca_resnet101", pretrained, **kwargs)


@register_model
def eca_resnet152(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-152. Official checkpoint kernels 3,3,5,7: 60,193,042 params, top-1 78.92."""
    return _create_eca_resnet("eca_resnet152", pretrained, **kwargs)


@register_model
def eca_mobilenetv2(pretrained: bool = False, **kwargs: Any) -> EcaMobileNetV2:
    """ECA-MobileNetV2 (k=1 up to 64 channels, k=3 above): 3,504,903 params, top-1 72.56."""
    return _create_eca_mobilenetv2("eca_mobilenetv2", pretrained, **kwargs)
