"""Backbones and classifiers: exact counts of the full-size models, stride-1 last stage, temporal shift, timm,
GAP vs TCP heads, the official checkpoint key filter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polyzoo.shared.testing import randomize_
from polyzoo.video.models import (
    ModelConfig,
    TemporalShift,
    TorchvisionResNet,
    build_model,
    checkpoint_filter_fn,
    config_from_checkpoint,
    load_official,
    temporal_shift,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_full_size_parameter_counts():
    assert n_params(build_model(ModelConfig(backbone="tsn_r50", num_classes=400, num_frames=8))) == 27_632_208
    assert n_params(build_model(backbone="tsn_r50", num_classes=400, num_frames=16)) == 27_697_744
    assert n_params(build_model(backbone="tsn_r50", num_classes=400, head="gap")) == 24_327_632
    tsm = build_model(backbone="tsm_r50", num_classes=400, num_frames=8)
    assert n_params(tsm) == 27_632_208  # the shift has no parameters
    assert sum(isinstance(m, TemporalShift) for m in tsm.modules()) == 16  # before conv1 of all 16 blocks
    assert tsm.fc.in_features == 8256


def test_last_stride_one_doubles_the_feature_map():
    x = torch.randn(2, 3, 64, 64)
    s1 = TorchvisionResNet("resnet18", last_stride=1).eval()
    s2 = TorchvisionResNet("resnet18", last_stride=2).eval()
    with torch.no_grad():
        assert s1(x).shape == (2, 512, 4, 4)
        assert s2(x).shape == (2, 512, 2, 2)
    r50 = TorchvisionResNet("resnet50", last_stride=1)
    assert r50.layer4[0].conv2.stride == (1, 1) and r50.layer4[0].downsample[0].stride == (1, 1)


def test_temporal_shift_moves_one_eighth_each_way():
    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2 * 3, 16, 1, 1)  # 2 clips × 3 frames × 16 ch
    y = temporal_shift(x, num_frames=3, fold_div=8).view(2, 3, 16)
    v = x.view(2, 3, 16)
    torch.testing.assert_close(y[:, :-1, :2], v[:, 1:, :2])  # from the next frame
    assert torch.all(y[:, -1, :2] == 0)
    torch.testing.assert_close(y[:, 1:, 2:4], v[:, :-1, 2:4])  # from the previous frame
    assert torch.all(y[:, 0, 2:4] == 0)
    torch.testing.assert_close(y[:, :, 4:], v[:, :, 4:])


@pytest.mark.parametrize(
    ("backbone", "head"), [("tsn_resnet18", "tcp"), ("tsm_resnet18", "gap"), ("tiny", "tcp"), ("tiny", "gap")]
)
def test_classifiers_forward_backward(backbone, head):
    torch.manual_seed(0)
    model = build_model(backbone=backbone, num_classes=5, num_frames=4, head=head, tcp_dim=8, tcp_inner_dim=16)
    x = torch.randn(2, 4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert model.fc.weight.grad.abs().sum() > 0
    first = next(model.backbone.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all()


def test_frame_level_tcp_averages_frame_scores():
    torch.manual_seed(0)
    model = build_model(backbone="tiny", num_classes=3, num_frames=4, tcp_dim=8, tcp_inner_dim=16, tcp_level="frame")
    model.eval()
    x = torch.randn(2, 4, 3, 16, 16)
    z = model.forward_features(x)
    assert z.shape == (2, 4, 36)
    torch.testing.assert_close(model(x), model.fc(z).mean(1))


def test_timm_backbone():
    torch.manual_seed(0)
    model = build_model(backbone="timm:resnet18", num_classes=3, num_frames=2, tcp_dim=8, tcp_inner_dim=16)
    assert model.backbone.num_features == 512
    assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 3)
    gap = build_model(backbone="timm:resnet18", num_classes=3, num_frames=2, head="gap")
    assert gap(torch.randn(1, 2, 3, 32, 32)).shape == (1, 3)


def test_bad_inputs_and_names():
    model = build_model(backbone="tiny", num_classes=3, num_frames=4, tcp_dim=8, tcp_inner_dim=16)
    with pytest.raises(ValueError, match=r"\(N, 4, 3, H, W\)"):
        model(torch.randn(1, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_model(backbone="vgg")
    with pytest.raises(ValueError, match="head must be 'gap' or 'tcp'"):
        build_model(backbone="tiny", head="max")


# ---------------------------------------------------------------------------------------------------------------
# The official TSN + TCP model, transcribed from the TCP repository (ZilinGao/Temporal-attentive-Covariance-Pooling-
# Networks-for-Video-Recognition): ops/models.py (TSN: base_model, new_fc; base_model.fc replaced by Dropout),
# ops/torchvision/resnet.py (ResNet with layer4 stride 1 and the TCP module as its attribute ``TCP``),
# ops/TCP/TCP_module.py, TCP_att_module.py, TSA.py, TCA.py, ops/MPNCOV/MPNCOV.py, and TSM's ops/temporal_shift.py
# (TemporalShift(net) wrapping conv1, "blockres"). Module names are the official ones; the math is written here
# independently of polyzoo's modules.
# ---------------------------------------------------------------------------------------------------------------


class OfficialTemporalShift(nn.Module):
    def __init__(self, net, n_segment, n_div=8):
        super().__init__()
        self.net, self.n_segment, self.fold_div = net, n_segment, n_div

    def forward(self, x):
        nt, c, h, w = x.size()
        x = x.view(nt // self.n_segment, self.n_segment, c, h, w)
        fold = c // self.fold_div
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
        out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
        return self.net(out.view(nt, c, h, w))


class OfficialBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class OfficialTSA(nn.Module):
    def __init__(self, dim, frame):
        super().__init__()
        self.dim, self.frame = dim, frame
        self.conv_phi_1 = nn.Conv2d(dim, dim, 1)
        self.conv_phi_2 = nn.Conv2d(dim, dim, 1)
        self.conv_phi0 = nn.Conv2d(dim, dim, 1)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x):
        n, c, h, w = x.size()
        v = x.view(n // self.frame, self.frame, c, h, w)
        x_1 = torch.cat((v[:, :1], v[:, :-1]), 1)
        x_2 = torch.cat((x_1[:, :1], x_1[:, :-1]), 1)
        p1 = self.conv_phi_1(x_1.reshape(n, c, h, w)).view(n, self.dim, -1)
        p2 = self.conv_phi_2(x_2.reshape(n, c, h, w)).view(n, self.dim, -1)
        p0 = self.conv_phi0(x).view(n, self.dim, -1)
        theta = torch.softmax(torch.einsum("nca,ncb->nab", p1, p2) * self.dim**-0.5, dim=2)
        out = torch.einsum("ntg,ncg->nct", theta, p0).contiguous().view(n, self.dim, h, w)
        return x + self.norm(out)


class OfficialTCA(nn.Module):
    def __init__(self, dim, frame):
        super().__init__()
        self.dim, self.frame = dim, frame
        self.g1 = nn.Conv2d(dim, dim * 4, 1)
        self.g2 = nn.Conv2d(dim * 4, dim, 1)

    def _diff(self, x):
        return torch.sigmoid(self.g2(torch.relu(self.g1(x))))

    def forward(self, x, x_att):
        x = x.mean((2, 3), keepdim=True)
        n, c, h, w = x.size()
        xt = x.view(n // self.frame, self.frame, c, h, w)
        xt1 = torch.cat((xt[:, -1:], xt[:, :-1]), 1)
        xt2 = torch.cat((xt[:, -2:], xt[:, :-2]), 1)
        d1 = self._diff((xt - xt1).view(n, c, h, w))
        d2 = self._diff(((xt - xt2) * 0.5).view(n, c, h, w))
        return x_att * (d1 + d2) * 0.5


class OfficialTCPAtt(nn.Module):
    def __init__(self, dim, frame):
        super().__init__()
        self.frame, self.k = frame, frame // 2 + 1
        self.TCA = OfficialTCA(dim, frame)
        self.conv_1d = nn.Conv3d(
            dim, dim, (self.k, 1, 1), padding=((self.k - 1) // 2, 0, 0), padding_mode="circular"
        )  # the torch >= 1.5 branch of the official padding test
        self.TSA = OfficialTSA(dim, frame)

    def forward(self, x):
        x_att = self.TCA(x, self.TSA(x))
        n, c, h, w = x_att.size()
        x_att = x_att.reshape(n // self.frame, self.frame, c, h, w).permute(0, 2, 1, 3, 4)
        x_att = self.conv_1d(x_att).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        return torch.relu(x_att + x)


def official_covpool(x):
    b, dim, h, w = x.shape
    m = h * w
    x = x.reshape(b, dim, m)
    i_hat = (-1.0 / m / m) * torch.ones(m, m, dtype=x.dtype) + (1.0 / m) * torch.eye(m, dtype=x.dtype)
    return x.bmm(i_hat.expand(b, m, m)).bmm(x.transpose(1, 2))


def official_sqrtm(x, iter_n):
    b, dim, _ = x.shape
    i3 = 3.0 * torch.eye(dim, dtype=x.dtype).expand(b, dim, dim)
    norm_a = (1.0 / 3.0) * x.mul(i3).sum(dim=1).sum(dim=1)
    a = x.div(norm_a.view(b, 1, 1) + 1e-5)
    zy = 0.5 * (i3 - a)
    y, z = a.bmm(zy), zy
    for _ in range(1, iter_n - 1):
        zy = 0.5 * (i3 - z.bmm(y))
        y, z = y.bmm(zy), zy.bmm(z)
    yzy = 0.5 * y.bmm(i3 - z.bmm(y))
    return yzy * torch.sqrt(norm_a).view(b, 1, 1)


def official_triuvec(x):
    b, dim, _ = x.shape
    index = torch.ones(dim, dim).triu().reshape(dim * dim).nonzero(as_tuple=False)
    return x.reshape(b, dim * dim)[:, index]


class OfficialTCP(nn.Module):
    def __init__(self, dim_in, dim_out, num_segments):
        super().__init__()
        self.num_segments = num_segments
        self.layer_reduce1 = nn.Conv2d(dim_in, 256, 1, bias=False)  # dim_inner = 256 in the official code
        self.layer_reduce_bn1 = nn.BatchNorm2d(256)
        self.layer_reduce2 = nn.Conv2d(256, dim_out, 1, bias=False)
        self.layer_reduce_bn2 = nn.BatchNorm2d(dim_out)
        self.TCP_att = OfficialTCPAtt(dim_out, num_segments)

    def forward(self, x):
        x = torch.relu(self.layer_reduce_bn1(self.layer_reduce1(x)))
        x = torch.relu(self.layer_reduce_bn2(self.layer_reduce2(x)))
        x = self.TCP_att(x)
        x = x.view((-1, self.num_segments, *x.size()[1:]))
        bs, fr, dim, h, w = x.size()
        x = x.permute(0, 2, 1, 3, 4).reshape(bs, dim, fr * h, w)  # level 'video'
        return official_triuvec(official_sqrtm(official_covpool(x), 3)).unsqueeze(-1)


class OfficialResNet50(nn.Module):
    def __init__(self, tcp):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=1)  # stride 1 in the TCP repository
        self.TCP = tcp
        self.fc = nn.Dropout(0.5)  # TSN._prepare_tsn replaces the ImageNet fc by Dropout (dropout > 0)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [OfficialBottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [OfficialBottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.TCP(x), 1))


class OfficialTSN(nn.Module):
    def __init__(self, num_class, num_segments, tcp_dim, is_shift):
        super().__init__()
        self.num_segments = num_segments
        self.base_model = OfficialResNet50(OfficialTCP(2048, tcp_dim, num_segments))
        if is_shift:  # make_temporal_shift(place="blockres"): layer3 has < 23 blocks, so every block
            for layer in (
                self.base_model.layer1,
                self.base_model.layer2,
                self.base_model.layer3,
                self.base_model.layer4,
            ):
                for b in layer:
                    b.conv1 = OfficialTemporalShift(b.conv1, num_segments)
        self.new_fc = nn.Linear(tcp_dim * (tcp_dim + 1) // 2, num_class)

    def forward(self, x):
        return self.new_fc(self.base_model(x.view((-1, 3, *x.size()[-2:]))))  # video level: no consensus


# the older official names (before the module was renamed TCP), per ops/keys_mapping.py
_OLD_NAMES = {
    "TCP_att.TCA.g1.": "att_module.conv_1.",
    "TCP_att.TCA.g2.": "att_module.conv_2.",
    "TCP_att.TSA.conv_phi_1.": "att_module.sp_att.conv_theta.",
    "TCP_att.TSA.conv_phi_2.": "att_module.sp_att.conv_phi.",
    "TCP_att.TSA.conv_phi0.": "att_module.sp_att.conv_g.",
    "TCP_att.TSA.norm.": "att_module.sp_att.norm.",
    "TCP_att.conv_1d.": "att_module.conv_1d.",
}
_OLD_SEQUENTIAL = {  # the TEA / pre-activation scripts' reductions as nn.Sequential(conv, BN, ReLU)
    "layer_reduce1.": "layer_reduce1.0.",
    "layer_reduce_bn1.": "layer_reduce1.1.",
    "layer_reduce2.": "layer_reduce2.0.",
    "layer_reduce_bn2.": "layer_reduce2.1.",
}


def _layout(official_sd: dict, layout: str) -> dict:
    """The official state dict in one of the layouts the official code saved."""
    out = {}
    for k, v in official_sd.items():
        if k.startswith("base_model.TCP.") and layout != "current":
            rest = k.removeprefix("base_model.TCP.")
            for new, old in (_OLD_NAMES | (_OLD_SEQUENTIAL if layout == "isqrt" else {})).items():
                if rest.startswith(new):
                    rest = old + rest.removeprefix(new)
                    break
            k = ("base_model.layer4.iSQRT." if layout == "layer4_isqrt" else "base_model.iSQRT.") + rest
        out[k] = v
    return out


@pytest.fixture(scope="module", params=["tsn", "tsm"])
def official_pair(request):
    torch.manual_seed(0)
    shift = request.param == "tsm"
    official = OfficialTSN(num_class=5, num_segments=4, tcp_dim=8, is_shift=shift).double().eval()
    randomize_(official)
    ours = (
        build_model(
            backbone=f"{request.param}_r50", num_classes=5, num_frames=4, tcp_dim=8, tcp_inner_dim=256, last_stride=1
        )
        .double()
        .eval()
    )
    return official, ours, shift


def test_official_key_list_is_what_the_filter_expects(official_pair):
    official, ours, shift = official_pair
    keys = set(official.state_dict())
    assert "base_model.TCP.TCP_att.TSA.conv_phi_1.weight" in keys and "new_fc.weight" in keys
    assert ("base_model.layer1.0.conv1.net.weight" in keys) == shift
    assert not any(k.startswith("base_model.fc.") or k.startswith("base_model.avgpool") for k in keys)
    assert set(checkpoint_filter_fn({"module." + k: v for k, v in official.state_dict().items()})) == set(
        ours.state_dict()
    )


@pytest.mark.parametrize("layout", ["current", "layer4_isqrt", "isqrt"])
@pytest.mark.parametrize("prefix", ["module.", ""])
def test_official_tsn_tcp_checkpoint_loads_strictly_and_reproduces_the_official_forward(official_pair, layout, prefix):
    official, ours, _ = official_pair
    sd = {prefix + k: v for k, v in _layout(official.state_dict(), layout).items()}
    ours.load_state_dict(checkpoint_filter_fn({"state_dict": sd, "epoch": 3}), strict=True)
    x = torch.randn(2, 4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = official(x.view(2, 12, 32, 32))
        out = ours(x)
    assert ref.abs().max() > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9 * ref.abs().max().item())


def test_dropout_zero_checkpoint_has_its_classifier_at_base_model_fc():
    """With dropout 0 the official TSN makes base_model.fc the classifier (no new_fc)."""
    w, b = torch.randn(3, 36), torch.randn(3)
    mapped = checkpoint_filter_fn({"module.base_model.fc.weight": w, "module.base_model.fc.bias": b})
    assert mapped["fc.weight"] is w and mapped["fc.bias"] is b


def test_preact_backbone_is_reported():
    with pytest.raises(ValueError, match="pre-activation ResNet-152"):
        checkpoint_filter_fn({"module.base_model.bn_data.weight": torch.ones(3)})


def test_config_and_load_official_from_a_file(official_pair, tmp_path):
    official, _, shift = official_pair
    path = tmp_path / "TCP_official.pth.tar"
    sd = {"module." + k: v.float() for k, v in _layout(official.state_dict(), "current").items()}
    torch.save({"epoch": 1, "arch": "resnet50", "state_dict": sd, "best_prec1": 0.0}, path)
    cfg = config_from_checkpoint(sd)
    assert (cfg.backbone, cfg.num_classes, cfg.num_frames, cfg.tcp_dim, cfg.tcp_inner_dim, cfg.head) == (
        "tsm_resnet50" if shift else "tsn_resnet50",
        5,
        4,
        8,
        256,
        "tcp",
    )
    with pytest.raises(ValueError, match="temporal kernel"):
        config_from_checkpoint(sd, num_frames=8)
    model, _ = load_official(path)
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).double(), official(x.double().view(1, 12, 32, 32)), rtol=1e-4, atol=1e-4)


def test_tsm_resnet101_shifts_every_other_block_as_tsm():
    net = TorchvisionResNet("resnet101", shift=True, num_frames=4)
    shifted = [i for i, b in enumerate(net.layer3) if isinstance(b.conv1, TemporalShift)]
    assert shifted == list(range(0, 23, 2))
    assert [isinstance(b.conv1, TemporalShift) for b in net.layer1] == [True, False, True]
