"""polyzoo.shared.ops.attention."""

from __future__ import annotations

import pytest
import torch
from timm.layers import EcaModule

from polyzoo.shared.ops.attention import ECA, SqueezeExcite, eca_kernel_size


@pytest.mark.parametrize(("channels", "k"), [(64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_adaptive_kernel_size(channels, k):
    assert eca_kernel_size(channels) == k
    eca = ECA(channels)
    assert eca.kernel_size == k
    assert sum(p.numel() for p in eca.parameters()) == k


@pytest.mark.parametrize("k", [3, 5, 7])
def test_eca_equals_timm(k):
    ours = ECA(kernel_size=k)
    theirs = EcaModule(kernel_size=k)
    theirs.conv.weight.data.copy_(ours.conv.weight.data)
    x = torch.randn(2, 32, 5, 6)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def test_eca_input_rank_and_errors():
    x = torch.randn(2, 8, 3, 4, 4)  # (B, C, T, H, W)
    assert ECA(kernel_size=3)(x).shape == x.shape
    with pytest.raises(ValueError, match="odd"):
        ECA(kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        ECA()


def test_squeeze_excite_parameters():
    se = SqueezeExcite(64, reduction=16)
    assert sum(p.numel() for p in se.parameters()) == 2 * 64 * 4 + 4 + 64
    assert se(torch.randn(2, 64, 3, 3)).shape == (2, 64, 3, 3)
