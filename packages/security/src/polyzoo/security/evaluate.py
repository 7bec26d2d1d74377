"""Standard evaluation of a distilled set and the backdoor metrics.

Paper: Liu et al., "Backdoor Attacks Against Dataset Distillation", NDSS 2023; official code
https://github.com/liuyugeng/baadd ``DC/utils.py::{evaluate_synset, epoch}``.

``evaluate_synset`` trains a fresh network on the synthetic set with SGD (lr 0.01, momentum 0.9, weight decay
5e-4, batch 256) for ``epochs`` epochs (official: 300, or 1000 with DSA augmentation), dividing the learning rate
by 10 after epoch ``epochs // 2``, then measures on the real test set:

- CTA: clean test accuracy.
- ASR (all): accuracy on the whole test set stamped with the trigger and relabelled to the target (the official
  convention, target-class images included).
- ASR (non-target): the same over test images whose true class is not the target (BackdoorBench's ``bd_test``).

Both ASR conventions are always reported together. Means ± std over evaluation networks use
:func:`polyzoo.shared.report.mean_std` (sample std, ddof = 1; the official code prints NumPy's ``np.std``, ddof = 0).

:func:`train_epoch` is the one minibatch loop of the package: evaluation networks, the distillation's inner network
updates and the defenses' fine-tuning all train through it (shuffle with ``torch.randperm``, optional batch
transform, cross-entropy, one optimiser step per batch), as the official ``epoch`` function does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from polyzoo.security.attacks import stamp
from polyzoo.security.augment import DEFAULT_STRATEGY, diff_augment
from polyzoo.security.networks import get_network

__all__ = ["EvalConfig", "accuracy", "attack_metrics", "default_eval_config", "predict", "train_epoch", "train_network"]


@dataclasses.dataclass
class EvalConfig:
    model: str = "convnet"
    norm: str = "none"
    width: int = 128
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str | None = None  # a DSA strategy (used for dsa/dm sets), None: no augmentation


def default_eval_config(
    method: str, model: str = "convnet", norm: str = "none", epochs: int | None = None, width: int = 128
) -> EvalConfig:
    """The official choice: DSA/DM sets are evaluated with DSA augmentation for 1000 epochs, DC sets 300 epochs."""
    augmented = method in ("dsa", "dm")
    return EvalConfig(
        model=model,
        norm=norm,
        width=width,
        epochs=epochs if epochs is not None else (1000 if augmented else 300),
        augment=DEFAULT_STRATEGY if augmented else None,
    )


def train_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """One epoch over ``(x, y)`` in a ``torch.randperm`` order: batches of ``batch_size`` (the last one smaller),
    ``transform`` applied to each image batch (augmentation, trigger stamping), cross-entropy, one ``opt`` step."""
    perm = torch.randperm(len(y))
    for s in range(0, len(y), batch_size):
        idx = perm[s : s + batch_size]
        xb = x[idx]
        if transform is not None:
            xb = transform(xb)
        loss = F.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_network(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: EvalConfig,
    seed: int = 0,
    net: nn.Module | None = None,
) -> nn.Module:
    """Train a fresh network (or ``net``) on ``images`` ``(N, C, H, W)`` / ``labels`` ``(N,)``."""
    torch.manual_seed(seed)
    if net is None:
        net = get_network(
            config.model, images.shape[1], num_classes, tuple(images.shape[2:]), norm=config.norm, width=config.width
        )
    images, labels = images.detach(), labels.detach()
    lr = config.lr
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    decay_at = config.epochs // 2 + 1
    transform = (lambda x: diff_augment(x, config.augment)) if config.augment else None
    net.train()
    for ep in range(config.epochs + 1):
        train_epoch(net, opt, images, labels, config.batch_size, transform)
        if ep == decay_at:  # the official code divides lr by 10 by building a new optimiser (momentum restarts)
            lr *= 0.1
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    net.eval()
    return net


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes ``(N,)``."""
    was = net.training
    net.eval()
    out = torch.cat([net(x[s : s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])
    net.train(was)
    return out


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    return float((predict(net, x) == y).float().mean())


def attack_metrics(
    net: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, trigger: torch.Tensor, mask: torch.Tensor, target: int
) -> dict[str, float]:
    """``cta``, ``asr_all`` (every test image stamped, target class included) and ``asr_nontarget``."""
    clean_pred = predict(net, test_x)
    bd_pred = predict(net, stamp(test_x, trigger, mask))
    hit = bd_pred == target
    nontarget = test_y != target
    return {
        "cta": float((clean_pred == test_y).float().mean()),
        "asr_all": float(hit.float().mean()),
        "asr_nontarget": float(hit[nontarget].float().mean()) if nontarget.any() else float("nan"),
    }
