"""PyG's NeighborLoader with the plain-PyTorch sampling backend (polyzoo.graph.sampling)."""

import pytest
import torch
from torch_geometric.data import Data, HeteroData

from polyzoo.graph.models import GCN
from polyzoo.graph.sampling import TorchNeighborSampler, neighbor_loader


def _in_neighbours(edge_index: torch.Tensor, node: int) -> list[int]:
    return sorted(edge_index[0, edge_index[1] == node].tolist())


def test_batches_are_real_subgraphs_with_pyg_fields(tiny_graph):
    ei = tiny_graph.edge_index
    loader = neighbor_loader(
        tiny_graph, [3, 2], backend="torch", batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    seen = []
    for batch in loader:
        n_id, bs = batch.n_id, batch.batch_size
        assert len(set(n_id.tolist())) == len(n_id)  # every node once
        seen.append(n_id[:bs])
        # each sampled edge is the original edge it claims to be (e_id), in the original direction
        assert torch.equal(n_id[batch.edge_index], ei[:, batch.e_id])
        # no edge is drawn twice without replacement
        assert len(set(batch.e_id.tolist())) == batch.e_id.numel()
        # hop 1: every seed has min(k, in-degree) sampled incoming neighbours
        hop1 = batch.num_sampled_edges[0]
        indeg = torch.bincount(batch.edge_index[1, :hop1], minlength=len(n_id))[:bs]
        full = torch.bincount(ei[1], minlength=tiny_graph.num_nodes)[n_id[:bs]]
        assert torch.equal(indeg, full.clamp(max=3))
        assert sum(batch.num_sampled_nodes) == len(n_id) and sum(batch.num_sampled_edges) == batch.e_id.numel()
        assert torch.equal(batch.x, tiny_graph.x[n_id]) and torch.equal(batch.y, tiny_graph.y[n_id])
        out = GCN(tiny_graph.num_features, 4, 2)(batch.x, batch.edge_index)
        assert out.shape == (len(n_id), 2)
    assert sorted(torch.cat(seen).tolist()) == list(range(tiny_graph.num_nodes))


def test_all_neighbours_with_minus_one(tiny_graph):
    ei = tiny_graph.edge_index
    batch = next(iter(neighbor_loader(tiny_graph, [-1, -1], backend="torch", input_nodes=torch.tensor([5]))))
    assert batch.n_id[0] == 5
    hop1 = batch.num_sampled_edges[0]
    got = sorted(batch.n_id[batch.edge_index[0, :hop1]].tolist())
    assert got == _in_neighbours(ei, 5)
    # two hops of "all": the node set is the 2-hop in-neighbourhood
    one = set(_in_neighbours(ei, 5))
    two = set().union(*(_in_neighbours(ei, v) for v in one)) if one else set()
    assert set(batch.n_id.tolist()) == {5} | one | two


def test_draw_is_uniform_without_replacement():
    # node 0 has 10 in-neighbours 1..10; draw 3 of them many times: each appears with probability 3/10
    ei = torch.stack([torch.arange(1, 11), torch.zeros(10, dtype=torch.long)])
    data = Data(edge_index=ei, num_nodes=11)
    sampler = TorchNeighborSampler(data, [3], generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(11)
    draws = 4000
    for _ in range(draws):
        out = sampler._sample(torch.tensor([0]))
        picked = out.node[out.row]
        assert picked.numel() == 3 and picked.unique().numel() == 3
        counts[picked] += 1
    expected, sd = draws * 0.3, (draws * 0.3 * 0.7) ** 0.5
    assert (counts[1:] - expected).abs().max() < 5 * sd


def test_replacement_draws_k_per_node():
    ei = torch.tensor([[1, 2], [0, 0]])
    data = Data(edge_index=ei, num_nodes=3)
    out = TorchNeighborSampler(data, [5], replace=True, generator=torch.Generator().manual_seed(0))._sample(
        torch.tensor([0])
    )
    assert out.row.numel() == 5 and set(out.node[out.row].tolist()) <= {1, 2}


def test_isolated_seed_and_edge_order_independence():
    data = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3)
    batch = next(iter(neighbor_loader(data, [2], backend="torch", input_nodes=torch.tensor([2]))))
    assert batch.n_id.tolist() == [2] and batch.edge_index.shape == (2, 0)


def test_unsupported_modes_and_bad_input_say_so(tiny_graph):
    with pytest.raises(NotImplementedError, match="disjoint"):
        TorchNeighborSampler(tiny_graph, [2], disjoint=True)
    with pytest.raises(TypeError, match="homogeneous"):
        TorchNeighborSampler(HeteroData(), [2])
    bad = Data(edge_index=torch.tensor([[0, 7], [1, 0]]), num_nodes=3)
    with pytest.raises(ValueError, match="outside"):
        TorchNeighborSampler(bad, [2])
    with pytest.raises(ValueError, match="backend"):
        neighbor_loader(tiny_graph, [2], backend="cuda")
