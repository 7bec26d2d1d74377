"""Language models for drumroll text: finetuning any local causal LM with transformers' ``Trainer`` (loss on the
completion only), a small GPT-2 with a character-level tokenizer trained from scratch (the unpretrained baseline),
and pretraining that small GPT-2 on local English text, after *Language Models are Drummers* (Zhang &
Callison-Burch, arXiv 2301.01162; official code https://github.com/zharry29/drums-with-llm).

Deviation: the paper finetunes OpenAI GPT-3 models (davinci, ada) through the legacy fine-tunes API, which cannot run
offline. Here the pretrained side is any causal LM the user has on disk (``--model PATH``), or our own small GPT-2
pretrained on local text (``pretrain_text``), so the transfer claim (text pretraining vs none) can be tested with the
same architecture and tokenizer on both sides. Nothing is ever fetched from a hub: every ``from_pretrained`` call
reads a local directory with ``local_files_only=True``.

Runs follow the run contract of :mod:`polyzoo.shared.run` with transformers' ``Trainer`` as the engine: ``config.json``
(the result-determining settings: optimisation, model source, data file and its hash), ``metrics.jsonl`` (written by
a ``TrainerCallback``), transformers' checkpoints ``checkpoint-<step>/`` (model, optimizer, scheduler, RNG states;
training resumes from the newest complete one, i.e. one with ``trainer_state.json``), then ``final/`` (model and
tokenizer, written atomically) and ``run.json`` (with ``global_step``). The same settings resume (a finished run is
returned as it is); other settings, more steps included, are refused before anything is written unless
``overwrite``. Device and precision are transformers' own (``use_cpu``, ``bf16``/``fp16``; see
:func:`select_device`), trackers its ``report_to``. Several processes: ``torchrun --nproc_per_node N -m
polyzoo.shared.cli music finetune ...`` (transformers' DDP; gloo on the CPU), each process taking ``--batch-size``
examples a step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LMTrainConfig",
    "SmallGPT2Config",
    "TextBlockDataset",
    "char_tokenizer",
    "finetune",
    "load_model",
    "new_small_gpt2",
    "pretrain_text",
    "read_text_corpus",
]

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")
# newline + printable ASCII: covers the drumroll format (o, -, SEP, END) and English text
CHARACTERS = ("\n", *(chr(i) for i in range(32, 127)))


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: one token per character of newline + printable ASCII, other
    characters map to ``<unk>``; ``<pad>`` = 0, ``<unk>`` = 1, ``<eos>`` = 2."""
    _offline()
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


@dataclasses.dataclass
class SmallGPT2Config:
    """The small GPT-2 trained from scratch or on local text (a character-level model)."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 2048  # a full example is about 1,860 characters
    dropout: float = 0.1


def new_small_gpt2(config: SmallGPT2Config, tokenizer) -> Any:
    """A randomly initialised ``GPT2LMHeadModel`` sized by ``config`` for ``tokenizer``'s vocabulary."""
    _offline()
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(cfg)


def load_model(path: str | os.PathLike) -> tuple[Any, Any]:
    """(model, tokenizer) from a local directory holding a causal LM and its tokenizer. Never touches a hub."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: not a local model directory (expected config.json, weights and tokenizer files, as written by "
            "save_pretrained); models are never downloaded"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def model_max_length(model) -> int | None:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    return None


@dataclasses.dataclass
class LMTrainConfig:
    """Optimisation settings for ``finetune`` and ``pretrain_text`` (transformers ``TrainingArguments`` subset)."""

    max_steps: int = 1000
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    lr_scheduler_type: str = "cosine"
    save_steps: int = 200
    save_total_limit: int = 2
    logging_steps: int = 20
    seed: int = 0
    progress: bool = True
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (transformers' mixed precision)
    log_with: str = "none"  # none | tensorboard | wandb | mlflow (transformers' report_to)
    num_workers: int | None = None  # data loader processes; None: 4 on CUDA, 0 on the CPU

    def result_config(self) -> dict[str, Any]:
        """The settings that determine the trained weights (compared with the run folder's config.json)."""
        run_only = {"save_steps", "save_total_limit", "logging_steps", "progress", "device", "log_with", "num_workers"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in run_only}


def select_device(device: str) -> str:
    """``--device`` for transformers' ``Trainer``, which takes ``cuda:0`` in one process (all visible GPUs through
    ``nn.DataParallel`` when there are several) and ``cuda:LOCAL_RANK`` under ``torchrun``: ``cpu`` is its
    ``use_cpu``; ``cuda:N`` in one process leaves only GPU N visible (``CUDA_VISIBLE_DEVICES``, so it must run before
    CUDA starts) and is refused under several processes, where the launcher gives each process its GPU. Returns
    ``"cpu"`` or ``"cuda"``."""
    import torch

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda:"):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"--device {device}: under several processes each takes the GPU of its LOCAL_RANK; use --device cuda "
                "(restrict GPUs with CUDA_VISIBLE_DEVICES)"
            )
        index = int(device.split(":")[1])
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [v.strip() for v in visible.split(",")] if visible else None
        if ids is not None and index >= len(ids):
            raise ValueError(f"--device {device}: CUDA_VISIBLE_DEVICES={visible} shows {len(ids)} GPU(s)")
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[index] if ids is not None else str(index)
        if torch.cuda.is_available() and torch.cuda.device_count() != 1:
            raise ValueError(
                f"--device {device}: CUDA had already started with {torch.cuda.device_count()} GPUs; set "
                f"CUDA_VISIBLE_DEVICES={index} instead"
            )
        device = "cuda"
    from polyzoo.shared.options import resolve_device

    return resolve_device(device)


