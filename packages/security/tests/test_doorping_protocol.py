"""DOORPING's trigger update against a transcription of the official procedure (baadd ``DC/utils.py``:
``select_neuron``, ``get_middle_output`` with its ``get_activation`` hook, ``update_trigger``), written here:
the hook keeps the module's output tensor itself, so the in-place ReLU that follows overwrites what it holds."""

import dataclasses

import pytest
import torch
from torch import nn

from polyzoo.security.attacks import AttackConfig, doorping_trigger, update_trigger
from polyzoo.security.networks import ConvNet

STEPS = 40


def official_update(net, module, trigger, mask, neurons, alpha=10.0, steps=STEPS, threshold=0.5, copy=False):
    """The official update (``copy=True``: the same with the hook storing a copy, the clone-before-ReLU reading)."""
    net.eval()
    trig = trigger.detach().clone().unsqueeze(0).requires_grad_()
    optimizer = torch.optim.Adam([trig], lr=0.08, betas=[0.9, 0.99])
    held = {}

    def keep(_module, _inputs, output):
        held["out"] = output.clone() if copy else output

    handle = module.register_forward_hook(keep)
    init_output = None
    try:
        for i in range(steps):
            optimizer.zero_grad()
            net(trig)
            output = held["out"][:, neurons]
            if i == 0:
                init_output = output.detach()
            loss = torch.nn.functional.mse_loss(output, alpha * init_output)
            if loss.item() < threshold:
                break
            loss.backward()
            trig.grad.data.mul_(mask)
            optimizer.step()
    finally:
        handle.remove()
    return trig.detach()[0]


def tiny_net(sign: float) -> nn.Sequential:
    """Linear(16 → 5) → in-place ReLU → Linear(5 → 3); hidden neuron 2 has the largest Σ|W| (the one DOORPING
    selects) and a starting activation of sign × (about 3) on the test trigger."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))
    with torch.no_grad():
        net[1].weight.uniform_(-0.1, 0.1)
        net[1].weight[2] = 0.5  # Σ|W| = 8, the top neuron
        net[1].bias.zero_()
        net[1].bias[2] = sign * 3.0 - 0.5 * float(TRIGGER.sum())
    return net


TRIGGER, MASK = doorping_trigger(1, 4, 4, (0.5,), (0.25,), size=2, generator=torch.Generator().manual_seed(3))


@torch.no_grad()
def pre_activation(net, trig):
    return float(net[1](trig.flatten())[2])


def test_negative_start_leaves_the_trigger_unchanged_as_the_official_code():
    net = tiny_net(-1.0)
    assert pre_activation(net, TRIGGER) == pytest.approx(-3.0, abs=1e-5)
    ref = official_update(net, net[1], TRIGGER, MASK, torch.tensor([2]))
    assert torch.equal(ref, TRIGGER)  # the hook read 0 (post-ReLU): loss 0 < 0.5, no step
    new, info = update_trigger(net, TRIGGER, MASK, AttackConfig(kind="doorping", trigger_steps=STEPS))
    assert info.module == "1" and info.neurons == [2]
    assert torch.equal(new, ref) and info.steps == 0 and info.activation_before == 0.0


def test_clone_option_reads_the_pre_activation():
    net = tiny_net(-1.0)
    ref = official_update(net, net[1], TRIGGER, MASK, torch.tensor([2]), copy=True)
    cfg = AttackConfig(kind="doorping", trigger_steps=STEPS, doorping_hook="clone")
    new, info = update_trigger(net, TRIGGER, MASK, cfg)
    torch.testing.assert_close(new, ref)
    assert info.steps == STEPS and info.activation_before == pytest.approx(-3.0, abs=1e-5)
    assert pre_activation(net, new) < -3.0 - 1.0  # pushed towards 10·a₀ = −30
    assert not torch.equal(new, TRIGGER) and torch.equal(new[MASK == 0], TRIGGER[MASK == 0])


def test_positive_start_both_readings_agree_with_the_official_update():
    net = tiny_net(1.0)
    assert pre_activation(net, TRIGGER) == pytest.approx(3.0, abs=1e-5)
    ref = official_update(net, net[1], TRIGGER, MASK, torch.tensor([2]))
    for hook in ("official", "clone"):
        cfg = AttackConfig(kind="doorping", trigger_steps=STEPS, doorping_hook=hook)
        new, info = update_trigger(net, TRIGGER, MASK, cfg)
        torch.testing.assert_close(new, ref)
        assert info.steps == STEPS and info.activation_after > 3.0
    assert pre_activation(net, ref) > 3.0 + 1.0


def test_official_reading_on_the_attack_convnet():
    # the paper's setting: layer -2 is classifier.0, followed by ReLU(inplace=True)
    torch.manual_seed(1)
    net = ConvNet(1, 4, width=8, im_size=(8, 8))
    trig, mask = doorping_trigger(1, 8, 8, (0.5,), (0.25,), size=2, generator=torch.Generator().manual_seed(4))
    lin = net.classifier[0]
    j = int(lin.weight.abs().sum(1).argmax())
    with torch.no_grad():
        lin.bias[j] -= 50.0  # the selected neuron starts well below 0
    cfg = AttackConfig(kind="doorping", trigger_steps=10)
    new, info = update_trigger(net, trig, mask, cfg)
    assert info.module == "classifier.0" and info.neurons == [j] and torch.equal(new, trig)
    ref = official_update(net, lin, trig, mask, torch.tensor([j]), steps=10, copy=True)
    clone, _ = update_trigger(net, trig, mask, dataclasses.replace(cfg, doorping_hook="clone"))
    torch.testing.assert_close(clone, ref)
    assert not torch.equal(clone, trig)


def test_conv_layer_selects_whole_channels():
    # layer -2 on a network whose second-to-last weight is a convolution: neurons are output channels
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 16, 3))
    with torch.no_grad():
        net[0].weight.uniform_(-0.1, 0.1)
        net[0].weight[3] = -0.4  # channel 3 has the largest Σ|W| over (in, kh, kw), positive on the trigger
        net[0].bias.fill_(0.5)
    ref = official_update(net, net[0], TRIGGER, MASK, torch.tensor([3]))  # output[:, [3]]: all 4×4 positions
    new, info = update_trigger(net, TRIGGER, MASK, AttackConfig(kind="doorping", trigger_steps=STEPS))
    assert info.module == "0" and info.neurons == [3] and info.steps == STEPS
    torch.testing.assert_close(new, ref)
    assert not torch.equal(new, TRIGGER)


def test_unknown_hook_semantics_are_refused():
    with pytest.raises(ValueError, match=r"doorping_hook must be one of \('official', 'clone'\), got 'copy'"):
        AttackConfig(kind="doorping", doorping_hook="copy")
