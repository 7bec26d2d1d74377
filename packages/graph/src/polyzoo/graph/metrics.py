"""Fairness and utility metrics for binary node classification with a binary sensitive attribute.

ΔSP and ΔEO follow PyGDebias ``debiasing/GNN.py::fair_metric`` (identical to RELIANT's ``fair_metric``), computed
on hard predictions of the evaluated nodes:

- ΔSP = |mean(ŷ | s=0) − mean(ŷ | s=1)|                 (statistical parity)
- ΔEO = |mean(ŷ | s=0, y=1) − mean(ŷ | s=1, y=1)|       (equal opportunity)

Accuracy, ROC-AUC and F1 come from scikit-learn, overall and per sensitive group, as PyGDebias ``predict`` reports
them (ACC, AUCROC, F1, then each per group, then SP and EO). AUC uses the probability of class 1.

Deviation from PyGDebias: where a group (or a group among the y=1 nodes) is empty, PyGDebias divides by zero and
returns ``nan`` with a numpy warning; here that raises a ``ValueError`` naming the empty group, since a fairness
gap over an empty group is undefined. Per-group AUC is ``nan`` when a group holds a single class (scikit-learn
cannot compute it); the overall AUC then raises, as it has no meaning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

__all__ = ["check_binary", "fair_metric", "fairness_report", "hard_predictions", "positive_probability"]

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def _np(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of nodes, got shape {tuple(arr.shape)}")
    return arr


def check_binary(values: ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as an int64 array after checking every entry is 0 or 1.

    Raises:
        ValueError: naming ``name`` and the offending values when anything else appears (e.g. a sensitive
            attribute with three groups, or ``-1`` for unknown).
    """
    arr = _np(values, name)
    if arr.size and np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name}: contains NaN; expected only 0/1")
    uniq = np.unique(arr)
    bad = [v for v in uniq.tolist() if v not in (0, 1)]
    if bad:
        raise ValueError(f"{name}: expected a binary attribute with values in {{0, 1}}, found also {bad[:10]}")
    return arr.astype(np.int64)


def hard_predictions(logits: torch.Tensor) -> torch.Tensor:
    """Hard 0/1 predictions as PyGDebias makes them: ``logit > 0`` for one output column, argmax for two.

    Args:
        logits: (N,), (N, 1) or (N, 2).
    """
    if logits.dim() == 1 or logits.shape[-1] == 1:
        return (logits.reshape(-1) > 0).long()
    if logits.shape[-1] != 2:
        raise ValueError(f"logits: expected (N,), (N, 1) or (N, 2) for binary classes, got {tuple(logits.shape)}")
    return logits.argmax(dim=-1)


def positive_probability(logits: torch.Tensor) -> torch.Tensor:
    """Probability of class 1 from (N,), (N, 1) (sigmoid) or (N, 2) (softmax) logits."""
    if logits.dim() == 1 or logits.shape[-1] == 1:
        return torch.sigmoid(logits.reshape(-1))
    if logits.shape[-1] != 2:
        raise ValueError(f"logits: expected (N,), (N, 1) or (N, 2) for binary classes, got {tuple(logits.shape)}")
    return torch.softmax(logits, dim=-1)[:, 1]


def fair_metric(pred: ArrayLike, labels: ArrayLike, sens: ArrayLike) -> tuple[float, float]:
    """(ΔSP, ΔEO) of hard predictions, as PyGDebias ``fair_metric``.

    Args:
        pred: (N,) hard predictions in {0, 1}.
        labels: (N,) ground truth in {0, 1}.
        sens: (N,) sensitive attribute in {0, 1}.

    Raises:
        ValueError: non-binary inputs, mismatched lengths, or an empty group (s=0, s=1, or either among y=1).
    """
    pred = check_binary(pred, "pred")
    labels = check_binary(labels, "labels")
    sens = check_binary(sens, "sens")
    if not (len(pred) == len(labels) == len(sens)):
        raise ValueError(f"fair_metric: lengths differ: pred {len(pred)}, labels {len(labels)}, sens {len(sens)}")
    s0, s1 = sens == 0, sens == 1
    s0y1, s1y1 = s0 & (labels == 1), s1 & (labels == 1)
    for mask, what in ((s0, "s=0"), (s1, "s=1"), (s0y1, "s=0 and y=1"), (s1y1, "s=1 and y=1")):
        if not mask.any():
            raise ValueError(f"fair_metric: the group {what} is empty among the {len(sens)} evaluated nodes")
    parity = abs(pred[s0].sum() / s0.sum() - pred[s1].sum() / s1.sum())
    equality = abs(pred[s0y1].sum() / s0y1.sum() - pred[s1y1].sum() / s1y1.sum())
    return float(parity), float(equality)


def _utility(labels: np.ndarray, pred: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    auc = roc_auc_score(labels, prob) if len(np.unique(labels)) == 2 else math.nan
    return {
        "acc": float(accuracy_score(labels, pred)),
        "auc": float(auc),
        "f1": float(f1_score(labels, pred, zero_division=0)),
    }


def fairness_report(
    logits: torch.Tensor, labels: ArrayLike, sens: ArrayLike, index: torch.Tensor | None = None
) -> dict[str, float]:
    """Accuracy, AUC, F1 overall and per group (``*_s0``, ``*_s1``), then ``sp`` and ``eo``.

    Args:
        logits: (N,), (N, 1) or (N, 2) model outputs for all nodes.
        labels: (N,) ground truth in {0, 1} (entries outside ``index`` may hold anything, e.g. -1 for unknown).
        sens: (N,) sensitive attribute.
        index: the evaluated nodes, a boolean mask (N,) or node indices; all nodes when ``None``.
    """
    logits = logits.detach().cpu()
    labels_t = torch.as_tensor(_np(labels, "labels"))
    sens_t = torch.as_tensor(_np(sens, "sens"))
    if index is not None:
        index = index.cpu()
        logits, labels_t, sens_t = logits[index], labels_t[index], sens_t[index]
    if len(labels_t) == 0:
        raise ValueError("fairness_report: no nodes to evaluate (empty index)")
    pred = check_binary(hard_predictions(logits), "pred")
    prob = positive_probability(logits.float()).numpy()
    y = check_binary(labels_t, "labels")
    s = check_binary(sens_t, "sens")
    if len(np.unique(y)) < 2:
        raise ValueError(f"fairness_report: the evaluated labels hold a single class ({int(y[0])}); AUC is undefined")
    sp, eo = fair_metric(pred, y, s)
    out = _utility(y, pred, prob)
    for g in (0, 1):
        m = s == g
        out.update({f"{k}_s{g}": v for k, v in _utility(y[m], pred[m], prob[m]).items()})
    out["sp"], out["eo"] = sp, eo
    return out
