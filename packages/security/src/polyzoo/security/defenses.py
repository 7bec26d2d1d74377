"""Backdoor defenses applied to networks trained on (possibly backdoored) distilled data.

The backdoor paper (Liu et al., NDSS 2023, https://github.com/liuyugeng/baadd) evaluates "multiple defense
mechanisms"; its exact list was not retrievable, so three standard families are implemented from their own papers:

- Neural Cleanse (Wang et al., S&P 2019; https://github.com/bolunwang/backdoor): per class t, reverse-engineer a
  mask m ∈ [0,1]^{H×W} and pattern p minimising CE(f((1−m)∘x + m∘p), t) + λ‖m‖₁ on clean data (Adam, lr 0.1,
  betas 0.5/0.9, m and p parameterised through tanh). Anomaly index of class t: (median(L) − L_t) /
  (1.4826·MAD(L)) over the mask norms L; a class with index > 2 (and below the median) is flagged. Mitigation
  is NC's unlearning: fine-tune on clean data of which a fraction carries the flagged class's reversed trigger,
  with the true labels. Deviation: λ is fixed (NC adapts it during optimisation).
- STRIP (Gao et al., ACSAC 2019): superimpose each input with ``n`` random clean images (here a 0.5/0.5 blend,
  linear in the normalised space), take the mean prediction entropy; inputs below the threshold set at
  ``frr`` (1%) of the clean entropies are rejected. Rejected inputs count as neither correct nor attacked.
- Fine-pruning (Liu, Dolan-Gavitt, Garg, RAID 2018): prune the channels of the last feature layer in increasing
  order of their mean activation on clean data while clean accuracy stays within ``max_acc_drop`` of the original,
  then fine-tune on clean data.

Each defense returns CTA and ASR (both conventions) before and after, plus its detection statistic.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyzoo.security.attacks import stamp
from polyzoo.security.evaluate import accuracy, attack_metrics, predict, train_epoch

__all__ = [
    "DEFENSES",
    "DefenseConfig",
    "DefenseData",
    "anomaly_index",
    "defense_data",
    "fine_pruning",
    "neural_cleanse",
    "reverse_engineer_trigger",
    "run_defense",
    "strip",
    "strip_entropy",
]

DEFENSES = ("neural-cleanse", "strip", "fine-pruning")


@dataclasses.dataclass
class DefenseConfig:
    # Neural Cleanse
    nc_steps: int = 300
    nc_lr: float = 0.1
    nc_lambda: float = 1e-2
    nc_batch: int = 128
    nc_threshold: float = 2.0
    unlearn_ratio: float = 0.2
    unlearn_epochs: int = 10
    # STRIP
    strip_n: int = 20
    strip_frr: float = 0.01
    # fine-pruning
    max_acc_drop: float = 0.04
    prune_steps: int = 32
    finetune_epochs: int = 10
    finetune_lr: float = 0.01
    batch_size: int = 128


@dataclasses.dataclass
class DefenseData:
    """What the defender sees (``clean_x``/``clean_y``: a small clean real set) and what the evaluation uses."""

    clean_x: torch.Tensor
    clean_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    trigger: torch.Tensor
    mask: torch.Tensor
    target: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def defense_data(data, synset, clean_size: int, seed: int, test_size: int = 0, test_seed: int = 12345) -> DefenseData:
    """What the defender of ``synset`` (a :class:`~polyzoo.security.distill.SyntheticSet`) works with:
    ``clean_size`` clean training images of ``data`` (an :class:`~polyzoo.security.data.ImageData`) drawn with
    ``seed``, the synset's trigger and mask and the attack's target; measured on the whole test set, or on a fixed
    random ``test_size`` of it (drawn with ``test_seed``) when ``0 < test_size < len(test set)``."""
    pick = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))[:clean_size]
    test = torch.arange(len(data.test_y))
    if 0 < test_size < len(test):
        test = torch.randperm(len(test), generator=torch.Generator().manual_seed(test_seed))[:test_size]
    return DefenseData(
        data.train_x[pick],
        data.train_y[pick],
        data.test_x[test],
        data.test_y[test],
        synset.trigger,
        synset.mask,
        synset.target,
        data.num_classes,
        tuple(data.mean),
        tuple(data.std),
    )


def _metrics(net: nn.Module, d: DefenseData) -> dict[str, float]:
    return attack_metrics(net, d.test_x, d.test_y, d.trigger, d.mask, d.target)


def _finetune(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch: int, make_batch=None):
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    for _ in range(epochs):
        train_epoch(net, opt, x, y, batch, make_batch)
    net.eval()
    return net


# --------------------------------------------------------------------------------------------- Neural Cleanse
def reverse_engineer_trigger(
    net: nn.Module, x: torch.Tensor, target: int, mean, std, config: DefenseConfig | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """NC's optimisation for class ``target``: returns ``mask (1, H, W)`` in [0, 1], ``pattern (C, H, W)`` in the
    normalised space and the mask's L1 norm."""
    cfg = config or DefenseConfig()
    g = torch.Generator().manual_seed(seed)
    _, c, h, w = x.shape
    m_param = torch.zeros(1, h, w, requires_grad=True)
    p_param = torch.zeros(c, h, w, requires_grad=True)
    mean_t, std_t = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    opt = torch.optim.Adam([m_param, p_param], lr=cfg.nc_lr, betas=(0.5, 0.9))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(cfg.nc_steps):
            idx = torch.randint(0, len(x), (min(cfg.nc_batch, len(x)),), generator=g)
            mask = (torch.tanh(m_param) + 1) / 2
            pattern = ((torch.tanh(p_param) + 1) / 2 - mean_t) / std_t
            xb = (1 - mask) * x[idx] + mask * pattern
            loss = F.cross_entropy(net(xb), torch.full((len(idx),), target, dtype=torch.long))
            loss = loss + cfg.nc_lambda * mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p in net.parameters():
            p.requires_grad_(True)
    with torch.no_grad():
        mask = (torch.tanh(m_param) + 1) / 2
        pattern = ((torch.tanh(p_param) + 1) / 2 - mean_t) / std_t
    return mask.detach(), pattern.detach(), float(mask.sum())


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """(median − L_t) / (1.4826·MAD) for each class (positive: smaller than typical, i.e. suspicious)."""
    med = norms.median()
    mad = 1.4826 * (norms - med).abs().median()
    return (med - norms) / (mad + 1e-12)


