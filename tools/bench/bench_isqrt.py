"""Newton–Schulz square root (3 and 5 iterations) vs eigendecomposition, forward+backward, float32, batch 32,
C = 128 and 256; achieved GFLOP/s against the batched-matmul rate measured in the same run.

FLOP count of Newton–Schulz: the forward does 3N−3 batched products (N iterations, the first needs one, the
last two); the backward of each product is two more, so 3·(3N−3) products of 2·C³ flops per matrix
(18 products at N=3, 36 at N=5). Element-wise work (O(C²)) is left out.
"""

from __future__ import annotations

import torch

from polyzoo.shared.ops.matrix import isqrt_newton_schulz, sqrtm_eig
from polyzoo.shared.timing import time_interleaved


def _spd(batch: int, c: int, device: str) -> torch.Tensor:
    x = torch.randn(batch, c, 4 * c, device=device)
    return x @ x.transpose(1, 2) / (4 * c)


def _synced(fn, device: str):
    """On CUDA, wait for the kernels so that wall-clock time measures them."""
    if not device.startswith("cuda"):
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)

    return call


def _fwd_bwd(fn, a: torch.Tensor):
    def step():
        x = a.detach().requires_grad_()
        fn(x).sum().backward()

    return step


def run(quick: bool = False, device: str = "cpu") -> str:
    batch, repeats = 32, (3 if quick else 15)
    lines = [
        "| C | contender | median ms (fwd+bwd) | GFLOP/s | % of bmm rate | speed-up vs eigh |",
        "|---|---|---|---|---|---|",
    ]
    sizes = (128, 256) if device == "cpu" else (128, 256, 512)
    for c in sizes:
        a = _spd(batch, c, device)
        b1, b2 = torch.randn(batch, c, c, device=device), torch.randn(batch, c, c, device=device)
        contenders = {
            "bmm (reference rate)": lambda b1=b1, b2=b2: torch.bmm(b1, b2),
            "newton_schulz N=3": _fwd_bwd(lambda x: isqrt_newton_schulz(x, 3), a),
            "newton_schulz N=5": _fwd_bwd(lambda x: isqrt_newton_schulz(x, 5), a),
            "eigh (sqrtm_eig)": _fwd_bwd(sqrtm_eig, a),
        }
        contenders = {name: _synced(fn, device) for name, fn in contenders.items()}
        times = time_interleaved(contenders, repeats=repeats, warmup=2)
        product = 2 * batch * c**3
        bmm_rate = product / times["bmm (reference rate)"] / 1e9
        flops = {"bmm (reference rate)": product, "newton_schulz N=3": 18 * product, "newton_schulz N=5": 36 * product}
        for name, t in times.items():
            gflops = flops[name] / t / 1e9 if name in flops else None
            lines.append(
                f"| {c} | {name} | {t * 1e3:.2f} | {f'{gflops:.0f}' if gflops else '-'} | "
                f"{f'{100 * gflops / bmm_rate:.0f}%' if gflops else '-'} | {times['eigh (sqrtm_eig)'] / t:.2f}x |"
            )
    return f"device: {device}\n\n" + "\n".join(lines)
