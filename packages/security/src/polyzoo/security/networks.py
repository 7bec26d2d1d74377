"""Networks of the dataset-distillation literature, as used by the backdoor attacks against dataset distillation.

Paper: Liu, Li, Backes, Shen, Zhang, "Backdoor Attacks Against Dataset Distillation", NDSS 2023 (arXiv 2301.01197).
Official code: https://github.com/liuyugeng/baadd (``DC/networks.py``), itself based on
https://github.com/VICO-UoE/DatasetCondensation (``networks.py``).

- :class:`ConvNet`: ``depth`` blocks of [3×3 conv (width 128) → norm → ReLU → 2×2 average pooling]. The first
  convolution pads by 3 for one-channel inputs (so a 28×28 image maps to 32×32), as in both official codes.
  ``classifier="mlp"`` is the attack code's head ``Linear(feat, 192) → ReLU → Linear(192, C)``;
  ``classifier="linear"`` is the original DC single ``Linear(feat, C)``. ``norm`` is ``"none"`` (the attack code's
  class default), ``"instancenorm"`` (DC's default; ``GroupNorm(C, C)``), ``"groupnorm"`` (4 groups) or
  ``"layernorm"``.
- :class:`AlexNet`: the small AlexNet of ``DC/networks.py`` (two 5×5 convs with 64 channels, local response
  normalisation, max pooling, classifier 384 → 192 → C). Its flattened feature size is computed from the input
  size instead of hard-coding 4096 (which is its value at 32×32).

Deviation: the feature size is computed from ``im_size`` for any input size (the official code special-cases 28).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AlexNet", "ConvNet", "get_network"]


def _norm_layer(norm: str, channels: int, h: int, w: int) -> nn.Module | None:
    if norm == "none":
        return None
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if norm == "layernorm":
        return nn.LayerNorm([channels, h, w], elementwise_affine=True)
    raise ValueError(f"ConvNet norm must be one of none|instancenorm|groupnorm|layernorm, got {norm!r}")


class ConvNet(nn.Module):
    """The distillation ConvNet. Input ``(B, channel, H, W)`` → logits ``(B, num_classes)``.

    ``embed(x)`` returns the flattened features ``(B, width·h·w)`` used by distribution matching.
    """

    def __init__(
        self,
        channel: int,
        num_classes: int,
        width: int = 128,
        depth: int = 3,
        norm: str = "none",
        pooling: str = "avgpooling",
        im_size: tuple[int, int] = (32, 32),
        classifier: str = "mlp",
    ) -> None:
        super().__init__()
        if pooling not in ("avgpooling", "maxpooling", "none"):
            raise ValueError(f"ConvNet pooling must be avgpooling|maxpooling|none, got {pooling!r}")
        layers: list[nn.Module] = []
        c, (h, w) = channel, im_size
        for d in range(depth):
            pad = 3 if channel == 1 and d == 0 else 1
            layers.append(nn.Conv2d(c, width, kernel_size=3, padding=pad))
            h, w, c = h + 2 * pad - 2, w + 2 * pad - 2, width
            norm_layer = _norm_layer(norm, c, h, w)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.ReLU(inplace=True))
            if pooling != "none":
                layers.append(nn.AvgPool2d(2, 2) if pooling == "avgpooling" else nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(f"ConvNet depth {depth} is too deep for input size {im_size}")
        self.features = nn.Sequential(*layers)
        self.num_features = c * h * w
        if classifier == "mlp":
            self.classifier = nn.Sequential(
                nn.Linear(self.num_features, 192), nn.ReLU(inplace=True), nn.Linear(192, num_classes)
            )
        elif classifier == "linear":
            self.classifier = nn.Linear(self.num_features, num_classes)
        else:
            raise ValueError(f"ConvNet classifier must be 'mlp' or 'linear', got {classifier!r}")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class AlexNet(nn.Module):
    """The small AlexNet of the DC/attack code. Input ``(B, channel, H, W)`` → logits ``(B, num_classes)``."""

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channel, 64, kernel_size=5, stride=1, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.LocalResponseNorm(4, alpha=0.001 / 9.0, beta=0.75, k=1),
            nn.Conv2d(64, 64, kernel_size=5, stride=1, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(4, alpha=0.001 / 9.0, beta=0.75, k=1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        h, w = im_size
        for _ in range(2):
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        self.num_features = 64 * h * w
        self.classifier = nn.Sequential(
            nn.Linear(self.num_features, 384),
            nn.ReLU(inplace=True),
            nn.Linear(384, 192),
            nn.ReLU(inplace=True),
            nn.Linear(192, num_classes),
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def get_network(
    name: str, channel: int, num_classes: int, im_size: tuple[int, int], norm: str = "none", width: int = 128
) -> nn.Module:
    """Build ``convnet`` (attack code's head), ``convnet-linear`` (DC's single linear head) or ``alexnet``."""
    key = name.lower()
    if key == "convnet":
        return ConvNet(channel, num_classes, width=width, norm=norm, im_size=im_size, classifier="mlp")
    if key == "convnet-linear":
        return ConvNet(channel, num_classes, width=width, norm=norm, im_size=im_size, classifier="linear")
    if key == "alexnet":
        return AlexNet(channel, num_classes, im_size=im_size)
    raise ValueError(f"unknown network {name!r}; expected convnet, convnet-linear or alexnet")