def neural_cleanse(net: nn.Module, d: DefenseData, config: DefenseConfig | None = None) -> dict[str, Any]:
    cfg = config or DefenseConfig()
    before = _metrics(net, d)
    results = [reverse_engineer_trigger(net, d.clean_x, t, d.mean, d.std, cfg, seed=t) for t in range(d.num_classes)]
    norms = torch.tensor([r[2] for r in results])
    index = anomaly_index(norms)
    flagged = [int(t) for t in torch.nonzero(index > cfg.nc_threshold).flatten()]
    fixed = copy.deepcopy(net)
    if flagged:
        worst = max(flagged, key=lambda t: float(index[t]))
        mask, pattern, _ = results[worst]
        n_stamp = int(cfg.unlearn_ratio * cfg.batch_size)

        def make_batch(xb: torch.Tensor) -> torch.Tensor:
            xb = xb.clone()
            xb[:n_stamp] = (1 - mask) * xb[:n_stamp] + mask * pattern
            return xb

        _finetune(fixed, d.clean_x, d.clean_y, cfg.unlearn_epochs, cfg.finetune_lr, cfg.batch_size, make_batch)
    after = _metrics(fixed, d)
    return {
        "defense": "neural-cleanse",
        "before": before,
        "after": after,
        "mask_l1": [float(v) for v in norms],
        "anomaly_index": [float(v) for v in index],
        "flagged": flagged,
        "detected": d.target in flagged,
        "statistic": float(index[d.target]),
        "statistic_name": "anomaly index of target",
    }


