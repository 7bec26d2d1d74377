"""Dataset-distillation iteration time and peak memory vs images per class, with and without the DOORPING trigger
update (Liu et al., NDSS 2023), so the attack's overhead is known.

One DC iteration = ``outer_loop`` gradient-matching rounds with ``outer_loop − 1`` network updates (``inner_loop``
epochs each); with DOORPING each network update is followed by a trigger update (Adam on the masked trigger) and
a re-stamp of the poisoned images. Data: random 1×32×32 images, 10 classes × 100 (Fashion-MNIST's image shape),
real batch 128 per class (32 with ``--quick``), ConvNet width 128 (the paper's network). To time the worst case the
trigger update runs its full step budget (early-stop threshold 0). Times are medians of interleaved runs in one
process; peak memory is the growth of the resident set (ru_maxrss) during one iteration, measured in a fresh
subprocess per configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from polyzoo.shared.timing import time_interleaved

_SETUP = """
import torch
from polyzoo.security.attacks import AttackConfig
from polyzoo.security.data import ImageData
from polyzoo.security.distill import DistillConfig, Distiller

def make(ipc, doorping, steps, outer, inner, method="dc"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 1, 32, 32, generator=g)
    y = torch.arange(10).repeat_interleave(100)
    data = ImageData("random", x, y, x[:100], y[:100], (0.5,), (0.25,), 10)
    atk = AttackConfig(kind="doorping" if doorping else "none", portion=0.01, trigger_steps=steps,
                       trigger_threshold=0.0)
    cfg = DistillConfig(method=method, ipc=ipc, iterations=1, outer_loop=outer, inner_loop=inner,
                        batch_real=32 if outer == 2 else 128, attack=atk)
    return Distiller(data, cfg)
"""

_MEMORY = """
import json, resource, sys
{setup}
ipc, doorping, steps, outer, inner = json.loads(sys.argv[1])
d = make(ipc, doorping, steps, outer, inner)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"delta_mb": (peak - base) / 1024, "peak_mb": peak / 1024}}))
"""


def _memory(args: list) -> dict:
    code = _MEMORY.format(setup=_SETUP)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> str:
    ns: dict = {}
    exec(_SETUP, ns)  # the same builder the memory subprocesses use
    make = ns["make"]
    ipcs = (1, 10) if quick else (1, 10, 20)
    outer, inner = (2, 2) if quick else (3, 10)
    steps = 50 if quick else 1000
    repeats = 1 if quick else 3
    lines = [
        f"DC iteration = {outer} outer rounds, {outer - 1} network update(s) of {inner} epochs; DOORPING update: "
        f"{steps} Adam steps (full budget). torch threads: {torch.get_num_threads()}",
        "",
        "| ipc | contender | median s / iteration | overhead vs no attack | peak RSS growth (MB) | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for ipc in ipcs:
        plain, door = make(ipc, False, steps, outer, inner), make(ipc, True, steps, outer, inner)
        times = time_interleaved(
            {"no attack": plain.step, "DOORPING": door.step}, repeats=repeats, warmup=0 if quick else 1
        )
        for name, doorping in (("no attack", False), ("DOORPING", True)):
            mem = _memory([ipc, doorping, steps, outer, inner])
            lines.append(
                f"| {ipc} | {name} | {times[name]:.3f} | {times[name] / times['no attack']:.2f}x | "
                f"{mem['delta_mb']:.0f} | {mem['peak_mb']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick=True))
