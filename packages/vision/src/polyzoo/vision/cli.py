"""``polyzoo vision``: list, train, evaluate and export the vision models (any timm model works too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from polyzoo.shared.cli import CommandGroup
from polyzoo.shared.options import device_options, echo_result, format_option, run_options

DATA_HELP = (
    "'digits' (scikit-learn's bundled set), 'fashion-mnist' (from /usr/share/datasets/fashion-mnist) or "
    "'fashion-mnist:FOLDER' with the *-ubyte.gz files, or an image folder (<class>/<image>, or train/ and val/)."
)


def _parse_model_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when possible (numbers, lists, true/false), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--model-arg")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@click.group(name="vision", cls=CommandGroup)
def vision() -> None:
    """ECA-Net, EMO and SoT as timm models: list, train, evaluate, export.

    `import polyzoo.vision` registers eca_resnet18/34/50/101/152, eca_mobilenetv2, emo_1m/2m/5m/6m,
    sot_tiny/small/base and sot_deit_tiny/small_patch16_224 in timm's registry.
    """


@vision.command(name="models")
def list_models() -> None:
    """List the registered polyzoo vision models with their parameter counts."""
    import timm
    from torch._subclasses.fake_tensor import FakeTensorMode

    import polyzoo.vision  # noqa: F401
    from polyzoo.vision.flops import count_params
    from polyzoo.vision.models import MODEL_NAMES

    for name in MODEL_NAMES:
        try:
            with FakeTensorMode(allow_non_fake_inputs=True):  # shapes only: no memory, no initialisation
                params = count_params(timm.create_model(name))
        except Exception:  # builders that read tensor values (timm's ViT drop-path schedule) need real ones
            params = count_params(timm.create_model(name))
        click.echo(f"{name:<28} {params:>12,d} params")


@vision.command()
@click.option("--model", "model_name", required=True, help="timm model name, e.g. emo_1m, eca_resnet18, sot_tiny.")
@click.option("--data", required=True, help=DATA_HELP)
@run_options()
@click.option("--epochs", default=10, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=1e-3, show_default=True, help="Peak learning rate (cosine schedule per step).")
@click.option("--weight-decay", default=0.05, show_default=True)
@click.option("--opt", default="adamw", show_default=True, help="timm optimizer name (create_optimizer_v2).")
@click.option("--warmup-steps", default=0, show_default=True)
@click.option("--img-size", type=int, default=None, help="Resize inputs to this side (default: the data's size).")
@click.option("--limit", type=int, default=None, help="Use only the first N training and evaluation samples.")
@click.option("--checkpoint-every", default=0, show_default=True, help="Steps between checkpoints (0: at the end).")
@click.option(
    "--workers", type=int, default=None, help="Data loader worker processes (default: 4 on CUDA, 0 on the CPU)."
)
@click.option("--model-arg", "model_args", multiple=True, help="Extra model argument key=value (repeatable).")
@format_option
def train(
    model_name: str,
    data: str,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    seed: int,
    device: str,
    precision: str,
    log_with: str,
    epochs: int,
    max_steps: int | None,
    batch_size: int,
    lr: float,
    weight_decay: float,
    opt: str,
    warmup_steps: int,
    img_size: int | None,
    limit: int | None,
    checkpoint_every: int,
    workers: int | None,
    model_args: tuple[str, ...],
    fmt: str,
) -> None:
    """Train MODEL on DATA with the shared Trainer into RUN_DIR (config.json, metrics.jsonl, checkpoints).
    Rerunning with the same settings continues where the run stopped; other settings are refused unless
    --overwrite."""
    from polyzoo.shared.run import check_output_dir
    from polyzoo.vision.training import TrainSettings
    from polyzoo.vision.training import train as run_train

    check_output_dir(run_dir, "run folder")
    settings = TrainSettings(
        name=run_dir.name or "vision",
        run_dir=str(run_dir),
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        opt=opt,
        warmup_steps=warmup_steps,
        img_size=img_size,
        limit=limit,
        seed=seed,
        checkpoint_every=checkpoint_every,
        device=device,
        precision=precision,
        log_with=log_with,
        num_workers=workers,
    )
    metrics = run_train(
        model_name, data, settings, resume=resume, model_kwargs=_parse_model_args(model_args), overwrite=overwrite
    )
    echo_result({"run": str(run_dir), **metrics}, fmt)


def _checkpoint_eval_data(data: str, model: Any):
    """Every image of the folder DATA (``<class>/<image>``, or its ``val/``), with the model's own evaluation
    transform (timm's ``resolve_data_config`` of its pretrained config: resize, centre crop, mean/std)."""
    from timm.data import ImageDataset, create_transform, resolve_data_config

    from polyzoo.vision.data import ClassificationData

    root = Path(data)
    if not root.is_dir():
        raise click.ClickException(f"--data {data!r}: expected a folder of <class>/<image> files (or with val/)")
    folder = root / "val" if (root / "val").is_dir() else root
    cfg = resolve_data_config({}, model=model)
    ds = ImageDataset(str(folder), transform=create_transform(**cfg, is_training=False))
    classes = len(ds.reader.class_to_idx)
    if len(ds) == 0 or classes > model.num_classes:
        raise click.ClickException(
            f"{folder}: {len(ds)} images in {classes} class folders; expected images in at most "
            f"{model.num_classes} class folders (sorted folder names give the class indices)"
        )
    return ClassificationData(ds, ds, classes, 3, cfg["input_size"][-1], str(folder))


@vision.command(name="eval")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A checkpoint file for --model (e.g. an official release), loaded with timm's pretrained mechanism "
    "through the model's checkpoint filter; evaluated on every image of the --data folder.",
)
@click.option("--model", "model_name", default=None, help="timm model name for --checkpoint, e.g. eca_resnet50.")
@click.option("--model-arg", "model_args", multiple=True, help="Extra model argument key=value for --checkpoint.")
@click.option("--data", default=None, help="Evaluate on other data (default: the run's). " + DATA_HELP)
@click.option("--batch-size", default=256, show_default=True)
@click.option(
    "--workers", type=int, default=None, help="Data loader worker processes (default: 4 on CUDA, 0 on the CPU)."
)
@device_options
@format_option
def evaluate(
    run_dir: Path | None,
    checkpoint: Path | None,
    model_name: str | None,
    model_args: tuple[str, ...],
    data: str | None,
    batch_size: int,
    workers: int | None,
    device: str,
    precision: str,
    fmt: str,
) -> None:
    """Top-1/top-5 accuracy and loss of a trained run's newest checkpoint on the evaluation split, or of a
    checkpoint file (--checkpoint with --model, e.g. an official ECA-Net or EMO release) on a folder of images."""
    from polyzoo.vision.data import load_data
    from polyzoo.vision.training import evaluate_run, load_run_model

    if (run_dir is None) == (checkpoint is None):
        raise click.UsageError("give exactly one of --run or --checkpoint")
    if checkpoint is not None:
        import timm

        import polyzoo.vision.models  # noqa: F401  (registers the models)

        if not model_name or not data:
            raise click.UsageError("--checkpoint needs --model and --data (a folder of <class>/<image> files)")
        kwargs = _parse_model_args(model_args)
        # the checkpoint's classifier has the model's classes: keep it (timm would drop a classifier whose
        # size differs from the pretrained config's), a mismatch is then a load error naming the shapes
        overlay = {"file": str(checkpoint), "num_classes": kwargs.get("num_classes", 1000)}
        try:
            model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            raise click.ClickException(f"{checkpoint}: {e}") from e
        ds = _checkpoint_eval_data(data, model)
        metrics = evaluate_run(
            model, ds, batch_size=batch_size, progress=True, device=device, precision=precision, num_workers=workers
        )
        echo_result({"checkpoint": str(checkpoint), "model": model_name, "data": ds.name, "n": len(ds.eval),
                     **metrics}, fmt)  # fmt: skip
        return
    model, facts = load_run_model(run_dir)  # bad runs and data: one Error line through CommandGroup
    ds = load_data(data or facts["data"], img_size=facts["img_size"], seed=facts["settings"]["seed"])
    metrics = evaluate_run(
        model, ds, batch_size=batch_size, progress=True, device=device, precision=precision, num_workers=workers
    )
    echo_result({"run": str(run_dir), "data": ds.name, "n": len(ds.eval), **metrics}, fmt)


