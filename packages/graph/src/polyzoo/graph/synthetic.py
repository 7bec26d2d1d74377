"""A biased stochastic block graph for the quick reproduction and the scale benchmark.

Ground truth (documented, seeded):
- sensitive attribute s_i ~ Bernoulli(``sens_ratio``);
- label y_i ~ Bernoulli(``p_pos[s_i]``): the base rate of the positive class differs between groups, so a model that
  fits the labels is biased (ΔSP ≈ |p_pos[0] − p_pos[1]| for a perfect classifier);
- features x_i = ``label_signal``·(2y_i − 1)·u + ``sens_signal``·(2s_i − 1)·v + N(0, I), with fixed random unit
  directions u, v ∈ R^F;
- edges: a stochastic block model over the four blocks (s, y). The expected degree is ``avg_degree``; an edge
  between blocks is ``homophily_s`` times likelier when the endpoints share s, and ``homophily_y`` times when they
  share y, so message passing mixes sensitive information into every node's representation.
- splits: per class, 50 % train / 25 % val / 25 % test (seeded).

Edges are drawn per block pair: the count is Poisson with the block pair's expected number of edges, endpoints are
uniform inside the blocks; duplicates and self-loops are removed afterwards (so the realised degree is a little below
``avg_degree`` on small graphs). This scales to millions of edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch_geometric.data import Data

from polyzoo.graph.datasets import build_data, split_per_class

__all__ = ["BiasedSBMConfig", "biased_sbm", "synthetic_name"]


@dataclass
class BiasedSBMConfig:
    num_nodes: int = 2000
    num_features: int = 16
    avg_degree: float = 10.0
    sens_ratio: float = 0.5
    p_pos: tuple[float, float] = (0.3, 0.7)
    label_signal: float = 0.6
    sens_signal: float = 1.0
    homophily_s: float = 4.0
    homophily_y: float = 2.0
    seed: int = 0


def biased_sbm(config: BiasedSBMConfig | None = None) -> Data:
    """Generate the biased SBM graph (see the module docstring). Returns a checked ``Data``."""
    c = config or BiasedSBMConfig()
    if c.num_nodes < 8:
        raise ValueError(f"num_nodes: expected >= 8, got {c.num_nodes}")
    rng = np.random.default_rng(c.seed)
    n = c.num_nodes
    sens = (rng.random(n) < c.sens_ratio).astype(np.int64)
    y = (rng.random(n) < np.asarray(c.p_pos)[sens]).astype(np.int64)
    u, v = rng.standard_normal((2, c.num_features))
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    x = (
        c.label_signal * (2 * y - 1)[:, None] * u
        + c.sens_signal * (2 * sens - 1)[:, None] * v
        + rng.standard_normal((n, c.num_features))
    ).astype(np.float32)

    block = 2 * sens + y
    members = [np.nonzero(block == b)[0] for b in range(4)]
    weights = np.ones((4, 4))
    for a in range(4):
        for b in range(4):
            weights[a, b] *= c.homophily_s if (a // 2) == (b // 2) else 1.0
            weights[a, b] *= c.homophily_y if (a % 2) == (b % 2) else 1.0
    sizes = np.array([len(m) for m in members], dtype=np.float64)
    pairs = np.outer(sizes, sizes)
    # scale so that the expected number of (undirected) edges is n·avg_degree/2
    scale = (n * c.avg_degree / 2) / (0.5 * (weights * pairs).sum())
    chunks = []
    for a in range(4):
        for b in range(a, 4):
            if not len(members[a]) or not len(members[b]):
                continue
            lam = scale * weights[a, b] * pairs[a, b] * (0.5 if a == b else 1.0)
            m = rng.poisson(lam)
            src = members[a][rng.integers(0, len(members[a]), m)]
            dst = members[b][rng.integers(0, len(members[b]), m)]
            chunks.append(np.stack([src, dst], axis=1))
    edges = np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int64)
    splits = split_per_class(y, c.seed, None)
    return build_data(x, edges, y, sens, splits, where="biased_sbm")


def synthetic_name(config: BiasedSBMConfig) -> str:
    """A short description for reports."""
    return (
        f"biased SBM: {config.num_nodes} nodes, avg degree {config.avg_degree}, P(y=1|s)={config.p_pos}, "
        f"homophily s×{config.homophily_s} y×{config.homophily_y}, seed {config.seed}"
    )
