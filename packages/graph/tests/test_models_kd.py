"""Teachers/students from torch_geometric.nn and the distillation losses."""

import pytest
import torch
import torch.nn.functional as F

from polyzoo.graph.kd import euclidean_kd_loss, kl_kd_loss
from polyzoo.graph.models import SAGE, build_model


@pytest.mark.parametrize("name", ["gcn", "sage", "gin", "mlp", "sgc"])
def test_shapes_and_gradients(name, tiny_graph):
    model = build_model(name, tiny_graph.num_features, 8, 2, num_layers=2, dropout=0.1)
    out = model(tiny_graph.x, tiny_graph.edge_index)
    assert out.shape == (tiny_graph.num_nodes, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_raises():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("gat", 3, 4)


def test_sage_gcn_aggregator_is_dgl_gcn_mean():
    """DGL 'gcn' aggregator: W · (Σ_{j∈N(i)} h_j + h_i) / (deg_i + 1) + b."""
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    model = SAGE(3, 5, 2, num_layers=1, dropout=0.0, aggr="gcn")
    lin = model.convs[0].lin_l
    adj = torch.zeros(4, 4)
    adj[ei[1], ei[0]] = 1
    adj += torch.eye(4)
    ref = lin((adj @ x) / adj.sum(1, keepdim=True))
    torch.testing.assert_close(model(x, ei), ref)


def test_kl_loss():
    s, t = torch.randn(10, 2), torch.randn(10, 2)
    assert kl_kd_loss(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    T = 3.0
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    ref = (pt * (pt.log() - ps.log())).sum(1).mean() * T**2
    assert kl_kd_loss(s, t, T).item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        kl_kd_loss(s, t, 0.0)


def test_euclidean_loss():
    s, t = torch.randn(10, 2), torch.rand(10, 2).softmax(1)
    ref = ((s.softmax(1) - t) ** 2).sum().sqrt()
    assert euclidean_kd_loss(s, t).item() == pytest.approx(ref.item(), rel=1e-6)
    assert euclidean_kd_loss(s, t, "mean").item() == pytest.approx(ref.item() / 10**0.5, rel=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        euclidean_kd_loss(s, t[:5])
