"""FTRL-Proximal and group-lasso FTRL (GFTRL) as ``torch.optim.Optimizer``s, with sparse-gradient support.

Papers: McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013 (FTRL-Proximal, Algorithm 1);
Yan & Li, xDeepInt, DLP-KDD 2020, arXiv 2301.01089 (group-lasso FTRL on embedding rows).
Official code: https://github.com/yanyachen/xDeepInt, ``xdeepint/src/optimizer.py`` (``GFTRL``); the PIN uses
``tf.train.FtrlOptimizer``.

Per coordinate, with gradient g, both keep ``n`` (sum of squared gradients) and ``z``:

    σ = (√(n + g²) − √n) / α,   z ← z + g − σ·w,   n ← n + g².

* :class:`FTRL` (element-wise L1: interaction selection on the PIN kernels):
  ``w = 0`` if ``|z| ≤ λ1`` else ``w = −(z − sign(z)·λ1) / ((β + √n)/α + λ2)``.
* :class:`GroupFTRL` (one group per embedding row of width D: feature selection):
  ``w_row = 0`` if ``‖z_row‖₂ ≤ λ1·√D`` else ``w_row = z_row·(λ1·√D/‖z_row‖ − 1) / ((β + √n_row)/α + λ2)``.

Sparse gradients (``nn.Embedding(sparse=True)``, :class:`~polyzoo.recsys.models.FieldEmbedding`) update the
rows present in the batch (duplicates summed first). Dense gradients update every row, as the official
``_apply_dense`` does (so a row whose z is 0 becomes exactly 0 at the first step).

Sparse path of :class:`GroupFTRL` against the official code: the official ``_apply_sparse`` calls
``_apply_dense``, i.e. it densifies the gradient and re-solves **every** row at every step. A row outside the
batch has g = 0, hence σ = 0 and unchanged (n, z), so re-solving it gives again the weight it got when it was last
solved; the one visible effect is at the **first** step, where every row not yet in a batch has z = 0 and is set
to exactly 0 (a row first seen later then starts from w = 0). ``unseen_rows="zero"`` (default) reproduces this
without densifying each step: at a parameter's first step every row is solved once from its (n, z) (one O(rows·D)
pass), afterwards only the batch rows are touched — bit-for-bit the official result. ``unseen_rows="keep"`` is
the purely lazy form (rows keep their initial values until their first gradient; not the official behaviour).
:class:`FTRL`'s sparse path is lazy, as TensorFlow's own sparse FTRL kernel is.

Differences from TensorFlow's ``FtrlOptimizer`` (the official PIN optimiser), documented rather than copied:
TF has no β (it is 0), starts ``n`` at ``initial_accumulator_value=0.1`` and uses ``2·λ2`` in the denominator.
Pass ``beta=0, initial_accumulator=0.1, l2=2*l2_tf`` to get TF's update (:func:`tf_ftrl_kwargs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["FTRL", "GroupFTRL", "tf_ftrl_kwargs", "zero_row_mask", "zero_weight_ratio"]


def tf_ftrl_kwargs(learning_rate: float, l1: float, l2: float, initial_accumulator: float = 0.1) -> dict[str, float]:
    """Arguments of :class:`FTRL` that reproduce ``tf.train.FtrlOptimizer(learning_rate, lr_power=-0.5,
    initial_accumulator_value, l1, l2)``."""
    return {"alpha": learning_rate, "beta": 0.0, "l1": l1, "l2": 2.0 * l2, "initial_accumulator": initial_accumulator}


def _check(alpha: float, beta: float, l1: float, l2: float) -> None:
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    for name, value in (("beta", beta), ("l1", l1), ("l2", l2)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _sparse_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalesced sparse gradient of a 2-D parameter -> (row indices (K,), row gradients (K, D))."""
    grad = grad.coalesce()
    return grad.indices()[0], grad.values()


