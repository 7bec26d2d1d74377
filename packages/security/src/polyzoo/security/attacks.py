"""NAIVEATTACK and DOORPING: backdoors planted in a distilled data set through the real data it is distilled from.

Paper: Liu, Li, Backes, Shen, Zhang, "Backdoor Attacks Against Dataset Distillation", NDSS 2023 (arXiv 2301.01197).
Official code: https://github.com/liuyugeng/baadd (``DC/main.py``, ``DC/utils.py::{select_neuron,
get_middle_output, update_trigger}``, ``*_BADNETS._add_trigger``).

NAIVEATTACK (BadNets): a square ``size``×``size`` patch of full-intensity pixels (raw 255) is stamped, by default
one pixel in from the bottom-right corner (rows/cols ``[W−s−1, W−1)``), on a random ``portion`` of the training
images, which are relabelled to ``target``; this happens once, before distillation.

DOORPING (descends from TrojanNN): the trigger image ``T`` is zero except for the patch, filled with
``randint(1, 256)`` raw values, and normalised with the data set's mean/std; the mask ``M`` is the patch. Poisoned
images are ``x ← x∘(1−M) + M∘T`` with label ``target``. Each update (:func:`update_trigger`):

1. :func:`select_neuron` takes the parameters whose name contains ``weight`` (biases skipped), picks the one at
   ``layer`` (default −2: the second-to-last weight layer, e.g. AlexNet ``classifier.2``, ConvNet
   ``classifier.0``) and scores each output neuron j by Σ_i |W_ji|; the top-``topk`` neurons are selected.
2. The output of that module is read with a forward hook on the trigger image alone. ``doorping_hook`` decides
   what the hook sees:

   - ``"official"`` (default; what the paper measured): the hook keeps the module's output tensor without
     copying it (``get_middle_output``/``get_activation``), so the in-place ``ReLU(inplace=True)`` that follows
     the layer in the attack code's networks overwrites it before it is read: the update sees the post-ReLU
     activation max(a, 0). A selected neuron whose starting activation is negative therefore reads 0, the target
     α·0 equals it, the loss is 0 < 0.5 and the update stops before its first step: the trigger stays unchanged.
     With a positive starting activation the reading equals the pre-activation and the two options agree.
   - ``"clone"``: the hook clones the output, i.e. reads the true pre-activation (the description "the output
     of that layer"); a negative a₀ is then pushed towards 10·a₀ (further negative) for up to 1000 steps.
3. Adam (lr 0.08, betas 0.9/0.99) minimises MSE(a_sel(T), α·a_sel(T₀)) with α = 10, T₀ the trigger at the start
   of the update, for at most 1000 steps, stopping once the loss is below 0.5; the gradient is multiplied by ``M``
   at every step and the trigger is not clamped (as the official code). Adam's steps are about ``lr`` per pixel
   whatever the gradient's size, so the patch can grow far outside the image range: measured on Fashion-MNIST,
   a mean of about 13,400 normalised units inside the mask after 30 DC iterations (the brightest real pixel is
   2.0; measured with the "clone" reading). The early stop also means an update takes no step at all while
   81·a₀² < 0.5.

Layers with spatial outputs (a convolution, e.g. ``layer`` on a ConvNet without the MLP head): the selected
"neurons" are output channels, ranked by Σ|W| over (in, kh, kw), and the MSE covers every position of those
channels (``a[:, channels]`` of the (1, C, H, W) output). The official ``select_neuron`` is only meaningful for
weight matrices (its ``sum(axis=1)`` + ``topk`` on a 4-D kernel ranks kernel columns, not channels), and the
paper's settings (``layer=-2``: ``classifier.0`` of the ConvNet's MLP head, ``classifier.2`` of AlexNet)
never reach it; this is polyzoo's reading for such layers.

The distillation loop re-stamps the poisoned real images after each update (see :mod:`polyzoo.security.distill`).
Deviations: the update computes the gradient only with respect to the trigger (the official code also accumulates
gradients into the network's parameters, which its next ``zero_grad`` discards); the hook is removed after each
forward (the official code registers a new one at every step and never removes them, which changes nothing but
speed).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DOORPING_HOOKS",
    "AttackConfig",
    "TriggerUpdate",
    "doorping_trigger",
    "naive_trigger",
    "poison",
    "poison_indices",
    "select_neuron",
    "stamp",
    "trigger_mask",
    "update_trigger",
    "weight_layer_names",
]


DOORPING_HOOKS = ("official", "clone")
"""What DOORPING's hook reads (see the module docstring): the output as the official code leaves it after the
in-place ReLU that follows ("official", default), or a copy taken before it ("clone")."""


@dataclasses.dataclass
class AttackConfig:
    """Attack parameters (official defaults)."""

    kind: str = "none"  # none | naive | doorping
    target: int = 0
    size: int = 2
    portion: float = 0.01
    position: tuple[int, int] | None = None  # top-left (row, col) of the patch; None: one pixel from bottom-right
    layer: int = -2
    topk: int = 1
    alpha: float = 10.0
    trigger_lr: float = 0.08
    trigger_steps: int = 1000
    trigger_threshold: float = 0.5
    doorping_hook: str = "official"  # official: read the layer output after the in-place ReLU | clone: before it

    def __post_init__(self) -> None:
        if self.kind not in ("none", "naive", "doorping"):
            raise ValueError(f"attack kind must be none|naive|doorping, got {self.kind!r}")
        if not 0.0 <= self.portion <= 1.0:
            raise ValueError(f"attack portion must lie in [0, 1], got {self.portion}")
        if self.size < 1:
            raise ValueError(f"trigger size must be >= 1, got {self.size}")
        if self.position is not None:
            self.position = (int(self.position[0]), int(self.position[1]))
        if self.doorping_hook not in DOORPING_HOOKS:
            raise ValueError(f"doorping_hook must be one of {DOORPING_HOOKS}, got {self.doorping_hook!r}")


def trigger_mask(channel: int, h: int, w: int, size: int, position: tuple[int, int] | None = None) -> torch.Tensor:
    """``(C, H, W)`` float mask, 1 on the ``size``×``size`` patch (default rows/cols ``[H−s−1, H−1)``)."""
    r0, c0 = (h - size - 1, w - size - 1) if position is None else position
    if r0 < 0 or c0 < 0 or r0 + size > h or c0 + size > w:
        raise ValueError(f"trigger of size {size} at ({r0}, {c0}) does not fit a {h}×{w} image")
    mask = torch.zeros(channel, h, w)
    mask[:, r0 : r0 + size, c0 : c0 + size] = 1.0
    return mask


def _normalise(raw: torch.Tensor, mean, std) -> torch.Tensor:
    return (raw - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def naive_trigger(
    channel: int, h: int, w: int, mean, std, size: int = 2, position: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """BadNets trigger: ``(T, M)``, both ``(C, H, W)``; ``T`` is raw 255 (1.0) on the patch, normalised."""
    mask = trigger_mask(channel, h, w, size, position)
    return _normalise(mask.clone(), mean, std) * mask, mask


def doorping_trigger(
    channel: int,
    h: int,
    w: int,
    mean,
    std,
    size: int = 2,
    position: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DOORPING's initial trigger: raw zeros except the patch filled with ``randint(1, 256)/255``, normalised
    (so outside the patch it holds ``−mean/std``, which the mask discards when stamping). Returns ``(T, M)``."""
    mask = trigger_mask(channel, h, w, size, position)
    values = torch.randint(1, 256, (channel, h, w), generator=generator).float() / 255.0
    return _normalise(values * mask, mean, std), mask


