"""RELIANT: the differentiable bias surrogates, the learnable proxy and the alternating (min–max) optimisation.

Paper: Y. Dong, B. Zhang, Y. Yuan, N. Zou, Q. Wang, J. Li, "RELIANT: Fair Knowledge Distillation for Graph Neural
Networks", SDM 2023 (arXiv 2301.01150). Official code (DGL): https://github.com/yushundong/RELIANT
(``src/CPF-master/distill_dgl.py``, ``src/GraphAKD/.../stu-gcn/train.py``, ``hypersearch.py``).

Pieces, each decoupled from teacher and student classes (a student is any ``module(x, edge_index) -> logits``):

- ``legendre_step(p)``: the official degree-9 odd Legendre series of the step 1[p > 0.5] in x = 2p − 1,
  ½ + Σ_{n odd ≤ 9} a_n P_n(x) with a_n = ∫₀¹ P_n (½, −⅛, 1/16, −5/128, 7/256), exactly the official
  ``approx_func``. Note: the L2 projection of the step would use (2n+1)/2 · ∫₀¹ P_n; that series overshoots (1.12 at
  p = 1) and is not monotone, while the official one is monotone on [0, 1] with values 0.074 at p = 0, ½ at ½ and
  0.926 at p = 1. We keep the official coefficients (a monotone surrogate of the hard prediction).
- ``sp_surrogate``: Σ_c (mean_{s=0} H̃(P_ic) − mean_{s=1} H̃(P_ic))², the smooth ΔSP; ``eo_surrogate``: the same on
  nodes with y = 1 (smooth ΔEO).
- ``BiasProxy``: two extra input columns appended to the student's features, ``random`` (learnable, U[0, 1) init,
  the official default ``--proxy 2``), ``oracle`` (fixed [s, 1 − s], ``--proxy 1``) or ``none`` (no columns).
- ``Reliant``: one epoch = a student step minimising L_KD + α·surrogate, then a proxy step maximising α·surrogate
  (loss −α·surrogate, only the proxy's optimiser steps; the student's weights are untouched).

The "student sees only the proxy mean" quirk. In the official code the student step and the evaluation feed
``cat(X, mean(P))`` (the proxy averaged over nodes, the same two numbers for every node), while the proxy step feeds
``cat(X, P)`` per node. The paper states one min–max objective min_θ max_P L_KD(θ) + α·B(θ, P), in which both players
act on the same input. With the mean view the student's weights on the proxy columns only ever meet a constant
(a learned bias term), so the adversary's per-node choice cannot change what the student learns: RELIANT then
reduces to KD + α·surrogate. We follow the equations: ``proxy_view="node"`` (default) gives the student ``cat(X, P)``
in its step and at evaluation (P is per node and, after training, fixed; the setting is transductive).
``proxy_view="mean"`` reproduces the official code literally.

Other deviations: the CPF path drops the last two real feature columns (``features[:, :-2]``) before appending the
proxy; we append to the full features. The surrogate is applied on the training nodes with known labels and
sensitive attribute (as the AKD path does with ``idx_train``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BiasProxy", "Reliant", "eo_surrogate", "legendre_step", "sp_surrogate"]

# a_n = ∫_0^1 P_n(x) dx for n = 1, 3, 5, 7, 9 and the monomial coefficients of P_n (from x^1 upwards, odd powers)
_P = {
    1: (1.0, [1.0]),
    3: (1 / 2, [-3.0, 5.0]),
    5: (1 / 8, [15.0, -70.0, 63.0]),
    7: (1 / 16, [-35.0, 315.0, -693.0, 429.0]),
    9: (1 / 128, [315.0, -4620.0, 18018.0, -25740.0, 12155.0]),
}
_A = {1: 1 / 2, 3: -1 / 8, 5: 1 / 16, 7: -5 / 128, 9: 7 / 256}


def legendre_step(p: torch.Tensor) -> torch.Tensor:
    """Smooth step H̃(p) ≈ 1[p > 0.5] for probabilities ``p`` (any shape), the official ``approx_func``."""
    x = 2 * p - 1
    out = torch.full_like(x, 0.5)
    x2 = x * x
    for n, (scale, coeffs) in _P.items():
        # P_n(x) = scale · Σ_k coeffs[k] x^(2k+1), evaluated by Horner's rule in x²
        acc = torch.zeros_like(x)
        for c in reversed(coeffs):
            acc = acc * x2 + c
        out = out + _A[n] * scale * acc * x
    return out


def _groups(sens: torch.Tensor, mask: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the selected nodes of sensitive group 0 and 1 (each must hold a node)."""
    s0, s1 = mask & (sens == 0), mask & (sens == 1)
    for m, g in ((s0, 0), (s1, 1)):
        if not bool(m.any()):
            raise ValueError(f"{what}: no node of sensitive group {g} among the {int(mask.sum())} selected nodes")
    return s0.nonzero().view(-1), s1.nonzero().view(-1)


