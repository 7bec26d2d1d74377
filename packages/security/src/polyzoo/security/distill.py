"""Dataset distillation: Dataset Condensation (DC, gradient matching), DSA (DC with differentiable Siamese
augmentation) and Distribution Matching (DM), with the NAIVEATTACK/DOORPING hooks of the backdoor paper.

Papers: Zhao, Mopuri, Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021; Zhao & Bilen,
"Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021; Zhao & Bilen, "Dataset Condensation with
Distribution Matching", WACV 2023; Liu et al., "Backdoor Attacks Against Dataset Distillation", NDSS 2023.
Official code: https://github.com/VICO-UoE/DatasetCondensation (``main.py``, ``main_DM.py``, ``utils.py``) and
https://github.com/liuyugeng/baadd (``DC/main.py``).

DC/DSA iteration (one fresh randomly initialised network per iteration): for ``outer_loop`` rounds, the loss
Σ_c D(∇θ L(S_c), ∇θ L(R_c)) over classes c (real batch of ``batch_real`` per class) updates the synthetic images
with SGD (lr 0.1, momentum 0.5); D is the layer-wise distance Σ_rows (1 − cos) over each weight's output rows
(``distance_wb``; 1-D parameters, i.e. biases and norm affine parameters, contribute 0). Between rounds the network
trains ``inner_loop`` epochs on the synthetic set (SGD lr 0.01). With DOORPING the trigger is updated against that
network and the poisoned real images are re-stamped after every such network update, i.e. ``outer_loop − 1`` times
per iteration, as in baadd's ``DC/main.py``. DSA applies the same augmentation (same seed) to the real and the
synthetic batch of a class, and augments the synthetic set during the network updates.

DM iteration: a fresh random network (frozen) embeds a real and the synthetic batch of each class (both augmented
with the same DSA seed); the loss is Σ_c ‖mean(embed(R_c)) − mean(embed(S_c))‖²; SGD on the images (lr 1.0,
momentum 0.5); real initialisation by default (``main_DM.py``).

Deviation (no official code exists for DM with DOORPING): with ``method="dm"`` and DOORPING, every
``dm_trigger_every`` iterations the iteration's network is trained for ``inner_loop`` epochs on the synthetic set
(as DC's network update) and the trigger is then updated against it and re-stamped.

Loop defaults follow ``get_loops`` (ipc 1: 1/1, 10: 10/50, 20: 20/25, 30: 30/20, 40: 40/15, 50: 50/10).
Runs are resumable: the synthetic set, the optimiser state, the trigger and the poison indices are checkpointed
atomically (``checkpoint.safetensors``, JSON state in its header; no pickle, see :mod:`polyzoo.security.files`);
each iteration reseeds the RNG from (seed, iteration), so a resumed run repeats the same draws.

Device, precision, several processes. ``Distiller(..., device=, precision=)`` keeps the synthetic images, the real
set and the trigger on ``device``; every random draw (network initialisation, real batches, augmentation seeds) is
still taken on the CPU, so a CUDA run uses the same draws as a CPU one. ``bf16``/``fp16`` run the networks' forward
passes under ``torch.autocast``; the synthetic images, the matching losses (DM's mean embeddings and their squared
distance, DC's gradient distance), the image optimiser, the trigger update and its early-stopping rule stay float32.
Launched with several processes (``torchrun`` / ``accelerate launch``; Accelerate's ``PartialState`` sets up the
process group, gloo on the CPU), the classes are shared out: process r computes the matching terms of the classes
c ≡ r (mod processes), every process still takes every random draw (so all stay in step), and the images' gradient
is summed over processes. Each class's term touches only that class's images, so the sum adds exact zeros: the
synthetic set is bit-for-bit the one-process result (on the CPU; the network update and DOORPING's trigger update of
an iteration are repeated identically on every process). The official behaviour (one process, fp32, CPU) is the
default.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from polyzoo.security.attacks import AttackConfig, doorping_trigger, naive_trigger, poison, stamp, update_trigger
from polyzoo.security.augment import DEFAULT_STRATEGY, diff_augment
from polyzoo.security.data import ImageData
from polyzoo.security.evaluate import Precision, train_epoch
from polyzoo.security.files import CHECKPOINT, SYNSET, read_state, refuse_legacy, write_state
from polyzoo.security.networks import get_network
from polyzoo.shared.distributed import ProcessGroup

__all__ = [
    "DistillConfig",
    "Distiller",
    "ProcessGroup",  # re-exported from polyzoo.shared.distributed
    "SyntheticSet",
    "distance_wb",
    "get_loops",
    "load_synset",
    "match_loss",
    "random_real_subset",
    "save_synset",
]

log = logging.getLogger(__name__)

_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def get_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) of the official code for ``ipc`` images per class."""
    if ipc not in _LOOPS:
        raise ValueError(f"no default outer/inner loops for ipc={ipc} (known: {sorted(_LOOPS)}); set them explicitly")
    return _LOOPS[ipc]


