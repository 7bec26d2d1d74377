"""VoVNet (V-19-slim … V-99, with effective squeeze-excitation) and PETR's CPFPN, plain PyTorch.

Papers: Lee & Park, "CenterMask: Real-Time Anchor-Free Instance Segmentation" (VoVNetV2: identity mapping + eSE),
CVPR 2020; used by CMT (ICCV 2023) as V-99-eSE. Official code: https://github.com/youngwanLEE/vovnet-detectron2,
and CMT/PETR's ``models/backbones/vovnet.py`` / ``models/necks/cp_fpn.py``.

A one-shot-aggregation (OSA) block runs ``layer_per_block`` 3×3 conv-BN-ReLU layers in sequence, concatenates the
block input with every layer output, fuses them with a 1×1 conv-BN-ReLU, applies eSE (global pool → 1×1 conv →
hard sigmoid gate) and, for all but a stage's first block, adds the block input. Stages 3–5 start with a 3×3/2 max
pool (ceil mode). Strides: stage2 4, stage3 8, stage4 16, stage5 32.

``frozen_stages`` and ``norm_eval`` of the official backbone live in the mmdet3d wrapper
(:class:`polyzoo.detection.cmt.mmdet3d_plugin.VoVNet`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

VOVNET_SPECS: dict[str, dict] = {
    "V-19-slim-eSE": {
        "stem": (64, 64, 128),
        "stage_conv_ch": (64, 80, 96, 112),
        "stage_out_ch": (112, 256, 384, 512),
        "layer_per_block": 3,
        "block_per_stage": (1, 1, 1, 1),
    },
    "V-39-eSE": {
        "stem": (64, 64, 128),
        "stage_conv_ch": (128, 160, 192, 224),
        "stage_out_ch": (256, 512, 768, 1024),
        "layer_per_block": 5,
        "block_per_stage": (1, 1, 2, 2),
    },
    "V-99-eSE": {
        "stem": (64, 64, 128),
        "stage_conv_ch": (128, 160, 192, 224),
        "stage_out_ch": (256, 512, 768, 1024),
        "layer_per_block": 5,
        "block_per_stage": (1, 3, 9, 3),
    },
}


def _conv_bn_relu(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class EffectiveSE(nn.Module):
    """eSE: x · hsigmoid(W · avgpool(x)) with a single C→C 1×1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class OSABlock(nn.Module):
    def __init__(self, c_in: int, c_stage: int, c_out: int, num_layers: int, identity: bool) -> None:
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList([_conv_bn_relu(c_in if i == 0 else c_stage, c_stage) for i in range(num_layers)])
        self.concat = _conv_bn_relu(c_in + num_layers * c_stage, c_out, k=1)
        self.ese = EffectiveSE(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        y = x
        for layer in self.layers:
            y = layer(y)
            outs.append(y)
        y = self.ese(self.concat(torch.cat(outs, dim=1)))
        return y + x if self.identity else y


class VoVNetCore(nn.Module):
    """VoVNet backbone. ``out_features`` ⊆ {stem, stage2, …, stage5}; returns a tuple in that order."""

    def __init__(
        self, spec: str = "V-99-eSE", in_channels: int = 3, out_features: Sequence[str] = ("stage4", "stage5")
    ):
        super().__init__()
        if spec not in VOVNET_SPECS:
            raise ValueError(f"VoVNet spec {spec!r} unknown; choose one of {sorted(VOVNET_SPECS)}")
        s = VOVNET_SPECS[spec]
        stem = s["stem"]
        self.stem = nn.Sequential(
            _conv_bn_relu(in_channels, stem[0], stride=2),
            _conv_bn_relu(stem[0], stem[1]),
            _conv_bn_relu(stem[1], stem[2], stride=2),
        )
        self.out_features = tuple(out_features)
        self.stage_names = [f"stage{i + 2}" for i in range(4)]
        unknown = set(self.out_features) - {"stem", *self.stage_names}
        if unknown:
            raise ValueError(f"VoVNet out_features {sorted(unknown)} unknown; use stem or stage2..stage5")
        c_in = stem[2]
        self.out_channels: dict[str, int] = {"stem": stem[2]}
        for i, name in enumerate(self.stage_names):
            blocks: list[nn.Module] = [nn.MaxPool2d(3, 2, ceil_mode=True)] if i > 0 else []
            for b in range(s["block_per_stage"][i]):
                blocks.append(
                    OSABlock(c_in, s["stage_conv_ch"][i], s["stage_out_ch"][i], s["layer_per_block"], identity=b > 0)
                )
                c_in = s["stage_out_ch"][i]
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = c_in

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = {}
        x = self.stem(x)
        feats["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            feats[name] = x
        return tuple(feats[n] for n in self.out_features)


class CPFPNCore(nn.Module):
    """PETR's CPFPN: an FPN (1×1 laterals, top-down nearest upsampling and addition) whose 3×3 output conv exists
    only for the finest level; coarser levels return their lateral sums. (N_i, C_i, H_i, W_i) → C_out each."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int | None = None) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, out_channels, 1) for c in in_channels])
        self.fpn_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.num_outs = num_outs or len(in_channels)
        if self.num_outs > len(in_channels):
            raise ValueError(f"CPFPN: num_outs {self.num_outs} > number of inputs {len(in_channels)}")

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        lats = [conv(x) for conv, x in zip(self.lateral, inputs, strict=True)]
        for i in range(len(lats) - 1, 0, -1):
            lats[i - 1] = lats[i - 1] + F.interpolate(lats[i], size=lats[i - 1].shape[-2:], mode="nearest")
        outs = [self.fpn_conv(lats[0]), *lats[1:]]
        return tuple(outs[: self.num_outs])
