"""polyzoo.shared.ops.matrix: Newton–Schulz square root, eigendecomposition reference, svPN, triu_vec."""

from __future__ import annotations

import itertools

import pytest
import torch

from polyzoo.shared.ops.matrix import isqrt_newton_schulz, sqrtm_eig, svpn, triu_vec
from polyzoo.shared.ops.pooling import covariance
from polyzoo.shared.reproduction import synthetic_features


def _rel(a, b):
    return ((a - b).norm(dim=(1, 2)) / b.norm(dim=(1, 2))).max().item()


@pytest.fixture(scope="module")
def full_rank_cov():
    return covariance(synthetic_features(4, 32, 256, seed=0))  # float64, full rank


def test_eig_reference_squares_back(full_rank_cov):
    root = sqrtm_eig(full_rank_cov)
    assert torch.allclose(root @ root, full_rank_cov, atol=1e-10)


def test_newton_schulz_error_falls_with_iterations(full_rank_cov):
    exact = sqrtm_eig(full_rank_cov)
    errors = [_rel(isqrt_newton_schulz(full_rank_cov, n), exact) for n in range(1, 16)]
    assert all(b < a for a, b in itertools.pairwise(errors[:11])), errors
    # the papers' 3-5 iterations are an approximation by design on trace-normalized covariances
    assert 0.2 < errors[2] < 0.8 and 0.05 < errors[4] < errors[2]
    assert errors[14] < 1e-5


def test_newton_schulz_float32_matches_float64(full_rank_cov):
    out32 = isqrt_newton_schulz(full_rank_cov.float(), 5)
    assert out32.dtype == torch.float32
    assert _rel(out32.double(), isqrt_newton_schulz(full_rank_cov, 5)) < 1e-5


def test_newton_schulz_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, generator=g, dtype=torch.float64)
    a = (x @ x.transpose(1, 2) / 9).requires_grad_()
    assert torch.autograd.gradcheck(lambda m: isqrt_newton_schulz(m, 3), (a,))
    assert torch.autograd.gradcheck(lambda m: isqrt_newton_schulz(m, 1), (a,))


def test_newton_schulz_in_float32_under_bf16_autocast():
    x = torch.randn(3, 16, 64)
    a = (x @ x.transpose(1, 2) / 64 * 500).requires_grad_()  # large trace: the official fp16 backward overflows
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = isqrt_newton_schulz(a.bfloat16(), 3)
        loss = out.sum()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    loss.backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_newton_schulz_zero_and_rank_deficient_input():
    zero = torch.zeros(2, 8, 8, requires_grad=True)
    out = isqrt_newton_schulz(zero, 5)
    assert torch.equal(out, torch.zeros(2, 8, 8))
    out.sum().backward()
    assert torch.isfinite(zero.grad).all()

    x = torch.randn(2, 8, 3, dtype=torch.float64)
    rank3 = (x @ x.transpose(1, 2)).requires_grad_()
    out = isqrt_newton_schulz(rank3, 30)
    assert torch.isfinite(out).all()
    assert _rel(out, sqrtm_eig(rank3.detach())) < 1e-6
    out.sum().backward()
    assert torch.isfinite(rank3.grad).all()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(B, C, C\)"):
        isqrt_newton_schulz(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="iters"):
        isqrt_newton_schulz(torch.zeros(1, 3, 3), iters=0)


def test_svpn_is_a_over_sqrt_top_singular_value():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(5, 6, 4, generator=g, dtype=torch.float64)
    # converged power iteration: A / sqrt(sigma_1)
    sigma1 = torch.linalg.svdvals(a)[:, 0].view(-1, 1, 1)
    assert torch.allclose(svpn(a, iters=200, eps=0.0), a / sigma1.sqrt(), atol=1e-8)
    # one iteration (SoT): the same form with the estimated sigma
    v = torch.nn.functional.normalize(torch.ones(5, 4, dtype=torch.float64), dim=-1)
    u = torch.nn.functional.normalize((a @ v.unsqueeze(-1)).squeeze(-1), dim=-1)
    v = torch.nn.functional.normalize((a.transpose(1, 2) @ u.unsqueeze(-1)).squeeze(-1), dim=-1)
    sigma_hat = torch.einsum("bm,bmn,bn->b", u, a, v).view(-1, 1, 1)
    assert torch.allclose(svpn(a, iters=1, eps=0.0), a / sigma_hat.sqrt(), atol=1e-10)
    # alpha = 1 leaves the matrix unchanged
    assert torch.allclose(svpn(a, alpha=1.0, eps=0.0), a, atol=1e-12)


def test_svpn_learnable_start_vector_gets_gradient_and_dtype_follows_input():
    a = torch.randn(3, 4, 4, dtype=torch.float64)
    v0 = torch.randn(4, requires_grad=True)
    out = svpn(a, v0=v0)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert v0.grad is not None and torch.isfinite(v0.grad).all()
    assert torch.isfinite(svpn(torch.zeros(2, 3, 3))).all()


def test_triu_vec():
    a = torch.arange(16.0).view(1, 4, 4)
    assert triu_vec(a).tolist() == [[0, 1, 2, 3, 5, 6, 7, 10, 11, 15]]
    assert triu_vec(torch.zeros(2, 128, 128)).shape == (2, 8256)


