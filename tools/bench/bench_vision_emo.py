"""EMO-1M and EMO-5M vs timm ``mobilenetv2_100``: inference latency (eval, no grad, float32, 224²) at
batch 1 and 16. Anchor: MobileNetV2."""

from __future__ import annotations

import timm
import torch

import polyzoo.vision  # noqa: F401  (registers the EMO models)
from polyzoo.shared.timing import time_interleaved

MODELS = ("emo_1m", "emo_5m", "mobilenetv2_100")


def run(quick: bool = False) -> str:
    repeats = 3 if quick else 10
    batches = (1, 4) if quick else (1, 16)
    models = {n: timm.create_model(n).eval() for n in MODELS}
    lines = [
        f"eval forward, no grad, 224², median of {repeats} interleaved rounds",
        "",
        "| batch | model | ms | ms / image | time vs mobilenetv2_100 |",
        "|---|---|---|---|---|",
    ]
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224)

        def infer(m: torch.nn.Module, x: torch.Tensor = x):
            def call():
                with torch.no_grad():
                    m(x)

            return call

        t = time_interleaved({n: infer(m) for n, m in models.items()}, repeats=repeats, warmup=2)
        for n in MODELS:
            lines.append(
                f"| {batch} | {n} | {t[n] * 1e3:.1f} | {t[n] * 1e3 / batch:.2f} | {t[n] / t['mobilenetv2_100']:.2f} |"
            )
    return "\n".join(lines)
