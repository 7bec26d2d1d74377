"""polyzoo.shared.ops.attention."""

from __future__ import annotations

import pytest
import torch
from timm.layers import EcaModule

from polyzoo.shared.ops.attention import (
    ECA,
    CrossAttention,
    MultiHeadAttention,
    SqueezeExcite,
    eca_kernel_size,
    window_partition,
    window_reverse,
)


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


def test_window_partition_roundtrip_with_padding():
    x = torch.randn(2, 5, 9, 11)
    tokens, padded = window_partition(x, 4)
    assert padded == (12, 12) and tokens.shape == (2 * 3 * 3, 16, 5)
    assert torch.equal(window_reverse(tokens, 4, padded, (9, 11)), x)


def test_windowed_attention_attends_within_windows():
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, num_heads=2, window=4).eval()
    x = torch.randn(1, 8, 8, 8)
    out = attn(x)
    assert out.shape == x.shape
    # the top-left window only depends on its own tokens
    window = x[:, :, :4, :4].flatten(2).transpose(1, 2)
    expected = attn._attend(window).transpose(1, 2).reshape(1, 8, 4, 4)
    assert torch.allclose(out[:, :, :4, :4], expected, atol=1e-6)
    # sizes that do not divide the window are padded and cropped back
    assert attn(torch.randn(2, 8, 7, 10)).shape == (2, 8, 7, 10)


def test_global_attention_matches_torch_reference():
    torch.manual_seed(0)
    ours = MultiHeadAttention(8, num_heads=2, qkv_bias=True).eval()
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    ref.in_proj_weight.data.copy_(ours.qkv.weight.data)
    ref.in_proj_bias.data.copy_(ours.qkv.bias.data)
    ref.out_proj.weight.data.copy_(ours.proj.weight.data)
    ref.out_proj.bias.data.copy_(ours.proj.bias.data)
    x = torch.randn(2, 6, 8)
    assert torch.allclose(ours(x), ref(x, x, x, need_weights=False)[0], atol=1e-6)


def test_cross_attention_ignores_masked_keys():
    torch.manual_seed(0)
    attn = CrossAttention(8, num_heads=2, context_dim=6).eval()
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[False, False, False, True, True]] * 2)
    out = attn(x, ctx, key_padding_mask=mask)
    changed = ctx.clone()
    changed[:, 3:] = 100.0
    assert torch.allclose(out, attn(x, changed, key_padding_mask=mask), atol=1e-6)
    assert not torch.allclose(out, attn(x, changed), atol=1e-3)