def _training_arguments(out_dir: Path, cfg: LMTrainConfig):
    from transformers import TrainingArguments

    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision: expected fp32, bf16 or fp16, got {cfg.precision!r}")
    device = select_device(cfg.device)
    workers = (
        cfg.num_workers if cfg.num_workers is not None else (min(4, os.cpu_count() or 1) if device != "cpu" else 0)
    )
    return TrainingArguments(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none" if cfg.log_with == "none" else [cfg.log_with],
        use_cpu=device == "cpu",
        bf16=cfg.precision == "bf16",
        fp16=cfg.precision == "fp16",
        dataloader_num_workers=workers,
        dataloader_pin_memory=device != "cpu",
        remove_unused_columns=False,
        disable_tqdm=not cfg.progress,
        # transformers' default checks every step's loss for NaN/inf on the host (a GPU synchronisation per step) to
        # leave it out of the logged mean; off, the loss stays on the device until a log step and a non-finite
        # loss shows in the logged mean
        logging_nan_inf_filter=False,
    )


def completion_nll(logits, labels):
    """Per example: the summed negative log-likelihood of its labelled (completion) tokens and their count, (B, 2).
    Given to transformers' ``Trainer`` as ``preprocess_logits_for_metrics``, so only (B, 2) numbers per batch are
    gathered across processes (its ``gather_for_metrics`` drops the examples a distributed sampler repeated)."""
    import torch

    logits = logits[0] if isinstance(logits, tuple) else logits
    targets = labels[:, 1:]
    mask = targets != -100
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return torch.stack([(nll * mask).sum(1), mask.sum(1).float()], dim=1)


def completion_metrics(prediction) -> dict[str, float]:
    """``compute_metrics`` over the whole evaluation set: completion-token NLL (nats per token), its perplexity,
    and how many examples and tokens were scored."""
    import math

    import numpy as np

    per_example = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2)
    tokens = float(per_example[:, 1].sum())
    nll = float(per_example[:, 0].sum()) / max(tokens, 1.0)
    return {"nll": nll, "perplexity": math.exp(min(nll, 700.0)), "examples": len(per_example), "tokens": tokens}


def _checkpoint_step(path: Path) -> int | None:
    head, _, step = path.name.rpartition("-")
    return int(step) if head == "checkpoint" and step.isdigit() and path.is_dir() else None


def _latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest *complete* ``checkpoint-N/`` of a run: one holding ``trainer_state.json``, which transformers'
    ``Trainer`` writes last (after weights, optimizer, scheduler and RNG states). Partial folders (a run killed while
    saving) are skipped; those newer than the chosen one are removed, so that the resumed run can save there."""
    import shutil

    found = sorted((step, p) for p in out_dir.glob("checkpoint-*") if (step := _checkpoint_step(p)) is not None)
    complete = [(step, p) for step, p in found if (p / "trainer_state.json").is_file()]
    latest = complete[-1] if complete else None
    for step, p in found:
        if not (p / "trainer_state.json").is_file() and (latest is None or step > latest[0]):
            log.warning("%s: incomplete checkpoint (no trainer_state.json), removed", p)
            shutil.rmtree(p)
    return latest[1] if latest else None


def _trained_steps(out_dir: Path) -> int | None:
    """Optimizer steps behind ``final/``: run.json's ``global_step``, else None."""
    import json

    try:
        step = json.loads((out_dir / "run.json").read_text(encoding="utf-8")).get("global_step")
    except (OSError, ValueError):
        return None
    return step if isinstance(step, int) else None


