"""Full-batch teacher training with early stopping, and (fair) distillation into a student, both resumable.

Paper: RELIANT (Dong et al., SDM 2023, arXiv 2301.01150); official code https://github.com/yushundong/RELIANT.

Why not ``polyzoo.shared.engine.Trainer``: transductive node classification trains on one whole graph per step,
selects the model by validation accuracy with patience (CPF: best validation accuracy, ``>=``), and RELIANT alternates
two optimisers (student, proxy) each epoch; the engine's map-style batches and single optimiser do not fit that.
The loops here follow the same run contract (:mod:`polyzoo.shared.run`) instead: a run folder whose ``config.json``
holds the training config and the data spec (a changed one is refused before anything is written, unless
``overwrite``), ``metrics.jsonl``, complete checkpoints ``checkpoints/step_XXXXXXXX/`` (safetensors + JSON: modules,
optimisers, proxy, early-stopping state and the torch RNG) and exact resume. The finished run adds
``model.safetensors``, ``logits.safetensors`` and ``result.json``. Tensors live on ``device`` (CPU or CUDA).

Defaults follow the official configs where they exist (``train.conf.yaml``: GCN teacher hidden 64, dropout 0.8,
lr 0.01, weight decay 1e-3, seed 42; SAGE hidden 16, dropout 0.5, wd 5e-4; patience 500 of 1000 epochs, shortened
here to 100 of 1000 by default). Distillation follows the CPF path: the Euclidean KD loss on the non-training nodes,
α = 1e3 for the surrogate, proxy ``random``; the surrogate's nodes are chosen by :func:`surrogate_nodes`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch_geometric.data import Data
from tqdm.auto import tqdm

from polyzoo.graph.kd import euclidean_kd_loss, kl_kd_loss
from polyzoo.graph.metrics import fairness_report
from polyzoo.graph.models import STUDENTS, TEACHERS, build_model
from polyzoo.graph.reliant import BiasProxy, Reliant
from polyzoo.shared.io import load_safetensors, pack_tensors, read_json, unpack_tensors, write_json_atomic
from polyzoo.shared.options import resolve_device
from polyzoo.shared.run import RunDir, write_lines
from polyzoo.shared.seed import seed_everything

__all__ = [
    "DistillConfig",
    "TeacherConfig",
    "TrainResult",
    "distill",
    "surrogate_nodes",
    "train_teacher",
    "validation_accuracy",
]

log = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    model: str = "gcn"
    hidden: int = 64
    num_layers: int = 2
    dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 1e-3
    epochs: int = 1000
    patience: int = 100
    seed: int = 42


@dataclass
class DistillConfig:
    student: str = "mlp"
    hidden: int = 64
    num_layers: int = 2
    dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 5e-4
    epochs: int = 500
    patience: int = 100
    seed: int = 0
    kd: str = "euclidean"  # euclidean (CPF) | kl
    temperature: float = 1.0
    kd_nodes: str = "non_train"  # non_train (CPF) | all
    ce_weight: float = 0.0
    fair: str = "sp"  # sp | eo (RELIANT) | none (vanilla KD); the same default as `polyzoo graph distill`
    alpha: float = 1000.0
    proxy: str = "random"  # random | oracle | none
    proxy_view: str = "node"  # node (paper's equations) | mean (official code)
    # nodes of the bias surrogate: non_train (official CPF path: the KD nodes) | train | auto (sp: non_train, eo: train)
    fair_nodes: str = "auto"


@dataclass
class TrainResult:
    """What a training run returns: the best model (loaded), its logits on every node and its test metrics."""

    model: nn.Module
    logits: torch.Tensor  # (N, 2), eval mode, best weights
    metrics: dict[str, float]  # fairness_report on the test nodes
    best_epoch: int
    epochs_run: int
    best_val_acc: float
    proxy: BiasProxy | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def validation_accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Accuracy on the masked nodes with a known label."""
    m = mask & (y >= 0)
    if not bool(m.any()):
        raise ValueError("validation split holds no labelled node")
    return float((logits[m].argmax(-1) == y[m]).float().mean())


