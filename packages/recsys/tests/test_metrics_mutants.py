"""``recsys.train.metrics`` against an own transcription: AUC as the share of (positive, negative) pairs ranked
right (ties count one half), log loss with probabilities clipped to [1e-7, 1 - 1e-7], AUC undefined (NaN) with one
class."""

from __future__ import annotations

import math

import numpy as np
import pytest

from polyzoo.recsys.train import metrics


def _pair_auc(labels, probs):
    pos = [p for y, p in zip(labels, probs, strict=True) if y == 1]
    neg = [p for y, p in zip(labels, probs, strict=True) if y == 0]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))


def _clipped_logloss(labels, probs, eps=1e-7):
    total = 0.0
    for y, p in zip(labels, probs, strict=True):
        p = min(max(p, eps), 1 - eps)
        total -= math.log(p) if y == 1 else math.log(1 - p)
    return total / len(labels)


def test_auc_with_ties_and_clipped_logloss():
    labels = [1, 0, 1, 0, 0, 1, 1]
    probs = [0.7, 0.7, 0.2, 0.0, 1.0, 1.0, 0.5]  # exact 0 and 1: the clip decides the log loss
    m = metrics(np.array(labels), np.array(probs))
    assert m["auc"] == pytest.approx(_pair_auc(labels, probs), abs=1e-12)
    assert m["logloss"] == pytest.approx(_clipped_logloss(labels, probs), rel=1e-9)
    assert m["rows"] == 7


def test_auc_is_nan_with_one_class_only():
    for labels in ([0, 0, 0], [1, 1, 1]):
        m = metrics(np.array(labels), np.array([0.2, 0.5, 0.9]))
        assert math.isnan(m["auc"])
        assert m["logloss"] == pytest.approx(_clipped_logloss(labels, [0.2, 0.5, 0.9]), rel=1e-12)


def test_auc_is_defined_with_a_single_positive_or_negative():
    for labels in ([0, 1, 0, 0], [1, 0, 1, 1]):
        probs = [0.3, 0.6, 0.1, 0.6]
        assert metrics(np.array(labels), np.array(probs))["auc"] == pytest.approx(_pair_auc(labels, probs), abs=1e-12)
