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

Device and precision (:class:`Precision`): networks train where their parameters are; under ``bf16``/``fp16`` the
forward pass runs in ``torch.autocast`` while the cross-entropy, the weights, the optimiser state and everything
measured stay float32 (``fp16`` adds a ``GradScaler``). The random draws (batch order, network initialisation,
augmentation parameters) are always taken on the CPU, so a run on CUDA uses the same draws as one on the CPU.
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

__all__ = [
    "EvalConfig",
    "Precision",
    "accuracy",
    "attack_metrics",
    "default_eval_config",
    "predict",
    "train_epoch",
    "train_network",
]


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


class Precision:
    """``--precision`` on a device: ``torch.autocast`` around forward passes (``bf16``/``fp16``; nothing for ``fp32``)
    and, for ``fp16``, gradient scaling. One scaler per optimiser: :meth:`step` keys it by the optimiser."""

    def __init__(self, precision: str = "fp32", device: torch.device | str = "cpu"):
        from polyzoo.shared.options import PRECISION_CHOICES, autocast_dtype

        if precision not in PRECISION_CHOICES:
            raise ValueError(f"precision: expected one of {PRECISION_CHOICES}, got {precision!r}")
        self.name = precision
        self.device_type = torch.device(device).type
        self.dtype = autocast_dtype(precision)
        self._scalers: dict[int, torch.amp.GradScaler] = {}

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """``opt.zero_grad(); loss.backward(); opt.step()``, through a ``GradScaler`` for fp16."""
        opt.zero_grad()
        if self.name != "fp16":
            loss.backward()
            opt.step()
            return
        scaler = self._scalers.setdefault(id(opt), torch.amp.GradScaler(self.device_type))
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


FP32 = Precision()


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
    precision: Precision = FP32,
) -> None:
    """One epoch over ``(x, y)`` in a ``torch.randperm`` order: batches of ``batch_size`` (the last one smaller),
    ``transform`` applied to each image batch (augmentation, trigger stamping), cross-entropy, one ``opt`` step.
    No host synchronisation: the order is drawn on the CPU and moved once."""
    perm = torch.randperm(len(y)).to(x.device)
    for s in range(0, len(y), batch_size):
        idx = perm[s : s + batch_size]
        xb = x[idx]
        if transform is not None:
            xb = transform(xb)
        with precision.autocast():
            out = net(xb)
        loss = F.cross_entropy(out.float(), y[idx])
        precision.step(loss, opt)


def train_network(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: EvalConfig,
    seed: int = 0,
    net: nn.Module | None = None,
    *,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> nn.Module:
    """Train a fresh network (or ``net``) on ``images`` ``(N, C, H, W)`` / ``labels`` ``(N,)``.

    ``device``: where to train (default: where ``images`` are; a fresh network is initialised on the CPU, as
    always, then moved); ``precision``: ``fp32`` (default), ``bf16`` or ``fp16`` autocast (see :class:`Precision`)."""
    torch.manual_seed(seed)
    if net is None:
        net = get_network(
            config.model, images.shape[1], num_classes, tuple(images.shape[2:]), norm=config.norm, width=config.width
        )
    device = torch.device(device) if device is not None else images.device
    net = net.to(device)
    amp = Precision(precision, device)
    images, labels = images.detach().to(device), labels.detach().to(device)
    lr = config.lr
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    decay_at = config.epochs // 2 + 1
    transform = (lambda x: diff_augment(x, config.augment)) if config.augment else None
    net.train()
    for ep in range(config.epochs + 1):
        train_epoch(net, opt, images, labels, config.batch_size, transform, amp)
        if ep == decay_at:  # the official code divides lr by 10 by building a new optimiser (momentum restarts)
            lr *= 0.1
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    net.eval()
    return net


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 512, precision: str = "fp32") -> torch.Tensor:
    """Predicted classes ``(N,)``, on the CPU; computed on the network's device (``x`` is moved there batch by
    batch), under autocast for ``bf16``/``fp16``."""
    was = net.training
    net.eval()
    device = next((t.device for t in net.parameters()), x.device)
    amp = Precision(precision, device)
    outs = []
    for s in range(0, len(x), batch_size):
        with amp.autocast():
            outs.append(net(x[s : s + batch_size].to(device)).argmax(1))
    net.train(was)
    return torch.cat(outs).cpu()


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> float:
    if len(y) == 0:
        return float("nan")
    return float((predict(net, x, precision=precision) == y.cpu()).float().mean())


def attack_metrics(
    net: nn.Module,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    trigger: torch.Tensor,
    mask: torch.Tensor,
    target: int,
    precision: str = "fp32",
) -> dict[str, float]:
    """``cta``, ``asr_all`` (every test image stamped, target class included) and ``asr_nontarget``, over the whole
    test set (predictions on the network's device, under ``precision``)."""
    test_x, test_y, trigger, mask = test_x.cpu(), test_y.cpu(), trigger.cpu(), mask.cpu()
    clean_pred = predict(net, test_x, precision=precision)
    bd_pred = predict(net, stamp(test_x, trigger, mask), precision=precision)
    hit = bd_pred == target
    nontarget = test_y != target
    return {
        "cta": float((clean_pred == test_y).float().mean()),
        "asr_all": float(hit.float().mean()),
        "asr_nontarget": float(hit[nontarget].float().mean()) if nontarget.any() else float("nan"),
    }
