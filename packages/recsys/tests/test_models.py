"""PIN / xDeepInt and the baselines: shapes, identity at W = 0, the residual formula, polynomial order."""

import pytest
import torch

from polyzoo.recsys.models import (
    DCN,
    FM,
    BaselineConfig,
    DeepFM,
    LogisticRegression,
    MultiHeadPolynomialBlock,
    PolynomialBlock,
    XDeepFM,
    XDeepInt,
    XDeepIntConfig,
)
from polyzoo.recsys.models.baselines import fm_interaction
from polyzoo.recsys.models.xdeepint import combine_subspaces, split_subspaces

B, M, D = 3, 5, 8


@pytest.mark.parametrize("h", [1, 2, D])
@pytest.mark.parametrize("residual", [True, False])
def test_pin_shapes(h, residual):
    block = PolynomialBlock(M, D, num_layers=3, num_subspaces=h, residual=residual)
    out = block(torch.randn(B, M, D))
    assert out.shape == (B, M if residual else 4 * M, D)
    assert block.layers[0].weight.shape == (M * h, M * h)
    model = XDeepInt(50, M, XDeepIntConfig(embedding_dim=D, num_layers=2, num_subspaces=h, residual=residual))
    assert model(torch.randint(0, 50, (B, M))).shape == (B,)


def test_split_combine_roundtrip_and_layout():
    e = torch.randn(B, M, D)
    x0 = split_subspaces(e, 2)
    assert x0.shape == (B, 2 * M, D // 2)
    torch.testing.assert_close(x0[:, M + 1], e[:, 1, D // 2 :])  # row k·m + i = field i, subspace k
    torch.testing.assert_close(combine_subspaces(x0, 2), e)


@pytest.mark.parametrize("mix", ["x0", "previous"])
@pytest.mark.parametrize("h", [1, 2, D])
def test_identity_when_w_zero(mix, h):
    block = PolynomialBlock(M, D, num_layers=3, num_subspaces=h, residual=True, mix=mix)
    for layer in block.layers:
        torch.nn.init.zeros_(layer.weight)
    e = torch.randn(B, M, D)
    torch.testing.assert_close(block(e), e)


def test_residual_matches_formula_and_non_residual():
    torch.manual_seed(0)
    h = 2
    e = torch.randn(B, M, D, dtype=torch.float64)
    res = PolynomialBlock(M, D, 2, h, residual=True).double()
    non = PolynomialBlock(M, D, 2, h, residual=False).double()
    non.load_state_dict(res.state_dict())
    x0 = split_subspaces(e, h)
    w1, w2 = res.layers[0].weight, res.layers[1].weight
    x1 = x0 * (1 + w1 @ x0)  # X_l = X_{l-1} ∘ (1 + W_l X0)
    x2 = x1 * (1 + w2 @ x0)
    torch.testing.assert_close(res(e), combine_subspaces(x2, h))
    y1 = x0 * (w1 @ x0)
    y2 = y1 * (w2 @ x0)
    torch.testing.assert_close(non(e), combine_subspaces(torch.cat([x0, y1, y2], dim=1), h))
    prev = PolynomialBlock(M, D, 2, h, residual=True, mix="previous").double()
    prev.load_state_dict(res.state_dict())
    p1 = x0 + (w1 @ x0) * x0
    p2 = p1 + (w2 @ p1) * x0
    torch.testing.assert_close(prev(e), combine_subspaces(p2, h))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("mix", ["x0", "previous"])
def test_output_is_polynomial_of_degree_l_plus_1(num_layers, mix):
    """logit(t·X0) − D·b is a polynomial in t of degree exactly L + 1 (linear activation)."""
    torch.manual_seed(1)
    model = XDeepInt(20, M, XDeepIntConfig(embedding_dim=D, num_layers=num_layers, num_subspaces=2, mix=mix)).double()
    e = torch.randn(1, M, D, dtype=torch.float64)
    ts = torch.arange(0, num_layers + 4, dtype=torch.float64)
    with torch.no_grad():
        values = torch.stack([model.forward_embedded(t * e)[0] for t in ts])
    degree = num_layers + 1
    vander = torch.stack([ts**k for k in range(degree + 1)], dim=1)
    coef = torch.linalg.lstsq(vander, values[:, None]).solution[:, 0]
    torch.testing.assert_close(vander @ coef, values, rtol=1e-9, atol=1e-9)  # degree L+1 fits exactly
    assert abs(float(coef[-1])) > 1e-6  # and the top coefficient is non-zero
    lower = vander[:, :-1]
    fit = lower @ torch.linalg.lstsq(lower, values[:, None]).solution[:, 0]
    assert float((fit - values).abs().max()) > 1e-6  # degree L does not fit
    torch.testing.assert_close(coef[0], D * model.readout.bias[0].detach())  # constant term = D·b


def test_multihead_block_shapes():
    block = MultiHeadPolynomialBlock(M, D, hidden_size=12, num_heads=2, num_layers=[1, 2], num_subspaces=[1, 6])
    assert block(torch.randn(B, M, D)).shape == (B, 2 * M, 6)
    cfg = XDeepIntConfig(embedding_dim=D, num_heads=2, hidden_size=12, head_layers=(1, 2), head_subspaces=(1, 3))
    assert XDeepInt(30, M, cfg)(torch.randint(0, 30, (B, M))).shape == (B,)


def test_zero_row_is_zero_and_groups():
    model = XDeepInt(30, M, XDeepIntConfig(embedding_dim=D, num_layers=1, num_subspaces=1))
    assert torch.all(model.embedding.weight[0] == 0)
    emb, pin = model.embedding_parameters(), model.pin_parameters()
    assert len(emb) + len(pin) == len(list(model.parameters()))


def test_fm_interaction_matches_pairwise_sum():
    e = torch.randn(B, M, D, dtype=torch.float64)
    ref = sum((e[:, i] * e[:, j]).sum(-1) for i in range(M) for j in range(i + 1, M))
    torch.testing.assert_close(fm_interaction(e), ref)


@pytest.mark.parametrize("cls", [LogisticRegression, FM, DeepFM, DCN, XDeepFM])
def test_baselines_forward_backward(cls):
    cfg = BaselineConfig(embedding_dim=4, hidden_units=(8,), cin_layers=(4, 4), cross_layers=2)
    model = cls(40, M, cfg)
    out = model(torch.randint(0, 40, (B, M)))
    assert out.shape == (B,)
    out.sum().backward()
    assert all(p.grad is not None for p in model.dense_parameters() if p.requires_grad)


def test_dcn_v2_cross_formula():
    cfg = BaselineConfig(embedding_dim=2, hidden_units=(), cross_layers=1)
    model = DCN(10, 2, cfg).double()
    x0 = torch.randn(B, 4, dtype=torch.float64)
    w, b = model.cross_kernels[0], model.cross_bias[0]
    torch.testing.assert_close(model.cross(x0), x0 * (x0 @ w.T + b) + x0)