@vision.command()
@click.option("--model", "model_name", default=None, help="timm model name (random weights unless --checkpoint).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Export a run.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), default=None, help="Weights for --model.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--img-size", default=224, show_default=True, help="Input side for --model.")
@click.option("--in-chans", default=3, show_default=True)
@click.option("--num-classes", default=1000, show_default=True)
@click.option("--model-arg", "model_args", multiple=True, help="Extra model argument key=value (repeatable).")
@click.option("--check/--no-check", default=True, show_default=True, help="Compare onnxruntime with torch.")
def export(
    model_name: str | None,
    run_dir: Path | None,
    checkpoint: str | None,
    onnx_path: Path,
    img_size: int,
    in_chans: int,
    num_classes: int,
    model_args: tuple[str, ...],
    check: bool,
) -> None:
    """Export a model (or a trained run) to ONNX with a dynamic batch axis, checked with onnxruntime."""
    from polyzoo.vision.training import build_model, export_onnx, load_run_model

    if (model_name is None) == (run_dir is None):
        raise click.UsageError("give exactly one of --model or --run")
    from polyzoo.shared.run import check_output_file

    check_output_file(onnx_path, "ONNX file")
    if run_dir is not None:
        model, facts = load_run_model(run_dir)
        in_chans, img_size = facts["in_chans"], facts["img_size"]
    else:
        kwargs = _parse_model_args(model_args)
        if checkpoint:
            from polyzoo.shared.io import load_torch_file

            load_torch_file(checkpoint)  # refuse an empty, truncated or unsafe file with its name, before timm reads it
            kwargs["checkpoint_path"] = checkpoint
        model = build_model(model_name, num_classes, in_chans, img_size, **kwargs)
    diff = export_onnx(model, onnx_path, (1, in_chans, img_size, img_size), check=check)
    click.echo(json.dumps({"onnx": str(onnx_path), "max_abs_diff_vs_torch": diff}))
