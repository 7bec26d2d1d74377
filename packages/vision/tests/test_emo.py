"""EMO / iRMB: exact counts, MACs within 1%, windows with padding, features_only, official layout."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from polyzoo.shared.testing import randomize_
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


# ---------------------------------------------------------------------------------------------------------------
# The official EMO, transcribed from zhangzjn/EMO (model/emo.py, model/basic_modules.py; timm 0.6.5's
# SqueezeExcite and GELU): official module names, math written here, independent of polyzoo's modules. The
# einops rearranges are written out: window (i, j) of 'b c (h1 n1) (w1 n2) -> (b n1 n2) c h1 w1' is x[..., i::n1,
# j::n2].
# ---------------------------------------------------------------------------------------------------------------
EPS = 1e-6  # get_norm: every norm of the official code uses eps 1e-6


class OfficialLayerNorm2d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c, EPS)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def official_norm(kind, c):
    return {"none": nn.Identity, "bn_2d": lambda n: nn.BatchNorm2d(n, eps=EPS), "ln_2d": OfficialLayerNorm2d}[kind](c)


def official_act(kind):
    return {"none": nn.Identity, "silu": nn.SiLU, "gelu": nn.GELU}[kind]()


class OfficialConvNormAct(nn.Module):
    def __init__(self, dim_in, dim_out, kernel_size, stride=1, groups=1, bias=False, norm_layer="bn_2d", act="relu"):
        super().__init__()
        padding = math.ceil((kernel_size - stride) / 2)
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size, stride, padding, 1, groups, bias)
        self.norm = official_norm(norm_layer, dim_out)
        self.act = official_act(act)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class OfficialSE(nn.Module):  # timm 0.6.5 efficientnet_blocks.SqueezeExcite
    def __init__(self, in_chs, rd_ratio, act):
        super().__init__()
        rd = round(in_chs * rd_ratio)
        self.conv_reduce = nn.Conv2d(in_chs, rd, 1, bias=True)
        self.act1 = official_act(act)
        self.conv_expand = nn.Conv2d(rd, in_chs, 1, bias=True)

    def forward(self, x):
        return x * torch.sigmoid(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class OfficialMSPatchEmb(nn.Module):
    def __init__(self, dim_in, emb_dim, kernel_size, stride, norm_layer):
        super().__init__()
        padding = math.ceil((kernel_size - 1 + 1 - stride) / 2)
        self.convs = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(dim_in, emb_dim, kernel_size, stride, padding), official_norm(norm_layer, emb_dim)
                )
            ]
        )

    def forward(self, x):
        return self.convs[0](x)


class OfficialIRMB(nn.Module):
    def __init__(self, dim_in, dim_out, norm_in, has_skip, exp_ratio, norm_layer, act_layer, v_proj, dw_ks, stride,
                 se_ratio, dim_head, window_size, attn_s, qkv_bias=True):  # fmt: skip
        super().__init__()
        self.norm = official_norm(norm_layer, dim_in) if norm_in else nn.Identity()
        dim_mid = int(dim_in * exp_ratio)
        self.has_skip = dim_in == dim_out and stride == 1 and has_skip
        self.attn_s = attn_s
        if attn_s:
            self.dim_head, self.window_size, self.num_head = dim_head, window_size, dim_in // dim_head
            self.scale = dim_head**-0.5
            self.qk = OfficialConvNormAct(dim_in, dim_in * 2, 1, bias=qkv_bias, norm_layer="none", act="none")
            self.v = OfficialConvNormAct(dim_in, dim_mid, 1, bias=qkv_bias, norm_layer="none", act=act_layer)
        else:
            self.v = (
                OfficialConvNormAct(dim_in, dim_mid, 1, bias=qkv_bias, norm_layer="none", act=act_layer)
                if v_proj
                else nn.Identity()
            )
        self.conv_local = OfficialConvNormAct(dim_mid, dim_mid, dw_ks, stride, groups=dim_mid, act="silu")
        self.se = OfficialSE(dim_mid, se_ratio, act_layer) if se_ratio > 0.0 else nn.Identity()
        self.proj = OfficialConvNormAct(dim_mid, dim_out, 1, norm_layer="none", act="none")

    def _attend(self, x):  # one window (b, c, h, w), attn_pre=True
        b, c, h, w = x.shape
        qk = self.qk(x).reshape(b, 2, self.num_head, self.dim_head, h * w).permute(1, 0, 2, 4, 3)
        attn = ((qk[0] @ qk[1].transpose(-2, -1)) * self.scale).softmax(dim=-1)
        xs = x.reshape(b, self.num_head, self.dim_head, h * w).transpose(-1, -2)
        x_spa = (attn @ xs).transpose(-1, -2).reshape(b, c, h, w)
        return self.v(x_spa)

    def forward(self, x):
        shortcut = x
        x = self.norm(x)
        _, _, H, W = x.shape
        if self.attn_s:
            ws_h, ws_w = (H, W) if self.window_size <= 0 else (self.window_size, self.window_size)
            pad_r, pad_b = (ws_w - W % ws_w) % ws_w, (ws_h - H % ws_h) % ws_h
            x = F.pad(x, (0, pad_r, 0, pad_b, 0, 0))
            n1, n2 = (H + pad_b) // ws_h, (W + pad_r) // ws_w
            out = None
            for i in range(n1):
                for j in range(n2):
                    y = self._attend(x[:, :, i::n1, j::n2])
                    if out is None:
                        out = x.new_zeros(x.shape[0], y.shape[1], x.shape[2], x.shape[3])
                    out[:, :, i::n1, j::n2] = y
            x = out[:, :, :H, :W]
        else:
            x = self.v(x)
        x = x + self.se(self.conv_local(x)) if self.has_skip else self.se(self.conv_local(x))
        x = self.proj(x)
        return shortcut + x if self.has_skip else x


class OfficialEMO(nn.Module):
    def __init__(self, num_classes, depths, stem_dim, embed_dims, exp_ratios, norm_layers, act_layers, dw_kss,
                 dim_heads, window_sizes, attn_ss):  # fmt: skip
        super().__init__()
        self.stage0 = nn.ModuleList(
            [
                OfficialMSPatchEmb(3, stem_dim, dw_kss[0], 2, norm_layers[0]),
                OfficialIRMB(
                    stem_dim,
                    stem_dim,
                    False,
                    False,
                    1,
                    norm_layers[0],
                    act_layers[0],
                    False,
                    dw_kss[0],
                    1,
                    1,
                    dim_heads[0],
                    window_sizes[0],
                    False,
                ),
            ]
        )
        prev = stem_dim
        for i in range(len(depths)):
            layers = []
            for j in range(depths[i]):
                first = j == 0
                layers.append(
                    OfficialIRMB(
                        prev,
                        embed_dims[i],
                        True,
                        not first,
                        exp_ratios[i] * 2 if first else exp_ratios[i],
                        norm_layers[i],
                        act_layers[i],
                        True,
                        dw_kss[i],
                        2 if first else 1,
                        0.0,
                        dim_heads[i],
                        window_sizes[i],
                        False if first else attn_ss[i],
                    )
                )
                prev = embed_dims[i]
            setattr(self, f"stage{i + 1}", nn.ModuleList(layers))
        self.norm = official_norm(norm_layers[-1], embed_dims[-1])
        self.pre_head = nn.Identity()  # pre_dim = 0 in every released variant
        self.head = nn.Linear(embed_dims[-1], num_classes)

    def forward(self, x):
        for stage in (self.stage0, self.stage1, self.stage2, self.stage3, self.stage4):
            for blk in stage:
                x = blk(x)
        x = self.norm(x).mean((2, 3))
        x = self.head(self.pre_head(x))
        return {"out": x, "out_kd": x}


OFFICIAL_EMO_1M = dict(  # official EMO_1M factory arguments
    depths=[2, 2, 8, 3], stem_dim=24, embed_dims=[32, 48, 80, 168], exp_ratios=[2.0, 2.5, 3.0, 3.5],
    norm_layers=["bn_2d", "bn_2d", "ln_2d", "ln_2d"], act_layers=["silu", "silu", "gelu", "gelu"],
    dw_kss=[3, 3, 5, 5], dim_heads=[16, 16, 20, 21], window_sizes=[7, 7, 7, 7], attn_ss=[False, False, True, True],
)  # fmt: skip


def test_official_checkpoint_loads_through_pretrained_and_reproduces_the_official_forward(tmp_path):
    official = OfficialEMO(num_classes=5, **OFFICIAL_EMO_1M).double().eval()
    randomize_(official)
    sd = official.state_dict()
    assert "stage3.1.qk.conv.weight" in sd and "stage0.1.se.conv_reduce.weight" in sd and "norm.norm.weight" in sd
    path = tmp_path / "net.pth"
    torch.save({"net": {"module." + k: v for k, v in sd.items()}}, path)  # a DDP training checkpoint
    model = timm.create_model("emo_1m", pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=str(path)))
    model.double().eval().load_state_dict(sd, strict=True)
    # 160²: stage 3 is 10×10 (padded to 14×14, 2×2 strided windows), stage 4 is 5×5 (padded to 7×7)
    x = torch.randn(2, 3, 160, 160, dtype=torch.float64)
    with torch.no_grad():
        ref = official(x)["out"]
        torch.testing.assert_close(model(x), ref, rtol=1e-9, atol=1e-9 * ref.abs().max().item())
    with pytest.raises(ValueError, match="downloads no weights"):
        timm.create_model("emo_1m", pretrained=True)
    cfg = timm.models.get_pretrained_cfg("emo_1m").to_dict()
    assert cfg["tag"] == "official_in1k" and cfg["url"] == "" and "file: resources/EMO_1M/net.pth" in cfg["notes"]


def test_two_models_in_one_process_do_not_share_config():
    a = timm.create_model("emo_5m", num_classes=2, drop_path_rate=0.0)
    b = timm.create_model("emo_5m", num_classes=2)
    assert a.cfg.drop_path_rate == 0.05 and b.stage4[-1].drop_path.drop_prob == pytest.approx(0.05)
    assert isinstance(a.stage4[-1].drop_path, torch.nn.Identity)
