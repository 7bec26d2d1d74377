"""Mini-batches through PyG's own ``NeighborLoader``, with a plain-PyTorch sampling backend when the compiled one is
missing.

PyG's ``NeighborSampler`` calls ``pyg-lib`` (or the older ``torch-sparse``) to draw neighbours, and raises
``ImportError`` when neither is installed. Neither installs from PyPI for the locked torch: ``pyg-lib`` is published
only on data.pyg.org, and ``torch-sparse`` is a source distribution that must be compiled against torch. So this
module keeps everything of PyG's loader (``NeighborLoader``: the seeds' batching, ``Data`` mini-batches with
``n_id``, ``e_id``, ``input_id``, ``batch_size``, ``num_sampled_nodes``/``num_sampled_edges`` for
``trim_to_layer``, worker processes) and replaces only the sampling kernel, :meth:`TorchNeighborSampler._sample`,
for homogeneous graphs:

- per hop, every frontier node keeps all of its incoming neighbours when it has at most ``k`` of them, and otherwise
  ``k`` of them drawn uniformly **without** replacement (``replace=True``: ``k`` draws with replacement), ``k = -1``
  meaning all, as PyG documents ``num_neighbors``;
- nodes are numbered seeds first, then new nodes in the order they are first reached, hop by hop;
- edges are the sampled ``(neighbour → frontier node)`` pairs in local numbering, with their edge ids in the
  original ``edge_index`` (``e_id``), so a model run on ``(batch.x, batch.edge_index)`` gives the seeds' outputs in
  its first ``batch.batch_size`` rows.

The draw is vectorised: every incoming edge of the hop's frontier gets a uniform random key, and the ``k`` smallest
keys per target are kept (one sort over the frontier's edges). That costs time linear in the frontier's total
in-degree, where pyg-lib's per-node reservoir draw costs ``k`` per node; it is meant as a correct, portable fallback,
and :func:`neighbor_loader` uses the compiled backend whenever it is installed.

Not supported by the fallback (a clear error says so): heterogeneous graphs, ``subgraph_type="induced"``, ``disjoint``,
temporal and weighted sampling.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch_geometric.typing as pyg_typing
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.sampler import NeighborSampler, SamplerOutput

__all__ = ["TorchNeighborSampler", "native_sampling_available", "neighbor_loader"]


def native_sampling_available() -> bool:
    """True when PyG can sample with its compiled backends (``pyg-lib`` or ``torch-sparse``)."""
    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


class TorchNeighborSampler(NeighborSampler):
    """PyG's ``NeighborSampler`` with its homogeneous sampling kernel written in plain PyTorch (module docstring).

    Args:
        data: a homogeneous ``Data`` graph (``edge_index``: source → target; incoming neighbours of a target are
            sampled, as PyG does for ``sample_direction="forward"``).
        num_neighbors: neighbours per node per hop, e.g. ``[10, 5]``; ``-1`` takes all.
        replace: draw with replacement.
        generator: the random generator of the draws (default: torch's global RNG, as PyG's loader workers expect).
    """

    def __init__(
        self,
        data: Data,
        num_neighbors: Sequence[int],
        replace: bool = False,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ):
        if not isinstance(data, Data):
            raise TypeError(f"TorchNeighborSampler samples homogeneous torch_geometric Data graphs, got {type(data)}")
        unsupported = {
            "subgraph_type": kwargs.get("subgraph_type", "directional") not in ("directional", "bidirectional"),
            "disjoint": bool(kwargs.get("disjoint", False)),
            "time_attr": kwargs.get("time_attr") is not None,
            "weight_attr": kwargs.get("weight_attr") is not None,
            "sample_direction": kwargs.get("sample_direction", "forward") != "forward",
        }
        bad = [name for name, on in unsupported.items() if on]
        if bad:
            raise NotImplementedError(
                f"TorchNeighborSampler does not support {', '.join(bad)}; install pyg-lib for these sampling modes"
            )
        if any(int(k) < -1 for k in num_neighbors):
            raise ValueError(f"num_neighbors must be >= -1 per hop, got {list(num_neighbors)}")
        if data.edge_index is not None and data.edge_index.numel():
            lo, hi = int(data.edge_index.min()), int(data.edge_index.max())
            if lo < 0 or hi >= data.num_nodes:
                raise ValueError(f"edge_index holds node ids in [{lo}, {hi}], outside [0, {data.num_nodes})")
        with warnings.catch_warnings():  # PyG warns that sampling without pyg-lib is deprecated; this is the fallback
            warnings.filterwarnings("ignore", message=".*without a 'pyg-lib' installation.*")
            super().__init__(data, list(num_neighbors), replace=replace, **kwargs)
        self.generator = generator
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)  # global id -> local id, reset per batch

    def _sample(self, seed: torch.Tensor, seed_time: torch.Tensor | None = None, **kwargs: Any) -> SamplerOutput:
        if isinstance(seed, dict):
            raise NotImplementedError("TorchNeighborSampler samples homogeneous graphs only; install pyg-lib")
        if seed_time is not None:
            raise NotImplementedError("TorchNeighborSampler does not do temporal sampling; install pyg-lib")
        seed = seed.to(torch.long).reshape(-1)
        if torch.unique(seed).numel() != seed.numel():
            raise ValueError("the seed nodes of one batch must be distinct")
        local = self._local
        colptr, row = self.colptr.to(torch.long), self.row.to(torch.long)
        local[seed] = torch.arange(seed.numel())
        nodes, rows, cols, edges = [seed], [], [], []
        num_nodes, num_edges = [seed.numel()], []
        count, frontier = seed.numel(), seed
        try:
            for k in self.num_neighbors.get_mapped_values():
                eid, dst = self._draw(colptr, frontier, int(k))
                src = row[eid]
                new = _first_occurrences(src[local[src] < 0])
                local[new] = torch.arange(count, count + new.numel())
                count += new.numel()
                nodes.append(new)
                rows.append(local[src])
                cols.append(local[dst])
                edges.append(eid)
                num_nodes.append(new.numel())
                num_edges.append(eid.numel())
                frontier = new
            node = torch.cat(nodes)
        finally:
            local[torch.cat(nodes)] = -1
        empty = torch.zeros(0, dtype=torch.long)
        return SamplerOutput(
            node=node,
            row=torch.cat(rows) if rows else empty,
            col=torch.cat(cols) if cols else empty,
            edge=torch.cat(edges) if edges else empty,
            batch=None,
            num_sampled_nodes=num_nodes,
            num_sampled_edges=num_edges,
        )

    def _draw(self, colptr: torch.Tensor, frontier: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled incoming edges of ``frontier`` for one hop: (CSC edge positions, their target global ids)."""
        start = colptr[frontier]
        deg = colptr[frontier + 1] - start
        if k == 0 or frontier.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        if self.replace and k > 0:  # k independent uniform draws per node that has neighbours
            has = deg > 0
            tgt, s, d = frontier[has].repeat_interleave(k), start[has], deg[has]
            off = (torch.rand(tgt.numel(), generator=self.generator) * d.repeat_interleave(k)).long()
            return s.repeat_interleave(k) + off, tgt
        seg = torch.repeat_interleave(torch.arange(frontier.numel()), deg)  # frontier slot of every incoming edge
        first = torch.cumsum(deg, 0) - deg
        eid = start[seg] + torch.arange(seg.numel()) - first[seg]
        if k > 0:
            keep = deg[seg] <= k  # nodes with at most k neighbours keep all of them
            big = ~keep
            if bool(big.any()):
                key = torch.rand(int(big.sum()), generator=self.generator, dtype=torch.float64)
                b_seg = seg[big]
                order = torch.argsort(b_seg.to(torch.float64) + key)  # by node, then by random key
                b_seg_sorted = b_seg[order]
                starts = torch.searchsorted(b_seg_sorted, b_seg_sorted, right=False)
                rank = torch.arange(b_seg_sorted.numel()) - starts
                chosen = torch.zeros_like(keep)
                chosen_idx = big.nonzero().view(-1)[order[rank < k]]
                chosen[chosen_idx] = True
                keep = keep | chosen
            eid, seg = eid[keep], seg[keep]
        return eid, frontier[seg]


