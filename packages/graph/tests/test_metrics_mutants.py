"""``positive_probability`` and ``hard_predictions`` on every accepted logit layout, against the definitions:
sigmoid / ``logit > 0`` for one column, softmax column 1 / argmax for two."""

from __future__ import annotations

import math

import pytest
import torch

from polyzoo.graph.metrics import hard_predictions, positive_probability


def test_probability_and_predictions_for_each_layout():
    z = [-2.0, 0.5, 3.0, -0.1]
    one = [1 / (1 + math.exp(-v)) for v in z]
    for logits in (torch.tensor(z), torch.tensor(z).view(-1, 1)):
        assert positive_probability(logits).tolist() == pytest.approx(one, rel=1e-6)
        assert hard_predictions(logits).tolist() == [int(v > 0) for v in z]
    pairs = [[0.2, -1.0], [1.0, 2.5], [-3.0, -2.9], [0.0, 0.0]]
    two = [math.exp(b) / (math.exp(a) + math.exp(b)) for a, b in pairs]
    assert positive_probability(torch.tensor(pairs)).tolist() == pytest.approx(two, rel=1e-6)
    assert hard_predictions(torch.tensor(pairs)).tolist()[:3] == [0, 1, 1]
    with pytest.raises(ValueError, match="logits"):
        positive_probability(torch.zeros(4, 3))
