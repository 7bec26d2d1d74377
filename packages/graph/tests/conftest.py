"""Fixtures for the graph tests: one torch thread per test (the CI machine is shared; GNN scatter kernels slow down
badly under thread oversubscription), the shared real data folder, and a tiny biased graph."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyzoo.graph.synthetic import BiasedSBMConfig, biased_sbm
from polyzoo.shared.paths import shared_data_dir


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_graphs() -> Path:
    root = shared_data_dir(__file__)
    graphs = root.resolve() / "graphs"
    if not graphs.is_dir():
        pytest.skip(f"real graph data not found at {graphs} (set POLYZOO_SHARED_DATA to the shared data folder)")
    return graphs


@pytest.fixture(scope="session")
def tiny_graph():
    return biased_sbm(BiasedSBMConfig(num_nodes=120, num_features=6, avg_degree=6.0, seed=3))
