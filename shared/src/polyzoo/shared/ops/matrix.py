"""Matrix functions for second-order pooling: fast matrix square root, singular value power normalization,
upper-triangular vectorization.

References
----------
- iSQRT-COV: Li, Xie, Wang, Gao. "Towards Faster Training of Global Covariance Pooling Networks by Iterative
  Matrix Square Root Normalization", CVPR 2018. Official code: jiangtaoxie/fast-MPN-COV
  (``src/representation/MPNCOV.py``). Used by TCP (NeurIPS 2021) with 3 iterations.
- svPN: Xie et al. "SoT: Delving Deeper into Classification Head for Transformer", arXiv 2104.10935.
  Official code: jiangtaoxie/SoT (``sot_src/normalization/svPN.py``).

Deviations from the official code
---------------------------------
- The official iSQRT layer has a hand-written backward that divides by tr(A)^2 and loops over the batch in
  Python; in float16 its gradients overflow once tr(A) reaches ~4e3. Here the iteration is plain autograd over
  batched matmuls (mathematically the same gradient, fewer products: 18 vs 24 at 3 iterations) and always runs
  in float32 with autocast disabled.
- Pre-normalization: the original iSQRT-COV code (jiangtaoxie/fast-MPN-COV ``src/representation/MPNCOV.py``,
  ``Sqrtm.forward``) divides by tr(A), so a zero trace divides by zero; TCP's copy (the TCP repository's
  ``ops/MPNCOV/MPNCOV.py``) divides by tr(A) + 1e-5 and post-compensates with √tr(A). ``eps`` selects between
  them: 0 (the default) is the original, 1e-5 is TCP's (:class:`polyzoo.video.tcp.TCPHead` passes it). With
  ``eps = 0`` a zero (or numerically zero) trace is not normalized (the iteration runs on the matrix as is,
  which is zero for PSD input), so the output is exactly zero and the gradient is finite.
- svPN: the official code allocates its buffers in the default dtype; here everything follows the input dtype.
"""

from __future__ import annotations

import torch

__all__ = ["isqrt_newton_schulz", "sqrtm_eig", "svpn", "triu_vec"]

_TINY_TRACE = 1e-20


def _check_square_batch(a: torch.Tensor, name: str) -> None:
    if a.dim() != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name}: expected a batch of square matrices of shape (B, C, C), got {tuple(a.shape)}")


def _float32_or_wider(a: torch.Tensor) -> torch.Tensor:
    return a if a.dtype in (torch.float32, torch.float64) else a.float()


def isqrt_newton_schulz(a: torch.Tensor, iters: int = 5, eps: float = 0.0) -> torch.Tensor:
    """Square root of a batch of symmetric positive semi-definite matrices by the coupled Newton–Schulz
    iteration of iSQRT-COV.

    Steps (iSQRT-COV, Eq. 5–7; TCP §3.3):
      1. pre-normalization   A' = A / (tr(A) + eps)
      2. Y_0 = A', Z_0 = I;  T_k = ½(3I − Z_{k−1} Y_{k−1}),  Y_k = Y_{k−1} T_k,  Z_k = T_k Z_{k−1}
         (the last iteration computes Y only)
      3. post-compensation   A^{1/2} ≈ √tr(A) · Y_N

    With few iterations (the papers use 3–5) the result is an approximation by design; it converges to the
    principal square root as ``iters`` grows (quadratically once the normalized spectrum is near 1).

    Args:
        a: (B, C, C) symmetric PSD matrices (e.g. covariances). Any float dtype; computed in float32
            (float64 stays float64), with autocast disabled.
        iters: number of iterations N ≥ 1.
        eps: added to tr(A) in the pre-normalization only (the post-compensation stays √tr(A)). 0 follows the
            original iSQRT-COV code (fast-MPN-COV: A / tr(A)); 1e-5 follows TCP's copy of it (A / (tr(A) + 1e-5)).

    Returns:
        (B, C, C) float32 (or float64) approximate square roots. Differentiable through autograd.
    """
    _check_square_batch(a, "isqrt_newton_schulz")
    if iters < 1:
        raise ValueError(f"isqrt_newton_schulz: iters must be >= 1, got {iters}")
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = _float32_or_wider(a)
        c = a.shape[-1]
        trace = a.diagonal(dim1=-2, dim2=-1).sum(-1)  # (B,)
        if eps < 0:
            raise ValueError(f"isqrt_newton_schulz: eps must be >= 0, got {eps}")
        # Zero-trace matrices are left unnormalized: they are zero for PSD input, so Y stays 0.
        norm = torch.where(trace > _TINY_TRACE, trace, torch.ones_like(trace)).view(-1, 1, 1)
        y = a / (norm + eps) if eps else a / norm
        eye = torch.eye(c, dtype=a.dtype, device=a.device).expand_as(a)
        half3_eye = 1.5 * eye
        # k = 1: Z_0 = I, so T_1 = ½(3I − Y_0) needs no product.
        t = half3_eye - 0.5 * y
        if iters == 1:
            y = torch.bmm(y, t)
        else:
            y, z = torch.bmm(y, t), t
            for _ in range(iters - 2):
                t = torch.baddbmm(half3_eye, z, y, alpha=-0.5)
                y, z = torch.bmm(y, t), torch.bmm(t, z)
            t = torch.baddbmm(half3_eye, z, y, alpha=-0.5)
            y = torch.bmm(y, t)
        return y * norm.sqrt()