# --------------------------------------------------------------------------------------------- STRIP
@torch.no_grad()
def strip_entropy(
    net: nn.Module, x: torch.Tensor, pool: torch.Tensor, n: int = 20, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mean prediction entropy ``(N,)`` of each input blended 0.5/0.5 with ``n`` random images of ``pool``."""
    net.eval()
    out = []
    for s in range(0, len(x), 64):
        xb = x[s : s + 64]
        idx = torch.randint(0, len(pool), (len(xb), n), generator=generator)
        mixed = 0.5 * xb.unsqueeze(1) + 0.5 * pool[idx]  # (B, n, C, H, W)
        p = F.softmax(net(mixed.flatten(0, 1)), dim=1)
        ent = -(p * torch.log(p.clamp_min(1e-12))).sum(1).view(len(xb), n).mean(1)
        out.append(ent)
    return torch.cat(out)


def strip(net: nn.Module, d: DefenseData, config: DefenseConfig | None = None) -> dict[str, Any]:
    cfg = config or DefenseConfig()
    g = torch.Generator().manual_seed(0)
    before = _metrics(net, d)
    half = len(d.clean_x) // 2
    pool, holdout = d.clean_x[:half], d.clean_x[half:]
    threshold = float(torch.quantile(strip_entropy(net, holdout, pool, cfg.strip_n, g), cfg.strip_frr))
    bd_x = stamp(d.test_x, d.trigger, d.mask)
    accept_clean = strip_entropy(net, d.test_x, pool, cfg.strip_n, g) > threshold
    accept_bd = strip_entropy(net, bd_x, pool, cfg.strip_n, g) > threshold
    clean_pred, bd_pred = predict(net, d.test_x), predict(net, bd_x)
    hit = (bd_pred == d.target) & accept_bd
    nontarget = d.test_y != d.target
    after = {
        "cta": float(((clean_pred == d.test_y) & accept_clean).float().mean()),
        "asr_all": float(hit.float().mean()),
        "asr_nontarget": float(hit[nontarget].float().mean()) if nontarget.any() else math.nan,
    }
    return {
        "defense": "strip",
        "before": before,
        "after": after,
        "threshold": threshold,
        "frr": float((~accept_clean).float().mean()),
        "detection_rate": float((~accept_bd).float().mean()),
        "detected": bool(float((~accept_bd).float().mean()) > 0.5),
        "statistic": float((~accept_bd).float().mean()),
        "statistic_name": "share of triggered inputs rejected",
    }


# --------------------------------------------------------------------------------------------- fine-pruning
def _last_feature_channels(net: nn.Module) -> nn.Module:
    if not hasattr(net, "features"):
        raise ValueError("fine-pruning needs a network with a `features` module (ConvNet, AlexNet)")
    return net.features


def fine_pruning(net: nn.Module, d: DefenseData, config: DefenseConfig | None = None) -> dict[str, Any]:
    cfg = config or DefenseConfig()
    before = _metrics(net, d)
    pruned = copy.deepcopy(net)
    feats = _last_feature_channels(pruned)
    with torch.no_grad():
        acts = torch.cat([feats(d.clean_x[s : s + 256]) for s in range(0, len(d.clean_x), 256)])
    channels = acts.shape[1]
    order = acts.mean(dim=(0, 2, 3)).argsort()  # least active first
    keep = torch.ones(channels)
    handle = feats.register_forward_hook(lambda _m, _i, out: out * keep.view(1, -1, 1, 1).to(out))
    base = accuracy(pruned, d.clean_x, d.clean_y)
    n_pruned = 0
    step = max(1, channels // cfg.prune_steps)
    for k in range(step, channels, step):
        keep.fill_(1.0)
        keep[order[:k]] = 0.0
        if accuracy(pruned, d.clean_x, d.clean_y) < base - cfg.max_acc_drop:
            break
        n_pruned = k
    keep.fill_(1.0)
    keep[order[:n_pruned]] = 0.0
    after_prune = _metrics(pruned, d)
    _finetune(pruned, d.clean_x, d.clean_y, cfg.finetune_epochs, cfg.finetune_lr, cfg.batch_size)
    after = _metrics(pruned, d)
    handle.remove()
    return {
        "defense": "fine-pruning",
        "before": before,
        "after_prune": after_prune,
        "after": after,
        "pruned_channels": n_pruned,
        "channels": channels,
        "detected": False,
        "statistic": n_pruned / channels,
        "statistic_name": "share of channels pruned",
    }


def run_defense(name: str, net: nn.Module, d: DefenseData, config: DefenseConfig | None = None) -> dict[str, Any]:
    fns = {"neural-cleanse": neural_cleanse, "strip": strip, "fine-pruning": fine_pruning}
    if name not in fns:
        raise ValueError(f"unknown defense {name!r}; expected one of {', '.join(DEFENSES)}")
    return fns[name](net, d, config)
