"""``polyzoo detection ...``: train/test mmengine configs, toy scenes and the CMT learning check."""

from __future__ import annotations

from pathlib import Path

import click

from polyzoo.shared.cli import CommandGroup
from polyzoo.shared.options import device_options, echo_result, format_option, run_options


@click.group(name="detection", cls=CommandGroup)
def detection() -> None:
    """3D detection (CMT, an mmdet3d 1.x plugin) and few-shot instance segmentation (RefT)."""


_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@detection.command(context_settings=_PASS_THROUGH)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@run_options()
@click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling while resuming (your own run only).")
@click.pass_context
def train(
    ctx: click.Context,
    config: str,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    seed: int,
    device: str,
    precision: str,
    log_with: str,
    trust_checkpoint: bool,
) -> None:
    """Train from an mmengine CONFIG into RUN_DIR (mmengine's work dir). Rerunning with the same config resumes from
    the last checkpoint; another config is refused unless --overwrite. Other options (--cfg-options KEY=VALUE ...,
    --launcher pytorch) pass through to tools/train.py."""
    from polyzoo.detection.runner import apply_run_options, train_main

    def contract(cfg: object) -> None:
        apply_run_options(
            cfg,
            resume=resume,
            overwrite=overwrite,
            seed=seed,
            device=device,
            precision=precision,
            log_with=log_with,
        )

    extra = ["--trust-checkpoint"] if trust_checkpoint else []
    train_main([config, "--work-dir", str(run_dir), *extra, *ctx.args], prepare=contract)


@detection.command(name="eval", context_settings=_PASS_THROUGH)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@device_options
@format_option
@click.pass_context
def evaluate(ctx: click.Context, config: str, checkpoint: str, device: str, precision: str, fmt: str) -> None:
    """Evaluate CHECKPOINT with CONFIG (other options as tools/test.py: --work-dir, --out, --cfg-options, --launcher
    pytorch under torchrun). --precision bf16/fp16 runs mmengine's test loop under autocast."""
    import torch

    from polyzoo.detection.runner import eval_precision, select_device, test_main

    select_device(device)
    on_cpu = device == "cpu" or not torch.cuda.is_available()
    echo_result(
        test_main([config, checkpoint, *ctx.args], prepare=lambda cfg: eval_precision(cfg, precision, on_cpu)), fmt
    )


@detection.command(name="toy-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--scenes", default=4, show_default=True, help="number of scenes")
@click.option("--cams", default=4, show_default=True, help="cameras per scene (evenly spread, 90° field of view)")
@click.option("--seed", default=0, show_default=True)
def toy_data(out_dir: str, scenes: int, cams: int, seed: int) -> None:
    """Write toy 3D scenes (LiDAR .bin, camera PNGs, a nuScenes-style info .pkl) into OUT_DIR."""
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    path = write_toy_dataset(out_dir, ToySceneConfig(num_scenes=scenes, num_cams=cams, seed=seed))
    click.echo(f"wrote {path}")


@detection.command(name="cmt-check")
@click.option("--out", "out_dir", default="runs/cmt_learning_check", show_default=True, type=click.Path())
@click.option("--steps", default=1000, show_default=True, help="training steps (batch 2; LearningCheckConfig.steps)")
@click.option("--seed", default=0, show_default=True)
def cmt_check(out_dir: str, steps: int, seed: int) -> None:
    """CMT learning check: overfit toy scenes with masked-modality training, then report centre-distance AP
    with both sensors, LiDAR removed and cameras removed."""
    from polyzoo.detection.cmt.learning_check import LearningCheckConfig, run_learning_check

    out = run_learning_check(Path(out_dir), LearningCheckConfig(steps=steps, seed=seed))
    click.echo(f"trained {out['steps']} steps in {out['train_seconds']:.0f} s")
    click.echo("| inputs | AP@0.5 | AP@1 | AP@2 | AP@4 | mAP |\n|---|---|---|---|---|---|")
    for modal, name in ((None, "LiDAR + cameras"), ("points", "cameras only"), ("image", "LiDAR only")):
        ap = out["ap"][modal]
        click.echo(
            f"| {name} | " + " | ".join(f"{ap[k]:.3f}" for k in ("AP@0.5", "AP@1", "AP@2", "AP@4", "mAP")) + " |"
        )


@detection.command(name="shapes-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--train", "n_train", default=64, show_default=True, help="training images")
@click.option("--val", "n_val", default=32, show_default=True, help="validation images")
@click.option("--seed", default=0, show_default=True)
def shapes_data(out_dir: str, n_train: int, n_val: int, seed: int) -> None:
    """Write synthetic COCO-format shapes (8 classes, 64x64) for configs/reft/reft_tiny_shapes.py into OUT_DIR:
    train/ and val/, each with images/ and annotations.json."""
    from polyzoo.detection.reft.shapes import make_shapes_coco

    for split, n, offset in (("train", n_train, 0), ("val", n_val, 20000)):
        path = make_shapes_coco(Path(out_dir) / split, n, seed=seed + offset, image_id_offset=offset)
        click.echo(f"wrote {path}")