def _metrics_callback(run: Any) -> Any:
    """A transformers ``TrainerCallback`` appending every log record to the run's ``metrics.jsonl``."""
    from transformers import TrainerCallback

    class RunMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
                run.log_metrics({"step": int(state.global_step), "split": split, **logs})

    return RunMetrics()


def _train(
    model,
    tokenizer,
    dataset,
    collate,
    out_dir: Path,
    cfg: LMTrainConfig,
    meta: dict,
    *,
    resume: bool = True,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    eval_dataset=None,
) -> Path:
    """Train with transformers' Trainer under the run contract (``config.json`` = ``cfg``'s result settings and
    ``meta``), resuming from the newest complete checkpoint; save ``final/``; returns it. A finished run with the
    same settings is returned as it is. With ``eval_dataset``, the trained model is then scored on it
    (:func:`completion_metrics`, once over the whole set, on any number of processes) into ``run.json``'s
    ``eval`` and ``metrics.jsonl``."""
    from transformers import Trainer

    from polyzoo.shared.io import atomic_dir, write_json_atomic
    from polyzoo.shared.run import RunDir

    run = RunDir(
        out_dir,
        {"train": cfg.result_config(), **meta},
        run_info={"device": cfg.device, "log_with": cfg.log_with},
        resume=resume,
        overwrite=overwrite,
        engine_files=("checkpoint-*", "final", "run.json", "runs"),  # runs/: transformers' TensorBoard logs
        is_main=int(os.environ.get("RANK", "0")) == 0,  # under torchrun only rank 0 writes the run files
    ).open()
    final = out_dir / "final"
    if run.action == "resume" and (final / "config.json").is_file() and _trained_steps(out_dir) == cfg.max_steps:
        log.info("%s: already trained for %d steps", final, cfg.max_steps)
        return final
    checkpoint = _latest_checkpoint(out_dir) if run.action == "resume" else None
    trainer = Trainer(
        model=model,
        args=_training_arguments(out_dir, cfg),
        train_dataset=dataset,
        data_collator=collate,
        callbacks=[_metrics_callback(run), *callbacks],
        eval_dataset=eval_dataset,
        compute_metrics=completion_metrics if eval_dataset is not None else None,
        preprocess_logits_for_metrics=completion_nll if eval_dataset is not None else None,
    )
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint)
        run.trim_metrics(_checkpoint_step(checkpoint) or 0)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    evaluation = trainer.evaluate() if eval_dataset is not None else None
    if not trainer.is_world_process_zero():
        return final
    with atomic_dir(final) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    history = [r for r in trainer.state.log_history if "loss" in r]
    write_json_atomic(
        out_dir / "run.json",
        {
            **meta,
            "train": dataclasses.asdict(cfg),
            "global_step": int(trainer.state.global_step),
            "metrics": result.metrics,
            "loss_history": history,
            **({"eval": evaluation} if evaluation is not None else {}),
        },
    )
    return final