def sqrtm_eig(a: torch.Tensor) -> torch.Tensor:
    """Principal square root of symmetric PSD matrices through an eigendecomposition (reference only: used
    by tests and benchmarks, not by models; its gradient is unstable for repeated eigenvalues).

    Negative eigenvalues from round-off are clamped to zero.

    Args:
        a: (B, C, C) symmetric PSD matrices.

    Returns:
        (B, C, C) square roots, in float32 (float64 stays float64).
    """
    _check_square_batch(a, "sqrtm_eig")
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = _float32_or_wider(a)
        evals, evecs = torch.linalg.eigh(a)
        root = evals.clamp_min(0).sqrt()
        return (evecs * root.unsqueeze(-2)) @ evecs.transpose(-1, -2)


def svpn(
    a: torch.Tensor, alpha: float = 0.5, iters: int = 1, v0: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Singular value power normalization (SoT, the ``svPN`` of MGCrP), with the largest singular value
    estimated by power iteration.

    With u, v the top singular vectors and σ̂₁ = uᵀAv their singular value estimate (``iters`` power
    iterations from ``v0``), the output is

        u σ̂₁^α vᵀ + (A − u σ̂₁ vᵀ) / (σ̂₁^(1−α) + eps),

    which for α = ½ (and eps → 0) is algebraically A / √σ̂₁ (SoT §3.2). It is computed in the form above so
    that any α works.

    Args:
        a: (B, m, n) matrices (e.g. cross-covariances; need not be square or symmetric).
        alpha: power applied to the top singular value.
        iters: power-iteration steps (SoT uses 1).
        v0: (n,) or (B, n) starting vector (SoT learns one, shared across heads); ones when None.
        eps: added to σ̂₁^(1−α) in the residual term, as in SoT.

    Returns:
        (B, m, n), same dtype as ``a``.
    """
    if a.dim() != 3:
        raise ValueError(f"svpn: expected (B, m, n) matrices, got shape {tuple(a.shape)}")
    if iters < 1:
        raise ValueError(f"svpn: iters must be >= 1, got {iters}")
    b, _, n = a.shape
    if v0 is None:
        v = a.new_ones(b, n)
    else:
        if v0.shape[-1] != n or v0.dim() not in (1, 2):
            raise ValueError(f"svpn: v0 must have shape ({n},) or ({b}, {n}), got {tuple(v0.shape)}")
        v = v0.to(a.dtype).expand(b, n)
    at = a.transpose(-1, -2)
    for _ in range(iters):
        u = torch.nn.functional.normalize(torch.bmm(a, v.unsqueeze(-1)).squeeze(-1), dim=-1)
        v = torch.nn.functional.normalize(torch.bmm(at, u.unsqueeze(-1)).squeeze(-1), dim=-1)
    sigma = torch.einsum("bm,bmn,bn->b", u, a, v).view(b, 1, 1)
    rank1 = u.unsqueeze(-1) * v.unsqueeze(-2)  # (B, m, n)
    # σ̂ = ‖Aᵀu‖ ≥ 0; the floor keeps the powers (and their gradients) finite for a zero matrix, where the
    # rank-one term vanishes anyway.
    sigma_safe = sigma.clamp_min(1e-12)
    return rank1 * sigma_safe.pow(alpha) + (a - rank1 * sigma) / (sigma_safe.pow(1 - alpha) + eps)


def triu_vec(a: torch.Tensor) -> torch.Tensor:
    """Upper-triangular vectorization (row-major, diagonal included) of symmetric matrices.

    Args:
        a: (B, C, C).

    Returns:
        (B, C(C+1)/2), e.g. 8,256 values at C = 128.
    """
    _check_square_batch(a, "triu_vec")
    c = a.shape[-1]
    rows, cols = torch.triu_indices(c, c, device=a.device)
    return a[:, rows, cols]
