"""Training, multi-view testing and prediction of :class:`polyzoo.video.models.VideoClassifier` on the shared
:class:`polyzoo.shared.engine.Trainer` (atomic checkpoints, exact resume, metrics log).

The recipe follows TCP's TSN setting where it applies: SGD (momentum 0.9, weight decay 1e-4), gradient
clipping at 20, the new layers (TCP head and classifier) at ``lr_x_factor`` × the base learning rate (5 for
TSN), step decay by 10 at the given epochs. Batches are uint8 clips; normalization happens in the step.
Multi-view evaluation fuses the views as the clip protocol's official test code does (:func:`fuse_views`: TCP's
maximum of the softmax, or mmaction2's mean of the softmax / logits).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyzoo.shared.engine import TrainConfig, Trainer, find_last_checkpoint
from polyzoo.shared.io import read_json
from polyzoo.shared.metrics import topk_metrics
from polyzoo.shared.seed import seed_everything
from polyzoo.video.data import ClipConfig, VideoDataset, normalize
from polyzoo.video.models import ModelConfig, VideoClassifier, build_model

__all__ = [
    "FUSIONS",
    "PROTOCOL_FUSION",
    "OptimConfig",
    "build_trainer",
    "fuse_views",
    "load_run",
    "multiview_predict_fn",
    "param_groups",
    "predict_clips",
    "step_fn",
    "topk_metrics",
]

log = logging.getLogger(__name__)

FUSIONS = ("max_prob", "prob", "score")
"""View fusion at test time (:func:`fuse_views`): maximum of the softmax over views (TCP's ``test_models.py
--softmax``), mean of the softmax (mmaction2 ``average_clips='prob'``), mean of the logits (``'score'``)."""
PROTOCOL_FUSION = {"tcp": "max_prob", "mmaction2": "prob"}
"""Each sampling protocol's (:data:`polyzoo.video.data.PROTOCOLS`) default view fusion."""


@dataclasses.dataclass
class OptimConfig:
    """Optimizer settings. ``optimizer``: "sgd" (TCP's) or "adamw"."""

    optimizer: str = "sgd"
    lr: float = 0.015
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_x_factor: float = 5.0
    lr_steps: tuple[int, ...] = ()  # epochs at which the learning rate is divided by 10


def param_groups(model: VideoClassifier, base_lr: float, lr_x_factor: float) -> list[dict[str, Any]]:
    """Backbone at ``base_lr``; head (TCP) and classifier at ``base_lr · lr_x_factor``."""
    new = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    old = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    return [{"params": old, "lr": base_lr}, {"params": new, "lr": base_lr * lr_x_factor}]


def _optimizer(model: VideoClassifier, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.lr, cfg.lr_x_factor)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"OptimConfig.optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")


def step_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(uint8 clips (N, T, 3, H, W), labels (N,)) → cross-entropy loss and batch accuracy (a 0-d tensor left on
    the device: the engine reads it with the loss every ``log_every`` steps)."""
    clips, labels = batch
    logits = model(normalize(clips))
    loss = F.cross_entropy(logits, labels)
    return loss, {"acc": (logits.detach().argmax(1) == labels).float().mean()}


def fuse_views(logits: torch.Tensor, fusion: str = "max_prob") -> torch.Tensor:
    """Fuse per-view logits (N, V, K) into (N, K) log-scores.

    ``fusion``: "max_prob", the maximum over views of the softmax (TCP's ``test_models.py`` with ``--softmax``, as
    every TCP K400/Mini-K200/HMDB51 test script runs it: ``softmax`` then ``max`` over the clips × crops views);
    "prob", the mean of the softmax (mmaction2 ``average_clips='prob'``, its TSN/TSM configs); "score", the mean
    of the logits (mmaction2 ``average_clips='score'``; TSM's test script without ``--softmax``). The result is
    returned as log-scores (log of the fused probabilities for "max_prob"/"prob") so that cross-entropy stays
    meaningful; the ranking of classes is the official one. With one view all three rank alike.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"view fusion must be one of {FUSIONS}, got {fusion!r}")
    logits = logits.float()
    if fusion == "score":
        return logits.mean(1)
    probs = logits.softmax(-1)
    fused = probs.amax(1) if fusion == "max_prob" else probs.mean(1)
    return fused.clamp_min(1e-12).log()


