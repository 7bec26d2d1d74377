"""CUDA check of the shared ops, for a machine with a GPU (not run in CI):

    PYTHONPATH=shared/src python tools/bench/gpu_shared_check.py

Checks on the GPU what the CPU tests check (Newton–Schulz converges to the eigendecomposition's root; finite
float32 output and gradients under bf16 and fp16 autocast, including traces where the official fp16 backward
overflows; zero input; covariance pooling under autocast), then prints the isqrt benchmark on CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from polyzoo.shared.ops.matrix import isqrt_newton_schulz, sqrtm_eig
from polyzoo.shared.ops.pooling import CovariancePool, covariance


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    dev = "cuda"
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}")
    failures = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}")
        if not ok:
            failures.append(name)

    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(8, 64, 256, device=dev, dtype=torch.float64, generator=g)
    cov = covariance(x)
    exact = sqrtm_eig(cov)
    errs = [float((isqrt_newton_schulz(cov, n) - exact).norm() / exact.norm()) for n in (1, 3, 5, 10, 15)]
    check(
        "newton_schulz converges on cuda (float64)",
        errs == sorted(errs, reverse=True) and errs[-1] < 1e-5,
        str([f"{e:.2e}" for e in errs]),
    )
    e32 = float((isqrt_newton_schulz(cov.float(), 15).double() - exact).norm() / exact.norm())
    check("float32 at 15 iterations", e32 < 1e-4, f"{e32:.2e}")

    for dtype in (torch.bfloat16, torch.float16):
        feats = torch.randn(4, 128, 196, device=dev) * 6  # trace ~ 4.6e3: past the official fp16 overflow point
        a = (feats @ feats.transpose(1, 2) / 196).requires_grad_()
        with torch.autocast("cuda", dtype=dtype):
            out = isqrt_newton_schulz(a.to(dtype), 3)
            loss = out.square().sum()
        loss.backward()
        check(
            f"autocast {dtype} -> float32 finite out and grad",
            out.dtype == torch.float32 and bool(torch.isfinite(out).all()) and bool(torch.isfinite(a.grad).all()),
            f"trace={float(a.detach().diagonal(dim1=1, dim2=2).sum(-1).mean()):.0f}",
        )
        with torch.autocast("cuda", dtype=dtype):
            pooled = CovariancePool()(torch.randn(2, 32, 7, 7, device=dev, dtype=dtype))
        check(f"CovariancePool under {dtype}", pooled.dtype == torch.float32 and bool(torch.isfinite(pooled).all()))

    zero = torch.zeros(2, 16, 16, device=dev, requires_grad=True)
    out = isqrt_newton_schulz(zero, 5)
    out.sum().backward()
    check("zero input", bool((out == 0).all()) and bool(torch.isfinite(zero.grad).all()))

    import bench_isqrt

    print()
    print(bench_isqrt.run(device=dev))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
