"""The evaluation network's learning-rate schedule, checked directly (fast, no distillation).

Own transcription of the official ``DC/utils.py::evaluate_synset`` loop: ``for ep in range(Epoch + 1)``, train one
epoch, then if ``ep`` is ``Epoch // 2 + 1`` divide the learning rate by 10 and build a new SGD optimiser (so the
momentum buffers restart).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import polyzoo.security.evaluate as evaluate
from polyzoo.security.evaluate import EvalConfig, accuracy, train_network


def _official_schedule(epochs: int, lr: float) -> list[tuple[float, bool]]:
    """(learning rate, fresh optimiser) for each of the ``epochs + 1`` training epochs."""
    out, fresh = [], True
    for ep in range(epochs + 1):
        out.append((lr, fresh))
        fresh = False
        if ep == epochs // 2 + 1:
            lr /= 10
            fresh = True
    return out


@pytest.mark.parametrize("epochs", [2, 4, 7])
def test_learning_rate_is_divided_by_ten_after_half_the_epochs(epochs, monkeypatch):
    seen: list[tuple[float, bool]] = []
    real = evaluate.train_epoch

    def recording(net, opt, x, y, batch_size, transform=None, *rest):
        seen.append((opt.param_groups[0]["lr"], len(opt.state) == 0))
        real(net, opt, x, y, batch_size, transform, *rest)

    monkeypatch.setattr(evaluate, "train_epoch", recording)
    x = torch.randn(12, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 3
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    cfg = EvalConfig(epochs=epochs, batch_size=5, lr=0.02)
    train_network(x, y, 3, cfg, net=net)
    expected = _official_schedule(epochs, 0.02)
    assert [flag for _, flag in seen] == [flag for _, flag in expected]
    assert [lr for lr, _ in seen] == pytest.approx([lr for lr, _ in expected], rel=1e-12)
    # the decay happens after epoch epochs // 2 + 1: with 2 epochs that is the last one and nothing runs decayed
    # (as officially); otherwise the last epochs run at a tenth of the rate
    assert seen[-1][0] == pytest.approx(0.02 if epochs == 2 else 0.002, rel=1e-12)


def test_accuracy_is_the_share_of_correct_argmax_and_nan_when_empty():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(9, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = net(x).argmax(1)
    y = pred.clone()
    y[:4] = (y[:4] + 1) % 3  # 4 of 9 wrong
    assert accuracy(net, x, y) == pytest.approx(5 / 9)
    assert accuracy(net, x, pred) == 1.0
    assert torch.isnan(torch.tensor(accuracy(net, x[:0], y[:0])))
