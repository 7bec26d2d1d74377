"""SoT: MGCrP head on any class-token ViT, fusions, sot_tiny/small/base counts, official layout."""

import pytest
import timm
import torch
import torch.nn.functional as F

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


def test_mgcrp_matches_official_with_scalar_centering():
    pool = MGCrP(48, num_heads=3, wr_dim=5, center="scalar")
    x = torch.randn(4, 10, 48)
    ref = _official_mgcrp(pool.wr.weight, pool.norm.weight, x, 3, 5)
    torch.testing.assert_close(pool(x), ref, rtol=1e-4, atol=1e-5)
    default = MGCrP(48, num_heads=3, wr_dim=5)  # per-dimension centring: a true cross-covariance
    default.load_state_dict(pool.state_dict())
    assert not torch.allclose(default(x), ref, atol=1e-4)


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


def test_official_layout_checkpoint_loads(tmp_path):
    src = timm.create_model("sot_tiny", num_classes=4, img_size=32, center="scalar").eval()
    path = tmp_path / "checkpoint.pth.tar"
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    sd["module.pos_embed"] = sinusoid_position_embedding(197, 240)  # the official table is built for 224²
    torch.save({"state_dict": sd, "epoch": 1}, path)
    model = timm.create_model("sot_tiny", num_classes=4, img_size=32, center="scalar", checkpoint_path=str(path))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), src(x))
