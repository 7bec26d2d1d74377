"""ECA-ResNet / ECA-MobileNetV2: exact counts, timm contract, official checkpoint layout."""

import json
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from timm.data import ImageDataset, create_transform, resolve_data_config
from torch import nn

from polyzoo.shared.ops.attention import ECA
from polyzoo.shared.testing import randomize_
from polyzoo.vision.cli import vision
from polyzoo.vision.flops import count_macs_of
from polyzoo.vision.models.eca_net import OFFICIAL_KERNELS, OFFICIAL_RELEASES, eca_kernels_from_state_dict

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


# ---------------------------------------------------------------------------------------------------------------
# The official models, transcribed from BangguWu/ECANet (models/eca_module.py, models/eca_resnet.py,
# models/eca_mobilenetv2.py): official module names, math written here, independent of polyzoo's modules.
# ---------------------------------------------------------------------------------------------------------------


class OfficialEcaLayer(nn.Module):
    def __init__(self, channel, k_size=3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y).expand_as(x)


class OfficialECABasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, k_size=3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.eca = OfficialEcaLayer(planes, k_size)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.eca(self.bn2(self.conv2(out)))
        residual = self.downsample(x) if self.downsample is not None else x
        return torch.relu(out + residual)


class OfficialECABottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, k_size=3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.eca = OfficialEcaLayer(planes * 4, k_size)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.eca(self.bn3(self.conv3(out)))
        residual = self.downsample(x) if self.downsample is not None else x
        return torch.relu(out + residual)


class OfficialResNet(nn.Module):
    def __init__(self, block, layers, num_classes, k_size):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], int(k_size[0]))
        self.layer2 = self._make_layer(block, 128, layers[1], int(k_size[1]), stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], int(k_size[2]), stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], int(k_size[3]), stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # set by every eca_resnetXX factory
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, k_size, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, k_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, k_size=k_size) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


class OfficialConvBNReLU(nn.Sequential):
    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(),
        )


class OfficialInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio, k_size):
        super().__init__()
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers = [OfficialConvBNReLU(inp, hidden_dim, kernel_size=1)] if expand_ratio != 1 else []
        layers += [
            OfficialConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
            OfficialEcaLayer(oup, k_size),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class OfficialECAMobileNetV2(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2]]
        setting.append([6, 320, 1, 1])
        input_channel = 32
        features = [OfficialConvBNReLU(3, input_channel, stride=2)]
        for t, c, n, s in setting:
            for i in range(n):
                ksize = 1 if c < 96 else 3  # the current official threshold
                features.append(OfficialInvertedResidual(input_channel, c, s if i == 0 else 1, t, ksize))
                input_channel = c
        features.append(OfficialConvBNReLU(input_channel, 1280, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(-1).mean(-1))


def _save_official(model: nn.Module, path):
    """As the official main.py saves it: DataParallel keys inside {"state_dict": ...}."""
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 100, "arch": "x", "state_dict": sd, "best_prec1": 0.0}, path)
    return sd


@pytest.mark.parametrize(
    ("name", "block", "layers"),
    [("eca_resnet18", OfficialECABasicBlock, [2, 2, 2, 2]), ("eca_resnet50", OfficialECABottleneck, [3, 4, 6, 3])],
)
def test_official_resnet_checkpoint_loads_through_pretrained_and_reproduces_the_official_forward(
    tmp_path, name, block, layers
):
    official = OfficialResNet(block, layers, num_classes=10, k_size=OFFICIAL_KERNELS[name]).double().eval()
    randomize_(official)
    path = tmp_path / OFFICIAL_RELEASES[name]
    sd = _save_official(official, path)
    assert eca_kernels_from_state_dict(sd) == list(OFFICIAL_KERNELS[name])
    model = timm.create_model(name, pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.k_size == list(OFFICIAL_KERNELS[name])  # the release's kernels come from its pretrained config
    model.double().eval()
    model.load_state_dict(sd, strict=True)  # the filter maps every official key, nothing left over
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = official(x)
        torch.testing.assert_close(model(x), ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
    with pytest.raises(ValueError, match=re.escape(f"k_size={list(OFFICIAL_KERNELS[name])}")):
        timm.create_model(name, num_classes=10, checkpoint_path=str(path))  # the formula's kernels do not fit
    with pytest.raises(ValueError, match="downloads no weights"):
        timm.create_model(name, pretrained=True)


def test_official_mobilenetv2_checkpoint_loads_through_pretrained_and_reproduces_the_official_forward(tmp_path):
    official = OfficialECAMobileNetV2(num_classes=5).double().eval()
    randomize_(official)
    path = tmp_path / OFFICIAL_RELEASES["eca_mobilenetv2"]
    sd = _save_official(official, path)
    model = timm.create_model("eca_mobilenetv2", pretrained=True, num_classes=5, pretrained_cfg_overlay={"file": path})
    model.double().eval().load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = official(x)
        torch.testing.assert_close(model(x), ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
    # the earlier official threshold (k=1 up to 96 channels) does not fit the released weights (issue #22)
    with pytest.raises(ValueError, match="eca_threshold"):
        timm.create_model("eca_mobilenetv2", num_classes=5, eca_threshold=96, checkpoint_path=str(path))


def test_pretrained_configs_name_the_official_releases():
    for name, file in OFFICIAL_RELEASES.items():
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        assert cfg["tag"] == "official_in1k" and cfg["url"] == "" and not cfg.get("file") and not cfg.get("hf_hub_id")
        assert f"file: {file}" in cfg["notes"] and any(n.startswith("source: BangguWu/ECANet") for n in cfg["notes"])
        if name in OFFICIAL_KERNELS:
            assert f"k_size: {list(OFFICIAL_KERNELS[name])}" in cfg["notes"]


# `polyzoo vision eval --checkpoint FILE --model NAME --data FOLDER` on an official-layout checkpoint


@pytest.fixture()
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a_class", "b_class"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    return tmp_path / "imgs"


def test_eval_checkpoint_on_an_image_folder_equals_the_official_model(tmp_path, image_folder):
    torch.manual_seed(0)
    official = OfficialECAMobileNetV2(num_classes=2).eval()
    randomize_(official)
    path = tmp_path / "eca_mobilenetv2_k13.pth.tar"
    _save_official(official, path)
    args = ["eval", "--checkpoint", str(path), "--model", "eca_mobilenetv2", "--model-arg", "num_classes=2"]
    out = CliRunner().invoke(vision, [*args, "--data", str(image_folder), "--batch-size", "4", "--format", "json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["n"] == 6 and result["model"] == "eca_mobilenetv2"
    # the official model on the same inputs (the model's evaluation transform: resize 256, centre crop 224)
    model = timm.create_model("eca_mobilenetv2", num_classes=2)
    ds = ImageDataset(str(image_folder), transform=create_transform(**resolve_data_config({}, model=model)))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        logits = official(x)
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert result["top1"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))


def test_eval_checkpoint_errors(tmp_path, image_folder):
    runner = CliRunner()
    both = runner.invoke(vision, ["eval", "--run", str(tmp_path), "--checkpoint", __file__, "--model", "emo_1m"])
    assert both.exit_code != 0 and "exactly one of --run or --checkpoint" in both.output
    missing = runner.invoke(vision, ["eval", "--checkpoint", __file__, "--data", str(image_folder)])
    assert missing.exit_code != 0 and "needs --model" in missing.output
