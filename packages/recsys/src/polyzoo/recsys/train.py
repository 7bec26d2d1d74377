"""Model/optimiser factories, metrics and a small resumable training loop for streaming data.

**Why not the shared ``Trainer``**: it needs a map-style dataset (random access, epoch length), while the CTR
streams are ``IterableDataset``s over files larger than memory. This loop is small and follows the same run
contract (:mod:`polyzoo.shared.run`): ``config.json`` holds the training spec and the data spec (another one is
refused before anything is written, unless ``overwrite``); every ``checkpoint_every`` steps a complete checkpoint
``checkpoints/step_XXXXXXXX/`` is written (``model.safetensors``, ``optimizers.safetensors`` + ``state.json``
with epoch, step and the resume **line** of the stream) and a ``metrics.jsonl`` record; resuming restarts the
stream just after the last consumed line, so a resumed run sees exactly the batches a straight run would (single
loader process; the streams do not shuffle). Batches are moved to the model's device (CPU or CUDA).

Loss: sigmoid cross-entropy, summed over the batch as in the official code (``reduction="sum"``) for the FTRL
optimisers, averaged (``"mean"``) for Adam.

Metrics: exact ROC AUC and mean log loss from scikit-learn (the official code uses ``tf.metrics.auc`` with
10,000 thresholds and careful interpolation, an approximation of the same quantity).

Optimisers (``optimizer=``): ``"gftrl"`` = the paper's combined optimisation (group-lasso FTRL on the
embedding rows, element-wise L1 FTRL on everything else, TF ``FtrlOptimizer`` semantics); ``"adam"`` (dense
embeddings); ``"adagrad"`` (sparse-friendly).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyzoo.recsys.models import DCN, FM, BaselineConfig, DeepFM, LogisticRegression, XDeepFM, XDeepInt, XDeepIntConfig
from polyzoo.recsys.optim import FTRL, GroupFTRL, tf_ftrl_kwargs
from polyzoo.shared.io import load_safetensors, pack_tensors, read_json, unpack_tensors, write_json_atomic
from polyzoo.shared.run import RunDir, find_last_checkpoint

__all__ = [
    "MODELS",
    "TrainSpec",
    "build_model",
    "build_optimizers",
    "evaluate",
    "fit",
    "load_checkpoint_weights",
    "metrics",
]

log = logging.getLogger(__name__)

MODELS = ("xdeepint", "lr", "fm", "deepfm", "dcn", "dcnv1", "xdeepfm")


@dataclasses.dataclass
class TrainSpec:
    """Everything a run needs besides the data. ``model_kwargs`` go to the model's config dataclass."""

    model: str = "xdeepint"
    embedding_dim: int = 16
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimizer: str = "gftrl"
    lr: float = 1e-3  # adam / adagrad
    weight_decay: float = 0.0
    # GFTRL on embeddings (official nn1.py: α 0.02, β 1, λ1 10, λ2 10)
    gftrl_alpha: float = 0.02
    gftrl_beta: float = 1.0
    gftrl_l1: float = 10.0
    gftrl_l2: float = 10.0
    # FTRL on the PIN (official: tf FtrlOptimizer lr 0.02, l1 0.1, l2 0.1, initial accumulator 0.1)
    ftrl_alpha: float = 0.02
    ftrl_l1: float = 0.1
    ftrl_l2: float = 0.1
    epochs: int = 1
    batch_size: int = 4096
    checkpoint_every: int = 200
    seed: int = 0


