"""Networks, neuron selection and the DOORPING trigger update."""

import pytest
import torch
from torch import nn

from polyzoo.security.attacks import (
    AttackConfig,
    doorping_trigger,
    naive_trigger,
    poison,
    poison_indices,
    select_neuron,
    stamp,
    trigger_mask,
    update_trigger,
)
from polyzoo.security.networks import AlexNet, ConvNet, get_network


def test_convnet_structure_matches_attack_code():
    net = ConvNet(1, 10, im_size=(28, 28))
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 128, 128]
    assert convs[0].padding == (3, 3) and convs[1].padding == (1, 1)  # 28 -> 32 for one-channel inputs
    assert all(isinstance(m, nn.AvgPool2d) for m in net.features if "Pool" in type(m).__name__)
    assert net.num_features == 128 * 4 * 4
    lin = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(2048, 192), (192, 10)]
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    single = get_network("convnet-linear", 3, 7, (32, 32), norm="instancenorm")
    assert isinstance(single.classifier, nn.Linear) and single.classifier.out_features == 7
    norms = [m for m in single.features if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 3 and norms[0].num_groups == norms[0].num_channels == 128  # instance norm
    assert not any(isinstance(m, nn.GroupNorm) for m in ConvNet(3, 10).features)  # class default: no norm


def test_alexnet_shapes():
    net = AlexNet(3, 10)
    assert net.num_features == 4096  # the official 4096 at 32x32
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert (net.classifier[2].in_features, net.classifier[2].out_features) == (384, 192)


def test_select_neuron_picks_documented_layer():
    assert select_neuron(AlexNet(3, 10), layer=-2)[0] == "classifier.2"
    assert select_neuron(ConvNet(1, 10, im_size=(8, 8)), layer=-2)[0] == "classifier.0"
    # norm affine weights count as weight layers, but the second-to-last is still the hidden Linear
    assert select_neuron(ConvNet(1, 10, im_size=(8, 8), norm="instancenorm"))[0] == "classifier.0"


def test_select_neuron_ranks_by_summed_abs_weight():
    net = AlexNet(1, 10, im_size=(8, 8))
    with torch.no_grad():
        w = net.classifier[2].weight
        w.fill_(0.01)
        w[5] = -1.0  # largest summed |w| despite being negative
        w[17, :10] = 3.0  # second largest: 30 < 384
    name, idx = select_neuron(net, -2, topk=2)
    assert name == "classifier.2" and idx.tolist() == [5, 17]


def test_trigger_location_and_naive_stamp():
    mask = trigger_mask(1, 32, 32, 2)
    rows, cols = torch.nonzero(mask[0], as_tuple=True)
    assert sorted(set(rows.tolist())) == [29, 30] and sorted(set(cols.tolist())) == [29, 30]  # [W-s-1, W-1)
    trig, m = naive_trigger(1, 32, 32, (0.2861,), (0.3530,), size=3, position=(0, 4))
    assert m[0, 0:3, 4:7].sum() == 9 and m.sum() == 9
    assert torch.allclose(trig[0, 1, 5], torch.tensor((1 - 0.2861) / 0.3530))  # raw 255
    x = torch.zeros(5, 1, 32, 32)
    y = torch.tensor([1, 2, 3, 4, 5])
    idx = poison_indices(5, 0.4, torch.Generator().manual_seed(0))
    assert len(idx) == 2
    px, py = poison(x, y, idx, trig, m, target=0)
    assert (py[idx] == 0).all() and (px[idx][:, :, 0:3, 4:7] == trig[:, 0:3, 4:7]).all()
    untouched = torch.ones(5, dtype=torch.bool)
    untouched[idx] = False
    assert (px[untouched] == 0).all() and (py[untouched] == y[untouched]).all()
    with pytest.raises(ValueError, match="does not fit"):
        trigger_mask(1, 8, 8, 9)


def test_doorping_init_range():
    t, m = doorping_trigger(3, 16, 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), size=4, generator=torch.Generator())
    inside = t[m.bool()]
    assert inside.min() >= 1 / 255 and inside.max() <= 1.0  # randint(1, 256) / 255
    assert (t[~m.bool()] == 0).all()


def _trained_tiny_net():
    torch.manual_seed(0)
    net = ConvNet(1, 4, width=8, im_size=(8, 8))
    with torch.no_grad():  # make the selected neuron's pre-activation respond to the corner
        net.classifier[0].bias.fill_(0.5)
    return net


def test_trigger_update_only_inside_mask_and_raises_activation():
    net = _trained_tiny_net()
    trig, mask = doorping_trigger(1, 8, 8, (0.5,), (0.25,), size=2, generator=torch.Generator().manual_seed(1))
    cfg = AttackConfig(kind="doorping", trigger_steps=30, alpha=10.0)
    name, neurons = select_neuron(net, cfg.layer, cfg.topk)

    def activation(t):
        box = []
        h = net.get_submodule(name).register_forward_hook(lambda _m, _i, o: box.append(o.clone()))
        net(t.unsqueeze(0))
        h.remove()
        return box[0][0, neurons].mean().item()

    before = activation(trig)
    new, info = update_trigger(net, trig, mask, cfg)
    after = activation(new)
    assert info.module == "classifier.0" and info.neurons == neurons.tolist()
    assert info.steps > 0 and after > before
    assert info.activation_before == pytest.approx(before, abs=1e-5)
    outside = ~mask.bool()
    assert torch.equal(new[outside], trig[outside])  # zero gradient outside the mask -> bit-identical
    assert not torch.equal(new[mask.bool()], trig[mask.bool()])


def test_masked_gradient_is_zero_outside_mask():
    # the gradient the update applies, checked directly through a hook on the trigger leaf
    net = _trained_tiny_net()
    trig, mask = doorping_trigger(1, 8, 8, (0.5,), (0.25,), size=2, generator=torch.Generator().manual_seed(2))
    seen = []
    orig_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["params"][0].grad.clone())
        return orig_step(self, *a, **k)

    torch.optim.Adam.step = spy
    try:
        update_trigger(net, trig, mask, AttackConfig(kind="doorping", trigger_steps=3))
    finally:
        torch.optim.Adam.step = orig_step
    assert seen
    for g in seen:
        assert (g[0][~mask.bool()] == 0).all() and g[0][mask.bool()].abs().sum() > 0


def test_stamp_formula():
    x = torch.randn(3, 2, 4, 4)
    t = torch.randn(2, 4, 4)
    m = trigger_mask(2, 4, 4, 1)
    assert torch.allclose(stamp(x, t, m), x * (1 - m) + m * t)