def _group_gap(
    prob: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor, what: str, groups: tuple | None = None
) -> torch.Tensor:
    s0, s1 = _groups(sens, mask, what) if groups is None else groups
    h = legendre_step(prob)
    return ((h[s0].mean(0) - h[s1].mean(0)) ** 2).sum()


def _mask(n: int, index: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if index is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    if index.dtype == torch.bool:
        return index
    m = torch.zeros(n, dtype=torch.bool, device=device)
    m[index] = True
    return m


def sp_surrogate(prob: torch.Tensor, sens: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable ΔSP: Σ_c (mean_{i∈idx,s=0} H̃(P_ic) − mean_{i∈idx,s=1} H̃(P_ic))².

    Args:
        prob: (N, C) class probabilities. sens: (N,) in {0, 1} (other values are ignored).
        index: boolean mask or indices of the nodes to use; all when ``None``.
    """
    return _group_gap(prob, sens, _mask(prob.shape[0], index, prob.device), "sp_surrogate")


def eo_surrogate(
    prob: torch.Tensor, sens: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """Differentiable ΔEO: the SP surrogate restricted to the selected nodes with label 1."""
    m = _mask(prob.shape[0], index, prob.device) & (labels == 1)
    return _group_gap(prob, sens, m, "eo_surrogate")


class BiasProxy(nn.Module):
    """The learnable proxy: per-node two columns appended to the student's input.

    Args:
        num_nodes: N.
        mode: ``random`` (learnable, U[0, 1) init), ``oracle`` (fixed [s, 1 − s]) or ``none``.
        sens: (N,) sensitive attribute, needed for ``oracle``.
        generator: RNG of the random init.
    """

    def __init__(
        self,
        num_nodes: int,
        mode: str = "random",
        sens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if mode not in ("random", "oracle", "none"):
            raise ValueError(f"proxy: expected 'random', 'oracle' or 'none', got {mode!r}")
        self.mode = mode
        if mode == "random":
            self.weight = nn.Parameter(torch.rand(num_nodes, 2, generator=generator))
        elif mode == "oracle":
            if sens is None:
                raise ValueError("proxy='oracle' needs the sensitive attribute")
            s = (sens == 1).float()
            self.register_buffer("weight", torch.stack([s, 1 - s], dim=1))
        else:
            self.register_buffer("weight", torch.zeros(num_nodes, 0))

    @property
    def width(self) -> int:
        """Number of columns appended (2, or 0 for ``none``)."""
        return 0 if self.mode == "none" else 2

    @property
    def learnable(self) -> bool:
        return self.mode == "random"

    def augment(self, x: torch.Tensor, view: str = "node", node_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``cat(x, P)`` (view ``node``) or ``cat(x, mean(P))`` broadcast (view ``mean``); x unchanged for ``none``.

        Args:
            x: (n, F) features of the nodes ``node_ids`` (all N nodes when ``None``).
        """
        if self.mode == "none":
            return x
        if view == "node":
            p = self.weight if node_ids is None else self.weight[node_ids]
        elif view == "mean":
            p = self.weight.mean(0, keepdim=True).expand(x.shape[0], -1)
        else:
            raise ValueError(f"proxy_view: expected 'node' or 'mean', got {view!r}")
        return torch.cat([x, p.to(x.dtype)], dim=1)


def _plain_step(name: str, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    loss.backward()
    optimizer.step()


@dataclass
class ReliantOutput:
    """Losses of one alternating epoch (floats)."""

    kd: float
    bias: float
    proxy_bias: float | None


class Reliant:
    """The alternating optimisation, independent of the student class and of the KD loss.

    Args:
        fair: ``sp``, ``eo`` or ``none`` (``none`` is vanilla KD: no surrogate, no proxy step).
        alpha: weight α of the surrogate (the official CPF default is 1e3 with the Euclidean KD loss).
        proxy: a ``BiasProxy``.
        proxy_view: ``node`` (paper's equations, default) or ``mean`` (official code); see the module docstring.
        proxy_optimizer: optimiser over ``proxy.parameters()`` (needed when the proxy is learnable and fair≠none).
        forward: ``forward(model, x, edge_index) -> logits`` (default: ``model(x, edge_index)``; the training loop
            passes one that runs under autocast and returns float32 logits).
        step: ``step(name, loss, optimizer)`` doing backward and the optimiser step (default: ``loss.backward();
            optimizer.step()``; the training loop passes one with gradient scaling for fp16). ``name`` is
            ``"student"`` or ``"proxy"``.

    The node groups of the surrogate are computed once per ``(sens, labels, mask)`` tensor objects and reused, so a
    step reads nothing back from the device (pass new tensors, not ones modified in place, to change them).
    """

    def __init__(
        self,
        fair: str,
        alpha: float,
        proxy: BiasProxy,
        proxy_view: str = "node",
        proxy_optimizer: torch.optim.Optimizer | None = None,
        forward=None,
        step=None,
    ):
        if fair not in ("sp", "eo", "none"):
            raise ValueError(f"fair: expected 'sp', 'eo' or 'none', got {fair!r}")
        if proxy_view not in ("node", "mean"):
            raise ValueError(f"proxy_view: expected 'node' or 'mean', got {proxy_view!r}")
        if fair != "none" and proxy.learnable and proxy_optimizer is None:
            raise ValueError("a learnable proxy needs proxy_optimizer")
        self.fair, self.alpha, self.proxy, self.proxy_view = fair, float(alpha), proxy, proxy_view
        self.proxy_optimizer = proxy_optimizer
        self.forward = forward or (lambda model, x, edge_index: model(x, edge_index))
        self.step = step or _plain_step
        self._group_cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def student_input(self, x: torch.Tensor, node_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The student's input in its step and at evaluation."""
        return self.proxy.augment(x, self.proxy_view, node_ids)

    def surrogate(self, logits: torch.Tensor, sens: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor):
        """α-free surrogate of the chosen fairness notion on ``mask`` nodes (0 for ``none``)."""
        if self.fair == "none":
            return logits.new_zeros(())
        prob = logits.softmax(dim=-1)
        key = (sens, labels, mask)
        cache = self._group_cache
        if cache is None or any(a is not b for a, b in zip(cache[0], key, strict=True)):
            m = _mask(prob.shape[0], mask, prob.device)
            if self.fair == "eo":
                m = m & (labels == 1)
            self._group_cache = cache = (key, _groups(sens, m, f"{self.fair}_surrogate"))
        return _group_gap(prob, sens, mask, "", cache[1])

    def student_step(
        self,
        student: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        kd_loss,
        sens: torch.Tensor,
        labels: torch.Tensor,
        fair_mask: torch.Tensor,
        node_ids: torch.Tensor | None = None,
        sync: bool = True,
    ):
        """Minimise ``kd_loss(logits) + α·surrogate`` over the student's parameters (the proxy is held fixed).

        Args:
            kd_loss: callable ``logits (n, C) -> scalar`` (the distillation term, on the nodes it chooses).
            fair_mask: (n,) boolean, the nodes of the surrogate.
            sync: return floats (True) or the detached device tensors (False: no host synchronisation).
        """
        student.train()
        optimizer.zero_grad(set_to_none=True)
        logits = self.forward(student, self.student_input(x, node_ids).detach(), edge_index)
        kd = kd_loss(logits)
        bias = self.surrogate(logits, sens, labels, fair_mask)
        self.step("student", kd + self.alpha * bias, optimizer)
        if sync:
            return float(kd.detach()), float(bias.detach())
        return kd.detach(), bias.detach()

    def proxy_step(
        self,
        student: nn.Module,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        sens: torch.Tensor,
        labels: torch.Tensor,
        fair_mask: torch.Tensor,
        node_ids: torch.Tensor | None = None,
        sync: bool = True,
    ):
        """Maximise α·surrogate over the proxy (loss −α·surrogate); the student's weights do not change.

        The student runs in train mode as in the official code (dropout active). Returns the surrogate, or ``None``
        when there is nothing to update (vanilla KD, or a fixed proxy).
        """
        if self.fair == "none" or not self.proxy.learnable:
            return None
        params = [p for p in student.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            self.proxy_optimizer.zero_grad(set_to_none=True)
            student.train()
            logits = self.forward(student, self.proxy.augment(x, "node", node_ids), edge_index)
            bias = self.surrogate(logits, sens, labels, fair_mask)
            self.step("proxy", -self.alpha * bias, self.proxy_optimizer)
        finally:
            for p in params:
                p.requires_grad_(True)
        return float(bias.detach()) if sync else bias.detach()
