"""xDeepInt vs xDeepFM training throughput (samples/s) at equal embedding size, Criteo-shaped input.

39 fields (13 integer + 26 categorical), embedding 16, batch 256, a 1M-row table; one training step =
forward, summed sigmoid cross-entropy, backward, optimiser step. xDeepInt: official config (L=4, h=16, residual,
linear) with the paper's optimisers (GFTRL on embeddings, FTRL on the PIN) and, for an equal-optimiser
comparison, with Adam. xDeepFM: CIN 200-200-200 + DNN 400-400 (the xDeepFM paper's Criteo setting) with Adam
(anchor). Contenders interleaved in one process.
"""

from __future__ import annotations

import torch

from polyzoo.recsys.train import TrainSpec, build_model, build_optimizers
from polyzoo.shared.timing import time_interleaved

FIELDS, ROWS, DIM = 39, 1_000_000, 16


def _step(spec: TrainSpec, batch: int):
    torch.manual_seed(0)
    model = build_model(spec, ROWS, FIELDS)
    opts = build_optimizers(model, spec)
    ids = torch.randint(1, ROWS, (batch, FIELDS))
    labels = (torch.rand(batch) < 0.25).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids), labels, reduction="sum")
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()

    return step


def run(quick: bool = False) -> str:
    batch = 256
    xdi = {"num_layers": 4, "num_subspaces": 16}
    specs = {
        "xDeepFM CIN 200x3 + DNN 400x2, Adam (anchor)": TrainSpec(
            model="xdeepfm",
            embedding_dim=DIM,
            optimizer="adam",
            model_kwargs={"cin_layers": (200, 200, 200), "hidden_units": (400, 400)},
        ),
        "xDeepInt L=4 h=16, GFTRL+FTRL": TrainSpec(model="xdeepint", embedding_dim=DIM, model_kwargs=xdi),
        "xDeepInt L=4 h=16, Adam": TrainSpec(model="xdeepint", embedding_dim=DIM, optimizer="adam", model_kwargs=xdi),
    }
    steps = {name: _step(spec, batch) for name, spec in specs.items()}
    times = time_interleaved(steps, repeats=2 if quick else 5, warmup=1)
    anchor = times["xDeepFM CIN 200x3 + DNN 400x2, Adam (anchor)"]
    lines = [
        f"Batch {batch}, {FIELDS} fields, embedding {DIM}, table {ROWS:,} rows, {torch.get_num_threads()} threads.",
        "",
        "| contender | ms / step | samples/s | speed-up vs xDeepFM |",
        "|---|---|---|---|",
    ]
    for name, t in times.items():
        lines.append(f"| {name} | {t * 1e3:.1f} | {batch / t:,.0f} | {anchor / t:.2f}x |")
    return "\n".join(lines)
