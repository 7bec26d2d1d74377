"""One command-line dialect for every domain: shared ``click`` options and result printing.

Training verbs take :func:`run_options` (``--run-dir``, ``--resume/--no-resume``, ``--overwrite``, ``--seed``,
``--device``, ``--precision``, ``--log-with``); verbs that read a data set folder take :func:`data_root_option`;
evaluation verbs are called ``eval`` and take :func:`device_options` and :func:`format_option`. The defaults here
are the library defaults (:class:`polyzoo.shared.engine.TrainConfig`), so a run from the CLI and a run from Python
with the same settings are the same run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "DEVICE_CHOICES",
    "LOG_WITH_CHOICES",
    "PRECISION_CHOICES",
    "autocast_dtype",
    "data_root_option",
    "device_options",
    "echo_result",
    "format_option",
    "format_table",
    "resolve_device",
    "run_options",
]

F = TypeVar("F", bound=Callable[..., Any])

PRECISION_CHOICES = ("fp32", "bf16", "fp16")
LOG_WITH_CHOICES = ("none", "tensorboard", "wandb", "mlflow")
DEVICE_CHOICES = "auto|cpu|cuda|cuda:N"


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise click.BadParameter(f"expected one of {DEVICE_CHOICES}, got {value!r}", ctx, param)
    return value


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is present, else ``cpu``; an explicit CUDA device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast_dtype(precision: str):
    """The ``torch.autocast`` dtype of ``--precision`` (None for fp32: autocast off)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def device_options(f: F) -> F:
    """``--device`` and ``--precision``."""
    return _compose(
        click.option(
            "--device",
            default="auto",
            show_default=True,
            callback=_device,
            metavar=DEVICE_CHOICES,
            help="Where to run: auto (CUDA when present), cpu, cuda or cuda:N.",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISION_CHOICES),
            default="fp32",
            show_default=True,
            help="Numeric precision: fp32, or bf16/fp16 mixed precision (autocast).",
        ),
    )(f)


def run_options(run_dir_default: str | None = None, seed_default: int = 0) -> Callable[[F], F]:
    """The training verbs' run options (see :mod:`polyzoo.shared.run` for what they mean); ``seed_default`` is the
    library's default seed of that verb (an official config's seed where the paper's code fixes one)."""
    # click 8.3+ counts an explicit ``default=None`` as a value, so a required option must not be given one
    # (``--run-dir`` was silently None and ended in a TypeError)
    run_dir_kw: dict[str, Any] = (
        {"required": True} if run_dir_default is None else {"default": run_dir_default, "show_default": True}
    )
    return _compose(
        click.option(
            "--run-dir",
            type=click.Path(path_type=Path),
            help="Run folder: config.json, metrics.jsonl, checkpoints/. Rerunning with the same settings resumes.",
            **run_dir_kw,
        ),
        click.option(
            "--resume/--no-resume",
            default=True,
            show_default=True,
            help="Continue from the run folder's last complete checkpoint (same settings only).",
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Start again in a run folder that holds a run with other settings (its run files are removed).",
        ),
        click.option(
            "--seed", type=int, default=seed_default, show_default=True, help="Seed for weights, data order, sampling."
        ),
        device_options,
        click.option(
            "--log-with",
            type=click.Choice(LOG_WITH_CHOICES),
            default="none",
            show_default=True,
            help="Experiment tracker (through Accelerate); metrics.jsonl is always written.",
        ),
    )


def data_root_option(required: bool = False, help: str = "Folder of the data set's files.") -> Callable[[F], F]:
    return click.option(
        "--data-root",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help=help,
        **({"required": True} if required else {"default": None}),
    )


def format_option(f: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(("table", "json")),
        default="table",
        show_default=True,
        help="Print results as an aligned table or as JSON.",
    )(f)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of the same keys as an aligned plain-text table (one header line, one line per row)."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def echo_result(result: Mapping[str, Any] | Sequence[Mapping[str, Any]], fmt: str = "table") -> None:
    """Print a result (one record or a list of records) as ``--format`` asks."""
    rows = [result] if isinstance(result, Mapping) else list(result)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(format_table(rows))
