"""Direct checks of ``polyzoo.shared.ops.attention`` that the mutation run found missing: the SE forward against
an own transcription (GAP → FC → ReLU → FC → sigmoid → rescale), ECA's smallest kernel and its input-rank check."""

from __future__ import annotations

import pytest
import torch

from polyzoo.shared.ops.attention import ECA, SqueezeExcite, eca_kernel_size


def test_squeeze_excite_forward_follows_the_transcription():
    torch.manual_seed(0)
    se = SqueezeExcite(8, reduction=4).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    w1, b1, w2, b2 = se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias
    with torch.no_grad():
        squeezed = x.mean(dim=(2, 3))  # (B, C)
        gate = torch.sigmoid(torch.relu(squeezed @ w1.T + b1) @ w2.T + b2)
        torch.testing.assert_close(se(x), x * gate[:, :, None, None], rtol=1e-12, atol=1e-12)
        x1d = torch.randn(2, 8, 7, dtype=torch.float64)
        gate1d = torch.sigmoid(torch.relu(x1d.mean(2) @ w1.T + b1) @ w2.T + b2)
        torch.testing.assert_close(se(x1d), x1d * gate1d[:, :, None], rtol=1e-12, atol=1e-12)


def test_eca_kernel_one_is_allowed_and_rank_two_input_is_refused():
    eca = ECA(kernel_size=1)
    assert eca.kernel_size == 1 and eca.conv.kernel_size == (1,)
    with pytest.raises(ValueError, match="expected"):
        eca(torch.zeros(2, 4))
    assert eca_kernel_size(1) == 1  # log2(1) = 0: t = int(1 / 2) = 0, even → 1
    with pytest.raises(ValueError, match="channels must be"):
        eca_kernel_size(0)
    assert "channels=6" in repr(ECA(6))