def finetune(
    train_jsonl: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    scratch: SmallGPT2Config | None = None,
    cfg: LMTrainConfig | None = None,
    resume: bool = True,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    eval_jsonl: str | os.PathLike | None = None,
) -> Path:
    """Finetune on prompt/completion JSONL (``dataset.prepare_gmd``) with the loss on completions only.

    Exactly one of ``model_path`` (a local causal LM directory, e.g. ``pretrain_text``'s ``final/``) and
    ``scratch`` (a small GPT-2 with the character tokenizer, random init) must be given. Returns ``out/final``.
    ``resume``/``overwrite``: the run contract (see the module docstring). ``callbacks``: extra transformers
    ``TrainerCallback``s (e.g. a step timer); they do not change the trained weights. ``eval_jsonl``: held-out
    examples scored after training (completion-token NLL and perplexity, in ``run.json``'s ``eval``).
    """
    from functools import partial

    from polyzoo.music.dataset import CompletionDataset, pad_collate, read_jsonl
    from polyzoo.shared.seed import seed_everything

    cfg = dataclasses.replace(cfg or LMTrainConfig())
    if (model_path is None) == (scratch is None):
        raise ValueError("finetune: give exactly one of model_path (a local model directory) or scratch (a config)")
    seed_everything(cfg.seed)
    if model_path is not None:
        model, tokenizer = load_model(model_path)
        source = str(model_path)
    else:
        tokenizer = char_tokenizer()
        model = new_small_gpt2(dataclasses.replace(scratch), tokenizer)
        source = f"scratch {dataclasses.asdict(scratch)}"
    examples = read_jsonl(train_jsonl)
    if not examples:
        raise ValueError(f"{train_jsonl}: no examples")
    dataset = CompletionDataset(examples, tokenizer, max_length=model_max_length(model))
    collate = partial(pad_collate, pad_token_id=tokenizer.pad_token_id)
    meta = {
        "task": "finetune",
        "model": source,
        "train_jsonl": str(Path(train_jsonl).resolve()),
        "train_jsonl_sha256": _sha256(train_jsonl),
        "examples": len(dataset),
    }
    eval_dataset = None
    if eval_jsonl is not None:
        held_out = read_jsonl(eval_jsonl)
        if not held_out:
            raise ValueError(f"{eval_jsonl}: no examples")
        eval_dataset = CompletionDataset(held_out, tokenizer, max_length=model_max_length(model))
        meta["eval_jsonl"] = str(Path(eval_jsonl).resolve())
        meta["eval_jsonl_sha256"] = _sha256(eval_jsonl)
    return _train(
        model,
        tokenizer,
        dataset,
        collate,
        Path(out_dir),
        cfg,
        meta,
        resume=resume,
        overwrite=overwrite,
        callbacks=callbacks,
        eval_dataset=eval_dataset,
    )


def _sha256(path: str | os.PathLike) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


TEXT_SUFFIXES = ("", ".txt", ".md", ".rst", ".text")


def read_text_corpus(corpus: str | os.PathLike, max_chars: int | None = None) -> list[str]:
    """UTF-8 text files under ``corpus`` (recursively; names without suffix or ending in .txt/.md/.rst/.text),
    sorted by path; binary or undecodable files are skipped. Stops after ``max_chars`` characters."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise FileNotFoundError(f"{corpus}: not a directory of text files")
    texts, total = [], 0
    for path in sorted(corpus.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        if b"\0" in raw[:4096]:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text.strip():
            texts.append(text)
            total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    if not texts:
        raise ValueError(f"{corpus}: no UTF-8 text files found (looked for {TEXT_SUFFIXES} suffixes)")
    return texts


class TextBlockDataset:
    """Consecutive blocks of ``block_size`` tokens from the concatenated texts (each text closed by EOS): a
    map-style dataset of ``{"input_ids", "attention_mask", "labels"}`` tensors of shape (block_size,)."""

    def __init__(self, texts: Sequence[str], tokenizer, block_size: int) -> None:
        import torch

        ids: list[int] = []
        for text in texts:
            ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
        n = len(ids) // block_size
        if n == 0:
            raise ValueError(f"corpus has {len(ids)} tokens, fewer than one block of {block_size}")
        self.blocks = torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict:
        import torch

        b = self.blocks[i]
        return {"input_ids": b, "attention_mask": torch.ones_like(b), "labels": b.clone()}


def pretrain_text(
    corpus: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model_config: SmallGPT2Config | None = None,
    cfg: LMTrainConfig | None = None,
    block_size: int = 256,
    max_chars: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train the small character-level GPT-2 as a language model on local text; returns ``out/final``, a model
    directory that ``finetune(model_path=...)`` accepts."""
    import torch

    from polyzoo.shared.seed import seed_everything

    cfg = dataclasses.replace(cfg or LMTrainConfig())
    model_config = dataclasses.replace(model_config or SmallGPT2Config())
    seed_everything(cfg.seed)
    tokenizer = char_tokenizer()
    model = new_small_gpt2(model_config, tokenizer)
    texts = read_text_corpus(corpus, max_chars)
    dataset = TextBlockDataset(texts, tokenizer, min(block_size, model_config.n_positions))

    def collate(batch):
        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}

    meta = {
        "task": "pretrain-text",
        "corpus": str(Path(corpus).resolve()),
        "files": len(texts),
        "characters": sum(map(len, texts)),
        "blocks": len(dataset),
        "block_size": block_size,
        "model": dataclasses.asdict(model_config),
    }
    return _train(model, tokenizer, dataset, collate, Path(out_dir), cfg, meta, resume=resume, overwrite=overwrite)
