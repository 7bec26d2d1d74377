"""Global pooling layers: average, covariance (second-order) and multi-head cross-covariance pooling.

Covariance pooling follows iSQRT-COV / TCP (``Covpool`` in jiangtaoxie/fast-MPN-COV): Σ = X Î Xᵀ with
Î = (1/M)(I − (1/M)11ᵀ), i.e. features centred over the M positions and divided by M. The official code builds
the M×M matrix Î per sample (79 MB at M = 784); here the mean is subtracted directly, which is the same Σ with
M·C instead of M²·C work and no M×M buffer. Everything is computed in float32 with autocast disabled.

Cross-covariance pooling is the core of SoT's multi-headed global cross-covariance pooling (MGCrP, SoT §3.2,
jiangtaoxie/SoT ``sot_src/representation/multi_head_pooling.py``): per head, Σ_h = (1/N) Q_hᵀ K_h.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from polyzoo.shared.ops.matrix import isqrt_newton_schulz, svpn, triu_vec

__all__ = ["CovariancePool", "CrossCovariancePool", "GlobalAvgPool", "covariance", "cross_covariance"]

MatrixNorm = Literal["isqrt", "svpn"] | Callable[[torch.Tensor], torch.Tensor] | None


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Covariance of features over positions: (B, C, M) → (B, C, C), centred and divided by M."""
    if x.dim() != 3:
        raise ValueError(f"covariance: expected (B, C, M) features, got shape {tuple(x.shape)}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _as_float32(x)
        xc = x - x.mean(dim=-1, keepdim=True)
        return torch.bmm(xc, xc.transpose(1, 2)) / x.shape[-1]


def cross_covariance(q: torch.Tensor, k: torch.Tensor, center: Literal["dim", "scalar", "none"] = "dim"):
    """Cross-covariance of two token sets: (B, N, d_q), (B, N, d_k) → (B, d_q, d_k) = (1/N) Q̄ᵀ K̄.

    ``center``: "dim" subtracts each dimension's mean over the N tokens (a covariance in the statistical
    sense); "scalar" subtracts one mean over all N·d entries of each input, which is what SoT's released
    ``Covariance(remove_mean=True)`` does; "none" uses raw second moments.
    """
    if q.dim() != 3 or k.dim() != 3 or q.shape[:2] != k.shape[:2]:
        raise ValueError(
            f"cross_covariance: expected (B, N, d_q) and (B, N, d_k) with equal B, N; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}"
        )
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k = _as_float32(q), _as_float32(k)
        if center == "dim":
            q, k = q - q.mean(dim=1, keepdim=True), k - k.mean(dim=1, keepdim=True)
        elif center == "scalar":
            q, k = q - q.mean(dim=(1, 2), keepdim=True), k - k.mean(dim=(1, 2), keepdim=True)
        elif center != "none":
            raise ValueError(f"cross_covariance: center must be 'dim', 'scalar' or 'none', got {center!r}")
        return torch.bmm(q.transpose(1, 2), k) / q.shape[1]


def _resolve_norm(normalization: MatrixNorm, iters: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if normalization is None or callable(normalization):
        return normalization
    if normalization == "isqrt":
        return lambda a: isqrt_newton_schulz(a, iters=iters)
    if normalization == "svpn":
        return lambda a: svpn(a, alpha=0.5, iters=iters)
    raise ValueError(f"normalization must be None, 'isqrt', 'svpn' or a callable, got {normalization!r}")


class GlobalAvgPool(nn.Module):
    """Mean over all positions: (B, C, *) → (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"GlobalAvgPool: expected (B, C, *spatial), got shape {tuple(x.shape)}")
        return x.flatten(2).mean(-1)


class CovariancePool(nn.Module):
    """Global covariance pooling with optional matrix power normalization.

    (B, C, *spatial) → Σ (B, C, C) → normalization (e.g. iSQRT with ``iters`` Newton–Schulz steps) →
    upper-triangular vector (B, C(C+1)/2) when ``vectorize`` (the default), else (B, C, C). Output is float32.

    Args:
        normalization: None, "isqrt" (Newton–Schulz square root), "svpn", or a callable on (B, C, C).
        iters: iterations of the built-in normalization (iSQRT-COV/TCP use 3 at the end of a network).
        vectorize: return the upper triangle as a vector.
    """

    def __init__(self, normalization: MatrixNorm = "isqrt", iters: int = 3, vectorize: bool = True):
        super().__init__()
        self.normalization = normalization if isinstance(normalization, str | None) else "callable"
        self.iters = iters
        self.vectorize = vectorize
        self._norm = _resolve_norm(normalization, iters)

    def output_dim(self, channels: int) -> int:
        return channels * (channels + 1) // 2 if self.vectorize else channels * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"CovariancePool: expected (B, C, *spatial), got shape {tuple(x.shape)}")
        cov = covariance(x.flatten(2))
        if self._norm is not None:
            cov = self._norm(cov)
        return triu_vec(cov) if self.vectorize else cov

    def extra_repr(self) -> str:
        return f"normalization={self.normalization}, iters={self.iters}, vectorize={self.vectorize}"


class CrossCovariancePool(nn.Module):
    """Multi-head cross-covariance pooling of two token sets (SoT's MGCrP core, without its projection).

    Inputs q (B, N, h·d_q) and k (B, N, h·d_k) are split into ``num_heads`` heads; per head
    Σ_h = (1/N) Q̄_hᵀ K̄_h (d_q × d_k), then the optional normalization (default svPN, SoT §3.2) and a
    flattening to (B, h·d_q·d_k) ("full" vectorization, as SoT), or (B, h, d_q, d_k) when ``flatten=False``.

    Args:
        num_heads: number of heads h.
        normalization: None, "svpn" (power normalization of the top singular value), "isqrt", or a callable
            on (B·h, d_q, d_k) (for example an svPN with a learnable start vector).
        iters: power-iteration (svpn) or Newton–Schulz (isqrt) steps of the built-in normalizations.
        center: mean removal, see :func:`cross_covariance`.
        flatten: flatten heads and matrices into one vector per sample.
    """

    def __init__(
        self,
        num_heads: int,
        normalization: MatrixNorm = "svpn",
        iters: int = 1,
        center: Literal["dim", "scalar", "none"] = "dim",
        flatten: bool = True,
    ):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"CrossCovariancePool: num_heads must be >= 1, got {num_heads}")
        self.num_heads = num_heads
        self.center = center
        self.flatten = flatten
        self.normalization = normalization if isinstance(normalization, str | None) else "callable"
        self._norm = _resolve_norm(normalization, iters)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        for name, t in (("q", q), ("k", k)):
            if t.dim() != 3 or t.shape[-1] % h:
                raise ValueError(
                    f"CrossCovariancePool: {name} must be (B, N, heads*d) with the last size divisible by "
                    f"{h} heads, got {tuple(t.shape)}"
                )
        b, n = q.shape[:2]

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, N, h·d) → (B·h, N, d)
            return t.reshape(b, n, h, -1).transpose(1, 2).reshape(b * h, n, -1)

        sigma = cross_covariance(split(q), split(k), center=self.center)
        if self._norm is not None:
            sigma = self._norm(sigma)
        sigma = sigma.reshape(b, h, *sigma.shape[-2:])
        return sigma.flatten(1) if self.flatten else sigma

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, normalization={self.normalization}, center={self.center}"
