"""The training loop every domain reuses, on HF Accelerate.

Why Accelerate: one code path runs on one CPU process, DDP over several processes or nodes (``accelerate
launch`` or ``torchrun``; gloo on CPU), and mixed precision, while leaving the loop itself in plain PyTorch so
that domains can pass any model, loss and data. Checkpointing is our own (safetensors + JSON, atomic), not
``Accelerator.save_state`` (which pickles optimizer and RNG state).

A run follows the run contract of :mod:`polyzoo.shared.run`: ``config.json`` (the result-determining training
settings plus whatever the caller adds under ``extra_config``), ``metrics.jsonl`` and complete checkpoints
``checkpoints/step_XXXXXXXX/`` (``model.safetensors``, ``optimizer.safetensors`` + ``trainer_state.json`` with the
optimizer/scheduler structure, step, epoch and position in the epoch, and ``rng_rank<r>.*`` per process). Rerunning
with the same config resumes; another config is refused before anything is written, unless ``overwrite``.

Exact resume: data order comes from a sampler seeded by (seed, epoch), each sample's randomness (augmentation)
from its own seed (:class:`polyzoo.shared.seed.SeededSamples`), the position inside the epoch is stored, and every
process's random state is restored, so a run killed at any step and resumed ends with the same weights as an
uninterrupted one, with any number of loader workers (on CPU; on GPU up to non-deterministic kernels).
Trackers (TensorBoard, W&B, MLflow) go through Accelerate (``log_with``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_model, save_file, save_model
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from polyzoo.shared.io import load_safetensors, pack_tensors, read_json, unpack_tensors, write_json_atomic
from polyzoo.shared.options import resolve_device
from polyzoo.shared.run import RunDir, find_last_checkpoint
from polyzoo.shared.seed import SeededSamples, get_rng_state, seed_everything, set_rng_state

__all__ = ["EpochSampler", "TrainConfig", "Trainer", "find_last_checkpoint"]

log = logging.getLogger(__name__)

# TrainConfig fields that do not change the trained weights: recorded in config.json under "run", not compared
RUN_ONLY_FIELDS = (
    "name",
    "runs_dir",
    "run_dir",
    "eval_batch_size",
    "num_workers",
    "cpu",
    "device",
    "log_with",
    "log_every",
    "eval_every_epochs",
    "checkpoint_every",
    "keep_checkpoints",
    "progress",
)
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16", "no": "no"}


@dataclasses.dataclass
class TrainConfig:
    """Settings of a training run (saved to ``config.json``).

    ``max_steps`` (optimizer steps) bounds the run when set, otherwise ``epochs`` does.
    ``checkpoint_every`` = 0 writes a checkpoint only at the end.
    """

    name: str = "run"
    runs_dir: str = "runs"
    run_dir: str | None = None  # the run folder; default runs_dir/name
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int | None = None
    shuffle: bool = True
    drop_last: bool = False
    num_workers: int | None = 0  # loader worker processes; None: 4 on CUDA (up to the CPU count), 0 on the CPU
    seed: int = 0
    deterministic: bool = False
    gradient_accumulation_steps: int = 1
    grad_clip_norm: float | None = None
    mixed_precision: str = "no"  # "no" (fp32), "bf16", "fp16"
    cpu: bool = False  # force the CPU (same as device="cpu")
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"
    log_with: str = "none"  # an Accelerate tracker: "tensorboard", "wandb", "mlflow" or "none"
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
        self.mixed_precision = PRECISIONS.get(self.mixed_precision, self.mixed_precision)
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(
                f"TrainConfig.mixed_precision must be 'fp32', 'bf16' or 'fp16', got {self.mixed_precision!r}"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"TrainConfig.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.run_dir is None:
            self.run_dir = str(Path(self.runs_dir) / self.name)

    def result_config(self) -> dict[str, Any]:
        """The fields that determine the trained weights (compared on resume)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_ONLY_FIELDS}

    def run_config(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k in RUN_ONLY_FIELDS}


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