def stamp(x: torch.Tensor, trigger: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x∘(1−M) + M∘T`` for ``x`` ``(N, C, H, W)``, ``trigger``/``mask`` ``(C, H, W)``."""
    return x * (1 - mask) + mask * trigger


def poison_indices(n: int, portion: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The first ``int(n·portion)`` indices of a random permutation of ``range(n)``."""
    return torch.randperm(n, generator=generator)[: int(n * portion)]


def poison(
    x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, trigger: torch.Tensor, mask: torch.Tensor, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of ``(x, y)`` with the rows ``idx`` stamped and relabelled to ``target``."""
    x, y = x.clone(), y.clone()
    if len(idx):
        x[idx] = stamp(x[idx], trigger, mask)
        y[idx] = target
    return x, y


def weight_layer_names(net: nn.Module) -> list[str]:
    """Names of the parameters containing ``weight`` (biases skipped), in registration order."""
    return [name for name, _ in net.named_parameters() if "weight" in name]


def select_neuron(net: nn.Module, layer: int = -2, topk: int = 1) -> tuple[str, torch.Tensor]:
    """The module owning the ``layer``-th weight (default: second-to-last) and its ``topk`` output neurons ranked by
    Σ_i |W_ji|. Returns ``(module_name, indices (topk,))``."""
    names = weight_layer_names(net)
    if not -len(names) <= layer < len(names):
        raise IndexError(f"layer {layer} out of range: the network has {len(names)} weight layers")
    pname = names[layer]
    weight = dict(net.named_parameters())[pname].detach()
    if weight.dim() < 2:
        raise ValueError(f"selected parameter {pname} is not a weight matrix/kernel (shape {tuple(weight.shape)})")
    scores = weight.abs().flatten(1).sum(dim=1)
    return pname.rsplit(".", 1)[0], torch.topk(scores, topk).indices


def _module_output(net: nn.Module, module_name: str, x: torch.Tensor, hook: str = "official") -> torch.Tensor:
    """The output of ``module_name`` during ``net(x)``: as the official hook holds it once the forward pass is over
    (``hook="official"``: the tensor itself, so an in-place op that follows, such as ``ReLU(inplace=True)``,
    shows in it) or a copy taken when the module returns (``hook="clone"``: the module's own output)."""
    module = net.get_submodule(module_name)
    box: list[torch.Tensor] = []
    if hook == "clone":
        handle = module.register_forward_hook(lambda _m, _i, out: box.append(out.clone()))
    else:
        handle = module.register_forward_hook(lambda _m, _i, out: box.append(out))
    try:
        net(x)
    finally:
        handle.remove()
    return box[0]


def _selected(out: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
    """The selected neurons (features of a (1, K) output, or channels of a (1, C, H, W) one)."""
    return out[:, neurons]


@dataclasses.dataclass
class TriggerUpdate:
    """What one DOORPING update did."""

    module: str
    neurons: list[int]
    steps: int
    activation_before: float  # mean selected activation of T₀, as the hook reads it
    activation_after: float
    loss: float


def update_trigger(
    net: nn.Module,
    trigger: torch.Tensor,
    mask: torch.Tensor,
    config: AttackConfig | None = None,
    check_every: int | None = None,
) -> tuple[torch.Tensor, TriggerUpdate]:
    """One DOORPING trigger update against ``net``. ``trigger``/``mask`` ``(C, H, W)``; returns the new trigger
    (outside the mask it is unchanged) and a :class:`TriggerUpdate`. ``config.doorping_hook`` chooses what the
    hook reads (default "official": what the official code reads, see the module docstring).

    The early-stopping rule (stop before the step whose loss is below the threshold) is evaluated on the device and
    read back every ``check_every`` steps (default: every step on the CPU, every 25 on CUDA); the steps computed
    after the stop are undone (the trigger is kept at its value when the rule fired), so the result does not depend
    on ``check_every``."""
    cfg = config or AttackConfig(kind="doorping")
    if check_every is None:
        check_every = 25 if trigger.device.type == "cuda" else 1
    check_every = max(1, int(check_every))
    was_training = net.training
    net.eval()
    module_name, neurons = select_neuron(net, cfg.layer, cfg.topk)
    t = trigger.detach().clone().unsqueeze(0).requires_grad_(True)
    opt = torch.optim.Adam([t], lr=cfg.trigger_lr, betas=(0.9, 0.99))
    target = None
    before = after = loss_value = torch.tensor(float("nan"), device=t.device)
    stopped = torch.zeros((), dtype=torch.bool, device=t.device)
    steps = torch.zeros((), dtype=torch.long, device=t.device)
    try:
        for step in range(cfg.trigger_steps):
            out = _selected(_module_output(net, module_name, t, cfg.doorping_hook), neurons)
            if target is None:
                target = cfg.alpha * out.detach()
                before = out.detach().mean()
            loss = F.mse_loss(out, target)
            live = ~stopped
            loss_value = torch.where(live, loss.detach(), loss_value)
            after = torch.where(live, out.detach().mean(), after)
            # compared in float64, as the official rule compares the Python float of the loss
            stopped = stopped | (loss.detach().double() < cfg.trigger_threshold)
            (grad,) = torch.autograd.grad(loss, t)
            kept = t.detach().clone()
            t.grad = grad * mask
            opt.step()
            with torch.no_grad():
                t.copy_(torch.where(stopped, kept, t))  # a step taken once the rule has fired is undone
            steps = steps + (~stopped).long()
            if (step + 1) % check_every == 0 and bool(stopped):
                break
        n_steps = int(steps)
        if n_steps == cfg.trigger_steps:
            with torch.no_grad():
                after = _selected(_module_output(net, module_name, t, cfg.doorping_hook), neurons).mean()
    finally:
        net.train(was_training)
    info = TriggerUpdate(
        module_name, [int(i) for i in neurons], n_steps, float(before), float(after), float(loss_value)
    )
    return t.detach()[0], info