def _official_sqrtm_forward(x: torch.Tensor, iters: int, trace_eps: float) -> torch.Tensor:
    """Forward of ``Sqrtm`` written from the official code: the original iSQRT-COV (fast-MPN-COV
    ``src/representation/MPNCOV.py``) normalizes by tr(A) (``trace_eps=0``); TCP's copy (``ops/MPNCOV/MPNCOV.py``)
    by tr(A) + 1e-5. Y and Z are kept per iteration as the official loop does; the last step computes Y only."""
    b, d, _ = x.shape
    i3 = 3.0 * torch.eye(d, dtype=x.dtype).expand(b, d, d)
    norm_a = (x * i3).sum(dim=(1, 2)) / 3.0
    a = x / (norm_a.view(b, 1, 1) + trace_eps)
    if iters < 2:
        yzy = a.bmm(0.5 * (i3 - a))
    else:
        zy = 0.5 * (i3 - a)
        ys, zs = [a.bmm(zy)], [zy]
        for _ in range(1, iters - 1):
            zy = 0.5 * (i3 - zs[-1].bmm(ys[-1]))
            ys.append(ys[-1].bmm(zy))
            zs.append(zy.bmm(zs[-1]))
        yzy = 0.5 * ys[-1].bmm(i3 - zs[-1].bmm(ys[-1]))
    return yzy * norm_a.sqrt().view(b, 1, 1)


@pytest.mark.parametrize("iters", [1, 2, 3, 5])
@pytest.mark.parametrize("trace_eps", [0.0, 1e-5])
def test_isqrt_matches_the_official_forward_with_and_without_trace_eps(iters, trace_eps):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 20, dtype=torch.float64)
    cov = x @ x.transpose(1, 2) / 20 * 1e-4  # a small trace makes the 1e-5 visible
    ref = _official_sqrtm_forward(cov, iters, trace_eps)
    torch.testing.assert_close(isqrt_newton_schulz(cov, iters, eps=trace_eps), ref, rtol=1e-10, atol=1e-14)
    other = _official_sqrtm_forward(cov, iters, 1e-5 - trace_eps)
    assert not torch.allclose(isqrt_newton_schulz(cov, iters, eps=trace_eps), other, rtol=1e-6, atol=0)


@pytest.mark.parametrize("iters", [1, 2, 3, 4, 6])
def test_newton_schulz_acts_on_eigenvalues_by_the_scalar_recurrence(iters):
    """Direct check of the iteration count: on A = Q diag(λ) Qᵀ the coupled iteration acts on each normalized
    eigenvalue μ = λ / tr(A) as the scalar recurrence y₀ = μ, z₀ = 1, t = (3 − z y)/2, y ← y t, z ← t z, run
    exactly ``iters`` times; the result is Q diag(√tr(A) · y_N) Qᵀ. One step more or fewer changes it."""
    lam = torch.tensor([0.5, 1.0, 2.5, 4.0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    a = (q @ torch.diag(lam) @ q.T).unsqueeze(0)
    trace = float(lam.sum())
    expected_diag = []
    for mu in (lam / trace).tolist():
        y, z = mu, 1.0
        for _ in range(iters):
            t = (3.0 - z * y) / 2.0
            y, z = y * t, t * z
        expected_diag.append(trace**0.5 * y)
    expected = q @ torch.diag(torch.tensor(expected_diag, dtype=torch.float64)) @ q.T
    torch.testing.assert_close(isqrt_newton_schulz(a, iters)[0], expected, rtol=1e-10, atol=1e-12)


def _svpn_transcription(a: torch.Tensor, alpha: float, iters: int, v0: torch.Tensor, eps: float) -> torch.Tensor:
    """SoT's svPN written out per matrix: power iteration u = Av/‖Av‖, v = Aᵀu/‖Aᵀu‖, σ = uᵀAv, then
    u σ^α vᵀ + (A − u σ vᵀ) / (σ^(1−α) + eps)."""
    out = []
    for k in range(a.shape[0]):
        m = a[k]
        v = (v0[k] if v0.dim() == 2 else v0).to(m.dtype)
        for _ in range(iters):
            u = m @ v
            u = u / u.norm()
            v = m.T @ u
            v = v / v.norm()
        sigma = u @ m @ v
        r1 = torch.outer(u, v)
        out.append(r1 * sigma**alpha + (m - r1 * sigma) / (sigma ** (1 - alpha) + eps))
    return torch.stack(out)


def test_svpn_defaults_and_start_vectors_follow_the_transcription():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    ones = torch.ones(4, dtype=torch.float64)
    # defaults: alpha 0.5, one power iteration, v0 = ones, eps 1e-5 (SoT)
    torch.testing.assert_close(svpn(a), _svpn_transcription(a, 0.5, 1, ones, 1e-5), rtol=1e-12, atol=1e-12)
    small = a * 0.05  # top singular values below 1 (the 1e-12 floor must not change them)
    torch.testing.assert_close(svpn(small), _svpn_transcription(small, 0.5, 1, ones, 1e-5), rtol=1e-12, atol=1e-12)
    shared_v0 = torch.randn(4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        svpn(a, v0=shared_v0), _svpn_transcription(a, 0.5, 1, shared_v0, 1e-5), rtol=1e-12, atol=1e-12
    )
    per_sample = torch.randn(3, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        svpn(a, alpha=0.3, iters=2, v0=per_sample, eps=1e-3),
        _svpn_transcription(a, 0.3, 2, per_sample, 1e-3),
        rtol=1e-12,
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="v0"):
        svpn(a, v0=torch.ones(1, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="v0"):
        svpn(a, v0=torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="iters"):
        svpn(a, iters=0)


def test_non_square_batches_are_refused():
    with pytest.raises(ValueError, match="square"):
        isqrt_newton_schulz(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="square"):
        isqrt_newton_schulz(torch.zeros(3, 3))
