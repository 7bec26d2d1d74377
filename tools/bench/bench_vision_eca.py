"""ECA (polyzoo.shared) vs timm's EcaModule vs squeeze-excitation (r = 16), forward+backward, float32, batch 32,
on the four ResNet-50 stage output shapes. Anchor: timm ``EcaModule`` with the same kernel size."""

from __future__ import annotations

import torch
from timm.layers import EcaModule

from polyzoo.shared.ops.attention import ECA, SqueezeExcite, eca_kernel_size
from polyzoo.shared.timing import time_interleaved

SHAPES = ((256, 56), (512, 28), (1024, 14), (2048, 7))


def _fwd_bwd(module: torch.nn.Module, x: torch.Tensor):
    def step():
        xi = x.detach().requires_grad_()
        module(xi).sum().backward()

    return step


def run(quick: bool = False) -> str:
    batch, repeats = (8, 3) if quick else (32, 10)
    lines = [
        f"batch {batch}, forward+backward, median of {repeats} interleaved rounds",
        "",
        "| C×H×W | k | polyzoo ECA ms | timm EcaModule ms | SE (r=16) ms | ECA / timm | ECA / SE |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, hw in SHAPES:
        k = eca_kernel_size(c)
        x = torch.randn(batch, c, hw, hw)
        contenders = {
            "eca": _fwd_bwd(ECA(c), x),
            "timm": _fwd_bwd(EcaModule(kernel_size=k), x),
            "se": _fwd_bwd(SqueezeExcite(c, 16), x),
        }
        t = time_interleaved(contenders, repeats=repeats, warmup=2)
        lines.append(
            f"| {c}×{hw}×{hw} | {k} | {t['eca'] * 1e3:.2f} | {t['timm'] * 1e3:.2f} | {t['se'] * 1e3:.2f} | "
            f"{t['eca'] / t['timm']:.2f} | {t['eca'] / t['se']:.2f} |"
        )
    return "\n".join(lines)
