"""ECA-ResNet-50 (official kernels 3,5,5,7) vs timm ``resnet50``: one SGD training step (forward, backward,
update), float32, batch 8 at 224², as a time ratio and as achieved GFLOP/s against the fp32 matmul rate
measured in the same run (2048² ``torch.mm``).

FLOPs of a training step: 3 × forward (the backward costs about twice the forward), with the forward's
multiply-accumulates from :func:`polyzoo.vision.flops.count_macs` (convolutions and linear layers) × 2."""

from __future__ import annotations

import timm
import torch

import polyzoo.vision  # noqa: F401  (registers eca_resnet50)
from polyzoo.shared.timing import time_interleaved
from polyzoo.vision.flops import count_macs_of


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def run(quick: bool = False) -> str:
    batch, size, repeats = (2, 224, 2) if quick else (8, 224, 5)
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    models = {
        "eca_resnet50": timm.create_model("eca_resnet50", k_size=[3, 5, 5, 7]),
        "resnet50": timm.create_model("resnet50"),
    }
    contenders = {name: _train_step(m, x, y) for name, m in models.items()}
    contenders["mm 2048²"] = lambda: torch.mm(a, b)
    t = time_interleaved(contenders, repeats=repeats, warmup=1)
    mm_rate = 2 * 2048**3 / t["mm 2048²"] / 1e9
    lines = [
        f"batch {batch}, {size}², SGD step, median of {repeats}; fp32 mm rate {mm_rate:.0f} GFLOP/s",
        "",
        "| model | GMACs/img (fwd) | ms/step | GFLOP/s | % of mm rate | time vs resnet50 |",
        "|---|---|---|---|---|---|",
    ]
    for name in models:
        extra = {"k_size": [3, 5, 5, 7]} if name.startswith("eca") else {}
        _, macs = count_macs_of(name, input_size=(1, 3, size, size), **extra)
        gflops = 3 * 2 * macs * batch / t[name] / 1e9
        lines.append(
            f"| {name} | {macs / 1e9:.3f} | {t[name] * 1e3:.0f} | {gflops:.0f} | {100 * gflops / mm_rate:.0f}% | "
            f"{t[name] / t['resnet50']:.3f} |"
        )
    return "\n".join(lines)