@dataclasses.dataclass
class DistillConfig:
    method: str = "dc"  # dc | dsa | dm
    ipc: int = 10
    iterations: int = 1000
    model: str = "convnet"
    norm: str = "none"
    width: int = 128
    init: str | None = None  # noise | real; None: noise for dc/dsa, real for dm (official defaults)
    lr_img: float | None = None  # None: 0.1 for dc/dsa, 1.0 for dm
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256
    outer_loop: int | None = None
    inner_loop: int | None = None
    dsa_strategy: str = DEFAULT_STRATEGY
    dm_trigger_every: int = 1
    seed: int = 0
    checkpoint_every: int = 50
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)

    def __post_init__(self) -> None:
        if isinstance(self.attack, dict):
            self.attack = AttackConfig(**self.attack)
        if self.method not in ("dc", "dsa", "dm"):
            raise ValueError(f"method must be dc|dsa|dm, got {self.method!r}")
        if self.init is None:
            self.init = "real" if self.method == "dm" else "noise"
        if self.init not in ("noise", "real"):
            raise ValueError(f"init must be noise|real, got {self.init!r}")
        if self.lr_img is None:
            self.lr_img = 1.0 if self.method == "dm" else 0.1
        if self.outer_loop is None or self.inner_loop is None:
            outer, inner = get_loops(self.ipc)
            self.outer_loop = outer if self.outer_loop is None else self.outer_loop
            self.inner_loop = inner if self.inner_loop is None else self.inner_loop

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["attack"]["position"] is not None:
            d["attack"]["position"] = list(d["attack"]["position"])
        return d


@dataclasses.dataclass
class SyntheticSet:
    """A distilled set and what is needed to measure its backdoor."""

    images: torch.Tensor  # (K·ipc, C, H, W), normalised space
    labels: torch.Tensor  # (K·ipc,)
    trigger: torch.Tensor  # (C, H, W), normalised space (the BadNets patch for attack "none")
    mask: torch.Tensor  # (C, H, W)
    config: dict[str, Any]
    dataset: dict[str, Any]  # name, path, mean, std, num_classes
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)

    @property
    def target(self) -> int:
        """The backdoor's target label (the attack's ``target``; also set, unused, for attack ``none``)."""
        return int(self.config["attack"]["target"])


_SYNSET_FIELDS = ("images", "labels", "trigger", "mask", "config", "dataset", "history")


def save_synset(synset: SyntheticSet, path: str | os.PathLike) -> None:
    """Write ``synset`` atomically as safetensors (tensors) with its config, dataset and history as JSON."""
    state = {f: getattr(synset, f) for f in _SYNSET_FIELDS}
    write_state(
        path,
        {**state, **{k: state[k].detach().cpu() for k in ("images", "labels", "trigger", "mask")}},
        "synthetic set",
    )


def load_synset(path: str | os.PathLike) -> SyntheticSet:
    """Read a ``synset.safetensors`` (never a pickle: anything else raises ``ValueError`` naming ``path``)."""
    state = read_state(path, "synthetic set")
    missing = set(_SYNSET_FIELDS) - set(state)
    if missing:
        raise ValueError(f"{path}: not a synthetic-set file (missing fields {sorted(missing)})")
    return SyntheticSet(*(state[f] for f in _SYNSET_FIELDS))


def distance_wb(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor:
    """DC's layer-wise distance: Σ over output rows of (1 − cos) between the real and synthetic gradients of one
    parameter; 1-D parameters (biases, norm affine) contribute 0."""
    if gwr.dim() == 1:
        return gwr.new_zeros(())
    gwr, gws = gwr.flatten(1), gws.flatten(1)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1) / (gwr.norm(dim=-1) * gws.norm(dim=-1) + 1e-6))