def _check_data(data: Data) -> None:
    for key in ("x", "edge_index", "y", "sens", "train_mask", "val_mask", "test_mask"):
        if getattr(data, key, None) is None:
            raise ValueError(f"data: missing attribute {key!r} (expected a polyzoo.graph dataset graph)")
    if not bool((data.train_mask & (data.y >= 0)).any()):
        raise ValueError("data: the training split holds no labelled node")


class _Loop:
    """Epoch loop with early stopping on validation accuracy and exactly resumable checkpoints in a run folder."""

    def __init__(
        self,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        run: RunDir | None,
        checkpoint_every: int,
        progress: bool,
        desc: str,
    ):
        self.modules, self.optimizers, self.run = modules, optimizers, run
        self.checkpoint_every, self.progress, self.desc = max(1, checkpoint_every), progress, desc
        self.epoch, self.best_val, self.best_epoch, self.bad = 0, -1.0, 0, 0
        self.best_states = {k: _clone_state(m) for k, m in modules.items()}
        self.history: list[dict[str, float]] = []
        self.done = False

    def resume(self) -> bool:
        ckpt = self.run.checkpoint if self.run is not None else None
        if ckpt is None:
            return False
        meta = read_json(ckpt / "state.json")
        state = unpack_tensors(meta, load_safetensors(ckpt / "state.safetensors"))
        device = next(p.device for m in self.modules.values() for p in m.parameters())
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.best_states = {k: {n: t.to(device) for n, t in v.items()} for k, v in state["best_states"].items()}
        self.epoch, self.best_val, self.best_epoch = state["epoch"], state["best_val"], state["best_epoch"]
        self.bad, self.history, self.done = state["bad"], state["history"], state["done"]
        torch.set_rng_state(state["rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        log.info("%s: resumed from %s at epoch %d", self.desc, ckpt, self.epoch)
        return True

    def save(self) -> None:
        if self.run is None:
            return
        state = {
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "best_states": self.best_states,
            "epoch": self.epoch,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "bad": self.bad,
            "history": self.history,
            "done": self.done,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        meta, tensors = pack_tensors(state, "s")

        def write(folder: Path) -> None:
            save_file(tensors, folder / "state.safetensors")
            write_json_atomic(folder / "state.json", meta)

        if self.run.last_checkpoint() != self.run.checkpoint_path(self.epoch):
            self.run.save_checkpoint(self.epoch, write, keep=1)

    def run_epochs(
        self,
        epochs: int,
        patience: int,
        step: Callable[[], dict[str, float]],
        val: Callable[[], float],
        stop_after: int | None = None,
    ) -> None:
        if self.run is not None:
            self.run.open()
            self.resume()
        bar = tqdm(total=epochs, initial=self.epoch, desc=self.desc, disable=not self.progress, leave=False)
        ran = 0
        while not self.done and self.epoch < epochs:
            if stop_after is not None and ran >= stop_after:
                break
            ran += 1
            record = step()
            acc = val()
            self.epoch += 1
            record.update(epoch=self.epoch, val_acc=acc)
            self.history.append(record)
            if acc >= self.best_val:
                self.best_val, self.best_epoch, self.bad = acc, self.epoch, 0
                self.best_states = {k: _clone_state(m) for k, m in self.modules.items()}
            else:
                self.bad += 1
            if self.bad >= patience or self.epoch >= epochs:
                self.done = True
            if self.done or self.epoch % self.checkpoint_every == 0:
                self.save()
            bar.update(1)
            bar.set_postfix(val_acc=f"{acc:.3f}", best=f"{self.best_val:.3f}")
        bar.close()
        if self.epoch >= epochs:
            self.done = True
        self.save()
        for k, m in self.modules.items():
            m.load_state_dict(self.best_states[k])


def _clone_state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _write_result(
    run: RunDir | None, result: TrainResult, model_state: dict[str, torch.Tensor], extra: dict[str, Any]
) -> None:
    if run is None:
        return
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, run.path / "model.safetensors")
    save_file({"logits": result.logits.detach().cpu().contiguous()}, run.path / "logits.safetensors")
    write_json_atomic(
        run.path / "result.json",
        {
            "metrics": result.metrics,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "best_val_acc": result.best_val_acc,
            **extra,
        },
    )
    write_lines(run.metrics_path, (json.dumps(rec) for rec in result.history))


def load_logits(run_dir: str | os.PathLike) -> torch.Tensor:
    """The (N, 2) logits a finished teacher or student run saved (``logits.safetensors``)."""
    path = Path(run_dir) / "logits.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run_dir} a finished `polyzoo graph` run?")
    return load_safetensors(path)["logits"]


def train_teacher(
    data: Data,
    config: TeacherConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    progress: bool = False,
    stop_after: int | None = None,
    *,
    data_spec: dict[str, Any] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    device: str = "auto",
) -> TrainResult:
    """Train a GCN/SAGE/GIN teacher with cross-entropy on the labelled training nodes, early stopping on
    validation accuracy; returns the best model with its test metrics.

    With ``run_dir`` the run follows the run contract: ``config.json`` holds ``config`` and ``data_spec`` (what the
    graph was loaded from), the same ones resume from the last checkpoint, others are refused unless
    ``overwrite``. ``stop_after`` ends this call after that many epochs (checkpointed, ``finished: false`` in
    result.json). ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda[:N]``."""
    cfg = dataclasses.replace(config or TeacherConfig())
    _check_data(data)
    if cfg.model not in TEACHERS:
        raise ValueError(f"teacher model: expected one of {sorted(TEACHERS)}, got {cfg.model!r}")
    loop_config = {"teacher": dataclasses.asdict(cfg), "data": data_spec or {}}
    run = RunDir(run_dir, loop_config, resume=resume, overwrite=overwrite) if run_dir is not None else None
    if run is not None:
        run.check()  # refuse a changed config before any work
    dev = torch.device(resolve_device(device))
    data = data.to(dev)
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.num_features, cfg.hidden, 2, cfg.num_layers, cfg.dropout).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = data.train_mask & (data.y >= 0)

    def step() -> dict[str, float]:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(data.x, data.edge_index)[train], data.y[train])
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    def val() -> float:
        model.eval()
        with torch.no_grad():
            return validation_accuracy(model(data.x, data.edge_index), data.y, data.val_mask)

    loop = _Loop({"model": model}, {"model": opt}, run, checkpoint_every, progress, "teacher")
    loop.run_epochs(cfg.epochs, cfg.patience, step, val, stop_after)
    model.eval()
    with torch.no_grad():
        logits = model(data.x, data.edge_index).cpu()
    metrics = fairness_report(logits, data.y.cpu(), data.sens.cpu(), data.test_mask.cpu())
    result = TrainResult(model, logits, metrics, loop.best_epoch, loop.epoch, loop.best_val, None, loop.history)
    _write_result(loop.run, result, model.state_dict(), {"kind": "teacher", "finished": loop.done})
    return result


