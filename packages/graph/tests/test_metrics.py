"""ΔSP/ΔEO as PyGDebias defines them, utility metrics overall and per group, and bad-input errors."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from polyzoo.graph.metrics import check_binary, fair_metric, fairness_report, hard_predictions


def pygdebias_fair_metric(pred, labels, sens):
    """The reference formula of PyGDebias ``fair_metric`` written out with numpy boolean masks."""
    idx_s0 = sens == 0
    idx_s1 = sens == 1
    idx_s0_y1 = np.bitwise_and(idx_s0, labels == 1)
    idx_s1_y1 = np.bitwise_and(idx_s1, labels == 1)
    parity = abs(sum(pred[idx_s0]) / sum(idx_s0) - sum(pred[idx_s1]) / sum(idx_s1))
    equality = abs(sum(pred[idx_s0_y1]) / sum(idx_s0_y1) - sum(pred[idx_s1_y1]) / sum(idx_s1_y1))
    return parity, equality


def test_hand_computed_example():
    pred = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    labels = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    sens = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    sp, eo = fair_metric(pred, labels, sens)
    assert sp == pytest.approx(abs(2 / 4 - 1 / 4))
    assert eo == pytest.approx(abs(1 / 2 - 1 / 2))


@pytest.mark.parametrize("seed", range(5))
def test_matches_pygdebias_formula(seed):
    rng = np.random.default_rng(seed)
    n = 200
    pred, labels, sens = (rng.integers(0, 2, n) for _ in range(3))
    ours = fair_metric(torch.as_tensor(pred), torch.as_tensor(labels), torch.as_tensor(sens))
    ref = pygdebias_fair_metric(pred, labels, sens)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_report_overall_and_per_group():
    rng = np.random.default_rng(0)
    n = 300
    logits = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.as_tensor(rng.integers(0, 2, n))
    sens = torch.as_tensor(rng.integers(0, 2, n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[50:250] = True
    out = fairness_report(logits, labels, sens, mask)
    pred = logits.argmax(1)[mask].numpy()
    y, s = labels[mask].numpy(), sens[mask].numpy()
    prob = logits.softmax(1)[mask, 1].numpy()
    assert out["acc"] == pytest.approx((pred == y).mean())
    assert out["auc"] == pytest.approx(roc_auc_score(y, prob))
    for g in (0, 1):
        assert out[f"acc_s{g}"] == pytest.approx((pred[s == g] == y[s == g]).mean())
        assert out[f"auc_s{g}"] == pytest.approx(roc_auc_score(y[s == g], prob[s == g]))
    assert (out["sp"], out["eo"]) == pytest.approx(pygdebias_fair_metric(pred, y, s))
    tp = ((pred == 1) & (y == 1)).sum()
    assert out["f1"] == pytest.approx(2 * tp / ((pred == 1).sum() + (y == 1).sum()))


def test_hard_predictions_single_logit_uses_sign():
    assert hard_predictions(torch.tensor([[-0.5], [0.0], [2.0]])).tolist() == [0, 0, 1]
    assert hard_predictions(torch.tensor([[1.0, 0.0], [0.0, 3.0]])).tolist() == [0, 1]


def test_non_binary_sensitive_attribute_raises():
    with pytest.raises(ValueError, match=r"sens.*binary.*\[2\]"):
        fair_metric(np.array([0, 1, 1]), np.array([1, 1, 0]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        check_binary(np.array([0.0, np.nan]), "sens")


def test_empty_groups_raise():
    with pytest.raises(ValueError, match="s=1 is empty"):
        fair_metric(np.array([0, 1]), np.array([1, 1]), np.array([0, 0]))
    with pytest.raises(ValueError, match="s=1 and y=1 is empty"):
        fair_metric(np.array([0, 1, 1]), np.array([1, 1, 0]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="empty index"):
        fairness_report(torch.zeros(3, 2), [0, 1, 0], [0, 1, 1], torch.zeros(3, dtype=torch.bool))


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="lengths differ"):
        fair_metric(np.array([0, 1]), np.array([1, 1, 0]), np.array([0, 1, 1]))
