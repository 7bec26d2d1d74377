"""The training loop every domain reuses, on HF Accelerate.

Why Accelerate: one code path runs on one CPU process, DDP over several processes or nodes (``accelerate
launch`` or ``torchrun``; gloo on CPU), and mixed precision, while leaving the loop itself in plain PyTorch so
that domains can pass any model, loss and data. Checkpointing is our own (safetensors + JSON, atomic), not
``Accelerator.save_state`` (which pickles optimizer and RNG state).

A run lives in ``<runs_dir>/<name>/``:

- ``config.json``: the training configuration plus whatever the caller adds (model hyperparameters, data);
- ``metrics.jsonl``: one JSON object per logged step or evaluation (appended; trimmed back on resume);
- ``checkpoints/step_XXXXXXXX/``: ``model.safetensors``, ``optimizer.safetensors`` + ``trainer_state.json``
  (optimizer/scheduler structure, step, epoch, position in the epoch) and ``rng_rank<r>.*`` per process.
  Each checkpoint folder is written under a temporary name and renamed when complete.

Exact resume: data order comes from a sampler seeded by (seed, epoch), the position inside the epoch is
stored, and every process's random state is restored, so an interrupted and resumed run ends with the same
weights as an uninterrupted one (on CPU; on GPU up to non-deterministic kernels).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from polyzoo.shared.io import (
    atomic_path,
    pack_tensors,
    publish_dir,
    read_json,
    unpack_tensors,
    write_json_atomic,
)
from polyzoo.shared.seed import get_rng_state, seed_everything, set_rng_state

__all__ = ["EpochSampler", "TrainConfig", "Trainer", "find_last_checkpoint"]

log = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^step_(\d{8})$")


@dataclasses.dataclass
class TrainConfig:
    """Settings of a training run (saved to ``config.json``).

    ``max_steps`` (optimizer steps) bounds the run when set, otherwise ``epochs`` does.
    ``checkpoint_every`` = 0 writes a checkpoint only at the end.
    """

    name: str = "run"
    runs_dir: str = "runs"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int | None = None
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False
    gradient_accumulation_steps: int = 1
    grad_clip_norm: float | None = None
    mixed_precision: str = "no"  # "no", "bf16", "fp16"
    cpu: bool = False
    log_every: int = 10
    eval_every_epochs: int = 1
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            raise ValueError(f"TrainConfig.name must be a plain folder name ([A-Za-z0-9._-]+), got {self.name!r}")
        for field in ("epochs", "batch_size", "gradient_accumulation_steps", "log_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"TrainConfig.{field} must be >= 1, got {getattr(self, field)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be >= 1 or None, got {self.max_steps}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(
                f"TrainConfig.mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}"
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


class EpochSampler(Sampler[int]):
    """Indices of a dataset in an order fixed by (seed, epoch): a fresh permutation per epoch when
    ``shuffle``, otherwise 0..n−1. Deterministic across processes, so it can be sharded by Accelerate."""

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def find_last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    ckpt_root = Path(run_dir) / "checkpoints"
    if not ckpt_root.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := _CKPT_RE.match(p.name)))
    return found[-1][1] if found else None


def _allow_new_precision(mixed_precision: str) -> None:
    """Accelerate keeps one process-wide state and refuses a second Accelerator with another mixed precision.
    Trainers built one after another in one process (a script comparing settings, the tests) may differ, so the
    precision part of that state is cleared; the distributed part (PartialState) is kept."""
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=False)


def _default_step(model: nn.Module, batch: Any, loss_fn: Callable) -> torch.Tensor:
    inputs, targets = batch
    return loss_fn(model(inputs), targets)


def _default_predict(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = batch
    return model(inputs), targets


class Trainer:
    """Fit and evaluate a model with seeding, progress bar, metrics log, atomic checkpoints and exact resume.

    Args:
        model: any ``nn.Module``.
        optimizer: its optimizer.
        train_data: a map-style ``Dataset`` (the trainer builds the loader so that it can order and resume it).
        config: :class:`TrainConfig`.
        loss_fn: ``loss_fn(outputs, targets)`` for the default step (batches are ``(inputs, targets)``).
        step_fn: ``step_fn(model, batch) -> loss`` or ``(loss, {name: float})``, for any other batch layout.
        eval_data: dataset evaluated at the end of every ``eval_every_epochs`` epochs and by :meth:`evaluate`.
        predict_fn: ``predict_fn(model, batch) -> (outputs, targets)`` for evaluation (default: ``(model(x), y)``).
        metrics_fn: ``metrics_fn(outputs, targets) -> {name: float}`` on the whole gathered evaluation set
            (default: mean ``loss_fn`` and, for class logits, accuracy).
        scheduler: an LR scheduler stepped after each optimizer step.
        collate_fn: passed to the data loaders.
        extra_config: JSON-serializable facts saved into ``config.json`` (model hyperparameters, data...).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_data: Dataset,
        config: TrainConfig,
        *,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        step_fn: Callable[[nn.Module, Any], Any] | None = None,
        eval_data: Dataset | None = None,
        predict_fn: Callable[[nn.Module, Any], tuple[Any, Any]] | None = None,
        metrics_fn: Callable[[Any, Any], Mapping[str, float]] | None = None,
        scheduler: Any | None = None,
        collate_fn: Callable | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ):
        if step_fn is None and loss_fn is None:
            raise ValueError("Trainer: give loss_fn (for (inputs, targets) batches) or step_fn")
        self.config = dataclasses.replace(config)
        self.extra_config = dict(extra_config or {})
        self.loss_fn = loss_fn
        self.step_fn = step_fn or (lambda m, b: _default_step(m, b, loss_fn))
        self.predict_fn = predict_fn or _default_predict
        self.metrics_fn = metrics_fn or self._default_metrics
        seed_everything(config.seed, config.deterministic)
        _allow_new_precision(config.mixed_precision)
        self.accelerator = Accelerator(
            cpu=config.cpu,
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
        )
        self.sampler = EpochSampler(len(train_data), config.shuffle, config.seed)
        train_loader = DataLoader(
            train_data,
            batch_size=config.batch_size,
            sampler=self.sampler,
            drop_last=config.drop_last,
            num_workers=config.num_workers,
            collate_fn=collate_fn,
            # own generator: creating an iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(config.seed),
        )
        eval_loader = None
        if eval_data is not None:
            eval_loader = DataLoader(
                eval_data,
                batch_size=config.eval_batch_size or config.batch_size,
                shuffle=False,
                num_workers=config.num_workers,
                collate_fn=collate_fn,
                generator=torch.Generator().manual_seed(config.seed),
            )
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(model, optimizer, train_loader)
        self.eval_loader = self.accelerator.prepare(eval_loader) if eval_loader is not None else None
        self.scheduler = scheduler
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0  # batches this process has consumed in the current epoch
        self.callbacks: list[Callable[[Trainer, dict[str, float]], None]] = []

    # ----------------------------------------------------------------------------------------- properties
    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _steps_per_epoch(self) -> int:
        return max(1, len(self.train_loader) // self.config.gradient_accumulation_steps)

    def total_steps(self) -> int:
        by_epochs = self._steps_per_epoch() * self.config.epochs
        return min(by_epochs, self.config.max_steps) if self.config.max_steps else by_epochs

    # ------------------------------------------------------------------------------------------- logging
    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        path = self.run_dir / "metrics.jsonl"
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def _trim_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (they belong to the interrupted part of the run)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.is_main or not path.exists():
            return
        kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in kept))

    # --------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXXX`` atomically and prune old ones; returns its path."""
        acc = self.accelerator
        final = self.run_dir / "checkpoints" / f"step_{self.global_step:08d}"
        tmp = final.with_name(f".{final.name}.partial")
        acc.wait_for_everyone()
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        rng_json, rng_tensors = pack_tensors(get_rng_state(), "rng")
        save_file(rng_tensors, tmp / f"rng_rank{acc.process_index}.safetensors")
        write_json_atomic(tmp / f"rng_rank{acc.process_index}.json", rng_json)
        if self.is_main:
            save_model(self.unwrapped_model, str(tmp / "model.safetensors"))
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            }
            state_json, state_tensors = pack_tensors(state, "state")
            save_file(state_tensors, tmp / "optimizer.safetensors")
            write_json_atomic(
                tmp / "trainer_state.json",
                {
                    "global_step": self.global_step,
                    "epoch": self.epoch,
                    "batches_in_epoch": self.batches_in_epoch,
                    "num_processes": acc.num_processes,
                    "state": state_json,
                },
            )
        acc.wait_for_everyone()
        if self.is_main:
            publish_dir(tmp, final)
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self) -> None:
        root = self.run_dir / "checkpoints"
        found = sorted(p for p in root.iterdir() if _CKPT_RE.match(p.name))
        for old in found[: max(0, len(found) - self.config.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore model, optimizer, scheduler, position and random state from a checkpoint folder."""
        path = Path(path)
        meta_path = path / "trainer_state.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: not a polyzoo checkpoint (missing trainer_state.json)")
        meta = read_json(meta_path)
        if meta["num_processes"] != self.accelerator.num_processes:
            raise ValueError(
                f"{path}: written by {meta['num_processes']} processes, resumed with "
                f"{self.accelerator.num_processes}; resume with the same number of processes"
            )
        missing, unexpected = load_model(self.unwrapped_model, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path / 'model.safetensors'}: keys do not match the model: missing {missing}, unexpected {unexpected}"
            )
        state = unpack_tensors(meta["state"], load_file(path / "optimizer.safetensors"))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        rank = self.accelerator.process_index
        rng = unpack_tensors(read_json(path / f"rng_rank{rank}.json"), load_file(path / f"rng_rank{rank}.safetensors"))
        set_rng_state(rng)
        self.global_step = meta["global_step"]
        self.epoch = meta["epoch"]
        self.batches_in_epoch = meta["batches_in_epoch"]

    # ---------------------------------------------------------------------------------------------- fit
    def _write_config(self, resumed_from: Path | None) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.run_dir / "config.json",
            {
                "train": dataclasses.asdict(self.config),
                "num_processes": self.accelerator.num_processes,
                "resumed_from": str(resumed_from) if resumed_from else None,
                **self.extra_config,
            },
        )

    def fit(self, resume: bool | str | Path = False) -> dict[str, float]:
        """Train until ``max_steps`` or ``epochs``; returns the last evaluation metrics (or the last train
        metrics when there is no evaluation set).

        Args:
            resume: True resumes from the run's newest checkpoint (starting fresh when there is none); a path
                resumes from that checkpoint folder.
        """
        cfg, acc = self.config, self.accelerator
        ckpt = None
        if resume:
            ckpt = find_last_checkpoint(self.run_dir) if resume is True else Path(resume)
            if ckpt is not None:
                self.load_checkpoint(ckpt)
                self._trim_metrics(self.global_step)
                log.info("resumed %s from %s (step %d)", cfg.name, ckpt, self.global_step)
        elif self.is_main and (self.run_dir / "metrics.jsonl").exists():
            (self.run_dir / "metrics.jsonl").unlink()
        self._write_config(ckpt)
        total = self.total_steps()
        last: dict[str, float] = {}
        bar = tqdm(
            total=total,
            initial=self.global_step,
            desc=cfg.name,
            disable=not (cfg.progress and self.is_main),
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        last_eval_step = -1
        window_loss, window_n = 0.0, 0
        while self.global_step < total and self.epoch < cfg.epochs:
            self.train_loader.set_epoch(self.epoch)
            loader = self.train_loader
            if self.batches_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, self.batches_in_epoch)
            self.model.train()
            for batch in loader:
                with acc.accumulate(self.model):
                    out = self.step_fn(self.model, batch)
                    loss, extra = out if isinstance(out, tuple) else (out, {})
                    if not torch.isfinite(loss.detach()):
                        raise FloatingPointError(
                            f"{cfg.name}: non-finite loss {loss.item()} at step {self.global_step + 1}"
                        )
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.grad_clip_norm:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.batches_in_epoch += 1
                window_loss += loss.detach().float().item()
                window_n += 1
                if not acc.sync_gradients:
                    continue
                if self.scheduler is not None:
                    self.scheduler.step()
                self.global_step += 1
                bar.update(1)
                record = {"loss": window_loss / window_n, **{k: float(v) for k, v in extra.items()}}
                if self.global_step % cfg.log_every == 0 or self.global_step == total:
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._log(
                        {
                            "step": self.global_step,
                            "epoch": self.epoch,
                            "split": "train",
                            "lr": float(lr),
                            "elapsed_s": round(time.perf_counter() - t0, 3),
                            **record,
                        }
                    )
                    bar.set_postfix(loss=f"{record['loss']:.4g}")
                    window_loss, window_n = 0.0, 0
                last = record
                for cb in self.callbacks:
                    cb(self, record)
                if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.global_step >= total:
                    break
            else:  # the epoch ran to its end
                self.epoch += 1
                self.batches_in_epoch = 0
                if self.eval_loader is not None and self.epoch % cfg.eval_every_epochs == 0:
                    last, last_eval_step = self.evaluate(), self.global_step
                continue
            break
        bar.close()
        if self.eval_loader is not None and last_eval_step != self.global_step:
            last = self.evaluate()
        if find_last_checkpoint(self.run_dir) != self.run_dir / "checkpoints" / f"step_{self.global_step:08d}":
            self.save_checkpoint()
        return last

    # ------------------------------------------------------------------------------------------ evaluate
    @torch.no_grad()
    def evaluate(self, loader: DataLoader | None = None) -> dict[str, float]:
        """Evaluate on ``eval_data`` (or a given prepared loader): predictions from every process are gathered
        and ``metrics_fn`` runs once on the whole set. Metrics are logged with ``split: "eval"``."""
        loader = loader or self.eval_loader
        if loader is None:
            raise ValueError("Trainer.evaluate: no eval_data was given")
        self.model.eval()
        outputs, targets = [], []
        for batch in loader:
            out, tgt = self.predict_fn(self.model, batch)
            out, tgt = self.accelerator.gather_for_metrics((out, tgt))
            outputs.append(out.float().cpu())
            targets.append(tgt.cpu())
        metrics = {k: float(v) for k, v in self.metrics_fn(torch.cat(outputs), torch.cat(targets)).items()}
        self._log({"step": self.global_step, "epoch": self.epoch, "split": "eval", **metrics})
        self.model.train()
        return {f"eval_{k}": v for k, v in metrics.items()}

    def _default_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.loss_fn is not None:
            metrics["loss"] = float(self.loss_fn(outputs, targets))
        if outputs.dim() == 2 and outputs.shape[1] > 1 and not targets.is_floating_point():
            metrics["accuracy"] = float((outputs.argmax(1) == targets).float().mean())
        if not metrics:
            metrics["n"] = float(len(targets))
        return metrics
