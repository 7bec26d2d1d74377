"""ECA-ResNet / ECA-MobileNetV2: exact counts, timm contract, official checkpoint layout."""

import re

import pytest
import timm
import torch
import torch.nn.functional as F

from polyzoo.shared.ops.attention import ECA
from polyzoo.vision.flops import count_macs_of
from polyzoo.vision.models.eca_net import OFFICIAL_KERNELS, eca_kernels_from_state_dict

# (params with the official per-stage kernels, thop MACs of the official code [papers file §1])
EXPECTED = {
    "eca_resnet18": (11_689_556, 1.8248e9),
    "eca_resnet34": (21_797_744, 3.680e9),
    "eca_resnet50": (25_557_112, 4.1394e9),
    "eca_resnet101": (44_549_317, 7.876e9),
    "eca_resnet152": (60_193_042, 1.1617e10),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_resnet_params_exact_and_macs_within_1pct(name):
    params, macs = count_macs_of(name, norms=True, k_size=OFFICIAL_KERNELS[name])
    assert params == EXPECTED[name][0]
    # thop counts convolutions, linear layers and BN (2 per element): norms=True is the same convention
    assert abs(macs / EXPECTED[name][1] - 1) < 0.01, macs


def test_eca_adds_80_params_to_resnet50():
    plain = sum(p.numel() for p in timm.create_model("resnet50", pretrained=False).parameters())
    params, _ = count_macs_of("eca_resnet50", k_size=[3, 5, 5, 7], input_size=(1, 3, 32, 32))
    assert params - plain == 80


def test_mobilenetv2_params_exact():
    params, macs = count_macs_of("eca_mobilenetv2", norms=True)
    assert params == 3_504_903
    # thop recount of the official code: 3.28e8 with an older thop that also counted activations; ours counts
    # convolutions, linear and BN only, so it must be below that and above the conv/linear-only 3.0e8.
    assert 3.0e8 < macs < 3.28e8


def test_adaptive_kernels_by_default_and_per_stage_lists():
    m = timm.create_model("eca_resnet50", num_classes=3)
    assert m.k_size == [5, 5, 5, 7]  # ψ(256) = ψ(512) = ψ(1024) = 5, ψ(2048) = 7
    m = timm.create_model("eca_resnet18", num_classes=3, k_size="3577")
    assert [m.layer1[0].se.kernel_size, m.layer2[1].se.kernel_size, m.layer3[0].se.kernel_size] == [3, 5, 7]
    assert isinstance(m.layer4[1].se, ECA) and m.layer4[1].se.kernel_size == 7
    with pytest.raises(ValueError, match="four positive odd"):
        timm.create_model("eca_resnet18", k_size=[3, 4, 5, 7])


def test_eca_sits_after_last_bn_before_add():
    m = timm.create_model("eca_resnet50", num_classes=3).eval()
    block = m.layer1[0]
    seen = []
    block.bn3.register_forward_hook(lambda mod, i, o: seen.append(("bn3", o.clone())))
    block.se.register_forward_hook(lambda mod, i, o: seen.append(("se", i[0].clone())))
    m(torch.randn(1, 3, 32, 32))
    assert [s[0] for s in seen] == ["bn3", "se"]
    torch.testing.assert_close(seen[0][1], seen[1][1])


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2"])
def test_timm_contract(name):
    m = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features, 2, 2)
    assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
    assert m(x).shape == (2, 7)
    assert m.get_classifier().out_features == 7
    m.reset_classifier(0)
    assert m(x).shape == (2, m.num_features)
    m.reset_classifier(4)
    assert m(x).shape == (2, 4)
    cfg = m.pretrained_cfg
    assert cfg["url"] == "" and cfg.get("hf_hub_id") is None
    names = dict(m.named_modules())
    assert cfg["first_conv"] in names and cfg["classifier"] in names


@pytest.mark.parametrize(
    ("name", "channels"),
    [("eca_resnet18", [64, 64, 128, 256, 512]), ("eca_mobilenetv2", [16, 24, 32, 96, 320])],
)
def test_features_only(name, channels):
    f = timm.create_model(name, features_only=True).eval()
    outs = f(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == channels == f.feature_info.channels()
    assert [64 // o.shape[-1] for o in outs] == f.feature_info.reduction() == [2, 4, 8, 16, 32]


def _official_state_dict(model):
    """Our state dict written in the official ECANet layout (``eca`` attribute, DataParallel prefix)."""
    return {"module." + re.sub(r"\.se\.conv\.weight$", ".eca.conv.weight", k): v for k, v in model.state_dict().items()}


def _official_resnet18_forward(sd, x):
    """Forward pass of the official ``ResNet(ECABasicBlock)`` in eval mode, written from models/eca_resnet.py and
    models/eca_module.py, reading only the official keys."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"])

    def eca(t, p):
        w = sd[p + ".conv.weight"]
        y = F.adaptive_avg_pool2d(t, 1).squeeze(-1).transpose(-1, -2)  # (B, 1, C)
        y = F.conv1d(y, w, padding=(w.shape[-1] - 1) // 2).transpose(-1, -2).unsqueeze(-1).sigmoid()
        return t * y.expand_as(t)

    x = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    for layer in range(1, 5):
        for b in range(2):
            p = f"layer{layer}.{b}"
            stride = 2 if (b == 0 and layer > 1) else 1
            out = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=stride, padding=1), p + ".bn1"))
            out = eca(bn(F.conv2d(out, sd[p + ".conv2.weight"], padding=1), p + ".bn2"), p + ".eca")
            res = x
            if p + ".downsample.0.weight" in sd:
                res = bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), p + ".downsample.1")
            x = F.relu(out + res)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def test_official_checkpoint_loads_and_matches_official_forward(tmp_path):
    src = timm.create_model("eca_resnet18", num_classes=10, k_size=[3, 5, 7, 7]).eval()
    for m in src.modules():  # non-trivial BN statistics so that the comparison means something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    official = _official_state_dict(src)
    assert eca_kernels_from_state_dict(official) == [3, 5, 7, 7]
    path = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"state_dict": official, "epoch": 100}, path)
    model = timm.create_model("eca_resnet18", num_classes=10, k_size=[3, 5, 7, 7], checkpoint_path=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _official_resnet18_forward(official, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"k_size=\[3, 5, 7, 7\]"):
        timm.create_model("eca_resnet18", num_classes=10, checkpoint_path=str(path))


def test_mobilenetv2_official_layout_loads(tmp_path):
    src = timm.create_model("eca_mobilenetv2", num_classes=5).eval()
    path = tmp_path / "eca_mbv2.pth"
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, path)
    model = timm.create_model("eca_mobilenetv2", num_classes=5, checkpoint_path=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))
    # the official code's own threshold (k=1 up to 96 channels) does not fit the released weights (issue #22)
    with pytest.raises(ValueError, match="eca_threshold"):
        timm.create_model("eca_mobilenetv2", num_classes=5, eca_threshold=96, checkpoint_path=str(path))