def build_model(
    spec: TrainSpec, num_rows: int, num_fields: int, field_widths: Sequence[int] | None = None
) -> nn.Module:
    """``spec.model`` in :data:`MODELS` -> module mapping ids ``(B, Σ field_widths)`` (``(B, num_fields)`` without
    bag fields) to logits ``(B,)``. ``field_widths``: id columns per field, > 1 for a multi-hot bag (mean)."""
    sparse = spec.optimizer in ("gftrl", "adagrad")
    kwargs = dict(spec.model_kwargs)
    if field_widths is not None and any(w != 1 for w in field_widths):
        kwargs["field_widths"] = tuple(field_widths)
    if spec.model == "xdeepint":
        for key in ("head_layers", "head_subspaces"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        cfg = XDeepIntConfig(embedding_dim=spec.embedding_dim, sparse_embedding=sparse, **kwargs)
        return XDeepInt(num_rows, num_fields, cfg)
    classes = {"lr": LogisticRegression, "fm": FM, "deepfm": DeepFM, "dcn": DCN, "dcnv1": DCN, "xdeepfm": XDeepFM}
    if spec.model not in classes:
        raise ValueError(f"unknown model {spec.model!r}; expected one of {MODELS}")
    if spec.model == "dcnv1":
        kwargs["dcn_variant"] = "v1"
    for key in ("hidden_units", "cin_layers"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    cfg = BaselineConfig(embedding_dim=spec.embedding_dim, sparse_embedding=sparse, **kwargs)
    return classes[spec.model](num_rows, num_fields, cfg)


def _split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    emb = list(model.embedding_parameters())  # type: ignore[operator]
    ids = {id(p) for p in emb}
    return emb, [p for p in model.parameters() if id(p) not in ids]


def build_optimizers(model: nn.Module, spec: TrainSpec) -> list[torch.optim.Optimizer]:
    """The optimisers of ``spec.optimizer`` over the model's embedding and dense parameter groups."""
    emb, dense = _split_params(model)
    if spec.optimizer == "gftrl":
        return [
            GroupFTRL(emb, alpha=spec.gftrl_alpha, beta=spec.gftrl_beta, l1=spec.gftrl_l1, l2=spec.gftrl_l2),
            FTRL(dense, **tf_ftrl_kwargs(spec.ftrl_alpha, spec.ftrl_l1, spec.ftrl_l2)),
        ]
    if spec.optimizer == "adam":
        return [torch.optim.Adam(emb + dense, lr=spec.lr, weight_decay=spec.weight_decay)]
    if spec.optimizer == "adagrad":
        return [torch.optim.Adagrad(emb, lr=spec.lr), torch.optim.Adagrad(dense, lr=spec.lr)]
    raise ValueError(f"unknown optimizer {spec.optimizer!r}; expected gftrl, adam or adagrad")


def metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC and mean log loss from scikit-learn (AUC is NaN when only one class is present)."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(labels, dtype=np.float64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(labels, probs)) if 0 < labels.sum() < len(labels) else math.nan
    return {"auc": auc, "logloss": float(log_loss(labels, probs, labels=[0, 1])), "rows": len(labels)}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
    """AUC / log loss of ``model`` over a stream of batches."""
    model.eval()
    dev = _device(model)
    labels, probs = [], []
    for batch in batches:
        probs.append(torch.sigmoid(model(batch["ids"].to(dev))).cpu().numpy())
        labels.append(batch["label"].numpy())
    model.train()
    if not labels:
        raise ValueError("evaluation stream is empty")
    return metrics(np.concatenate(labels), np.concatenate(probs))


def _save_checkpoint(run: RunDir, model: nn.Module, optimizers: list[torch.optim.Optimizer], pos: dict) -> None:
    from safetensors.torch import save_file, save_model

    meta, tensors = pack_tensors([o.state_dict() for o in optimizers], "opt")

    def write(folder: Path) -> None:
        save_model(model, str(folder / "model.safetensors"))
        save_file(tensors, folder / "optimizers.safetensors")
        write_json_atomic(folder / "state.json", {**pos, "optimizers": meta})

    if run.last_checkpoint() != run.checkpoint_path(pos["step"]):
        run.save_checkpoint(pos["step"], write, keep=2)


def load_checkpoint_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a run's last complete checkpoint."""

    ckpt = find_last_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{Path(run_dir) / 'checkpoints'}: no checkpoint; run `polyzoo recsys train` first")
    return load_safetensors(ckpt / "model.safetensors")


def fit(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    make_stream: Callable[[int], Iterable[dict[str, Any]]],
    spec: TrainSpec,
    run_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    stop_after_steps: int | None = None,
    *,
    data_spec: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train for ``spec.epochs`` passes over ``make_stream(start_line)``; checkpoint and resume in ``run_dir``
    under the run contract (``config.json`` = ``spec`` + ``data_spec``).

    ``make_stream(start_line)`` must return the training batches starting after 1-based line ``start_line``.
    ``stop_after_steps`` stops early (after a checkpoint), e.g. to test resuming. Returns
    ``{"step", "epoch", "loss"}`` of the last step.

    Raises:
        ValueError: the stream yields no batch (an empty or fully filtered input), instead of a NaN loss.
    """
    from safetensors.torch import load_model

    reduction = "sum" if spec.optimizer == "gftrl" else "mean"
    run = None
    step, epoch, line, last_loss = 0, 0, 0, math.nan
    if run_dir is not None:
        config = {"train": dataclasses.asdict(spec), "data": data_spec or {}}
        run = RunDir(run_dir, config, resume=resume, overwrite=overwrite).open()
        if run.checkpoint is not None:
            ckpt = run.checkpoint
            load_model(model, str(ckpt / "model.safetensors"))
            state = read_json(ckpt / "state.json")
            opt_states = unpack_tensors(state["optimizers"], load_safetensors(ckpt / "optimizers.safetensors"))
            for opt, opt_state in zip(optimizers, opt_states, strict=True):
                opt.load_state_dict(opt_state)
            step, epoch, line = int(state["step"]), int(state["epoch"]), int(state["line"])
            log.info("resumed %s at epoch %d step %d line %d", ckpt, epoch, step, line)

    def save() -> None:
        if run is not None:
            _save_checkpoint(run, model, optimizers, {"step": step, "epoch": epoch, "line": line})

    dev = _device(model)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="train", unit="batch", initial=step)
    model.train()
    while epoch < spec.epochs:
        steps_before = step
        for batch in make_stream(line):
            logits = model(batch["ids"].to(dev, non_blocking=True))
            label = batch["label"].to(dev, non_blocking=True)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, label, reduction=reduction)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimizers:
                opt.step()
            step += 1
            line = int(batch["line"])
            logged = spec.checkpoint_every and step % spec.checkpoint_every == 0
            if bar is not None or logged or stop_after_steps is not None:  # one host sync, only when it is used
                last_loss = float(loss.detach()) / (len(batch["label"]) if reduction == "sum" else 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", epoch=epoch)
            if logged:
                save()
                if run is not None:
                    run.log_metrics({"step": step, "epoch": epoch, "loss": last_loss})
            if stop_after_steps is not None and step >= stop_after_steps:
                save()
                return {"step": step, "epoch": epoch, "loss": last_loss}
        if step == steps_before and line == 0:
            raise ValueError("the training data yielded no batch (empty input, or every row filtered out)")
        if step > steps_before:  # the epoch's last loss
            last_loss = float(loss.detach()) / (len(batch["label"]) if reduction == "sum" else 1)
        epoch, line = epoch + 1, 0
        save()
    if bar is not None:
        bar.close()
    return {"step": step, "epoch": epoch, "loss": last_loss}


# ---------------------------------------------------------------------------------------------------------------
# Training from a prepared folder (Parquet shards), on one device or several processes


@dataclasses.dataclass
class InputSpec:
    """How a prepared folder is fed (:mod:`polyzoo.recsys.parquet`); part of the run config: each of these
    changes the batches, hence the result.

    ``workers``: DataLoader worker processes per rank (0 = the main process). ``shuffle_buffer``: rows of a
    shuffle window; the default 65,536 (10 MB of 39 int32 ids) keeps the window in a 32 MB L3 cache, where the
    random row gather runs ~3x faster than from a 262,144-row (40 MB) window (measured on this machine).
    ``patience``: stop after this many epochs without a better validation AUC (0: never stop early; the best
    checkpoint is kept either way). ``precision``: ``fp32``, or ``bf16`` / ``fp16`` autocast of the forward pass.
    """

    shuffle: bool = True
    shuffle_buffer: int = 65_536
    workers: int = 0
    patience: int = 2
    eval_batch_size: int = 8192
    precision: str = "fp32"


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device(dev: torch.device) -> torch.device:
    """Where collectives run: CPU tensors for gloo, the model's device for NCCL."""
    return dev if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def _gather_rows(t: torch.Tensor, world: int) -> torch.Tensor:
    """Concatenate, in rank order, a tensor whose first dimension differs between ranks (all_gather padded)."""
    dist = torch.distributed
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(x) for x in sizes]
    longest = max(counts)
    pad = torch.zeros((longest - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    full = torch.cat([t, pad])
    parts = [torch.empty_like(full) for _ in range(world)]
    dist.all_gather(parts, full)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


def sync_gradients(
    dense: Sequence[nn.Parameter],
    sparse: Sequence[nn.Parameter],
    world: int,
    has_grad: Sequence[bool] | None = None,
) -> list[bool]:
    """Make every rank's gradients the **sum** over ranks, as if one process had run the union of the batches.

    Dense gradients: one flat ``all_reduce``. Which dense parameters get a gradient at all (a parameter the forward
    never uses keeps ``grad = None``, as in one process) is all-reduced as flags the first time and returned;
    pass them back as ``has_grad`` to skip that host read on later steps. Sparse row gradients
    (``FieldEmbedding(sparse=True)``): each rank's coalesced ``(rows, values)`` are all-gathered and summed into
    one coalesced sparse gradient — what ``DistributedDataParallel`` cannot do with NCCL (no sparse all-reduce
    there) and what a dense all-reduce of the table would do at the cost of the whole table per step. Every rank
    then applies the same optimiser step to the same weights, so the replicas stay identical without
    broadcasting weights. The gather needs each rank's row count on the host (one small read per step; torch's
    sparse embedding backward and ``coalesce`` synchronise there anyway).
    """
    dist = torch.distributed
    flags = list(has_grad) if has_grad is not None else []
    if dense:
        dev = _comm_device(dense[0].device)
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dev) for p in dense]
        if has_grad is None:
            parts.append(torch.tensor([float(p.grad is not None) for p in dense], device=dev, dtype=dense[0].dtype))
        flat = torch.cat(parts)
        dist.all_reduce(flat)
        if has_grad is None:
            flags = [f > 0 for f in flat[-len(dense) :].tolist()]
        at = 0
        for p, flag in zip(dense, flags, strict=True):
            n = p.numel()
            p.grad = flat[at : at + n].view_as(p).to(p.device) if flag else None
            at += n
    for p in sparse:
        dev = _comm_device(p.device)
        if p.grad is None:
            rows = torch.zeros(0, dtype=torch.int64, device=dev)
            values = torch.zeros((0, *p.shape[1:]), dtype=p.dtype, device=dev)
        else:
            g = p.grad.coalesce() if p.grad.is_sparse else p.grad.to_sparse(1).coalesce()
            rows, values = g.indices()[0].to(dev), g.values().to(dev)
        rows, values = _gather_rows(rows, world), _gather_rows(values, world)
        if rows.numel() == 0:
            p.grad = None
            continue
        grad = torch.sparse_coo_tensor(rows[None].to(p.device), values.to(p.device), p.shape, check_invariants=False)
        p.grad = grad.coalesce()  # indices come from coalesced gradients: valid by construction
    return flags


@torch.no_grad()
def evaluate_prepared(
    model: nn.Module,
    data: Any,
    split: str,
    batch_size: int = 8192,
    workers: int = 0,
    precision: str = "fp32",
) -> dict[str, float]:
    """AUC / log loss of ``model`` over one split of a prepared folder, every row exactly once: each rank scores
    its parts and the (label, probability) pairs are gathered in rank order, so every rank returns the metrics
    of the whole split. One host synchronisation at the end, none per batch."""
    from polyzoo.recsys.parquet import ParquetBatches
    from polyzoo.shared.options import autocast_dtype

    rank, world = _world()
    dev = _device(model)
    ds = ParquetBatches(data, split, batch_size, workers=workers, rank=rank, world_size=world)
    loader = _loader(ds, workers, dev)
    dtype = autocast_dtype(precision)
    model.eval()
    labels, probs = [], []
    for batch in loader:
        if batch["label"].numel() == 0:
            continue
        with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(batch["ids"].to(dev, non_blocking=True))
        probs.append(torch.sigmoid(logits.float()))
        labels.append(batch["label"].to(dev, non_blocking=True))
    model.train()
    label = torch.cat(labels) if labels else torch.zeros(0, device=dev)
    prob = torch.cat(probs) if probs else torch.zeros(0, device=dev)
    if world > 1:
        cdev = _comm_device(dev)
        label, prob = _gather_rows(label.to(cdev), world), _gather_rows(prob.to(cdev), world)
    if label.numel() == 0:
        raise ValueError(f"{data.root}: split {split!r} has no rows to evaluate")
    return metrics(label.cpu().numpy(), prob.cpu().numpy())


def _loader(ds: Any, workers: int, dev: torch.device) -> torch.utils.data.DataLoader:
    # spawn, not fork: polars' thread pool does not survive a fork
    return torch.utils.data.DataLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        multiprocessing_context="spawn" if workers else None,
    )


def load_best_or_last_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a run's best checkpoint (highest validation AUC) when it has one, else its last one."""
    best = Path(run_dir) / "best" / "model.safetensors"
    if best.is_file():
        return load_safetensors(best)
    return load_checkpoint_weights(run_dir)


def fit_prepared(
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    data: Any,
    spec: TrainSpec,
    inputs: InputSpec | None = None,
    run_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = False,
    stop_after_steps: int | None = None,
    *,
    overwrite: bool = False,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on the ``train`` split of a prepared folder (:class:`polyzoo.recsys.parquet.PreparedData`) for
    ``spec.epochs`` epochs; evaluate ``valid`` after each epoch, keep the best model in ``RUN_DIR/best/`` and
    stop after ``inputs.patience`` epochs without a better validation AUC.

    Single process or several (``torch.distributed`` initialised, e.g. under ``torchrun``): each rank reads only
    its parts of the split; at step t every rank takes its t-th item (an empty batch once its parts are done)
    and :func:`sync_gradients` sums the gradients, so a step is one step on the union of the ranks' batches
    (``reduction="mean"``: divided by the union's row count, which every rank knows from the plan). Steps whose
    union is empty are skipped on every rank. Rank 0 writes the run folder; the replicas stay identical.

    Resume: ``state.json`` of a checkpoint records epoch, step and ``item`` (items of the epoch consumed on every
    rank); the epoch's order is a pure function of the seed, the epoch and the plan, so a resumed run continues
    with exactly the batches a straight run would see. Returns ``{"step", "epoch", "loss", "best", "stopped"}``.
    """
    from safetensors.torch import load_model, save_model

    from polyzoo.recsys.parquet import ParquetBatches
    from polyzoo.shared.io import atomic_dir
    from polyzoo.shared.options import autocast_dtype

    inputs = inputs or InputSpec()
    rank, world = _world()
    dev = _device(model)
    reduction = "sum" if spec.optimizer == "gftrl" else "mean"
    dtype = autocast_dtype(inputs.precision)
    scaler = torch.amp.GradScaler(dev.type) if inputs.precision == "fp16" else None
    if scaler is not None:  # initialise its scale now: a rank whose first batch is empty still steps with it
        scaler.scale(torch.zeros((), device=dev))
    emb_ids = {id(p) for p in model.embedding_parameters()}  # type: ignore[operator]
    sparse = [p for p in model.parameters() if id(p) in emb_ids] if spec.optimizer in ("gftrl", "adagrad") else []
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    if world > 1:  # same initial weights everywhere (the seed already makes them equal; this makes it certain)
        for t in model.state_dict().values():
            buf = t.to(_comm_device(dev))
            torch.distributed.broadcast(buf, 0)
            t.copy_(buf.to(t.device))

    state: dict[str, Any] = {"step": 0, "epoch": 0, "item": 0, "best_auc": None, "best_epoch": None, "bad": 0}
    state["stopped"] = False
    run = None
    if run_dir is not None:
        config = {"train": dataclasses.asdict(spec), "input": dataclasses.asdict(inputs), "data": data.spec()}
        config["input"]["world_size"] = world
        kwargs = {"resume": resume, "overwrite": overwrite, "run_info": run_info, "engine_files": ("best",)}
        if rank == 0:
            run = RunDir(run_dir, config, is_main=True, **kwargs).open()
        if world > 1:
            torch.distributed.barrier()
        if rank != 0:
            run = RunDir(run_dir, config, is_main=False, **kwargs).open()
        if run.checkpoint is not None:
            ckpt = run.checkpoint
            load_model(model, str(ckpt / "model.safetensors"), device=str(dev))
            saved = read_json(ckpt / "state.json")
            opt_states = unpack_tensors(saved["optimizers"], load_safetensors(ckpt / "optimizers.safetensors"))
            for opt, opt_state in zip(optimizers, opt_states, strict=True):
                opt.load_state_dict(opt_state)
            state.update({k: saved[k] for k in state if k in saved})
            log.info("resumed %s at epoch %d step %d item %d", ckpt, state["epoch"], state["step"], state["item"])

    def save() -> None:
        if run is not None and rank == 0:
            _save_checkpoint(run, model, optimizers, dict(state))

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(desc="train", unit="batch", initial=state["step"])
    has_valid = data.rows("valid") > 0
    last_loss = math.nan
    loss = None
    has_grad: list[bool] | None = None
    to_mean = 1.0
    model.train()
    while state["epoch"] < spec.epochs and not state["stopped"]:
        epoch = state["epoch"]
        ds = ParquetBatches(
            data,
            "train",
            spec.batch_size,
            shuffle=inputs.shuffle,
            seed=spec.seed,
            epoch=epoch,
            shuffle_buffer=inputs.shuffle_buffer,
            workers=inputs.workers,
            rank=rank,
            world_size=world,
            start_item=state["item"],
        )
        sizes = ds.item_sizes()
        total = max(len(s) for s in sizes)
        if total == 0:
            raise ValueError(f"{data.root}: the train split has no rows")
        mine = len(sizes[rank])
        it = iter(_loader(ds, inputs.workers, dev)) if state["item"] < mine else iter(())
        for t in range(state["item"], total):
            batch = next(it) if t < mine else None
            union = sum(s[t] for s in sizes if t < len(s))
            state["item"] = t + 1
            if union == 0:
                continue
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            if batch is not None and batch["label"].numel() > 0:
                ids = batch["ids"].to(dev, non_blocking=True)
                label = batch["label"].to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    logits = model(ids)
                if world == 1:  # the same expression as the stream loop `fit`
                    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), label, reduction=reduction)
                else:
                    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), label, reduction="sum")
                    if reduction == "mean":
                        loss = loss / union
                to_mean = (union if reduction == "mean" and world > 1 else 1) / (
                    len(label) if reduction == "sum" or world > 1 else 1
                )  # logged loss: the mean over this rank's batch
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if world > 1:
                has_grad = sync_gradients(dense, sparse, world, has_grad)
            for opt in optimizers:
                if scaler is not None:
                    scaler.step(opt)
                else:
                    opt.step()
            if scaler is not None:
                scaler.update()
            state["step"] += 1
            step = state["step"]
            logged = spec.checkpoint_every and step % spec.checkpoint_every == 0
            if (bar is not None or logged or stop_after_steps is not None) and loss is not None:
                last_loss = float(loss.detach()) * to_mean
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", epoch=epoch)
            if logged:
                save()
                if run is not None:
                    run.log_metrics({"step": step, "epoch": epoch, "loss": last_loss})
            if stop_after_steps is not None and step >= stop_after_steps:
                save()
                return {"step": step, "epoch": epoch, "loss": last_loss, "best": state["best_auc"], "stopped": False}
        for _ in it:  # nothing should be left; drains the loader's workers
            pass
        if loss is not None:
            last_loss = float(loss.detach()) * to_mean
        record: dict[str, Any] = {"step": state["step"], "epoch": epoch, "loss": last_loss}
        if has_valid:
            res = evaluate_prepared(model, data, "valid", inputs.eval_batch_size, inputs.workers, inputs.precision)
            record.update({f"valid_{k}": v for k, v in res.items()})
            auc = res["auc"]
            if state["best_auc"] is None or (not math.isnan(auc) and auc > state["best_auc"]):
                state.update(best_auc=auc, best_epoch=epoch, bad=0)
                if run is not None and rank == 0:
                    with atomic_dir(run.path / "best") as tmp:
                        save_model(model, str(tmp / "model.safetensors"))
                        write_json_atomic(tmp / "state.json", {"epoch": epoch, "step": state["step"], **res})
            else:
                state["bad"] += 1
                if inputs.patience and state["bad"] >= inputs.patience:
                    state["stopped"] = True
                    log.info(
                        "early stop after epoch %d: best validation AUC %.5f at epoch %d",
                        epoch,
                        state["best_auc"],
                        state["best_epoch"],
                    )
        if run is not None:
            run.log_metrics(record)
        state["epoch"], state["item"] = epoch + 1, 0
        save()
    if bar is not None:
        bar.close()
    return {
        "step": state["step"],
        "epoch": state["epoch"],
        "loss": last_loss,
        "best": state["best_auc"],
        "stopped": state["stopped"],
    }
