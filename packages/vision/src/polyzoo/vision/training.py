"""Training, evaluation and ONNX export of any timm model (ours included) on :mod:`polyzoo.vision.data`.

Training runs on the shared :class:`polyzoo.shared.engine.Trainer` (atomic checkpoints, exact resume) with
timm's optimizer factory (``create_optimizer_v2``: AdamW by default, no weight decay on norms/biases) and a
per-step cosine schedule with linear warm-up (a ``LambdaLR``: the Trainer steps its scheduler once per
optimizer step, which timm's epoch-based schedulers do not fit). Metrics: loss, top-1 and top-5 accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import timm
import torch
from timm.optim import create_optimizer_v2
from torch import nn

import polyzoo.vision  # noqa: F401  (registers our models)
from polyzoo.shared.engine import TrainConfig, Trainer, find_last_checkpoint
from polyzoo.shared.io import atomic_path, load_safetensors, read_json
from polyzoo.shared.metrics import topk_metrics
from polyzoo.vision.data import ClassificationData, load_data

__all__ = [
    "TrainSettings",
    "build_model",
    "evaluate_run",
    "export_onnx",
    "fit_model",
    "load_run_model",
    "topk_metrics",
    "train",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainSettings:
    """What ``polyzoo vision train`` needs besides the model name and data."""

    name: str = "vision"
    runs_dir: str = "runs"
    run_dir: str | None = None  # the run folder; default runs_dir/name
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    opt: str = "adamw"
    warmup_steps: int = 0
    img_size: int | None = None
    limit: int | None = None
    seed: int = 0
    drop_path_rate: float | None = None
    checkpoint_every: int = 0
    label_smoothing: float = 0.0
    progress: bool = True
    device: str = "auto"
    precision: str = "fp32"
    log_with: str = "none"
    num_workers: int | None = None  # None: 4 on CUDA, 0 on the CPU

    def result_settings(self) -> dict[str, Any]:
        """The settings that determine the trained weights (``config.json``'s compared part)."""
        run_only = {"name", "runs_dir", "run_dir", "checkpoint_every", "progress", "device", "log_with", "num_workers"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in run_only}

    @property
    def folder(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path(self.runs_dir) / self.name


def build_model(name: str, num_classes: int, in_chans: int, img_size: int, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the image size passed to models that take one (ViTs and SoT)."""
    if name.startswith(("sot_", "vit_", "deit_")):
        kwargs.setdefault("img_size", img_size)
    return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _cosine(total: int, warmup: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train(
    model_name: str,
    data: str | ClassificationData,
    settings: TrainSettings | None = None,
    resume: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Train ``model_name`` on ``data`` (a spec for :func:`~polyzoo.vision.data.load_data` or loaded data) into
    the run folder (``settings.run_dir``, default ``runs_dir/name``) under the run contract
    (:mod:`polyzoo.shared.run`): the same settings resume, others are refused unless ``overwrite``. Returns the
    evaluation metrics (``eval_top1``, ``eval_top5`` with 5 classes or more, ``eval_loss``)."""
    s = dataclasses.replace(settings or TrainSettings())
    data_spec = data if isinstance(data, str) else data.name
    ds = load_data(data, img_size=s.img_size, seed=s.seed, limit=s.limit) if isinstance(data, str) else data
    torch.manual_seed(s.seed)
    mkw = dict(model_kwargs or {})
    if s.drop_path_rate is not None:
        mkw["drop_path_rate"] = s.drop_path_rate
    model = build_model(model_name, ds.num_classes, ds.in_chans, ds.img_size, **mkw)
    extra = {
        "vision": {
            "model": model_name,
            "data": data_spec,
            "num_classes": ds.num_classes,
            "in_chans": ds.in_chans,
            "img_size": ds.img_size,
            "model_kwargs": mkw,
            "settings": s.result_settings(),
        }
    }
    return fit_model(model, ds, s, resume=resume, extra_config=extra, overwrite=overwrite)


def fit_model(
    model: nn.Module,
    ds: ClassificationData,
    settings: TrainSettings,
    resume: bool = True,
    extra_config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Train any classifier ``model`` on ``ds`` with ``settings`` (timm optimizer, per-step cosine schedule,
    the shared Trainer) and return its evaluation metrics (``eval_top1``, ``eval_top5``, ``eval_loss``)."""
    s = settings
    optimizer = create_optimizer_v2(model, opt=s.opt, lr=s.lr, weight_decay=s.weight_decay)
    cfg = TrainConfig(
        name=s.name,
        run_dir=str(s.folder),
        epochs=s.epochs,
        max_steps=s.max_steps,
        batch_size=s.batch_size,
        seed=s.seed,
        checkpoint_every=s.checkpoint_every,
        progress=s.progress,
        device=s.device,
        mixed_precision=s.precision,
        log_with=s.log_with,
        num_workers=s.num_workers,
        log_every=max(1, min(10, s.max_steps or 10)),
    )
    trainer = Trainer(
        model,
        optimizer,
        ds.train,
        cfg,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=s.label_smoothing),
        eval_data=ds.eval,
        metrics_fn=topk_metrics,
        extra_config=extra_config,
    )
    # the schedule's length in optimizer steps of this launch: the prepared loader holds one process's share of
    # each epoch, so N processes (each with batch_size samples a step) take N times fewer steps per epoch
    total = s.max_steps or trainer.total_steps()
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(total, s.warmup_steps))
    trainer.check_run(resume, overwrite)
    return trainer.fit(resume=resume, overwrite=overwrite)


def load_run_model(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a ``polyzoo vision train`` run with its newest checkpoint's weights, and the run's facts."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: RUN must be a folder written by `polyzoo vision train`")
    facts = (read_json(cfg_path).get("config") or {}).get("vision")
    if facts is None:
        raise ValueError(f"{cfg_path}: no 'vision' section (not a `polyzoo vision train` run)")
    ckpt = find_last_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}/checkpoints: no checkpoint yet")
    model = build_model(
        facts["model"], facts["num_classes"], facts["in_chans"], facts["img_size"], **facts["model_kwargs"]
    )
    model.load_state_dict(load_safetensors(ckpt / "model.safetensors"))
    return model.eval(), facts


@torch.no_grad()
def evaluate_run(
    model: nn.Module,
    data: ClassificationData,
    batch_size: int = 256,
    progress: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    num_workers: int | None = None,
) -> dict[str, float]:
    """Loss, top-1 and top-5 of ``model`` on ``data.eval`` (``device``: auto|cpu|cuda[:N]; ``precision``:
    fp32, or bf16/fp16 autocast; ``num_workers``: loader processes, None: 4 on CUDA, 0 on the CPU)."""
    from tqdm.auto import tqdm

    from polyzoo.shared.options import autocast_dtype, resolve_device

    dev = torch.device(resolve_device(device))
    dtype = autocast_dtype(precision)
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if dev.type == "cuda" else 0
    loader = torch.utils.data.DataLoader(
        data.eval, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    model = model.to(dev).eval()
    outs, tgts = [], []
    with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
        for x, y in tqdm(loader, desc="eval", disable=not progress):
            outs.append(model(x.to(dev, non_blocking=True)).float())  # on the device: one transfer at the end
            tgts.append(y)
    return topk_metrics(torch.cat(outs).cpu(), torch.cat(tgts))


def export_onnx(
    model: nn.Module, path: str | Path, input_size: tuple[int, int, int, int], check: bool = True, opset: int = 17
) -> float | None:
    """Export ``model`` (eval mode) to ONNX at ``path`` (atomically) with a dynamic batch axis.

    With ``check``, runs the file with onnxruntime on a random input and returns the largest absolute difference
    from the torch outputs (raises ``RuntimeError`` when it exceeds 1e-3 relative to the output scale).
    """
    model = model.eval()
    x = torch.randn(*input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    if not check:
        return None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(max(2, input_size[0]), *input_size[1:])
    with torch.no_grad():
        ref = model(x2).numpy()
    got = sess.run(None, {"input": x2.numpy()})[0]
    diff = float(abs(got - ref).max())
    scale = float(abs(ref).max()) or 1.0
    if diff > 1e-3 * max(scale, 1.0):
        raise RuntimeError(f"{path}: onnxruntime output differs from torch by {diff:.3g} (output scale {scale:.3g})")
    return diff


def describe(facts: dict[str, Any]) -> str:
    return json.dumps({k: facts[k] for k in ("model", "data", "num_classes", "in_chans", "img_size")})