def surrogate_nodes(data: Data, fair: str, fair_nodes: str = "auto") -> torch.Tensor:
    """Boolean mask of the nodes RELIANT's bias surrogate is computed on (nodes with a known sensitive attribute).

    The official CPF path computes the surrogate on the non-training nodes, the same nodes the KD loss uses
    (``approx_loss(..., idx_no_train)``). For ΔSP that needs only their sensitive attribute, which the fairness setting
    treats as known for every node. For ΔEO the official code also reads the *true labels* of those nodes, test nodes
    included (it needs y = 1), which leaks test labels into training; ``auto`` therefore uses the non-training nodes
    for ``sp`` and the labelled training nodes for ``eo``. ``non_train`` reproduces the official choice for both.
    """
    if fair_nodes == "auto":
        fair_nodes = "train" if fair == "eo" else "non_train"
    base = ~data.train_mask if fair_nodes == "non_train" else data.train_mask & (data.y >= 0)
    return base & (data.sens >= 0)


def distill(
    data: Data,
    teacher_logits: torch.Tensor,
    config: DistillConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    progress: bool = False,
    stop_after: int | None = None,
    *,
    data_spec: dict[str, Any] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    device: str = "auto",
) -> TrainResult:
    """Distil ``teacher_logits`` (N, 2) into a student; ``config.fair`` = ``sp``/``eo`` runs RELIANT, ``none``
    vanilla KD. Model selection: best validation accuracy with patience. ``run_dir``, ``data_spec``, ``resume``,
    ``overwrite``, ``stop_after`` and ``device`` as in :func:`train_teacher`."""
    cfg = dataclasses.replace(config or DistillConfig())
    _check_data(data)
    if cfg.student not in STUDENTS:
        raise ValueError(f"student model: expected one of {sorted(STUDENTS)}, got {cfg.student!r}")
    if cfg.kd not in ("euclidean", "kl"):
        raise ValueError(f"kd: expected 'euclidean' or 'kl', got {cfg.kd!r}")
    if cfg.kd_nodes not in ("non_train", "all"):
        raise ValueError(f"kd_nodes: expected 'non_train' or 'all', got {cfg.kd_nodes!r}")
    if cfg.fair_nodes not in ("auto", "non_train", "train"):
        raise ValueError(f"fair_nodes: expected 'auto', 'non_train' or 'train', got {cfg.fair_nodes!r}")
    if teacher_logits.shape != (data.num_nodes, 2):
        raise ValueError(f"teacher_logits: expected ({data.num_nodes}, 2), got {tuple(teacher_logits.shape)}")
    loop_config = {"student": dataclasses.asdict(cfg), "data": data_spec or {}}
    run = RunDir(run_dir, loop_config, resume=resume, overwrite=overwrite) if run_dir is not None else None
    if run is not None:
        run.check()  # refuse a changed config before any work
    dev = torch.device(resolve_device(device))
    data, teacher_logits = data.to(dev), teacher_logits.to(dev)
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    proxy_mode = cfg.proxy if cfg.fair != "none" else "none"
    proxy = BiasProxy(data.num_nodes, proxy_mode, sens=data.sens, generator=gen)
    proxy = proxy.to(dev)
    student = build_model(cfg.student, data.num_features + proxy.width, cfg.hidden, 2, cfg.num_layers, cfg.dropout)
    student = student.to(dev)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    optimizers: dict[str, torch.optim.Optimizer] = {"student": opt}
    proxy_opt = None
    if proxy.learnable:
        # official: Adam over the proxy with the model's lr and weight decay
        proxy_opt = torch.optim.Adam(proxy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        optimizers["proxy"] = proxy_opt
    reliant = Reliant(cfg.fair, cfg.alpha, proxy, cfg.proxy_view, proxy_opt)

    teacher_logits = teacher_logits.detach()
    teacher_prob = teacher_logits.softmax(-1)
    kd_mask = ~data.train_mask if cfg.kd_nodes == "non_train" else torch.ones_like(data.train_mask)
    labelled_train = data.train_mask & (data.y >= 0)
    fair_mask = surrogate_nodes(data, cfg.fair, cfg.fair_nodes)

    def kd_loss(logits: torch.Tensor) -> torch.Tensor:
        if cfg.kd == "euclidean":
            loss = euclidean_kd_loss(logits[kd_mask], teacher_prob[kd_mask])
        else:
            loss = kl_kd_loss(logits[kd_mask], teacher_logits[kd_mask], cfg.temperature)
        if cfg.ce_weight:
            loss = loss + cfg.ce_weight * F.cross_entropy(logits[labelled_train], data.y[labelled_train])
        return loss

    def step() -> dict[str, float]:
        kd, bias = reliant.student_step(student, opt, data.x, data.edge_index, kd_loss, data.sens, data.y, fair_mask)
        rec = {"kd": kd, "bias": bias}
        pb = reliant.proxy_step(student, data.x, data.edge_index, data.sens, data.y, fair_mask)
        if pb is not None:
            rec["proxy_bias"] = pb
        return rec

    def predict() -> torch.Tensor:
        student.eval()
        with torch.no_grad():
            return student(reliant.student_input(data.x), data.edge_index)

    def val() -> float:
        return validation_accuracy(predict(), data.y, data.val_mask)

    modules = {"student": student, "proxy": proxy}
    loop = _Loop(modules, optimizers, run, checkpoint_every, progress, "distill")
    loop.run_epochs(cfg.epochs, cfg.patience, step, val, stop_after)
    logits = predict().cpu()
    metrics = fairness_report(logits, data.y.cpu(), data.sens.cpu(), data.test_mask.cpu())
    result = TrainResult(student, logits, metrics, loop.best_epoch, loop.epoch, loop.best_val, proxy, loop.history)
    state = {**{f"student.{k}": v for k, v in student.state_dict().items()}}
    state.update({f"proxy.{k}": v for k, v in proxy.state_dict().items()})
    _write_result(loop.run, result, state, {"kind": "student", "finished": loop.done})
    return result
