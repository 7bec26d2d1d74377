"""RELIANT pieces: the Legendre step surrogate, the ΔSP/ΔEO surrogates, the proxy and the alternating steps."""

import pytest
import torch
from torch import nn

from polyzoo.graph.models import MLP
from polyzoo.graph.reliant import BiasProxy, Reliant, eo_surrogate, legendre_step, sp_surrogate


def official_approx(s):
    """The official ``approx_func`` written out term by term (papers file, §1)."""
    x = 2 * s - 1
    return (
        0.5
        + 0.5 * x
        - (1 / 16) * (5 * x**3 - 3 * x)
        + (1 / 128) * (63 * x**5 - 70 * x**3 + 15 * x)
        - (5 / 2048) * (429 * x**7 - 693 * x**5 + 315 * x**3 - 35 * x)
        + (7 / 32768) * (12155 * x**9 - 25740 * x**7 + 18018 * x**5 - 4620 * x**3 + 315 * x)
    )


def test_legendre_step_values():
    p = torch.linspace(0, 1, 1001, dtype=torch.float64)
    h = legendre_step(p)
    torch.testing.assert_close(h, official_approx(p), rtol=0, atol=1e-12)
    assert legendre_step(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(0.5, abs=1e-15)
    assert bool((h[1:] - h[:-1] >= 0).all()), "not monotone on [0, 1]"
    # close to the step's ends: 1 - Σ a_n = 0.0742 at p = 0 and its mirror at p = 1
    assert h[0].item() == pytest.approx(1 - (0.5 + 0.5 - 1 / 8 + 1 / 16 - 5 / 128 + 7 / 256), abs=1e-12)
    assert h[0].item() < 0.08 and h[-1].item() > 0.92
    # odd symmetry around 1/2
    torch.testing.assert_close(h + h.flip(0), torch.ones_like(h))


def test_sp_surrogate_zero_for_identical_groups_and_formula():
    prob = torch.tensor([[0.2, 0.8], [0.7, 0.3], [0.2, 0.8], [0.7, 0.3]])
    sens = torch.tensor([0, 0, 1, 1])
    assert sp_surrogate(prob, sens).item() == pytest.approx(0.0, abs=1e-12)
    prob = torch.rand(50, 2, generator=torch.Generator().manual_seed(0)).softmax(1)
    sens = torch.arange(50) % 2
    h = legendre_step(prob)
    ref = ((h[sens == 0].mean(0) - h[sens == 1].mean(0)) ** 2).sum()
    torch.testing.assert_close(sp_surrogate(prob, sens), ref)


def test_eo_surrogate_restricts_to_positive_labels():
    g = torch.Generator().manual_seed(1)
    prob = torch.rand(40, 2, generator=g).softmax(1)
    sens = torch.arange(40) % 2
    labels = (torch.arange(40) // 2) % 2
    idx = torch.arange(30)
    keep = (labels == 1) & (torch.arange(40) < 30)
    torch.testing.assert_close(eo_surrogate(prob, sens, labels, idx), sp_surrogate(prob, sens, keep))


def test_surrogate_empty_group_raises():
    with pytest.raises(ValueError, match="sensitive group 1"):
        sp_surrogate(torch.full((3, 2), 0.5), torch.zeros(3, dtype=torch.long))


def test_surrogate_is_differentiable():
    logits = torch.randn(20, 2, requires_grad=True)
    sp_surrogate(logits.softmax(1), torch.arange(20) % 2).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_proxy_modes():
    sens = torch.tensor([0, 1, 1, 0])
    x = torch.zeros(4, 3)
    oracle = BiasProxy(4, "oracle", sens=sens)
    assert oracle.augment(x)[:, 3:].tolist() == [[0, 1], [1, 0], [1, 0], [0, 1]]
    assert not oracle.learnable and not list(oracle.parameters())
    assert BiasProxy(4, "none").augment(x).shape == (4, 3)
    rnd = BiasProxy(4, "random", generator=torch.Generator().manual_seed(0))
    mean_view = rnd.augment(x, "mean")
    assert torch.equal(mean_view[:, 3:], rnd.weight.mean(0, keepdim=True).expand(4, 2))
    assert torch.equal(rnd.augment(x, "node")[:, 3:], rnd.weight)
    with pytest.raises(ValueError, match="proxy"):
        BiasProxy(4, "learned")


def _setup(view="node"):
    torch.manual_seed(0)
    n, f = 30, 4
    x = torch.randn(n, f)
    sens = torch.arange(n) % 2
    labels = (torch.arange(n) // 2) % 2
    proxy = BiasProxy(n, "random", generator=torch.Generator().manual_seed(0))
    student = MLP(f + 2, 8, 2, dropout=0.0)
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    popt = torch.optim.Adam(proxy.parameters(), lr=0.05)
    rel = Reliant("sp", 10.0, proxy, view, popt)
    edge_index = torch.zeros(2, 0, dtype=torch.long)
    mask = torch.ones(n, dtype=torch.bool)
    return rel, student, opt, x, edge_index, sens, labels, mask


def _snapshot(m: nn.Module):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_proxy_step_changes_only_the_proxy():
    rel, student, _, x, ei, sens, labels, mask = _setup()
    before_s, before_p = _snapshot(student), rel.proxy.weight.detach().clone()
    bias = rel.proxy_step(student, x, ei, sens, labels, mask)
    assert bias is not None
    for k, v in student.state_dict().items():
        assert torch.equal(v, before_s[k]), k
    assert not torch.equal(rel.proxy.weight, before_p)
    assert all(p.requires_grad for p in student.parameters())


def test_proxy_step_increases_the_surrogate():
    rel, student, _, x, ei, sens, labels, mask = _setup()
    first = rel.proxy_step(student, x, ei, sens, labels, mask)
    for _ in range(30):
        last = rel.proxy_step(student, x, ei, sens, labels, mask)
    assert last > first


@pytest.mark.parametrize("view", ["node", "mean"])
def test_student_step_changes_only_the_student(view):
    rel, student, opt, x, ei, sens, labels, mask = _setup(view)
    before_s, before_p = _snapshot(student), rel.proxy.weight.detach().clone()
    kd, bias = rel.student_step(student, opt, x, ei, lambda z: z.pow(2).mean(), sens, labels, mask)
    assert bias > 0 and kd > 0
    assert torch.equal(rel.proxy.weight, before_p)
    assert any(not torch.equal(v, before_s[k]) for k, v in student.state_dict().items())


def test_student_step_reduces_the_surrogate():
    rel, student, opt, x, ei, sens, labels, mask = _setup()
    zero_kd = lambda z: z.sum() * 0  # noqa: E731
    first = rel.student_step(student, opt, x, ei, zero_kd, sens, labels, mask)[1]
    for _ in range(50):
        last = rel.student_step(student, opt, x, ei, zero_kd, sens, labels, mask)[1]
    assert last < first


def test_vanilla_kd_has_no_proxy_step():
    proxy = BiasProxy(5, "none")
    rel = Reliant("none", 0.0, proxy)
    assert rel.proxy_step(MLP(3, 4, 2), torch.zeros(5, 3), None, None, None, None) is None
    with pytest.raises(ValueError, match="fair"):
        Reliant("dp", 1.0, proxy)


def test_surrogate_nodes_follow_the_official_path_without_label_leakage(tiny_graph):
    from polyzoo.graph.training import surrogate_nodes

    known = tiny_graph.sens >= 0
    # SP: the non-training nodes, as the official CPF path (approx_loss over idx_no_train); it needs only sens
    assert torch.equal(surrogate_nodes(tiny_graph, "sp"), ~tiny_graph.train_mask & known)
    # EO needs labels: by default only the labelled training nodes (no test labels); "non_train" is the official one
    assert torch.equal(surrogate_nodes(tiny_graph, "eo"), tiny_graph.train_mask & (tiny_graph.y >= 0) & known)
    assert torch.equal(surrogate_nodes(tiny_graph, "eo", "non_train"), ~tiny_graph.train_mask & known)