def multiview_predict_fn(fusion: str = "max_prob") -> Callable:
    """Predictions fused over views: batches (N, V, T, 3, H, W) (or (N, T, 3, H, W), one view) → (N, K)
    log-scores; ``fusion`` as :func:`fuse_views` ("max_prob": TCP's; "prob"/"score": mmaction2's)."""
    if fusion not in FUSIONS:
        raise ValueError(f"view fusion must be one of {FUSIONS}, got {fusion!r}")

    def predict(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        clips, labels = batch
        if clips.dim() == 5:
            clips = clips.unsqueeze(1)
        n, v = clips.shape[:2]
        logits = model(normalize(clips.flatten(0, 1))).view(n, v, -1)
        return fuse_views(logits, fusion), labels

    return predict


def build_trainer(
    model_cfg: ModelConfig,
    clip_cfg: ClipConfig,
    train_data: VideoDataset,
    train_cfg: TrainConfig,
    optim_cfg: OptimConfig | None = None,
    eval_data: VideoDataset | None = None,
    fusion: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Trainer:
    """A :class:`Trainer` for a freshly built model; ``config.json`` records model, clip and optimizer settings
    so that :func:`load_run` rebuilds the model for testing and prediction. ``fusion``: view fusion of the
    evaluation (default: the clip protocol's, :data:`PROTOCOL_FUSION`)."""
    optim_cfg = dataclasses.replace(optim_cfg or OptimConfig())
    seed_everything(train_cfg.seed, train_cfg.deterministic)  # the initial weights follow --seed
    model = build_model(model_cfg)
    optimizer = _optimizer(model, optim_cfg)
    trainer = Trainer(
        model,
        optimizer,
        train_data,
        train_cfg,
        step_fn=step_fn,
        eval_data=eval_data,
        predict_fn=multiview_predict_fn(fusion or PROTOCOL_FUSION[clip_cfg.protocol]),
        metrics_fn=topk_metrics,
        extra_config={
            "model": dataclasses.asdict(model_cfg),
            "clip": dataclasses.asdict(clip_cfg),
            "optim": dataclasses.asdict(optim_cfg),
            **(extra or {}),
        },
    )
    if optim_cfg.lr_steps:
        # epochs → optimizer steps of this launch: the prepared loader holds one process's share of an epoch
        per_epoch = trainer._steps_per_epoch()
        milestones = [e * per_epoch for e in optim_cfg.lr_steps]
        trainer.scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return trainer


def load_run(run: str | Path, checkpoint: str | Path | None = None) -> tuple[VideoClassifier, ModelConfig, ClipConfig]:
    """Rebuild a trained model from a run folder (``config.json`` + newest checkpoint, or ``checkpoint``)."""
    from safetensors.torch import load_model

    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run}: not a polyzoo video run (missing config.json)")
    meta = read_json(cfg_path).get("config") or {}
    for key in ("model", "clip"):
        if key not in meta:
            raise ValueError(f"{cfg_path}: missing the {key!r} section written by `polyzoo video train`")
    model_cfg = ModelConfig(**meta["model"])
    clip_data = dict(meta["clip"])
    clip_data["scales"] = tuple(clip_data.get("scales", ClipConfig.scales))
    clip_cfg = ClipConfig(**clip_data)
    ckpt = Path(checkpoint) if checkpoint else find_last_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"{run}: no checkpoint under {run / 'checkpoints'}")
    model = build_model(model_cfg)
    missing, unexpected = load_model(model, str(ckpt / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(f"{ckpt / 'model.safetensors'}: keys do not match: missing {missing}, unexpected {unexpected}")
    model.eval()
    return model, model_cfg, clip_cfg


@torch.no_grad()
def predict_clips(model: VideoClassifier, clips: torch.Tensor, fusion: str = "max_prob") -> torch.Tensor:
    """Log-scores (N, K) for uint8 clips (N, V, T, 3, H, W) or (N, T, 3, H, W), views fused by ``fusion``."""
    model.eval()
    scores, _ = multiview_predict_fn(fusion)(model, (clips, torch.zeros(clips.shape[0], dtype=torch.long)))
    return scores