def match_loss(gw_syn: list[torch.Tensor], gw_real: list[torch.Tensor], metric: str = "ours") -> torch.Tensor:
    """Gradient-matching distance: ``ours`` (layer-wise, DC default), ``mse`` or ``cos`` (over all parameters)."""
    if metric == "ours":
        return sum((distance_wb(r, s) for r, s in zip(gw_real, gw_syn, strict=True)), gw_real[0].new_zeros(()))
    r = torch.cat([g.flatten() for g in gw_real])
    s = torch.cat([g.flatten() for g in gw_syn])
    if metric == "mse":
        return torch.sum((s - r) ** 2)
    if metric == "cos":
        return 1 - torch.sum(r * s) / (r.norm() * s.norm() + 1e-6)
    raise ValueError(f"unknown gradient distance {metric!r}; expected ours|mse|cos")


def random_real_subset(data: ImageData, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` random real training images per class: ``(K·ipc, C, H, W)``, labels ``(K·ipc,)``."""
    xs, ys = [], []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.train_y == c).flatten()
        if len(idx) < ipc:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than ipc={ipc}")
        pick = idx[torch.randperm(len(idx), generator=generator)[:ipc]]
        xs.append(data.train_x[pick])
        ys.append(data.train_y[pick])
    return torch.cat(xs), torch.cat(ys)


class Distiller:
    """Distils ``data`` into ``config.ipc`` images per class, optionally planting a backdoor.

    ``run_dir`` (optional) holds ``checkpoint.safetensors`` (resumable state) and ``synset.safetensors`` (the
    result); a run folder with a pickle-based ``checkpoint.pt``/``synset.pt`` of an earlier version is refused.

    ``device`` and ``precision`` (``fp32``, ``bf16``, ``fp16``) as in the module docstring; ``log_every``: how often
    (iterations) the progress bar reads the loss back from the device. Under several processes only the main one
    writes files."""

    def __init__(
        self,
        data: ImageData,
        config: DistillConfig,
        run_dir: str | os.PathLike | None = None,
        dataset_path: str | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        log_every: int = 10,
    ) -> None:
        self.group = ProcessGroup(device)
        self.device = self.group.device
        self.amp = Precision(precision, self.device)
        self.log_every = max(1, log_every)
        self.data = data
        self.config = dataclasses.replace(config, attack=dataclasses.replace(config.attack))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.dataset_path = dataset_path
        self.history: list[dict[str, float]] = []
        cfg, atk = self.config, self.config.attack
        if not 0 <= atk.target < data.num_classes:
            raise ValueError(f"attack target {atk.target} outside 0..{data.num_classes - 1}")
        g = torch.Generator().manual_seed(cfg.seed)
        c, (h, w) = data.channel, data.im_size
        if atk.kind == "doorping":
            self.trigger, self.mask = doorping_trigger(c, h, w, data.mean, data.std, atk.size, atk.position, g)
        else:
            self.trigger, self.mask = naive_trigger(c, h, w, data.mean, data.std, atk.size, atk.position)
        n = len(data.train_y)
        if atk.kind == "none":
            self.poison_idx = torch.zeros(0, dtype=torch.long)
        else:
            self.poison_idx = torch.randperm(n, generator=g)[: int(n * atk.portion)]
        k = data.num_classes
        self._build_real()
        if cfg.init == "real":  # drawn from the (possibly poisoned) real set, as the official get_images does
            picks = []
            for cls in range(k):
                idx = self.indices_class[cls]
                if len(idx) < cfg.ipc:
                    raise ValueError(f"class {cls} has {len(idx)} training images, fewer than ipc={cfg.ipc}")
                picks.append(idx[torch.randperm(len(idx), generator=g)[: cfg.ipc]])
            self.images = self.real_x[torch.cat(picks).to(self.device)].clone()
        else:
            self.images = torch.randn((k * cfg.ipc, c, h, w), generator=g).to(self.device)
        self.images.requires_grad_(True)
        self.labels = torch.arange(k).repeat_interleave(cfg.ipc).to(self.device)
        self.optimizer = torch.optim.SGD([self.images], lr=cfg.lr_img, momentum=0.5)
        self.iteration = 0
        if self.run_dir is not None:
            refuse_legacy(self.run_dir)
            if (self.run_dir / CHECKPOINT).is_file():
                self._load_checkpoint(self.run_dir / CHECKPOINT)

    # ----------------------------------------------------------------------------------------------- real data
    def _build_real(self) -> None:
        atk = self.config.attack
        x, y = self.data.train_x, self.data.train_y
        self.trigger, self.mask = self.trigger.cpu(), self.mask.cpu()
        if atk.kind != "none":
            x, y = poison(x, y, self.poison_idx, self.trigger, self.mask, atk.target)
        # indices stay on the CPU (the draws are CPU draws); images, trigger and mask live on the device
        self.indices_class = [torch.nonzero(y == c).flatten() for c in range(self.data.num_classes)]
        self.real_x, self.real_y = x.to(self.device), y.to(self.device)
        self.trigger, self.mask = self.trigger.to(self.device), self.mask.to(self.device)
        for c, idx in enumerate(self.indices_class):
            if len(idx) == 0:
                raise ValueError(f"class {c} has no training images")

    def _restamp(self) -> None:
        if len(self.poison_idx):
            idx = self.poison_idx.to(self.device)
            self.real_x[idx] = stamp(self.real_x[idx], self.trigger, self.mask)

    def _real_batch(self, c: int, n: int) -> torch.Tensor:
        idx = self.indices_class[c]
        return self.real_x[idx[torch.randperm(len(idx))[:n]].to(self.device)]

    # ----------------------------------------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {
            "images": self.images.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "trigger": self.trigger.cpu().clone(),
            "poison_idx": self.poison_idx.clone(),
            "config": self.config.to_dict(),
            "history": self._history(),
        }

    def _history(self) -> list[dict[str, float]]:
        """The per-iteration records as floats (values kept as device tensors are read back here, once)."""
        self.history = [{k: v.item() if torch.is_tensor(v) else v for k, v in h.items()} for h in self.history]
        return list(self.history)

    def _save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        state = self._state()
        if self.group.is_main:
            write_state(self.run_dir / CHECKPOINT, state, "distillation checkpoint")
        self.group.barrier()

    def _load_checkpoint(self, path: Path) -> None:
        state = read_state(path, "distillation checkpoint")
        saved = state["config"]
        mine = self.config.to_dict()
        diff = {k: (saved.get(k), v) for k, v in mine.items() if k not in ("iterations", "checkpoint_every")}
        diff = {k: pair for k, pair in diff.items() if pair[0] != pair[1]}
        if diff:
            raise ValueError(f"{path}: checkpoint was written with a different configuration: {diff}")
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.trigger = state["trigger"].to(self.device)
        self.poison_idx = state["poison_idx"]
        self.history = list(state["history"])
        self._build_real()
        log.info("resumed distillation from %s at iteration %d", path, self.iteration)

    def synset(self) -> SyntheticSet:
        d = self.data
        return SyntheticSet(
            self.images.detach().cpu().clone(),
            self.labels.cpu().clone(),
            self.trigger.cpu().clone(),
            self.mask.cpu().clone(),
            self.config.to_dict(),
            {
                "name": d.name,
                "path": self.dataset_path,
                "mean": list(d.mean),
                "std": list(d.std),
                "num_classes": d.num_classes,
            },
            self._history(),
        )

    # ----------------------------------------------------------------------------------------------- loop
    def _new_net(self) -> torch.nn.Module:
        d = self.data
        net = get_network(  # initialised on the CPU (the same draws on every device), then moved
            self.config.model, d.channel, d.num_classes, d.im_size, norm=self.config.norm, width=self.config.width
        )
        return net.to(self.device)

    def _train_net(self, net: torch.nn.Module, opt: torch.optim.Optimizer, epochs: int, augment: bool) -> None:
        transform = (lambda xb: diff_augment(xb, self.config.dsa_strategy)) if augment else None
        for _ in range(epochs):
            train_epoch(net, opt, self.images.detach(), self.labels, self.config.batch_train, transform, self.amp)

    def _image_step(self, loss: torch.Tensor) -> None:
        """One optimiser step on the synthetic images; with several processes their gradient (each process's
        classes) is summed first."""
        self.optimizer.zero_grad()
        if loss.requires_grad:
            loss.backward()
        if self.images.grad is None:  # this process owns no class
            self.images.grad = torch.zeros_like(self.images)
        self.group.all_reduce(self.images.grad)
        self.optimizer.step()

    def _forward(self, fn, x: torch.Tensor) -> torch.Tensor:
        with self.amp.autocast():
            return fn(x).float()

    def _doorping_update(self, net: torch.nn.Module) -> dict[str, float]:
        self.trigger, info = update_trigger(net, self.trigger, self.mask, self.config.attack)
        self._restamp()
        return {"trigger_steps": info.steps, "act_before": info.activation_before, "act_after": info.activation_after}

    def _step_dc(self) -> dict[str, float]:
        cfg = self.config
        net = self._new_net()
        net.train()
        params = list(net.parameters())
        opt_net = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
        # float64 on the device: the same value as the float sum the loop always logged, without reading it back
        loss_sum, stats = torch.zeros((), dtype=torch.float64, device=self.device), {}
        dsa = cfg.method == "dsa"
        for ol in range(cfg.outer_loop):
            loss = torch.zeros((), device=self.device)
            for c in range(self.data.num_classes):
                img_real = self._real_batch(c, cfg.batch_real)  # every process takes every draw
                seed = int(torch.randint(0, 2**31 - 1, (1,))) if dsa else None
                if not self.group.owns(c):
                    continue
                img_syn = self.images[c * cfg.ipc : (c + 1) * cfg.ipc]
                lab_real = torch.full((len(img_real),), c, dtype=torch.long, device=self.device)
                lab_syn = torch.full((cfg.ipc,), c, dtype=torch.long, device=self.device)
                if dsa:
                    img_real = diff_augment(img_real, cfg.dsa_strategy, seed=seed)
                    img_syn = diff_augment(img_syn, cfg.dsa_strategy, seed=seed)
                real_loss = F.cross_entropy(self._forward(net, img_real), lab_real)
                gw_real = [g.detach() for g in torch.autograd.grad(real_loss, params)]
                syn_loss = F.cross_entropy(self._forward(net, img_syn), lab_syn)
                gw_syn = torch.autograd.grad(syn_loss, params, create_graph=True)
                loss = loss + match_loss([g.float() for g in gw_syn], [g.float() for g in gw_real])
            self._image_step(loss)
            loss_sum = loss_sum + self.group.all_reduce(loss.detach().clone()).double()
            if ol == cfg.outer_loop - 1:
                break
            self._train_net(net, opt_net, cfg.inner_loop, augment=dsa)
            if cfg.attack.kind == "doorping":
                stats = self._doorping_update(net)
        return {"loss": loss_sum / (self.data.num_classes * cfg.outer_loop), **stats}  # a tensor: no host sync

    def _step_dm(self) -> dict[str, float]:
        cfg = self.config
        net = self._new_net()
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        loss = torch.zeros((), device=self.device)
        for c in range(self.data.num_classes):
            img_real = self._real_batch(c, cfg.batch_real)  # every process takes every draw
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
            if not self.group.owns(c):
                continue
            img_syn = self.images[c * cfg.ipc : (c + 1) * cfg.ipc]
            img_real = diff_augment(img_real, cfg.dsa_strategy, seed=seed)
            img_syn = diff_augment(img_syn, cfg.dsa_strategy, seed=seed)
            out_real = self._forward(net.embed, img_real).detach()
            out_syn = self._forward(net.embed, img_syn)
            loss = loss + torch.sum((out_real.mean(0) - out_syn.mean(0)) ** 2)
        self._image_step(loss)
        stats = {"loss": self.group.all_reduce(loss.detach().clone()).double() / self.data.num_classes}
        if cfg.attack.kind == "doorping" and (self.iteration + 1) % cfg.dm_trigger_every == 0:
            for p in net.parameters():
                p.requires_grad_(True)
            self._train_net(net, torch.optim.SGD(net.parameters(), lr=cfg.lr_net), cfg.inner_loop, augment=True)
            stats.update(self._doorping_update(net))
        return stats

    def step(self) -> dict[str, float]:
        """One distillation iteration (reseeded from ``(seed, iteration)``)."""
        torch.manual_seed(self.config.seed * 1_000_003 + self.iteration)
        stats = self._step_dm() if self.config.method == "dm" else self._step_dc()
        self.iteration += 1
        stats["iteration"] = self.iteration
        self.history.append(stats)
        return stats

    def run(self, progress: bool = True, callback=None) -> SyntheticSet:
        """Run the remaining iterations (resuming from ``run_dir``), checkpointing every ``checkpoint_every``
        iterations; writes ``run_dir/synset.safetensors`` at the end. ``callback(distiller, stats)`` runs after each
        iteration."""
        cfg = self.config
        bar = tqdm(
            total=cfg.iterations,
            initial=self.iteration,
            disable=not progress,
            desc=f"distill {cfg.method}",
            dynamic_ncols=True,
        )
        try:
            while self.iteration < cfg.iterations:
                stats = self.step()
                bar.update(1)
                if progress and (self.iteration % self.log_every == 0 or self.iteration == cfg.iterations):
                    bar.set_postfix(loss=f"{float(stats['loss']):.4f}")
                if callback is not None:
                    callback(self, stats)
                if cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0:
                    self._save_checkpoint()
        finally:
            bar.close()
        self._save_checkpoint()
        result = self.synset()
        if self.run_dir is not None and self.group.is_main:
            save_synset(result, self.run_dir / SYNSET)
        self.group.barrier()
        return result
