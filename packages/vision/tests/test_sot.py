"""SoT: MGCrP head on any class-token ViT, fusions, sot_tiny/small/base counts, official layout."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from polyzoo.shared.testing import randomize_
from polyzoo.vision.flops import count_macs_of
from polyzoo.vision.models.sot import MGCrP, SoTHead, sinusoid_position_embedding, sot_wrap

EXPECTED = {  # params of the official code (all, incl. the frozen position table), thop MACs (1e9)
    "sot_tiny": (8_037_262, 2.546),
    "sot_small": (27_092_936, 5.818),
    "sot_base": (76_885_414, 14.571),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_params_exact_and_macs_within_2pct(name):
    params, macs = count_macs_of(name, attention=False)  # thop sees modules only: no attention products
    assert params == EXPECTED[name][0]
    assert abs(macs / 1e9 / EXPECTED[name][1] - 1) < 0.02, macs


def test_head_param_count_matches_official_tiny_head():
    head = SoTHead(240, 1000, num_heads=6, wr_dim=14)
    assert sum(p.numel() for p in head.parameters()) == 1_458_334


def _official_mgcrp(wr_weight, sv_weight, x, heads, d):
    """Official MultiHeadPooling + Covariance(remove_mean=True) + svPN(alpha=.5, iterNum=1, svNum=1), written from
    sot_src/representation/{multi_head_pooling,covariance}.py and sot_src/normalization/svPN.py."""
    b, n, _ = x.shape
    qk = F.linear(x, wr_weight).reshape(b, n, 2, heads, d).permute(2, 0, 3, 1, 4)
    q, k = qk[0].reshape(b * heads, n, d), qk[1].reshape(b * heads, n, d)
    # _remove_mean: adaptive_avg_pool2d on a 3-D (B·h, d, N) tensor = one scalar per head
    q = (q.transpose(-1, -2) - F.adaptive_avg_pool2d(q.transpose(-1, -2), (1, 1))).transpose(-1, -2)
    k = (k.transpose(-1, -2) - F.adaptive_avg_pool2d(k.transpose(-1, -2), (1, 1))).transpose(-1, -2)
    sigma = q.transpose(-1, -2).bmm(k) / n
    v = sv_weight.view(1, d, 1).expand(b * heads, d, 1)
    u = F.normalize(sigma.bmm(v), dim=1)
    v = F.normalize(sigma.transpose(1, 2).bmm(u), dim=1)
    s = u.transpose(1, 2).bmm(sigma).bmm(v)
    y = u.bmm(s.pow(0.5)).bmm(v.transpose(1, 2))
    y = y + (sigma - u.bmm(s).bmm(v.transpose(1, 2))).div(s.pow(0.5) + 1e-5)
    return y.reshape(b, -1)


def test_mgcrp_default_matches_official_scalar_centering():
    pool = MGCrP(48, num_heads=3, wr_dim=5)  # default: the official centring
    x = torch.randn(4, 10, 48)
    ref = _official_mgcrp(pool.wr.weight, pool.norm.weight, x, 3, 5)
    torch.testing.assert_close(pool(x), ref, rtol=1e-4, atol=1e-5)
    per_dim = MGCrP(48, num_heads=3, wr_dim=5, center="dim")  # per-dimension centring: the option
    per_dim.load_state_dict(pool.state_dict())
    assert not torch.allclose(per_dim(x), ref, atol=1e-4)


def test_mgcrp_follows_the_input_dtype():
    pool = MGCrP(12, num_heads=2, wr_dim=3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    assert pool(x).dtype == torch.float64
    ref = _official_mgcrp(pool.wr.weight, pool.norm.weight, x, 2, 3)
    torch.testing.assert_close(pool(x), ref, rtol=1e-12, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pool.float()(x.float()).dtype == torch.float32


@pytest.mark.parametrize("fusion", ["sum_fc", "concat", "aggre_all"])
def test_fusions_on_a_timm_deit(fusion):
    m = sot_wrap("deit_tiny_patch16_224", num_classes=5, fusion=fusion, img_size=32, wr_dim=6).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = m.forward_features(x)
    assert tokens.shape == (2, 5, 192)  # class token + 2x2 patches
    pre = m.forward_head(tokens, pre_logits=True)
    rep = m.head.representation(tokens if fusion == "aggre_all" else tokens[:, 1:])
    assert pre.shape == (2, m.head_hidden_size)
    if fusion == "aggre_all":
        torch.testing.assert_close(pre, rep)
    else:
        torch.testing.assert_close(pre, torch.cat([tokens[:, 0], rep], 1))
    logits = m(x)
    assert logits.shape == (2, 5)
    if fusion == "sum_fc":  # FC_v(MGCrP(word tokens)) + FC_c(class token)
        torch.testing.assert_close(logits, m.head.visual_fc(rep) + m.head.cls_fc(tokens[:, 0]))
    m.reset_classifier(0)
    assert m(x).shape == (2, m.head_hidden_size)


def test_registered_plugin_and_backbone_without_class_token():
    m = timm.create_model("sot_deit_tiny_patch16_224", num_classes=3, img_size=32).eval()
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    names = dict(m.named_modules())
    assert m.pretrained_cfg["first_conv"] in names and m.pretrained_cfg["classifier"] in names
    no_cls = timm.create_model("vit_tiny_patch16_224", img_size=32, class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no class token"):
        sot_wrap(no_cls, num_classes=3)


def test_two_native_models_in_one_process_and_contract():
    a = timm.create_model("sot_tiny", num_classes=10, img_size=32).eval()
    b = timm.create_model("sot_small", num_classes=10, img_size=32, fusion="concat").eval()
    x = torch.randn(2, 3, 32, 32)
    assert a(x).shape == b(x).shape == (2, 10)
    assert a.cfg.embed_dim == 240 and b.cfg.embed_dim == 384
    assert a.forward_features(x).shape == (2, 5, 240)
    assert not a.pos_embed.requires_grad
    names = dict(a.named_modules())
    assert a.pretrained_cfg["first_conv"] in names and a.pretrained_cfg["classifier"] in names


def test_sinusoid_table_matches_official_formula():
    table = sinusoid_position_embedding(5, 6)[0]
    pos, j = 3, 4
    assert table[pos, j].item() == pytest.approx(torch.sin(torch.tensor(pos / 10000 ** (2 * (j // 2) / 6))).item())
    assert table[pos, j + 1].item() == pytest.approx(torch.cos(torch.tensor(pos / 10000 ** (2 * (j // 2) / 6))).item())


# ---------------------------------------------------------------------------------------------------------------
# The official SoT, transcribed from jiangtaoxie/SoT (sot_src/sot.py, model/visualTokens.py DenseNetStyleModule,
# model/vitBlock.py, model/classifier.py, representation/multi_head_pooling.py + covariance.py,
# normalization/svPN.py; timm 0.3.4's DenseBlock/DenseLayer with BatchNormAct2d): official module names, math
# written here, independent of polyzoo's modules.
# ---------------------------------------------------------------------------------------------------------------


class OfficialDenseLayer(nn.Module):
    def __init__(self, num_input_features, growth_rate, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)  # BatchNormAct2d: BN + ReLU
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, features):
        x = self.conv1(torch.relu(self.norm1(torch.cat(features, 1))))
        return self.conv2(torch.relu(self.norm2(x)))


class OfficialDenseBlock(nn.Module):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module(
                f"denselayer{i + 1}", OfficialDenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size)
            )

    def forward(self, x):
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return torch.cat(features, 1)


class OfficialDenseTransition(nn.Sequential):
    def __init__(self, num_input_features, num_output_features):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(num_input_features))
        self.add_module("conv", nn.Conv2d(num_input_features, num_output_features, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class OfficialDenseNetStyleModule(nn.Module):
    def __init__(self, embed_dim, token_dim=64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, token_dim, 3, 1, 1), nn.MaxPool2d(3, 2, 1))
        self.stage = nn.Sequential(
            OfficialDenseBlock(6, 64, 2, 16), OfficialDenseTransition(160, 128),
            OfficialDenseBlock(6, 128, 2, 16), OfficialDenseTransition(224, 128),
            OfficialDenseBlock(6, 128, 2, 16), OfficialDenseTransition(224, 128),
        )  # fmt: skip
        self.transition = nn.Conv2d(128, embed_dim, 1)

    def forward(self, x):
        x = self.transition(self.stage(self.stem(x)))
        b, c, h, w = x.shape
        return x.view(b, c, h * w).transpose(1, 2)


class OfficialVisualTokens(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.tokens = OfficialDenseNetStyleModule(embed_dim)

    def forward(self, x):
        return self.tokens(x)


class OfficialAttention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ qkv[2]).transpose(1, 2).reshape(b, n, c))


class OfficialMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class OfficialViTBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)  # ViTConfig norm_layer=nn.LayerNorm: eps 1e-5
        self.attn = OfficialAttention(embed_dim, num_heads)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = OfficialMlp(embed_dim, int(embed_dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OfficialSvPN(nn.Module):
    def __init__(self, input_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(input_dim))  # init_weight='learn'

    def forward(self, x):  # alpha 0.5, iterNum 1, svNum 1 (top=1: norm_remain), vec 'full', no regular
        b, _, d = x.shape
        v = self.weight.view(1, d, 1).expand(b, d, 1)
        u = F.normalize(x.bmm(v), dim=1)
        v = F.normalize(x.transpose(1, 2).bmm(u), dim=1)
        s = u.transpose(1, 2).bmm(x).bmm(v)
        y = u.bmm(s.pow(0.5)).bmm(v.transpose(1, 2))
        y = y + (x - u.bmm(s).bmm(v.transpose(1, 2))).div(s.pow(0.5) + 1e-5)
        return y.reshape(b, -1)


class OfficialMultiHeadPooling(nn.Module):
    def __init__(self, dim, num_heads, wr_dim):
        super().__init__()
        self.num_heads, self.wr_dim = num_heads, wr_dim
        self.wr = nn.Linear(dim, wr_dim * num_heads * 2, bias=False)
        self.norm = OfficialSvPN(wr_dim)

    @staticmethod
    def _remove_mean(x):  # Covariance._remove_mean: adaptive_avg_pool2d of a 3-D tensor
        x = x.transpose(-1, -2)
        return (x - F.adaptive_avg_pool2d(x, (1, 1))).transpose(-1, -2)

    def forward(self, x):
        b, n, _ = x.shape
        qk = self.wr(x).reshape(b, n, 2, self.num_heads, self.wr_dim).permute(2, 0, 3, 1, 4)
        q = self._remove_mean(qk[0].reshape(b * self.num_heads, n, self.wr_dim))
        k = self._remove_mean(qk[1].reshape(b * self.num_heads, n, self.wr_dim))
        cov = (1.0 / n) * q.transpose(-1, -2).bmm(k.transpose(-1, -2).transpose(1, 2))
        return self.norm(cov).view(b, -1)


class OfficialClassifier(nn.Module):  # re_type 'MGCrP', fusion_type 'sum_fc'
    def __init__(self, num_classes, input_dim, num_heads, wr_dim):
        super().__init__()
        self.representation = OfficialMultiHeadPooling(input_dim, num_heads, wr_dim)
        self.visual_fc = nn.Linear(num_heads * wr_dim**2, num_classes)
        self.cls_fc = nn.Linear(input_dim, num_classes)

    def forward(self, x):
        return self.visual_fc(self.representation(x[:, 1:])) + self.cls_fc(x[:, 0])


def official_sinusoid(n_position, d_hid):
    table = np.array([[p / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)] for p in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table).unsqueeze(0)


class OfficialSoT(nn.Module):
    def __init__(self, num_classes, embed_dim, depth, num_heads, mlp_ratio, head_heads, wr_dim):
        super().__init__()
        self.visual_tokens = OfficialVisualTokens(embed_dim)
        self.blocks = nn.ModuleList([OfficialViTBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.classifier = OfficialClassifier(num_classes, embed_dim, head_heads, wr_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # num_patches is hard-coded to 14·14 in the official visualTokens (the model runs at 224² only)
        self.pos_embed = nn.Parameter(official_sinusoid(14 * 14 + 1, embed_dim), requires_grad=False)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.visual_tokens(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        # at 224² this adds the whole table; at the test's 32² (2×2 tokens) its first rows, the same formula
        x = x + self.pos_embed[:, : x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.classifier(self.norm(x))


def test_official_sot_tiny_checkpoint_loads_through_pretrained_and_reproduces_the_official_forward(tmp_path):
    official = OfficialSoT(5, embed_dim=240, depth=12, num_heads=4, mlp_ratio=2.5, head_heads=6, wr_dim=14)
    official = official.double().eval()
    randomize_(official, skip=lambda name: name == "pos_embed")
    sd = official.state_dict()
    assert "visual_tokens.tokens.stage.0.denselayer1.norm1.running_var" in sd
    assert "classifier.representation.norm.weight" in sd and "blocks.11.mlp.fc2.bias" in sd
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 300, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    # defaults only: the official centring and LayerNorm eps come without arguments
    model = (
        timm.create_model(
            "sot_tiny", pretrained=True, num_classes=5, img_size=32, pretrained_cfg_overlay=dict(file=str(path))
        )
        .double()
        .eval()
    )  # model.double() works (svPN follows the input dtype)
    model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = official(x)
        out = model(x)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
        assert out.dtype == torch.float64
        per_dim = timm.create_model("sot_tiny", num_classes=5, img_size=32, center="dim").double().eval()
        per_dim.load_state_dict(sd)
        assert not torch.allclose(per_dim(x), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="none are released"):
        timm.create_model("sot_tiny", pretrained=True)


def test_mgcrp_head_on_a_timm_vit_defaults_to_the_official_head():
    """sot_wrap's head with default arguments equals the official Classifier (sum_fc, scalar centring, svPN)
    loaded with the same weights under the official names."""
    m = sot_wrap("deit_tiny_patch16_224", num_classes=4, img_size=32, wr_dim=6).double().eval()
    official = OfficialClassifier(4, 192, num_heads=6, wr_dim=6).double().eval()
    official.load_state_dict(m.head.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        tokens = m.forward_features(x)
        torch.testing.assert_close(m(x), official(tokens), rtol=1e-10, atol=1e-12)
