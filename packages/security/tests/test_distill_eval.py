"""Distillation (DC/DSA/DM), resumable runs, the attacks inside the loop, and CTA/ASR conventions."""

import torch
from torch import nn

from polyzoo.security.attacks import AttackConfig, stamp, trigger_mask
from polyzoo.security.distill import (
    DistillConfig,
    Distiller,
    distance_wb,
    get_loops,
    load_synset,
    match_loss,
    random_real_subset,
)
from polyzoo.security.evaluate import EvalConfig, accuracy, attack_metrics, train_network

TINY = {"width": 16, "norm": "instancenorm", "batch_real": 64}


def test_layerwise_distance():
    g = torch.randn(4, 3, 3, 3)
    assert distance_wb(g, g).abs() < 1e-5
    assert torch.isclose(distance_wb(g, -g), torch.tensor(8.0), atol=1e-4)  # 4 rows, each 1 - (-1)
    assert distance_wb(torch.randn(7), torch.randn(7)) == 0  # biases/norm parameters are ignored
    a, b = torch.randn(5, 6), torch.randn(5, 6)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert torch.isclose(distance_wb(a, b), (1 - cos).sum(), atol=1e-4)
    assert torch.isclose(match_loss([a, torch.randn(5)], [b, torch.randn(5)]), (1 - cos).sum(), atol=1e-4)
    assert get_loops(10) == (10, 50) and get_loops(50) == (50, 10)


def _mean_acc(data, x, y, seeds=(0, 1, 2)):
    cfg = EvalConfig(width=16, norm="instancenorm", epochs=100)
    return sum(accuracy(train_network(x, y, 10, cfg, seed=s), data.test_x, data.test_y) for s in seeds) / len(seeds)


def _random_baseline(data):
    g = torch.Generator().manual_seed(123)
    return sum(_mean_acc(data, *random_real_subset(data, 1, g), seeds=(k,)) for k in range(3)) / 3


def test_dc_beats_random_real_subset(digits):
    s = Distiller(digits, DistillConfig(method="dc", ipc=1, iterations=30, init="real", **TINY)).run(progress=False)
    assert s.images.shape == (10, 1, 8, 8) and s.labels.tolist() == list(range(10))
    assert _mean_acc(digits, s.images, s.labels) > _random_baseline(digits) + 0.03


def test_dm_beats_random_real_subset(digits):
    s = Distiller(digits, DistillConfig(method="dm", ipc=1, iterations=80, **TINY)).run(progress=False)
    assert _mean_acc(digits, s.images, s.labels) > _random_baseline(digits) + 0.03


def test_resume_is_exact_and_checkpoint_atomic(digits, tmp_path):
    cfg = DistillConfig(method="dsa", ipc=1, iterations=4, checkpoint_every=2, outer_loop=2, inner_loop=1, **TINY)
    full = Distiller(digits, cfg, run_dir=tmp_path / "a").run(progress=False)
    half = DistillConfig(method="dsa", ipc=1, iterations=2, checkpoint_every=2, outer_loop=2, inner_loop=1, **TINY)
    Distiller(digits, half, run_dir=tmp_path / "b").run(progress=False)
    resumed = Distiller(digits, cfg, run_dir=tmp_path / "b")
    assert resumed.iteration == 2
    out = resumed.run(progress=False)
    assert torch.equal(full.images, out.images)
    assert torch.equal(load_synset(tmp_path / "b" / "synset.safetensors").images, out.images)
    assert not list((tmp_path / "b").glob(".*tmp"))