class _Window:
    """Train loss and step extras summed on the device between two log records, read (one host synchronisation,
    the mean over processes) only every ``log_every`` steps. A non-finite loss is counted on the device too and
    raised when the window is read, before any checkpoint is written, naming the window's first step."""

    def __init__(self, device: torch.device):
        self.device = device
        self.clear()

    def clear(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.bad = torch.zeros((), dtype=torch.long, device=self.device)
        self.extra: dict[str, Any] = {}
        self.n = 0
        self.first_step: int | None = None

    def add(self, loss: torch.Tensor, extra: Mapping[str, Any], step: int) -> None:
        value = loss.detach().float()
        self.loss += value
        self.bad += (~torch.isfinite(value)).long()
        for k, v in extra.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.extra[k] = self.extra.get(k, 0.0) + v
        self.n += 1
        self.first_step = step if self.first_step is None else self.first_step

    def read(self, acc: Accelerator, name: str) -> dict[str, float]:
        """The window's means (averaged over processes); raises FloatingPointError on a non-finite loss."""
        keys = sorted(self.extra)
        values = torch.stack(
            [self.loss, self.bad.float(), *(torch.as_tensor(self.extra[k], device=self.device) for k in keys)]
        )
        values = acc.reduce(values, reduction="sum").tolist() if acc.num_processes > 1 else values.tolist()
        if values[1] > 0:
            raise FloatingPointError(
                f"{name}: non-finite loss in the steps {self.first_step}..{self.first_step + self.n - 1}"
                f" (mean {values[0] / (self.n * acc.num_processes)})"
            )
        scale = 1.0 / (self.n * acc.num_processes)
        return {"loss": values[0] * scale, **{k: v * scale for k, v in zip(keys, values[2:], strict=True)}}


class Trainer:
    """Fit and evaluate a model with seeding, progress bar, metrics log, atomic checkpoints and exact resume.

    Args:
        model: any ``nn.Module``.
        optimizer: its optimizer.
        train_data: a map-style ``Dataset`` (the trainer builds the loader so that it can order and resume it).
        config: :class:`TrainConfig`.
        loss_fn: ``loss_fn(outputs, targets)`` for the default step (batches are ``(inputs, targets)``).
        step_fn: ``step_fn(model, batch) -> loss`` or ``(loss, {name: value})``, for any other batch layout; values
            may be 0-d tensors (summed on the device and read every ``log_every`` steps, averaged over the window
            and the processes, like the loss).
        eval_data: dataset evaluated at the end of every ``eval_every_epochs`` epochs and by :meth:`evaluate`.
        predict_fn: ``predict_fn(model, batch) -> (outputs, targets)`` for evaluation (default: ``(model(x), y)``).
        metrics_fn: ``metrics_fn(outputs, targets) -> {name: float}`` on the whole gathered evaluation set
            (default: mean ``loss_fn`` and, for class logits, accuracy).
        scheduler: an LR scheduler stepped after each optimizer step.
        collate_fn: passed to the data loaders.
        extra_config: JSON-serializable facts saved into ``config.json`` (model hyperparameters, data...).

    The loop reads nothing back from the device between log records: losses and step values are summed on the
    device and read every ``log_every`` steps (and before a checkpoint), a non-finite loss is raised then.
    ``callbacks`` (``cb(trainer, record)``) run after every optimizer step with the latest record read.
    Under fp16 PyTorch's ``GradScaler`` still reads its overflow flag every step (bf16 and fp32 do not).
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
        device = "cpu" if config.cpu else resolve_device(config.device)
        cpu = device == "cpu"
        if device.startswith("cuda:"):
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ValueError(
                    f"--device {config.device}: one GPU per process is chosen by the launcher (LOCAL_RANK) when "
                    "several processes run; use --device cuda or auto (restrict GPUs with CUDA_VISIBLE_DEVICES)"
                )
            torch.cuda.set_device(int(device.split(":")[1]))
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=None if config.log_with == "none" else config.log_with,
            project_dir=str(self.config.run_dir),
        )
        self.sampler = EpochSampler(len(train_data), config.shuffle, config.seed)
        self.train_samples = SeededSamples(train_data, config.seed)
        pin = self.accelerator.device.type == "cuda"
        workers = config.num_workers
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if pin else 0
        train_loader = DataLoader(
            self.train_samples,
            batch_size=config.batch_size,
            sampler=self.sampler,
            drop_last=config.drop_last,
            num_workers=workers,
            collate_fn=collate_fn,
            pin_memory=pin,
            # own generator: creating an iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(config.seed),
        )
        eval_loader = None
        if eval_data is not None:
            eval_loader = DataLoader(
                eval_data,
                batch_size=config.eval_batch_size or config.batch_size,
                shuffle=False,
                num_workers=workers,
                collate_fn=collate_fn,
                pin_memory=pin,
                generator=torch.Generator().manual_seed(config.seed),
            )
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(model, optimizer, train_loader)
        self.eval_loader = self.accelerator.prepare(eval_loader) if eval_loader is not None else None
        self.scheduler = scheduler
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0  # batches this process has consumed in the current epoch
        self.callbacks: list[Callable[[Trainer, dict[str, float]], None]] = []
        self.run = RunDir(
            self.config.run_dir,
            {"train": self.config.result_config(), **self.extra_config},
            run_info={"train": self.config.run_config(), "num_processes": self.accelerator.num_processes},
            is_main=self.is_main,
        )

    # ----------------------------------------------------------------------------------------- properties
    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

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
        self.run.log_metrics(record)
        if self.config.log_with != "none":
            values = {f"{record.get('split', 'train')}/{k}": v for k, v in record.items() if isinstance(v, int | float)}
            self.accelerator.log(values, step=record.get("step"))

    # --------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXXX`` atomically (every process its random state, the main process the
        rest) and prune old ones; returns its path."""
        acc = self.accelerator
        final = self.run.checkpoint_path(self.global_step)
        tmp = self.run.partial_checkpoint_path(self.global_step)
        acc.wait_for_everyone()
        if self.is_main:
            self.run.clean_partial()
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        rng_json, rng_tensors = pack_tensors(get_rng_state(), "rng")
        save_file(rng_tensors, tmp / f"rng_rank{acc.process_index}.safetensors")
        write_json_atomic(tmp / f"rng_rank{acc.process_index}.json", rng_json)
        acc.wait_for_everyone()
        if self.is_main:

            def write(folder: Path) -> None:  # the processes' random states are already in it
                save_model(self.unwrapped_model, str(folder / "model.safetensors"))
                state = {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                }
                state_json, state_tensors = pack_tensors(state, "state")
                save_file(state_tensors, folder / "optimizer.safetensors")
                write_json_atomic(
                    folder / "trainer_state.json",
                    {
                        "global_step": self.global_step,
                        "epoch": self.epoch,
                        "batches_in_epoch": self.batches_in_epoch,
                        "num_processes": acc.num_processes,
                        "state": state_json,
                    },
                )

            self.run.save_checkpoint(self.global_step, write, keep=self.config.keep_checkpoints, start_clean=False)
        acc.wait_for_everyone()
        return final

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
        state = unpack_tensors(meta["state"], load_safetensors(path / "optimizer.safetensors"))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        rank = self.accelerator.process_index
        rng_tensors = load_safetensors(path / f"rng_rank{rank}.safetensors")
        rng = unpack_tensors(read_json(path / f"rng_rank{rank}.json"), rng_tensors)
        set_rng_state(rng)
        self.global_step = meta["global_step"]
        self.epoch = meta["epoch"]
        self.batches_in_epoch = meta["batches_in_epoch"]

    # ---------------------------------------------------------------------------------------------- fit
    def check_run(self, resume: bool = True, overwrite: bool = False) -> str:
        """What :meth:`fit` will do with the run folder (``"new"``, ``"resume"``, ``"restart"``), writing
        nothing; raises :class:`polyzoo.shared.run.RunError` when the folder holds another run."""
        self.run.resume, self.run.overwrite = bool(resume), overwrite
        return self.run.check()

    def fit(self, resume: bool | str | Path = True, overwrite: bool = False) -> dict[str, float]:
        """Train until ``max_steps`` or ``epochs``; returns the last evaluation metrics (or the last train
        metrics when there is no evaluation set).

        Args:
            resume: True resumes from the run's newest complete checkpoint when the run folder holds the same
                config (starting fresh when there is none); False starts a new run (refused on a folder with
                checkpoints unless ``overwrite``); a path resumes from that checkpoint folder.
            overwrite: start again in a folder that holds another run (or checkpoints, with ``resume=False``).
        """
        cfg, acc = self.config, self.accelerator
        self.run.resume, self.run.overwrite = bool(resume), overwrite
        self.run.open()
        acc.wait_for_everyone()
        ckpt = Path(resume) if isinstance(resume, str | Path) else self.run.checkpoint
        if ckpt is not None:
            self.load_checkpoint(ckpt)
            self.run.trim_metrics(self.global_step)
            log.info("resumed %s from %s (step %d)", cfg.name, ckpt, self.global_step)
        if cfg.log_with != "none":
            self.accelerator.init_trackers(cfg.name, config=self.config.result_config())
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
        window = _Window(acc.device)
        while self.global_step < total and self.epoch < cfg.epochs:
            self.train_loader.set_epoch(self.epoch)
            self.train_samples.set_epoch(self.epoch)
            loader = self.train_loader
            if self.batches_in_epoch:
                loader = acc.skip_first_batches(self.train_loader, self.batches_in_epoch)
            self.model.train()
            for batch in loader:
                with acc.accumulate(self.model):
                    out = self.step_fn(self.model, batch)
                    loss, extra = out if isinstance(out, tuple) else (out, {})
                    window.add(loss, extra, self.global_step + 1)  # on the device: no host synchronisation
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.grad_clip_norm:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.batches_in_epoch += 1
                if not acc.sync_gradients:
                    continue
                if self.scheduler is not None:
                    self.scheduler.step()
                self.global_step += 1
                bar.update(1)
                checkpoint_now = bool(cfg.checkpoint_every) and self.global_step % cfg.checkpoint_every == 0
                if self.global_step % cfg.log_every == 0 or self.global_step == total or checkpoint_now:
                    # the only host synchronisation of the loop: every log_every steps (and before a checkpoint)
                    record = window.read(acc, cfg.name)
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
                        window.clear()
                    last = record
                for cb in self.callbacks:
                    cb(self, last)
                if checkpoint_now:
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
        if find_last_checkpoint(self.run_dir) != self.run.checkpoint_path(self.global_step):
            self.save_checkpoint()
        if cfg.log_with != "none":
            self.accelerator.end_training()
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
            # gather_for_metrics drops the samples the distributed sampler repeated to even out the last batch
            out, tgt = self.accelerator.gather_for_metrics((out, tgt))
            outputs.append(out.detach().float())  # kept on the device: one transfer at the end, not one per batch
            targets.append(tgt)
        if not outputs:
            raise ValueError(f"{self.config.name}: the evaluation set is empty")
        out_all, tgt_all = torch.cat(outputs).cpu(), torch.cat(targets).cpu()
        metrics = {k: float(v) for k, v in self.metrics_fn(out_all, tgt_all).items()}
        self._log({"step": self.global_step, "epoch": self.epoch, "split": "eval", "samples": len(tgt_all), **metrics})
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
