"""polyzoo.shared.metrics: top-k accuracy as timm.utils.accuracy computes it."""

import pytest
import torch

from polyzoo.shared.metrics import topk_accuracy, topk_metrics


def _reference(outputs, targets, k):
    """Own transcription: a row is correct at k when fewer than k classes score strictly higher than its
    target (no ties in the test data), k capped at the number of classes."""
    k = min(k, outputs.shape[1])
    higher = (outputs > outputs.gather(1, targets[:, None])).sum(1)
    return float((higher < k).float().mean())


def test_topk_accuracy_matches_reference_and_timm():
    g = torch.Generator().manual_seed(0)
    outputs, targets = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    ours = topk_accuracy(outputs, targets, (1, 3, 5, 9))
    assert ours == pytest.approx([_reference(outputs, targets, k) for k in (1, 3, 5, 9)])
    assert ours[-1] == 1.0
    timm_utils = pytest.importorskip("timm.utils")
    theirs = [float(a) / 100 for a in timm_utils.accuracy(outputs, targets, topk=(1, 3, 5))]
    assert ours[:3] == pytest.approx(theirs)


def test_topk_metrics_keys_and_errors():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0, -2.0], [5.0, 0.0, 1.0, 2.0, 3.0, 4.0]])
    m = topk_metrics(logits, torch.tensor([1, 1]))
    assert m["top1"] == 0.5 and m["top5"] == 0.5  # the second row's target is ranked 6th of 6
    assert m["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.tensor([1, 1]))))
    assert set(topk_metrics(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))) == {"loss", "top1"}
    with pytest.raises(ValueError, match="no samples"):
        topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
