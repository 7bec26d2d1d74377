"""The plain-torch fan-out subgraph sampler."""

import torch

from polyzoo.graph.models import GCN
from polyzoo.graph.sampling import SubgraphSampler


def test_batches_are_real_subgraphs(tiny_graph):
    ei = tiny_graph.edge_index
    real = set(map(tuple, ei.t().tolist()))
    sampler = SubgraphSampler(
        ei, tiny_graph.num_nodes, [3, 2], batch_size=16, generator=torch.Generator().manual_seed(0)
    )
    seen = []
    for batch in sampler:
        assert len(set(batch.n_id.tolist())) == len(batch.n_id)
        seen.append(batch.n_id[: batch.batch_size])
        glob = batch.n_id[batch.edge_index]
        assert set(map(tuple, glob.t().tolist())) <= real
        indeg = torch.bincount(batch.edge_index[1], minlength=len(batch.n_id))
        assert int(indeg[: batch.batch_size].max()) <= 3
        out = GCN(tiny_graph.num_features, 4, 2)(tiny_graph.x[batch.n_id], batch.edge_index)
        assert out.shape == (len(batch.n_id), 2)
    assert sorted(torch.cat(seen).tolist()) == list(range(tiny_graph.num_nodes))
    assert len(sampler) == len(seen)


def test_isolated_seed():
    ei = torch.tensor([[0, 1], [1, 0]])
    batch = SubgraphSampler(ei, 3, [2], batch_size=3, shuffle=False).sample(torch.tensor([2]))
    assert batch.n_id.tolist() == [2] and batch.edge_index.shape == (2, 0)