class _FTRLBase(Optimizer):
    def __init__(self, params: Iterable[Any], defaults: dict[str, float]) -> None:
        _check(defaults["alpha"], defaults["beta"], defaults["l1"], defaults["l2"])
        super().__init__(params, defaults)

    def _state(self, p: torch.Tensor, initial_accumulator: float) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["n"] = torch.full_like(p, initial_accumulator, memory_format=torch.preserve_format)
            state["z"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @staticmethod
    def _accumulate(
        w: torch.Tensor, g: torch.Tensor, n: torch.Tensor, z: torch.Tensor, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """σ = (√(n+g²) − √n)/α; z += g − σ w; n += g². Returns the new (n, z)."""
        new_n = n + g * g
        sigma = (new_n.sqrt() - n.sqrt()) / alpha
        return new_n, z + g - sigma * w

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._update(p, p.grad, group)
        return loss

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError


class FTRL(_FTRLBase):
    """Per-coordinate FTRL-Proximal with L1/L2 (McMahan et al. 2013, Algorithm 1).

    Args:
        alpha, beta: per-coordinate learning rate ``α / (β + √n)``.
        l1, l2: λ1 (exact zeros where ``|z| ≤ λ1``), λ2.
        initial_accumulator: starting value of n (0 in the paper; TF uses 0.1).

    Works with dense and sparse (row-wise, 2-D) gradients.
    """

    def __init__(
        self,
        params: Iterable[Any],
        alpha: float = 0.02,
        beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 0.0,
        initial_accumulator: float = 0.0,
    ) -> None:
        if initial_accumulator < 0:
            raise ValueError(f"initial_accumulator must be >= 0, got {initial_accumulator}")
        super().__init__(
            params, {"alpha": alpha, "beta": beta, "l1": l1, "l2": l2, "initial_accumulator": initial_accumulator}
        )

    @staticmethod
    def solve(z: torch.Tensor, n: torch.Tensor, alpha: float, beta: float, l1: float, l2: float) -> torch.Tensor:
        """Closed-form weights from (z, n): 0 where |z| ≤ λ1, else −(z − sign(z)λ1)/((β+√n)/α + λ2)."""
        denom = ((beta + n.sqrt()) / alpha + l2).clamp_min(torch.finfo(z.dtype).tiny)
        w = -(z - torch.sign(z) * l1) / denom
        return torch.where(z.abs() <= l1, torch.zeros_like(w), w)

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        a, b, l1, l2 = group["alpha"], group["beta"], group["l1"], group["l2"]
        state = self._state(p, group["initial_accumulator"])
        n, z = state["n"], state["z"]
        if grad.is_sparse:
            if p.dim() != 2:
                raise ValueError(f"sparse gradients are supported for 2-D parameters, got shape {tuple(p.shape)}")
            rows, g = _sparse_rows(grad)
            new_n, new_z = self._accumulate(
                p.index_select(0, rows), g, n.index_select(0, rows), z.index_select(0, rows), a
            )
            n.index_copy_(0, rows, new_n)
            z.index_copy_(0, rows, new_z)
            p.index_copy_(0, rows, self.solve(new_z, new_n, a, b, l1, l2).to(p.dtype))
        else:
            new_n, new_z = self._accumulate(p, grad, n, z, a)
            n.copy_(new_n)
            z.copy_(new_z)
            p.copy_(self.solve(new_z, new_n, a, b, l1, l2))


class GroupFTRL(_FTRLBase):
    """Group-lasso FTRL over the rows of 2-D parameters (the official ``GFTRL``): feature selection.

    A row (one feature value's embedding, width D) is set exactly to zero when ``‖z_row‖₂ ≤ λ1·√D``.
    Defaults are the official Criteo experiment: α 0.02, β 1, λ1 10, λ2 10.

    Args:
        unseen_rows: sparse gradients only. ``"zero"`` (default, official ``_apply_sparse`` = ``_apply_dense``):
            at a parameter's first step every row is solved from its state, so rows without a gradient yet
            (z = 0) become exactly 0 and a row seen later starts from w = 0. ``"keep"``: lazy, untouched rows keep
            their initial values.
    """

    def __init__(
        self,
        params: Iterable[Any],
        alpha: float = 0.02,
        beta: float = 1.0,
        l1: float = 10.0,
        l2: float = 10.0,
        unseen_rows: str = "zero",
    ) -> None:
        if unseen_rows not in ("zero", "keep"):
            raise ValueError(f"unseen_rows: expected 'zero' or 'keep', got {unseen_rows!r}")
        super().__init__(params, {"alpha": alpha, "beta": beta, "l1": l1, "l2": l2, "unseen_rows": unseen_rows})

    @staticmethod
    def solve(z: torch.Tensor, n: torch.Tensor, alpha: float, beta: float, l1: float, l2: float) -> torch.Tensor:
        """Rows ``z, n (K, D)`` -> weights ``(K, D)`` (0 for rows with ‖z‖ ≤ λ1√D)."""
        threshold = l1 * math.sqrt(z.shape[1])
        norm = torch.linalg.vector_norm(z, dim=1, keepdim=True)
        denom = (beta + n.sqrt()) / alpha + l2
        w = z * (threshold / norm.clamp_min(torch.finfo(z.dtype).tiny) - 1.0) / denom
        return torch.where(norm <= threshold, torch.zeros_like(w), w)

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        if p.dim() != 2:
            raise ValueError(f"GroupFTRL groups the rows of 2-D parameters; got shape {tuple(p.shape)}")
        a, b, l1, l2 = group["alpha"], group["beta"], group["l1"], group["l2"]
        state = self._state(p, 0.0)
        n, z = state["n"], state["z"]
        if grad.is_sparse:
            rows, g = _sparse_rows(grad)
            new_n, new_z = self._accumulate(
                p.index_select(0, rows), g, n.index_select(0, rows), z.index_select(0, rows), a
            )
            n.index_copy_(0, rows, new_n)
            z.index_copy_(0, rows, new_z)
            if group.get("unseen_rows", "zero") == "zero" and not bool(state.get("all_solved", False)):
                # the official dense re-solve, needed once: every row gets w = solve(z, n) (0 where z = 0); the
                # batch rows get the same value as below, the others keep it until their next gradient
                p.copy_(self.solve(z, n, a, b, l1, l2).to(p.dtype))
            else:
                p.index_copy_(0, rows, self.solve(new_z, new_n, a, b, l1, l2).to(p.dtype))
            state["all_solved"] = True
        else:
            new_n, new_z = self._accumulate(p, grad, n, z, a)
            n.copy_(new_n)
            z.copy_(new_z)
            p.copy_(self.solve(new_z, new_n, a, b, l1, l2))
            state["all_solved"] = True


def zero_row_mask(weight: torch.Tensor) -> torch.Tensor:
    """``weight (R, D) -> (R,) bool``: rows that are exactly zero (features dropped by GFTRL)."""
    return (weight == 0).all(dim=1)


def zero_weight_ratio(params: Iterable[torch.Tensor]) -> float:
    """Fraction of exactly-zero entries over ``params`` (interactions dropped by L1 FTRL)."""
    zeros = total = 0
    for p in params:
        zeros += int((p == 0).sum())
        total += p.numel()
    return zeros / total if total else 0.0
