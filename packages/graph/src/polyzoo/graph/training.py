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

Precision (``precision="fp32"|"bf16"|"fp16"``): the models' forward passes run under ``torch.autocast``; their logits
are cast back to float32 before anything else, so the losses (cross-entropy, the KD losses, softmax, RELIANT's
Legendre surrogate), the proxy, the weights, the optimiser state, model selection and the metrics stay float32
(``fp16`` adds one ``GradScaler`` per optimiser). A precision other than fp32 is recorded in ``config.json``.

Host synchronisation: on CUDA the epoch loop reads values back only every ``log_every`` epochs (and at checkpoints):
the early-stopping rule (best validation accuracy, ``>=``, patience) runs on the device (the best weights are kept
with ``torch.where``, frozen once the rule has stopped) and is replayed on the host at each read-back, so the
result is the one of the epoch-by-epoch loop; at most ``log_every − 1`` epochs past the stopping epoch are computed
and discarded. On the CPU (nothing to synchronise) the loop decides after every epoch, as always.

Several processes (:class:`MiniBatch`). Launched with ``torchrun`` / ``accelerate launch`` (Accelerate's
``PartialState`` joins the process group: gloo on the CPU, NCCL on CUDA), or given ``minibatch=`` on one process,
training runs on PyG ``NeighborLoader`` mini-batches (:mod:`polyzoo.graph.sampling`): each epoch the seed nodes
(teacher: the labelled training nodes; distillation: the KD, surrogate and cross-entropy nodes) are permuted by
(seed, epoch), cut into global batches of ``batch_size`` (default: all seeds, one step per epoch as the full-batch
loop) and every process takes the disjoint strided share ``batch[rank::processes]``. Losses are global: each process
computes its share of every sum (cross-entropy sums, the Euclidean KD's squared distances, the surrogate's group sums
and counts), the sums are added over processes by an all-reduce whose backward is the identity, and the gradients
(each process's share of the gradient of the one global loss) are summed over processes before every optimiser
step. DDP's wrapper is not used because RELIANT's proxy step runs the student with frozen weights, which DDP's
reducer refuses. By default the subgraphs hold every neighbour over the model's receptive field (one extra hop for
GCN/SGC, whose normalisation reads the neighbours' degrees), so a seed's output is exactly its full-graph output
(up to float summation order); ``num_neighbors`` samples instead. Evaluation splits all nodes the same way, each
process predicts its share through exact subgraphs, and the shares are gathered: every node is predicted exactly
once. Dropout is drawn per process from (seed, epoch, rank), so a run resumes exactly; with dropout > 0 a run on
P processes is therefore a different draw from a run on one (the number of processes is part of the config).
"""

from __future__ import annotations

import copy
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
from polyzoo.graph.reliant import BiasProxy, Reliant, legendre_step
from polyzoo.graph.sampling import neighbor_loader
from polyzoo.shared.distributed import ProcessGroup
from polyzoo.shared.io import load_safetensors, pack_tensors, read_json, unpack_tensors, write_json_atomic
from polyzoo.shared.options import PRECISION_CHOICES, autocast_dtype
from polyzoo.shared.run import RunDir, write_lines
from polyzoo.shared.seed import seed_everything

__all__ = [
    "DistillConfig",
    "MiniBatch",
    "TeacherConfig",
    "TrainResult",
    "distill",
    "receptive_hops",
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


@dataclass
class MiniBatch:
    """NeighborLoader mini-batches (module docstring): the path taken under several processes.

    Args:
        batch_size: seed nodes per optimiser step over all processes; None: every seed, one step per epoch (the
            full-batch loop's gradient, computed on subgraphs).
        num_neighbors: neighbours drawn per hop when training; None: all of them over the model's receptive field
            (:func:`receptive_hops`), which makes every seed's output its full-graph output.
        backend: the sampling backend of :func:`polyzoo.graph.sampling.neighbor_loader`.
    """

    batch_size: int | None = None
    num_neighbors: list[int] | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"minibatch batch_size: expected >= 1 or None, got {self.batch_size}")
        if self.num_neighbors is not None:
            self.num_neighbors = [int(k) for k in self.num_neighbors]


def receptive_hops(model: str, num_layers: int) -> int:
    """Hops of incoming edges a subgraph needs for a seed's output to equal its full-graph output: 0 for the MLP,
    ``num_layers`` for SAGE/GIN (in-edges of the nodes up to ``num_layers − 1`` hops away), one more for GCN and SGC,
    whose symmetric normalisation also reads the degree of the farthest nodes."""
    if model == "mlp":
        return 0
    return num_layers + 1 if model in ("gcn", "sgc") else num_layers


_Group = ProcessGroup  # polyzoo.shared.distributed


class _Amp:
    """``precision``: autocast around forward passes, logits back in float32, a GradScaler per optimiser for fp16."""

    def __init__(self, precision: str, device: torch.device):
        if precision not in PRECISION_CHOICES:
            raise ValueError(f"precision: expected one of {PRECISION_CHOICES}, got {precision!r}")
        self.precision, self.device_type, self.dtype = precision, device.type, autocast_dtype(precision)
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    def forward(self, model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            return model(x, edge_index).float()

    def step(self, name: str, loss: torch.Tensor, opt: torch.optim.Optimizer, group: _Group | None = None) -> None:
        """Backward, gradients summed over processes, optimiser step (scaled for fp16)."""
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        if self.precision == "fp16":
            scaler = self.scalers.setdefault(name, torch.amp.GradScaler(self.device_type))
            if loss.requires_grad:
                scaler.scale(loss).backward()
            if group is not None:
                group.reduce_grads(params)
            scaler.step(opt)
            scaler.update()
            return
        if loss.requires_grad:
            loss.backward()
        if group is not None:
            group.reduce_grads(params)
        opt.step()

    def state(self) -> dict[str, Any]:
        return {k: v.state_dict() for k, v in self.scalers.items()}

    def load(self, state: dict[str, Any] | None) -> None:
        for k, v in (state or {}).items():
            self.scalers.setdefault(k, torch.amp.GradScaler(self.device_type)).load_state_dict(v)


class _Subgraphs:
    """Seed nodes → the (x, edge_index, n_id) of their subgraph on the device (seeds first), through PyG's
    ``NeighborLoader`` with ``num_neighbors`` per hop (an empty list: the seeds alone, no edges). Sampling runs on
    the CPU in this process, one call per step (no loader workers); on CUDA the batch goes through pinned memory."""

    def __init__(self, data: Data, num_neighbors: list[int], device: torch.device, backend: str):
        self.device, self.x = device, data.x.cpu()
        self.generator = torch.Generator().manual_seed(0)
        self.loader = None
        if num_neighbors:
            graph = Data(x=self.x, edge_index=data.edge_index.cpu(), num_nodes=data.num_nodes)
            self.loader = neighbor_loader(graph, num_neighbors, backend=backend, generator=self.generator)

    def __call__(self, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.loader is None:
            empty = torch.zeros(2, 0, dtype=torch.long, device=self.device)
            return self._move(self.x[seeds]), empty, self._move(seeds)
        b = self.loader(seeds)
        return self._move(b.x), self._move(b.edge_index), self._move(b.n_id)

    def _move(self, t: torch.Tensor) -> torch.Tensor:
        """To the device; on CUDA through pinned memory, copied asynchronously."""
        if self.device.type != "cuda":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)


def _global_batches(seeds: torch.Tensor, batch_size: int | None, seed: int, epoch: int, group: _Group):
    """This process's share of each global batch of an epoch: (share, size of the global batch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = seeds[torch.randperm(len(seeds), generator=g)]
    size = batch_size or len(perm)
    for start in range(0, len(perm), size):
        batch = perm[start : start + size]
        yield batch[group.rank :: group.world], len(batch)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Dropout (and sampling) randomness of one epoch on one process, from (seed, epoch, rank): exact resume."""
    torch.manual_seed((seed * 1_000_003 + epoch) * 1009 + rank)


def _minibatch_predict(
    forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    sub: _Subgraphs,
    nodes: torch.Tensor,
    chunk: int | None,
) -> torch.Tensor:
    """Logits of ``nodes`` (this process's share) computed on exact subgraphs, ``chunk`` seeds at a time."""
    outs = []
    size = chunk or max(len(nodes), 1)
    for start in range(0, len(nodes), size):
        part = nodes[start : start + size]
        x, ei, n_id = sub(part)
        outs.append(forward(x, ei, n_id)[: len(part)])
    if not outs:
        return torch.zeros(0, 2, device=sub.device)
    return torch.cat(outs)


def _minibatch_accuracy(forward, sub: _Subgraphs, nodes: torch.Tensor, y: torch.Tensor, group: _Group, chunk):
    """Accuracy over ``nodes`` (every process's share counted once), as a float32 device tensor: no host sync."""
    mine = nodes[group.rank :: group.world]
    with torch.no_grad():
        logits = _minibatch_predict(forward, sub, mine, chunk)
        counts = torch.stack(
            [(logits.argmax(-1) == y[mine.to(y.device)]).sum(), torch.tensor(len(mine), device=logits.device)]
        )
    counts = group.all_reduce(counts)
    return counts[0].float() / counts[1].float()


def _minibatch_logits(forward, sub: _Subgraphs, num_nodes: int, group: _Group, chunk) -> torch.Tensor:
    """(N, C) logits of every node, each predicted by exactly one process and gathered."""
    mine = torch.arange(group.rank, num_nodes, group.world)
    with torch.no_grad():
        return group.gather_rows(_minibatch_predict(forward, sub, mine, chunk), num_nodes)


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
    """Epoch loop with early stopping on validation accuracy and exactly resumable checkpoints in a run folder.

    ``step()`` returns the epoch's records (floats or device tensors) and ``val()`` the validation accuracy (a float
    or a device tensor). With ``sync_every`` = 1 the rule is applied on the host after every epoch; with more, the
    epochs of a block run without reading anything back (the rule runs on the device, see the module docstring) and
    the block is replayed on the host at its end. Only the main process writes."""

    def __init__(
        self,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        run: RunDir | None,
        checkpoint_every: int,
        progress: bool,
        desc: str,
        *,
        group: _Group | None = None,
        amp: _Amp | None = None,
    ):
        self.modules, self.optimizers, self.run = modules, optimizers, run
        self.checkpoint_every, self.progress, self.desc = max(1, checkpoint_every), progress, desc
        self.group, self.amp = group, amp
        self.epoch, self.best_val, self.best_epoch, self.bad = 0, -1.0, 0, 0
        self.current = 0  # the epoch being computed (0-based; ahead of ``epoch`` inside a block)
        self.best_states = {k: _clone_state(m) for k, m in modules.items()}
        self.history: list[dict[str, float]] = []
        self.done = False

    @property
    def is_main(self) -> bool:
        return self.group is None or self.group.is_main

    def _barrier(self) -> None:
        if self.group is not None:
            self.group.barrier()

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
        if self.amp is not None:
            self.amp.load(state.get("scalers"))
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
        if self.amp is not None and self.amp.scalers:
            state["scalers"] = self.amp.state()
        if self.is_main:
            meta, tensors = pack_tensors(state, "s")

            def write(folder: Path) -> None:
                save_file(tensors, folder / "state.safetensors")
                write_json_atomic(folder / "state.json", meta)

            if self.run.last_checkpoint() != self.run.checkpoint_path(self.epoch):
                self.run.save_checkpoint(self.epoch, write, keep=1)
        self._barrier()

    def _record(self, record: dict[str, Any], acc: float) -> None:
        """Apply the rule to one finished epoch (host values)."""
        self.epoch += 1
        record.update(epoch=self.epoch, val_acc=acc)
        self.history.append(record)
        if acc >= self.best_val:
            self.best_val, self.best_epoch, self.bad = acc, self.epoch, 0
        else:
            self.bad += 1

    def run_epochs(
        self,
        epochs: int,
        patience: int,
        step: Callable[[], dict[str, Any]],
        val: Callable[[], Any],
        stop_after: int | None = None,
        sync_every: int = 1,
    ) -> None:
        if self.run is not None:
            if self.is_main:
                self.run.open()
            self._barrier()
            if not self.is_main:
                self.run.open()  # reads what the main process wrote; writes nothing (is_main False)
            self.resume()
        bar = tqdm(
            total=epochs, initial=self.epoch, desc=self.desc, disable=not (self.progress and self.is_main), leave=False
        )
        ran = 0
        while not self.done and self.epoch < epochs:
            if stop_after is not None and ran >= stop_after:
                break
            block = min(sync_every, epochs - self.epoch, self.checkpoint_every - self.epoch % self.checkpoint_every)
            if stop_after is not None:
                block = min(block, stop_after - ran)
            if block <= 1:
                self.current = self.epoch
                record = {k: float(v) for k, v in step().items()}
                acc = float(val())
                improved = acc >= self.best_val
                self._record(record, acc)
                if improved:
                    self.best_states = {k: _clone_state(m) for k, m in self.modules.items()}
                ran += 1
            else:
                ran += self._run_block(block, epochs, patience, step, val)
            if self.bad >= patience or self.epoch >= epochs:
                self.done = True
            if self.done or self.epoch % self.checkpoint_every == 0:
                self.save()
            bar.update(self.epoch - bar.n)
            bar.set_postfix(val_acc=f"{self.history[-1]['val_acc']:.3f}", best=f"{self.best_val:.3f}")
        bar.close()
        if self.epoch >= epochs:
            self.done = True
        self.save()
        for k, m in self.modules.items():
            m.load_state_dict(self.best_states[k])

    def _run_block(self, block: int, epochs: int, patience: int, step, val) -> int:
        """``block`` epochs without host synchronisation, then one read-back and the host replay; returns the
        number of epochs that count (those up to the stopping epoch)."""
        device = next(p.device for m in self.modules.values() for p in m.parameters())
        best = torch.tensor(self.best_val, dtype=torch.float32, device=device)
        bad = torch.tensor(self.bad, device=device)
        stopped = torch.zeros((), dtype=torch.bool, device=device)
        records, accs = [], []
        for i in range(block):
            self.current = self.epoch + i
            rec, acc = step(), val()
            acc = torch.as_tensor(acc, dtype=torch.float32, device=device)
            improved = (acc >= best) & ~stopped
            best = torch.where(improved, acc, best)
            bad = torch.where(improved, torch.zeros_like(bad), bad + (~stopped).long())
            with torch.no_grad():
                for k, m in self.modules.items():
                    for name, t in m.state_dict().items():
                        kept = self.best_states[k][name]
                        kept.copy_(torch.where(improved, t, kept))
            stopped = stopped | (bad >= patience) | torch.tensor(self.epoch + i + 1 >= epochs, device=device)
            records.append(rec)
            accs.append(acc)
        keys = list(records[0])
        values = torch.stack(
            [torch.stack([torch.as_tensor(r[k], dtype=torch.float32, device=device) for k in keys]) for r in records]
        ).tolist()  # the block's one host synchronisation
        acc_host = torch.stack(accs).tolist()
        for i in range(block):
            self._record(dict(zip(keys, values[i], strict=True)), acc_host[i])
            if self.bad >= patience or self.epoch >= epochs:
                return i + 1
        return block


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


def _index(mask: torch.Tensor) -> torch.Tensor:
    """Indices of a boolean mask, computed once (indexing with them in the loop needs no host synchronisation and
    selects the same rows in the same order as the mask)."""
    return mask.nonzero().view(-1)


def _accuracy(logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """:func:`validation_accuracy` as a device tensor, on precomputed indices."""
    return (logits[index].argmax(-1) == y[index]).float().mean()


def _setup(
    key: str,
    cfg: Any,
    data: Data,
    data_spec: dict[str, Any] | None,
    run_dir: str | os.PathLike | None,
    resume: bool,
    overwrite: bool,
    device: str,
    precision: str,
    minibatch: MiniBatch | None,
) -> tuple[_Group, MiniBatch | None, RunDir | None, _Amp]:
    group = _Group(device)
    mb = minibatch if minibatch is not None else (MiniBatch() if group.world > 1 else None)
    loop_config: dict[str, Any] = {key: dataclasses.asdict(cfg), "data": data_spec or {}}
    if precision != "fp32":  # fp32 runs keep the config they always had
        loop_config["precision"] = precision
    if mb is not None:
        loop_config["minibatch"] = {**dataclasses.asdict(mb), "processes": group.world}
    run = None
    if run_dir is not None:
        info = {"device": str(group.device), "processes": group.world}
        run = RunDir(run_dir, loop_config, run_info=info, resume=resume, overwrite=overwrite, is_main=group.is_main)
        run.check()  # refuse a changed config before any work
    if not bool((data.val_mask & (data.y >= 0)).any()):
        raise ValueError("validation split holds no labelled node")
    return group, mb, run, _Amp(precision, group.device)


def _sync_every(group: _Group, log_every: int) -> int:
    return max(1, log_every) if group.device.type == "cuda" else 1


def _finish(loop: _Loop, group: _Group, result: TrainResult, state: dict[str, torch.Tensor], kind: str) -> None:
    if group.is_main:
        _write_result(loop.run, result, state, {"kind": kind, "finished": loop.done})
    group.barrier()


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
    precision: str = "fp32",
    minibatch: MiniBatch | None = None,
    log_every: int = 10,
) -> TrainResult:
    """Train a GCN/SAGE/GIN teacher with cross-entropy on the labelled training nodes, early stopping on
    validation accuracy; returns the best model with its test metrics.

    With ``run_dir`` the run follows the run contract: ``config.json`` holds ``config`` and ``data_spec`` (what the
    graph was loaded from), the same ones resume from the last checkpoint, others are refused unless
    ``overwrite``. ``stop_after`` ends this call after that many epochs (checkpointed, ``finished: false`` in
    result.json). ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda[:N]``; ``precision``: ``fp32``,
    ``bf16``, ``fp16`` (autocast, see the module docstring); ``minibatch``: NeighborLoader mini-batches (the
    default under several processes); ``log_every``: epochs between host read-backs on CUDA."""
    cfg = dataclasses.replace(config or TeacherConfig())
    _check_data(data)
    if cfg.model not in TEACHERS:
        raise ValueError(f"teacher model: expected one of {sorted(TEACHERS)}, got {cfg.model!r}")
    group, mb, run, amp = _setup(
        "teacher", cfg, data, data_spec, run_dir, resume, overwrite, device, precision, minibatch
    )
    dev = group.device
    host = data
    data = copy.copy(data).to(dev)  # PyG's Data.to moves in place: keep the caller's graph where it is
    seed_everything(cfg.seed)
    model = build_model(cfg.model, data.num_features, cfg.hidden, 2, cfg.num_layers, cfg.dropout).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = _index(data.train_mask & (data.y >= 0))
    val_index = _index(data.val_mask & (data.y >= 0))
    loop = _Loop({"model": model}, {"model": opt}, run, checkpoint_every, progress, "teacher", group=group, amp=amp)

    if mb is None:  # the full-batch loop (the default on one process)

        def step() -> dict[str, Any]:
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(amp.forward(model, data.x, data.edge_index)[train], data.y[train])
            amp.step("model", loss, opt)
            return {"loss": loss.detach()}

        def val() -> torch.Tensor:
            model.eval()
            with torch.no_grad():
                return _accuracy(amp.forward(model, data.x, data.edge_index), data.y, val_index)

        def predict() -> torch.Tensor:
            model.eval()
            with torch.no_grad():
                return amp.forward(model, data.x, data.edge_index)

    else:
        exact = _Subgraphs(host, [-1] * receptive_hops(cfg.model, cfg.num_layers), dev, mb.backend)
        sub = exact if mb.num_neighbors is None else _Subgraphs(host, mb.num_neighbors, dev, mb.backend)
        seeds, val_nodes = train.cpu(), val_index.cpu()

        def fwd(x: torch.Tensor, ei: torch.Tensor, n_id: torch.Tensor) -> torch.Tensor:
            return amp.forward(model, x, ei)

        def step() -> dict[str, Any]:
            _seed_epoch(cfg.seed, loop.current, group.rank)
            sub.generator.manual_seed((cfg.seed * 1_000_003 + loop.current) * 1009 + group.rank)
            model.train()
            total, steps = torch.zeros((), device=dev), 0
            for mine, n in _global_batches(seeds, mb.batch_size, cfg.seed, loop.current, group):
                opt.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=dev)
                if len(mine):
                    x, ei, _ = sub(mine)
                    out = amp.forward(model, x, ei)[: len(mine)]
                    loss = F.cross_entropy(out, data.y[mine.to(dev)], reduction="sum") / n  # this share of the mean
                amp.step("model", loss, opt, group)
                total, steps = total + group.all_reduce(loss.detach().clone()), steps + 1
            return {"loss": total / steps}

        def val() -> torch.Tensor:
            model.eval()
            return _minibatch_accuracy(fwd, exact, val_nodes, data.y, group, mb.batch_size)

        def predict() -> torch.Tensor:
            model.eval()
            return _minibatch_logits(fwd, exact, data.num_nodes, group, mb.batch_size)

    loop.run_epochs(cfg.epochs, cfg.patience, step, val, stop_after, _sync_every(group, log_every))
    logits = predict().cpu()
    metrics = fairness_report(logits, host.y.cpu(), host.sens.cpu(), host.test_mask.cpu())
    result = TrainResult(model, logits, metrics, loop.best_epoch, loop.epoch, loop.best_val, None, loop.history)
    _finish(loop, group, result, model.state_dict(), "teacher")
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
    precision: str = "fp32",
    minibatch: MiniBatch | None = None,
    log_every: int = 10,
) -> TrainResult:
    """Distil ``teacher_logits`` (N, 2) into a student; ``config.fair`` = ``sp``/``eo`` runs RELIANT, ``none``
    vanilla KD. Model selection: best validation accuracy with patience. ``run_dir``, ``data_spec``, ``resume``,
    ``overwrite``, ``stop_after``, ``device``, ``precision``, ``minibatch`` and ``log_every`` as in
    :func:`train_teacher`. In mini-batches a batch whose surrogate nodes lack one sensitive group adds no bias term
    (the full-batch surrogate raises instead)."""
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
    group, mb, run, amp = _setup(
        "student", cfg, data, data_spec, run_dir, resume, overwrite, device, precision, minibatch
    )
    dev = group.device
    host = data
    data, teacher_logits = copy.copy(data).to(dev), teacher_logits.to(dev)  # the caller's graph stays where it is
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
    reliant = Reliant(cfg.fair, cfg.alpha, proxy, cfg.proxy_view, proxy_opt, forward=amp.forward, step=amp.step)

    teacher_logits = teacher_logits.detach()
    teacher_prob = teacher_logits.softmax(-1)
    kd_mask = ~data.train_mask if cfg.kd_nodes == "non_train" else torch.ones_like(data.train_mask)
    labelled_train = data.train_mask & (data.y >= 0)
    fair_mask = surrogate_nodes(data, cfg.fair, cfg.fair_nodes)
    kd_index, train_index, val_index = _index(kd_mask), _index(labelled_train), _index(data.val_mask & (data.y >= 0))
    modules = {"student": student, "proxy": proxy}
    loop = _Loop(modules, optimizers, run, checkpoint_every, progress, "distill", group=group, amp=amp)

    if mb is None:  # the full-batch loop (the default on one process)

        def kd_loss(logits: torch.Tensor) -> torch.Tensor:
            if cfg.kd == "euclidean":
                loss = euclidean_kd_loss(logits[kd_index], teacher_prob[kd_index])
            else:
                loss = kl_kd_loss(logits[kd_index], teacher_logits[kd_index], cfg.temperature)
            if cfg.ce_weight:
                loss = loss + cfg.ce_weight * F.cross_entropy(logits[train_index], data.y[train_index])
            return loss

        def step() -> dict[str, Any]:
            kd, bias = reliant.student_step(
                student, opt, data.x, data.edge_index, kd_loss, data.sens, data.y, fair_mask, sync=False
            )
            rec = {"kd": kd, "bias": bias}
            pb = reliant.proxy_step(student, data.x, data.edge_index, data.sens, data.y, fair_mask, sync=False)
            if pb is not None:
                rec["proxy_bias"] = pb
            return rec

        def predict() -> torch.Tensor:
            student.eval()
            with torch.no_grad():
                return amp.forward(student, reliant.student_input(data.x), data.edge_index)

        def val() -> torch.Tensor:
            return _accuracy(predict(), data.y, val_index)

    else:
        exact = _Subgraphs(host, [-1] * receptive_hops(cfg.student, cfg.num_layers), dev, mb.backend)
        sub = exact if mb.num_neighbors is None else _Subgraphs(host, mb.num_neighbors, dev, mb.backend)
        used = kd_mask | fair_mask | (labelled_train if cfg.ce_weight else torch.zeros_like(kd_mask))
        seeds, val_nodes = _index(used).cpu(), val_index.cpu()
        eo_mask = fair_mask & (data.y == 1) if cfg.fair == "eo" else fair_mask
        proxy_step = cfg.fair != "none" and proxy.learnable

        def fwd(x: torch.Tensor, ei: torch.Tensor, n_id: torch.Tensor) -> torch.Tensor:
            """The student on its input (the proxy held fixed, as in :meth:`Reliant.student_step`)."""
            return amp.forward(student, reliant.student_input(x, n_id).detach(), ei)

        def batch_losses(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """This process's share of the global KD loss and surrogate of one global batch."""
            w = kd_mask[ids].float()
            if cfg.kd == "euclidean":  # ‖P_s − P_t‖ over the batch's KD nodes
                sq = ((logits.softmax(-1) - teacher_prob[ids]) ** 2 * w[:, None]).sum()
                kd = group.sum(sq).sqrt()
            else:  # KL, mean over the batch's KD nodes, × T²
                t = cfg.temperature
                rows = F.kl_div(
                    F.log_softmax(logits / t, -1),
                    F.log_softmax(teacher_logits[ids] / t, -1),
                    log_target=True,
                    reduction="none",
                ).sum(-1)
                kd = group.sum((rows * w).sum()) / group.all_reduce(w.sum()).clamp(min=1) * t**2
            if cfg.ce_weight:
                wt = labelled_train[ids].float()
                ce = F.cross_entropy(logits, data.y[ids].clamp(min=0), reduction="none")
                kd = kd + cfg.ce_weight * group.sum((ce * wt).sum()) / group.all_reduce(wt.sum()).clamp(min=1)
            return kd, _global_gap(logits.softmax(-1), data.sens[ids], eo_mask[ids], group, cfg.fair)

        def step() -> dict[str, Any]:
            _seed_epoch(cfg.seed, loop.current, group.rank)
            sub.generator.manual_seed((cfg.seed * 1_000_003 + loop.current) * 1009 + group.rank)
            sums = {"kd": torch.zeros((), device=dev), "bias": torch.zeros((), device=dev)}
            if proxy_step:
                sums["proxy_bias"] = torch.zeros((), device=dev)
            steps = 0
            params = [p for p in student.parameters() if p.requires_grad]
            for mine, _ in _global_batches(seeds, mb.batch_size, cfg.seed, loop.current, group):
                ids, k = mine.to(dev), len(mine)
                x, ei, n_id = sub(mine) if k else (None, None, None)
                student.train()
                opt.zero_grad(set_to_none=True)
                kd, bias = batch_losses(fwd(x, ei, n_id)[:k] if k else _no_rows(dev), ids)
                amp.step("student", kd + reliant.alpha * bias, opt, group)
                sums["kd"], sums["bias"] = sums["kd"] + kd.detach(), sums["bias"] + bias.detach()
                if proxy_step:
                    for p in params:
                        p.requires_grad_(False)
                    try:
                        proxy_opt.zero_grad(set_to_none=True)
                        logits = amp.forward(student, proxy.augment(x, "node", n_id), ei)[:k] if k else _no_rows(dev)
                        _, pb = batch_losses(logits, ids)
                        amp.step("proxy", -reliant.alpha * pb, proxy_opt, group)
                    finally:
                        for p in params:
                            p.requires_grad_(True)
                    sums["proxy_bias"] = sums["proxy_bias"] + pb.detach()
                steps += 1
            return {k: v / steps for k, v in sums.items()}

        def val() -> torch.Tensor:
            student.eval()
            return _minibatch_accuracy(fwd, exact, val_nodes, data.y, group, mb.batch_size)

        def predict() -> torch.Tensor:
            student.eval()
            return _minibatch_logits(fwd, exact, data.num_nodes, group, mb.batch_size)

    loop.run_epochs(cfg.epochs, cfg.patience, step, val, stop_after, _sync_every(group, log_every))
    logits = predict().cpu()
    metrics = fairness_report(logits, host.y.cpu(), host.sens.cpu(), host.test_mask.cpu())
    result = TrainResult(student, logits, metrics, loop.best_epoch, loop.epoch, loop.best_val, proxy, loop.history)
    state = {**{f"student.{k}": v for k, v in student.state_dict().items()}}
    state.update({f"proxy.{k}": v for k, v in proxy.state_dict().items()})
    _finish(loop, group, result, state, "student")
    return result


def _no_rows(device: torch.device) -> torch.Tensor:
    return torch.zeros(0, 2, device=device)


def _global_gap(prob: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor, group: _Group, fair: str) -> torch.Tensor:
    """RELIANT's surrogate over a global batch: Σ_c (mean_{s=0} H̃(P_c) − mean_{s=1} H̃(P_c))², the group sums and
    counts added over processes (``mask`` already restricted to label 1 for ``eo``); 0 for ``none`` or when a group
    is absent from the batch."""
    if fair == "none":
        return prob.new_zeros(())
    h = legendre_step(prob)
    sums, counts = [], []
    for g in (0, 1):
        w = (mask & (sens == g)).to(h.dtype)
        sums.append(group.sum((h * w[:, None]).sum(0)))
        counts.append(group.all_reduce(w.sum().detach().clone()))
    gap = ((sums[0] / counts[0].clamp(min=1) - sums[1] / counts[1].clamp(min=1)) ** 2).sum()
    return torch.where((counts[0] > 0) & (counts[1] > 0), gap, torch.zeros_like(gap))
