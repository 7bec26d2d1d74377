"""The reproduction's small ResNet: attention placement and parameter overheads (the trainings run in
`polyzoo reproduce`, not here)."""

import torch

from polyzoo.shared.ops.attention import ECA, SqueezeExcite
from polyzoo.vision.reproduction import SmallResNet


def test_small_resnet_attention_overheads():
    nets = {a: SmallResNet(10, 1, a) for a in ("none", "se", "eca")}
    params = {a: sum(p.numel() for p in n.parameters()) for a, n in nets.items()}
    # ECA: one kernel of 3 per block (ψ(16) = ψ(32) = ψ(64) = 3), three blocks
    assert params["eca"] - params["none"] == 9
    # SE r=16: 2·C·C/16 + C/16 + C per block, hidden max(C//16, 1)
    se = sum(2 * c * max(c // 16, 1) + max(c // 16, 1) + c for c in (16, 32, 64))
    assert params["se"] - params["none"] == se
    assert all(isinstance(b.se, ECA) for b in nets["eca"].layers)
    assert all(isinstance(b.se, SqueezeExcite) for b in nets["se"].layers)
    assert nets["eca"](torch.randn(2, 1, 16, 16)).shape == (2, 10)
