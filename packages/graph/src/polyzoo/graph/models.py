"""Teachers (GCN, GraphSAGE, GIN) and students (MLP, GCN, SGC) for RELIANT, built from ``torch_geometric.nn``.

Paper: Y. Dong, B. Zhang, Y. Yuan, N. Zou, Q. Wang, J. Li, "RELIANT: Fair Knowledge Distillation for Graph Neural
Networks", SDM 2023 (arXiv 2301.01150). Official code (DGL): https://github.com/yushundong/RELIANT

Every model maps ``(x (N, F), edge_index (2, E)) -> logits (N, C)`` (C = 2 for the binary tasks) so that the
teacher trainer, the distillation losses and RELIANT never depend on a model class.

Notes against the official code:
- GraphSAGE: the official teacher is DGL ``SAGEConv(aggregator_type='gcn')``: one weight applied to the mean of a
  node's neighbours and itself. ``aggr="gcn"`` reproduces it with PyG ``SAGEConv(root_weight=False)`` over the graph
  with self-loops added; ``aggr="mean"`` is PyG's usual SAGE (separate root weight).
- GIN appears nowhere in the official code; it is added as a third teacher (``GINConv`` with a 2-layer MLP, sum).
- PLP (CPF's label-propagation student) is not provided.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn
from torch_geometric.nn import GCNConv, GINConv, SAGEConv, SGConv
from torch_geometric.utils import add_self_loops

__all__ = ["GCN", "GIN", "MLP", "SAGE", "SGC", "STUDENTS", "TEACHERS", "build_model"]


class MLP(nn.Module):
    """Graph-agnostic student: ``num_layers`` linear layers with ReLU and dropout (``edge_index`` is ignored)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, num_layers: int = 2, dropout: float = 0.5):
        super().__init__()
        dims = [in_channels] + [hidden] * (num_layers - 1) + [out_channels]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None = None) -> torch.Tensor:
        for i, lin in enumerate(self.layers):
            x = nn.functional.dropout(x, self.dropout, self.training)
            x = lin(x)
            if i < len(self.layers) - 1:
                x = x.relu()
        return x


class _ConvStack(nn.Module):
    def __init__(self, convs: list[nn.Module], dropout: float):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.dropout = dropout

    def _edges(self, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        return edge_index

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        edge_index = self._edges(edge_index, x.size(0))
        for i, conv in enumerate(self.convs):
            x = nn.functional.dropout(x, self.dropout, self.training)
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = x.relu()
        return x


def _dims(in_channels: int, hidden: int, out_channels: int, num_layers: int) -> list[tuple[int, int]]:
    if num_layers < 1:
        raise ValueError(f"num_layers: expected >= 1, got {num_layers}")
    dims = [in_channels] + [hidden] * (num_layers - 1) + [out_channels]
    return list(pairwise(dims))


class GCN(_ConvStack):
    """Kipf & Welling GCN (symmetric normalisation with self-loops, ``GCNConv``)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, num_layers: int = 2, dropout: float = 0.5):
        super().__init__([GCNConv(a, b) for a, b in _dims(in_channels, hidden, out_channels, num_layers)], dropout)


class SAGE(_ConvStack):
    """GraphSAGE; ``aggr="gcn"`` is DGL's 'gcn' aggregator (official teacher), ``"mean"`` PyG's default."""

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        aggr: str = "gcn",
    ):
        if aggr not in ("gcn", "mean"):
            raise ValueError(f"aggr: expected 'gcn' or 'mean', got {aggr!r}")
        self.gcn_aggr = aggr == "gcn"
        pairs = _dims(in_channels, hidden, out_channels, num_layers)
        super().__init__([SAGEConv(a, b, aggr="mean", root_weight=not self.gcn_aggr) for a, b in pairs], dropout)

    def _edges(self, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        if self.gcn_aggr:
            edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
        return edge_index


class GIN(_ConvStack):
    """GIN (Xu et al. 2019): ``GINConv`` over a 2-layer MLP per layer, sum aggregation, ε = 0."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, num_layers: int = 2, dropout: float = 0.5):
        convs = [
            GINConv(nn.Sequential(nn.Linear(a, hidden), nn.ReLU(), nn.Linear(hidden, b)))
            for a, b in _dims(in_channels, hidden, out_channels, num_layers)
        ]
        super().__init__(convs, dropout)


class SGC(nn.Module):
    """Simplified graph convolution (Wu et al. 2019): Â^K X W, one linear layer (``SGConv``, K hops)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.conv = SGConv(in_channels, out_channels, K=num_layers, cached=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = nn.functional.dropout(x, self.dropout, self.training)
        return self.conv(x, edge_index)


TEACHERS: dict[str, type[nn.Module]] = {"gcn": GCN, "sage": SAGE, "gin": GIN}
STUDENTS: dict[str, type[nn.Module]] = {"mlp": MLP, "gcn": GCN, "sgc": SGC}


def build_model(
    name: str, in_channels: int, hidden: int, out_channels: int = 2, num_layers: int = 2, dropout: float = 0.5
) -> nn.Module:
    """A teacher or student by name: one of ``gcn``, ``sage``, ``gin``, ``mlp``, ``sgc``."""
    classes = {**TEACHERS, **STUDENTS}
    if name not in classes:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(classes)}")
    return classes[name](in_channels, hidden, out_channels, num_layers=num_layers, dropout=dropout)
