"""polyzoo.shared.ops.pooling."""

from __future__ import annotations

import pytest
import torch

from polyzoo.shared.ops.matrix import isqrt_newton_schulz, svpn, triu_vec
from polyzoo.shared.ops.pooling import CovariancePool, CrossCovariancePool, GlobalAvgPool, covariance


def test_covariance_equals_the_centring_matrix_form():
    x = torch.randn(2, 5, 7, dtype=torch.float64)
    m = x.shape[-1]
    i_hat = (torch.eye(m, dtype=x.dtype) - torch.ones(m, m, dtype=x.dtype) / m) / m  # iSQRT-COV's Î
    assert torch.allclose(covariance(x), x @ i_hat @ x.transpose(1, 2))


def test_covariance_pool_shapes_and_normalization():
    x = torch.randn(2, 16, 4, 5)
    pool = CovariancePool(iters=3)
    out = pool(x)
    assert out.shape == (2, pool.output_dim(16)) == (2, 136)
    expected = triu_vec(isqrt_newton_schulz(covariance(x.flatten(2)), 3))
    assert torch.allclose(out, expected)
    assert CovariancePool(normalization=None, vectorize=False)(x).shape == (2, 16, 16)
    assert CovariancePool()(torch.randn(2, 16, 3, 4, 5)).shape == (2, 136)  # video (B, C, T, H, W)


def test_covariance_pool_float32_under_autocast():
    x = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = CovariancePool()(x.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_bad_normalization_is_named():
    with pytest.raises(ValueError, match="normalization"):
        CovariancePool(normalization="pade")


def test_cross_covariance_pool_per_head():
    b, n, h, d = 2, 10, 3, 4
    q, k = torch.randn(b, n, h * d, dtype=torch.float64), torch.randn(b, n, h * d, dtype=torch.float64)
    out = CrossCovariancePool(h, normalization=None, flatten=False)(q, k)
    assert out.shape == (b, h, d, d)
    for head in range(h):
        qh, kh = q[..., head * d : (head + 1) * d], k[..., head * d : (head + 1) * d]
        qh, kh = qh - qh.mean(1, keepdim=True), kh - kh.mean(1, keepdim=True)
        assert torch.allclose(out[:, head], qh.transpose(1, 2) @ kh / n)
    # SoT's released code removes one scalar mean per head
    scalar = CrossCovariancePool(h, normalization=None, center="scalar", flatten=False)(q, k)
    q0, k0 = q[..., :d], k[..., :d]
    q0, k0 = q0 - q0.mean((1, 2), keepdim=True), k0 - k0.mean((1, 2), keepdim=True)
    assert torch.allclose(scalar[:, 0], q0.transpose(1, 2) @ k0 / n)
    # default: svPN, flattened (h·d·d)
    pooled = CrossCovariancePool(h)(q, k)
    assert pooled.shape == (b, h * d * d)
    assert torch.allclose(pooled.view(b, h, d, d)[:, 1], svpn(out[:, 1]))


def test_cross_covariance_pool_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        CrossCovariancePool(3)(torch.randn(1, 4, 8), torch.randn(1, 4, 8))


def test_global_avg_pool():
    x = torch.randn(2, 3, 4, 5)
    assert torch.allclose(GlobalAvgPool()(x), x.mean((2, 3)))
