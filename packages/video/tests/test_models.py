"""Backbones and classifiers: exact counts of the full-size models, stride-1 last stage, temporal shift, timm,
GAP vs TCP heads, the official checkpoint key filter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polyzoo.video.models import (
    ModelConfig,
    TemporalShift,
    TorchvisionResNet,
    build_model,
    checkpoint_filter_fn,
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


def test_checkpoint_filter_maps_official_key_names():
    model = build_model(backbone="tsm_resnet18", num_classes=4, num_frames=4, tcp_dim=8, tcp_inner_dim=16)
    ours = model.state_dict()
    official = {}
    for k, v in ours.items():
        if k.startswith("backbone."):
            official["module.base_model." + k.removeprefix("backbone.")] = v.clone()
        elif k.startswith("head."):
            official["module.base_model.avgpool." + k.removeprefix("head.")] = v.clone()
        else:
            official["module.new_" + k] = v.clone()
    official["module.base_model.fc.weight"] = torch.zeros(1000, 512)
    assert "module.base_model.layer1.0.conv1.net.weight" in official
    mapped = checkpoint_filter_fn(official)
    model.load_state_dict(mapped, strict=True)
    assert set(mapped) == set(ours)
