"""A plain-PyTorch fan-out subgraph sampler (GraphSAGE-style), for mini-batch teacher training and distillation.

PyG's ``NeighborLoader`` needs the compiled ``pyg-lib`` or ``torch-sparse`` packages. Neither has a wheel on PyPI for
torch 2.13 (pyg-lib is only on data.pyg.org; torch-sparse ships an sdist that compiles against torch), so this
package does not depend on them. ``SubgraphSampler`` does the same job in a few vectorised torch ops:

- per hop, each frontier node draws ``fanout`` incoming neighbours uniformly **with replacement** (duplicates are
  then removed, so a node of degree ≤ fanout keeps a random subset of its neighbours rather than all of them; this
  differs from ``NeighborLoader``, which samples without replacement);
- the batch's nodes are ``n_id`` (seeds first, then newly reached nodes hop by hop) and its edges the sampled
  (neighbour → frontier) pairs, relabelled to positions in ``n_id``.
A model run on ``(x[n_id], edge_index)`` gives the seeds' outputs in its first ``batch_size`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

__all__ = ["SampledBatch", "SubgraphSampler"]


@dataclass
class SampledBatch:
    n_id: torch.Tensor  # (n,) global node ids, seeds first
    edge_index: torch.Tensor  # (2, e) local indices into n_id
    batch_size: int  # number of seeds


class SubgraphSampler:
    """Iterate over ``seeds`` in batches, each expanded by ``len(fanouts)`` hops of sampled neighbours.

    Args:
        edge_index: (2, E) global edges (source → target); incoming neighbours of a target are sampled.
        num_nodes: N.
        fanouts: neighbours per node per hop, e.g. ``(10, 10)``.
        batch_size: seeds per batch.
        seeds: node ids to iterate (default all nodes).
        shuffle: shuffle the seeds each pass.
        generator: RNG for shuffling and sampling.
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        num_nodes: int,
        fanouts: Sequence[int],
        batch_size: int,
        seeds: torch.Tensor | None = None,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ):
        if batch_size < 1 or any(f < 1 for f in fanouts):
            raise ValueError(f"batch_size and fanouts must be >= 1, got {batch_size}, {list(fanouts)}")
        if edge_index.numel() and int(edge_index.max()) >= num_nodes:
            raise ValueError(f"edge_index points outside the node range [0, {num_nodes})")
        order = torch.argsort(edge_index[1], stable=True)
        self.col = edge_index[0][order].contiguous()  # sources, grouped by target
        deg = torch.bincount(edge_index[1], minlength=num_nodes)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        self.rowptr[1:] = torch.cumsum(deg, 0)
        self.deg = deg
        self.num_nodes, self.fanouts, self.batch_size = num_nodes, list(fanouts), batch_size
        self.seeds = torch.arange(num_nodes) if seeds is None else seeds.reshape(-1)
        self.shuffle, self.generator = shuffle, generator
        self._pos = torch.full((num_nodes,), -1, dtype=torch.long)

    def __len__(self) -> int:
        return (len(self.seeds) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[SampledBatch]:
        seeds = self.seeds
        if self.shuffle:
            seeds = seeds[torch.randperm(len(seeds), generator=self.generator)]
        for start in range(0, len(seeds), self.batch_size):
            yield self.sample(seeds[start : start + self.batch_size])

    def sample(self, seeds: torch.Tensor) -> SampledBatch:
        """The sampled subgraph around ``seeds`` (unique node ids)."""
        pos = self._pos
        n_id = [seeds]
        pos[seeds] = torch.arange(len(seeds))
        count = len(seeds)
        frontier = seeds
        src_all, dst_all = [], []
        for fanout in self.fanouts:
            deg = self.deg[frontier]
            has = deg > 0
            f_nodes = frontier[has].repeat_interleave(fanout)
            if f_nodes.numel() == 0:
                break
            r = torch.rand(f_nodes.numel(), generator=self.generator)
            off = (r * self.deg[f_nodes]).long()
            nbr = self.col[self.rowptr[f_nodes] + off]
            key = torch.unique(nbr * self.num_nodes + f_nodes)  # drop repeated draws
            nbr, f_nodes = key // self.num_nodes, key % self.num_nodes
            new = torch.unique(nbr[pos[nbr] < 0])
            pos[new] = torch.arange(count, count + len(new))
            count += len(new)
            n_id.append(new)
            src_all.append(pos[nbr])
            dst_all.append(pos[f_nodes])
            frontier = new
        all_ids = torch.cat(n_id)
        pos[all_ids] = -1
        if src_all:
            edge_index = torch.stack([torch.cat(src_all), torch.cat(dst_all)])
        else:
            edge_index = torch.zeros(2, 0, dtype=torch.long)
        return SampledBatch(all_ids, edge_index, len(seeds))