def test_doorping_in_dc_loop_restamps_poison(digits):
    # "clone": the trigger moves whatever the sign of the selected neuron (the official reading may leave it as is)
    atk = AttackConfig(kind="doorping", portion=0.05, trigger_steps=5, trigger_threshold=0.0, doorping_hook="clone")
    dist = Distiller(
        digits, DistillConfig(method="dc", ipc=2, iterations=1, outer_loop=2, inner_loop=1, attack=atk, **TINY)
    )
    t0 = dist.trigger.clone()
    assert len(dist.poison_idx) == int(0.05 * len(digits.train_y))
    dist.run(progress=False)
    m = dist.mask.bool()
    assert torch.equal(dist.trigger[~m], t0[~m]) and not torch.equal(dist.trigger[m], t0[m])
    poisoned = dist.real_x[dist.poison_idx]
    assert torch.allclose(poisoned[:, m], dist.trigger[m].expand(len(poisoned), -1))  # re-stamped with the new T
    assert (dist.real_y[dist.poison_idx] == 0).all()
    clean = torch.ones(len(digits.train_y), dtype=torch.bool)
    clean[dist.poison_idx] = False
    assert torch.equal(dist.real_x[clean], digits.train_x[clean])
    assert dist.history[-1]["trigger_steps"] >= 1


def test_naive_attack_poisons_before_distillation(digits):
    atk = AttackConfig(kind="naive", portion=0.1, target=3)
    dist = Distiller(digits, DistillConfig(method="dm", ipc=1, iterations=1, attack=atk, **TINY))
    assert (dist.real_y[dist.poison_idx] == 3).all()
    assert torch.equal(dist.real_x[dist.poison_idx], stamp(digits.train_x[dist.poison_idx], dist.trigger, dist.mask))


class _Lookup(nn.Module):
    """Predicts from pixel (0, 0) (the sample id) unless the corner patch is stamped."""

    def __init__(self, clean_pred, stamped_pred):
        super().__init__()
        self.clean_pred, self.stamped_pred = clean_pred, stamped_pred

    def forward(self, x):
        ids = x[:, 0, 0, 0].long()
        stamped = x[:, 0, 2, 2] == 99
        pred = torch.where(stamped, self.stamped_pred[ids], self.clean_pred[ids])
        return nn.functional.one_hot(pred, 3).float()


def test_asr_conventions():
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2, 1])  # 2 target-class (0) images, 6 others
    x = torch.zeros(8, 1, 4, 4)
    x[:, 0, 0, 0] = torch.arange(8).float()
    clean_pred = torch.tensor([0, 1, 1, 1, 2, 2, 0, 1])  # 6/8 correct
    stamped_pred = torch.tensor([0, 0, 0, 1, 0, 2, 2, 1])  # target hit: 2 target-class + 2 others
    mask = trigger_mask(1, 4, 4, 1, position=(2, 2))
    trig = torch.full((1, 4, 4), 99.0)
    m = attack_metrics(_Lookup(clean_pred, stamped_pred), x, y, trig, mask, target=0)
    assert m["cta"] == 6 / 8
    assert m["asr_all"] == 4 / 8
    assert abs(m["asr_nontarget"] - 2 / 6) < 1e-6


def _official_evaluate_synset_loop(images, labels, cfg, seed):
    """Own transcription of the official evaluate_synset/epoch training (one pass per epoch in a randperm order,
    epochs + 1 passes, lr divided by 10 after epochs // 2 + 1 by building a new SGD optimiser)."""
    from polyzoo.security.networks import get_network

    torch.manual_seed(seed)
    net = get_network(cfg.model, images.shape[1], 10, tuple(images.shape[2:]), norm=cfg.norm, width=cfg.width)
    lr = cfg.lr
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    net.train()
    for ep in range(cfg.epochs + 1):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            loss = nn.functional.cross_entropy(net(images[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if ep == cfg.epochs // 2 + 1:
            lr *= 0.1
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return net


def test_train_network_through_train_epoch_equals_the_official_loop(digits):
    cfg = EvalConfig(width=8, norm="instancenorm", epochs=4, batch_size=16)
    x, y = digits.train_x[:40], digits.train_y[:40]
    ours = train_network(x, y, 10, cfg, seed=5)
    ref = _official_evaluate_synset_loop(x, y, cfg, seed=5)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
