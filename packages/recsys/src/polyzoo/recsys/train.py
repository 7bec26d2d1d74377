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
from collections.abc import Callable, Iterable
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


def build_model(spec: TrainSpec, num_rows: int, num_fields: int) -> nn.Module:
    """``spec.model`` in :data:`MODELS` -> module mapping ids ``(B, num_fields)`` to logits ``(B,)``."""
    sparse = spec.optimizer in ("gftrl", "adagrad")
    kwargs = dict(spec.model_kwargs)
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
