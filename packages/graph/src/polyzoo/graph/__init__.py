"""polyzoo.graph: RELIANT fair knowledge distillation for GNNs on PyTorch Geometric.

Papers:
- RELIANT: Fair Knowledge Distillation for Graph Neural Networks (SDM 2023)

Modules: ``datasets`` (PyG fairness datasets), ``metrics`` (ΔSP/ΔEO, per-group utility), ``models``, ``kd``,
``reliant`` (surrogates, proxy, alternating optimisation), ``training``, ``sampling``, ``synthetic``, ``cli``.
See packages/graph/README.md. Built on torch-geometric; shared math comes from ``polyzoo.shared``.
"""

from importlib.metadata import version as _version

__version__ = _version("polyzoo-graph")
