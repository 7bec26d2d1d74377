"""EMO / iRMB: exact counts, MACs within 1%, windows with padding, features_only, official layout."""

import pytest
import timm
import torch

from polyzoo.vision.flops import count_macs_of
from polyzoo.vision.models.emo import iRMB

EXPECTED = {  # params, fvcore GMACs at 224² (official training logs)
    "emo_1m": (1_361_168, 0.2608),
    "emo_2m": (2_377_472, 0.4394),
    "emo_5m": (5_108_848, 0.9026),
    "emo_6m": (6_168_496, 0.9608),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_params_exact_and_macs_within_1pct(name):
    params, macs = count_macs_of(name, norms=True)  # fvcore's convention: convs, matmuls, norms
    assert params == EXPECTED[name][0]
    assert abs(macs / 1e9 / EXPECTED[name][1] - 1) < 0.01, macs


def _official_attention(block: iRMB, x: torch.Tensor) -> torch.Tensor:
    """The official iRMB attention branch (attn_pre=True), written from model/emo.py with explicit index
    arithmetic instead of einops: pad, strided windows, softmax(q kᵀ·scale) x per head, v, un-window, crop."""
    b, c, h, w = x.shape
    ws = block.window_size if block.window_size > 0 else None
    wh, ww = (ws, ws) if ws else (h, w)
    pad_b, pad_r = (wh - h % wh) % wh, (ww - w % ww) % ww
    xp = torch.nn.functional.pad(x, (0, pad_r, 0, pad_b))
    n1, n2 = (h + pad_b) // wh, (w + pad_r) // ww
    out = torch.zeros(b, block.v.conv.out_channels, h + pad_b, w + pad_r)
    for i in range(n1):
        for j in range(n2):
            win = xp[:, :, i::n1, j::n2]  # 'b c (h1 n1) (w1 n2)': window (i, j) is a strided grid
            qk = block.qk(win).flatten(2)  # (b, 2c, N)
            q = qk[:, :c].reshape(b, block.num_head, block.dim_head, -1).transpose(-1, -2)
            k = qk[:, c:].reshape(b, block.num_head, block.dim_head, -1).transpose(-1, -2)
            attn = (q @ k.transpose(-2, -1) * block.scale).softmax(-1)
            xv = win.flatten(2).reshape(b, block.num_head, block.dim_head, -1).transpose(-1, -2)
            y = (attn @ xv).transpose(-1, -2).reshape(b, c, wh, ww)
            out[:, :, i::n1, j::n2] = block.v(y)
    return out[:, :, :h, :w]


@pytest.mark.parametrize(("size", "window"), [(9, 7), (14, 7), (5, 0), (12, 5)])
def test_window_attention_matches_official_including_padding(size, window):
    block = iRMB(40, 40, exp_ratio=2, norm="ln_2d", act="gelu", dim_head=20, window_size=window, qkv_bias=True).eval()
    x = torch.randn(2, 40, size, size)
    with torch.no_grad():
        ours = block.v(block._window_attention(x))
        torch.testing.assert_close(ours, _official_attention(block, x), rtol=1e-4, atol=1e-5)


def test_window_size_parameter_and_non_divisible_inputs():
    x = torch.randn(1, 3, 100, 76)  # stage maps 50x38 ... 4x3: nothing divides by 7, 10 or 16
    outs = {}
    for window in (7, 10, 16):
        m = timm.create_model("emo_1m", num_classes=4, window_size=window).eval()
        assert all(blk.window_size == window for blk in m.stage3)
        with torch.no_grad():
            outs[window] = m(x)
        assert outs[window].shape == (1, 4)
    m = timm.create_model("emo_1m", num_classes=4, window_size=[7, 7, 10, 16])
    assert m.stage3[1].window_size == 10 and m.stage4[1].window_size == 16


def test_timm_contract_and_features_only():
    m = timm.create_model("emo_1m", num_classes=6).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = m.forward_features(x)
    assert feats.shape == (2, 168, 2, 2)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 168) and m(x).shape == (2, 6)
    m.reset_classifier(0)
    assert m(x).shape == (2, 168)
    names = dict(m.named_modules())
    assert m.pretrained_cfg["first_conv"] in names and m.pretrained_cfg["url"] == ""
    f = timm.create_model("emo_1m", features_only=True, out_indices=(1, 2, 3, 4), window_size=10).eval()
    outs = f(torch.randn(1, 3, 96, 96))
    assert [o.shape[1] for o in outs] == [32, 48, 80, 168] == f.feature_info.channels()
    assert [96 // o.shape[-1] for o in outs] == [4, 8, 16, 32]


def test_first_blocks_and_stem_follow_official_structure():
    m = timm.create_model("emo_2m", num_classes=3)
    stem = m.stage0[1]
    assert not stem.has_skip and stem.se.conv_reduce.out_channels == 24 and isinstance(stem.v, torch.nn.Identity)
    for i, stage in enumerate([m.stage1, m.stage2, m.stage3, m.stage4]):
        first = stage[0]
        assert not first.has_skip and not first.attn_s and first.conv_local.conv.stride == (2, 2)
        assert all(blk.attn_s == (i >= 2) for blk in list(stage)[1:])
    rates = [blk.drop_path.drop_prob for s in (m.stage1, m.stage2, m.stage3, m.stage4) for blk in s if blk.has_skip]
    assert max(rates) == pytest.approx(0.05)


def test_official_layout_checkpoint_loads(tmp_path):
    src = timm.create_model("emo_1m", num_classes=5).eval()
    path = tmp_path / "net.pth"
    torch.save({"net": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    model = timm.create_model("emo_1m", num_classes=5, checkpoint_path=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))


def test_two_models_in_one_process_do_not_share_config():
    a = timm.create_model("emo_5m", num_classes=2, drop_path_rate=0.0)
    b = timm.create_model("emo_5m", num_classes=2)
    assert a.cfg.drop_path_rate == 0.05 and b.stage4[-1].drop_path.drop_prob == pytest.approx(0.05)
    assert isinstance(a.stage4[-1].drop_path, torch.nn.Identity)