def _first_occurrences(ids: torch.Tensor) -> torch.Tensor:
    """The distinct values of ``ids`` in the order they first appear."""
    if ids.numel() == 0:
        return ids
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((uniq.numel(),), ids.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(ids.numel()), reduce="amin")
    return uniq[torch.argsort(first)]


def neighbor_loader(
    data: Data,
    num_neighbors: Sequence[int],
    *,
    backend: str = "auto",
    replace: bool = False,
    generator: torch.Generator | None = None,
    **loader_kwargs: Any,
) -> NeighborLoader:
    """PyG's ``NeighborLoader`` over ``data``, sampling with pyg-lib/torch-sparse when installed (``backend="auto"``
    or ``"native"``) and with :class:`TorchNeighborSampler` otherwise (or with ``backend="torch"``).

    ``loader_kwargs`` go to ``NeighborLoader`` (``input_nodes``, ``batch_size``, ``shuffle``, ``num_workers``, …).
    """
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', got {backend!r}")
    if backend == "native" and not native_sampling_available():
        raise ImportError("backend='native' needs pyg-lib or torch-sparse, and neither is installed")
    sampler = None
    if backend == "torch" or (backend == "auto" and not native_sampling_available()):
        sampler_kwargs = {k: loader_kwargs[k] for k in _SAMPLER_ARGS if k in loader_kwargs}
        sampler = TorchNeighborSampler(data, num_neighbors, replace=replace, generator=generator, **sampler_kwargs)
    return NeighborLoader(data, list(num_neighbors), replace=replace, neighbor_sampler=sampler, **loader_kwargs)


# NeighborLoader arguments that configure its sampler (they must reach TorchNeighborSampler too)
_SAMPLER_ARGS = ("subgraph_type", "disjoint", "time_attr", "weight_attr", "is_sorted")
