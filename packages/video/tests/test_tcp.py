"""TCP head: parameter counts, shapes, zero-initialised parts, the padding fix, float32 pooling, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polyzoo.shared.ops import isqrt_newton_schulz, triu_vec
from polyzoo.shared.ops.pooling import covariance
from polyzoo.video.tcp import TCPHead, TemporalAttention, TemporalChannelAttention, TemporalSpatialAttention


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def small_head(**kw) -> TCPHead:
    args = {"in_channels": 24, "num_frames": 4, "dim": 8, "inner_dim": 16}
    args.update(kw)
    return TCPHead(**args)


def test_parameter_counts_match_the_paper():
    head8 = TCPHead(num_frames=8)
    assert n_params(head8) == 821_376
    assert n_params(TCPHead(num_frames=16)) == 886_912
    att = head8.TCP_att
    assert n_params(head8.layer_reduce1) == 524_288
    assert n_params(head8.layer_reduce_bn1) == 512
    assert n_params(head8.layer_reduce2) == 32_768
    assert n_params(head8.layer_reduce_bn2) == 256
    assert n_params(att.TSA) == 49_792
    assert n_params(att.TCA) == 131_712
    assert n_params(att.conv_1d) == 82_048
    assert att.conv_1d.kernel_size == (5, 1, 1)
    assert TCPHead(num_frames=16).TCP_att.conv_1d.kernel_size == (9, 1, 1)
    assert head8.out_features == 8256


@pytest.mark.parametrize("frames", [4, 5, 6])
def test_video_and_frame_level_shapes(frames):
    torch.manual_seed(0)
    x = torch.randn(2 * frames, 24, 5, 3)
    video = small_head(num_frames=frames).eval()(x)
    assert video.shape == (2, 36) and video.dtype == torch.float32
    frame = small_head(num_frames=frames, level="frame").eval()(x)
    assert frame.shape == (2, frames, 36)


def test_video_level_is_covariance_over_all_positions_with_three_iterations():
    """With the attention off, the head is reduce → Σ over T·H·W → iSQRT(3) → triu (the paper's Eq. 7-8)."""
    torch.manual_seed(0)
    head = small_head(spatial=False, channel=False, temporal_conv=False).eval()
    x = torch.randn(8, 24, 3, 3)
    z = head.reduce(x)  # (N·T, d, H, W)
    feats = z.view(2, 4, 8, 9).permute(0, 2, 1, 3).reshape(2, 8, 36)
    expected = triu_vec(isqrt_newton_schulz(covariance(feats), iters=3, eps=1e-5))
    torch.testing.assert_close(head(x), expected)
    frame = small_head(spatial=False, channel=False, temporal_conv=False, level="frame").eval()
    frame.load_state_dict(head.state_dict())
    per_frame = triu_vec(isqrt_newton_schulz(covariance(z.flatten(2)), iters=3, eps=1e-5)).view(2, 4, -1)
    torch.testing.assert_close(frame(x), per_frame)


def test_attention_is_identity_at_init_on_nonnegative_input():
    """TSA's BN γ = 0 and the temporal conv's zero weights make the module ReLU(0 + x) = x at init."""
    torch.manual_seed(0)
    att = TemporalAttention(dim=8, num_frames=4).eval()
    x = torch.rand(8, 8, 3, 3)
    torch.testing.assert_close(att(x), x)
    assert torch.count_nonzero(att.TSA.norm.weight) == 0
    assert torch.count_nonzero(att.conv_1d.weight) == 0
    tsa = TemporalSpatialAttention(8, 4).eval()
    torch.testing.assert_close(tsa(x), x)


def test_tsa_matches_a_direct_computation():
    torch.manual_seed(0)
    tsa = TemporalSpatialAttention(dim=4, num_frames=3).eval()
    nn.init.normal_(tsa.norm.weight)
    x = torch.randn(6, 4, 2, 3)  # 2 clips × 3 frames
    out = tsa(x)
    clips = x.view(2, 3, 4, 2, 3)
    for n in range(2):
        for t in range(3):
            prev1, prev2 = clips[n, max(t - 1, 0)], clips[n, max(t - 2, 0)]  # edge replication
            p0 = tsa.conv_phi0(clips[n, t][None]).flatten(2)[0]  # (C, HW)
            p1 = tsa.conv_phi_1(prev1[None]).flatten(2)[0]
            p2 = tsa.conv_phi_2(prev2[None]).flatten(2)[0]
            aff = torch.softmax(p1.T @ p2 / 2.0, dim=-1)  # C^-1/2 with C = 4
            y = (p0 @ aff.T).view(1, 4, 2, 3)
            torch.testing.assert_close(out[n * 3 + t], (clips[n, t] + tsa.norm(y))[0])


def test_tca_uses_circular_first_and_second_order_differences():
    torch.manual_seed(0)
    tca = TemporalChannelAttention(dim=4, num_frames=5)
    nn.init.normal_(tca.g1.weight)
    x = torch.randn(5, 4, 2, 2)
    x_att = torch.randn(5, 4, 2, 2)
    out = tca(x, x_att)
    g = x.mean(dim=(2, 3))
    for t in range(5):
        d1 = (g[t] - g[(t - 1) % 5]).view(1, 4, 1, 1)
        d2 = ((g[t] - g[(t - 2) % 5]) / 2).view(1, 4, 1, 1)
        w = (tca._mlp(d1) + tca._mlp(d2)) / 2
        torch.testing.assert_close(out[t], (x_att[t] * w[0]))


@pytest.mark.parametrize("frames", [8, 6, 5])
def test_temporal_conv_pads_circularly_by_half_the_kernel(frames):
    """Frame t of the output mixes frames t−(k−1)//2 … (circular): the official k−1 padding bug is not copied."""
    torch.manual_seed(0)
    att = TemporalAttention(dim=3, num_frames=frames, spatial=False, channel=False)
    nn.init.normal_(att.conv_1d.weight)
    k = frames // 2 + 1
    assert att.kernel == k
    x = torch.rand(2 * frames, 3, 2, 2)
    out = att._temporal_conv(x, 2)
    assert out.shape == x.shape
    w, b = att.conv_1d.weight[:, :, :, 0, 0], att.conv_1d.bias  # (C_out, C_in, k)
    v = x.view(2, frames, 3, 2, 2)
    pad = (k - 1) // 2
    for t in range(frames):
        ref = b.view(1, 3, 1, 1).expand(2, 3, 2, 2).clone()
        for j in range(k):
            src = v[:, (t - pad + j) % frames]  # (2, C_in, H, W)
            ref = ref + torch.einsum("oc,nchw->nohw", w[:, :, j], src)
        torch.testing.assert_close(out.view(2, frames, 3, 2, 2)[:, t], ref)


def test_gradients_flow_through_every_part():
    torch.manual_seed(0)
    head = small_head()
    x = torch.randn(8, 24, 3, 3, requires_grad=True)
    head(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name in ("layer_reduce1.weight", "layer_reduce2.weight", "TCP_att.conv_1d.weight"):
        assert dict(head.named_parameters())[name].grad.abs().sum() > 0, name
    # the zero-initialised temporal conv (and TSA's zero-γ BN) block the attention's gradient at init; once
    # they have moved away from zero, every parameter of TSA and TCA receives gradient too
    head.zero_grad()
    nn.init.normal_(head.TCP_att.conv_1d.weight, std=0.1)
    nn.init.normal_(head.TCP_att.TSA.norm.weight, std=0.1)
    head(x).square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_pooling_runs_in_float32_under_autocast():
    torch.manual_seed(0)
    head = small_head().eval()
    x = torch.randn(8, 24, 3, 3) * 100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = head(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_errors_name_the_expected_shape():
    head = small_head()
    with pytest.raises(ValueError, match="multiple of num_frames=4"):
        head(torch.randn(6, 24, 3, 3))
    with pytest.raises(ValueError, match=r"\(N\*T, 24, H, W\)"):
        head(torch.randn(8, 12, 3, 3))
    with pytest.raises(ValueError, match="level"):
        TCPHead(level="clip")
