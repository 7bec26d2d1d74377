"""``polyzoo video``: train, test (multi-view accuracy) and predict with TSN/TSM/timm + GAP/TCP video classifiers
on videos listed in mmaction2-style annotation files, decoded with decord."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click

from polyzoo.shared.cli import CommandGroup
from polyzoo.shared.options import device_options, echo_result, format_option, run_options

__all__ = ["video"]

log = logging.getLogger(__name__)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _load_model(run: Path | None, checkpoint: Path | None, frames: int | None):
    """(model, model config, clip config) from a trained RUN (optionally one of its checkpoint folders) or from an
    official TCP/TSM checkpoint FILE (built as the file describes, :func:`polyzoo.video.models.load_official`)."""
    from polyzoo.video.data import ClipConfig
    from polyzoo.video.train import load_run

    if checkpoint is not None and checkpoint.is_file():
        from polyzoo.video.models import load_official

        if run is not None:
            raise click.UsageError("give RUN/--run or an official --checkpoint FILE, not both")
        model, model_cfg = load_official(checkpoint, frames)  # bad files: one Error line through CommandGroup
        return model, model_cfg, ClipConfig(num_segments=model_cfg.num_frames)
    if run is None:
        raise click.UsageError("give a trained RUN folder, or --checkpoint with an official checkpoint file")
    return load_run(run, checkpoint)


@click.group(name="video", cls=CommandGroup)
def video() -> None:
    """TCP (temporal-attentive covariance pooling) video recognition with a decord clip pipeline.

    Annotation lists have one `relative/path.mp4 label` per line (mmaction2's format); paths are relative to
    --root (default: the list's folder).
    """


@video.command()
@click.option("--train-list", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Training list.")
@click.option("--val-list", type=click.Path(dir_okay=False, path_type=Path), help="Validation list (evaluated).")
@click.option(
    "--data-root",
    "--root",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the lists' paths are under (default: each list's folder).",
)
@run_options()
@click.option(
    "--backbone",
    default="tsn_r50",
    show_default=True,
    help="tsn_r50 | tsm_r50 | tsn_resnetXX | tsm_resnetXX | tiny | timm:<model name>.",
)
@click.option("--head", type=click.Choice(["tcp", "gap"]), default="tcp", show_default=True)
@click.option("--frames", default=8, show_default=True, help="Segments T per clip (TSN sampling).")
@click.option(
    "--protocol",
    type=click.Choice(["tcp", "mmaction2"]),
    default="tcp",
    show_default=True,
    help="Frame sampling, test clips and view fusion: TCP's official code or mmaction2's SampleFrames.",
)
@click.option("--num-classes", type=int, help="Classes (default: largest label in the training list + 1).")
@click.option("--tcp-dim", default=128, show_default=True, help="TCP reduced dimension d (d(d+1)/2 features).")
@click.option("--tcp-level", type=click.Choice(["video", "frame"]), default="video", show_default=True)
@click.option("--last-stride", type=click.Choice(["1", "2"]), default="1", show_default=True, help="ResNet layer4.")
@click.option("--dropout", default=0.5, show_default=True)
@click.option("--epochs", default=50, show_default=True)
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--batch-size", default=8, show_default=True, help="Clips per process and step.")
@click.option(
    "--grad-accum",
    default=1,
    show_default=True,
    help="Batches accumulated per optimizer step (1 GPU × 8 batches of 8 = TCP's 8 GPUs × 8).",
)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--lr", default=0.015, show_default=True, help="Base learning rate (backbone).")
@click.option("--lr-x-factor", default=5.0, show_default=True, help="LR multiplier of the head and classifier.")
@click.option("--lr-steps", default="20,40", show_default=True, help="Epochs where the LR drops by 10.")
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--grad-clip", default=20.0, show_default=True)
@click.option("--input-size", default=224, show_default=True)
@click.option("--scale-size", default=256, show_default=True, help="Short side before test crops.")
@click.option("--scales", default="1,0.875,0.75,0.66", show_default=True, help="Multi-scale crop scales.")
@click.option("--no-flip", is_flag=True, help="No horizontal flip (when labels depend on left/right).")
@click.option("--workers", default=2, show_default=True, help="Data loader worker processes.")
@click.option("--skip-bad", is_flag=True, help="Log and skip missing/corrupt videos instead of failing.")
@click.option("--checkpoint-every", default=500, show_default=True, help="Optimizer steps between checkpoints.")
@format_option
def train(**kw) -> None:
    """Train a video classifier into RUN_DIR; rerunning with the same settings resumes exactly from the last
    complete checkpoint, other settings are refused unless --overwrite."""
    from polyzoo.shared.engine import TrainConfig
    from polyzoo.shared.run import check_output_dir
    from polyzoo.video.data import ClipConfig, VideoDataset, read_annotations
    from polyzoo.video.models import ModelConfig
    from polyzoo.video.train import OptimConfig, build_trainer

    check_output_dir(kw["run_dir"], "run folder")
    train_samples = read_annotations(kw["train_list"], kw["root"])
    num_classes = kw["num_classes"] or max(s.label for s in train_samples) + 1
    clip_cfg = ClipConfig(
        num_segments=kw["frames"],
        input_size=kw["input_size"],
        scale_size=kw["scale_size"],
        scales=_floats(kw["scales"]),
        flip=not kw["no_flip"],
        protocol=kw["protocol"],
    )
    model_cfg = ModelConfig(
        backbone=kw["backbone"],
        num_classes=num_classes,
        num_frames=kw["frames"],
        head=kw["head"],
        last_stride=int(kw["last_stride"]),
        tcp_dim=kw["tcp_dim"],
        tcp_level=kw["tcp_level"],
        dropout=kw["dropout"],
    )
    train_data = VideoDataset(train_samples, config=clip_cfg, mode="train", skip_bad=kw["skip_bad"])
    val_data = None
    if kw["val_list"]:
        val_data = VideoDataset(kw["val_list"], kw["root"], clip_cfg, mode="test", skip_bad=kw["skip_bad"])
    train_cfg = TrainConfig(
        name=kw["run_dir"].name or "video",
        run_dir=str(kw["run_dir"]),
        device=kw["device"],
        mixed_precision=kw["precision"],
        log_with=kw["log_with"],
        epochs=kw["epochs"],
        max_steps=kw["max_steps"],
        batch_size=kw["batch_size"],
        gradient_accumulation_steps=kw["grad_accum"],
        num_workers=kw["workers"],
        seed=kw["seed"],
        grad_clip_norm=kw["grad_clip"] or None,
        checkpoint_every=kw["checkpoint_every"],
        drop_last=True,
    )
    optim_cfg = OptimConfig(
        optimizer=kw["optimizer"],
        lr=kw["lr"],
        weight_decay=kw["weight_decay"],
        lr_x_factor=kw["lr_x_factor"],
        lr_steps=_ints(kw["lr_steps"]),
    )
    if len(train_data) < kw["batch_size"]:
        raise click.BadParameter(
            f"{len(train_data)} training clips is fewer than one batch of {kw['batch_size']}", param_hint="--batch-size"
        )
    trainer = build_trainer(
        model_cfg,
        clip_cfg,
        train_data,
        train_cfg,
        optim_cfg,
        eval_data=val_data,
        extra={"data": {"train_list": str(kw["train_list"]), "val_list": str(kw["val_list"] or "")}},
    )
    trainer.check_run(kw["resume"], kw["overwrite"])
    metrics = trainer.fit(resume=kw["resume"], overwrite=kw["overwrite"])
    skipped = len(train_data.skipped) + (len(val_data.skipped) if val_data is not None else 0)
    if kw["skip_bad"]:
        log.warning("skipped %d unreadable videos (in the main process; workers log their own)", skipped)
    echo_result({"run": str(trainer.run_dir), **metrics}, kw["fmt"])


@video.command(name="eval")
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--list", "ann_list", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Test list.")
@click.option(
    "--data-root",
    "--root",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the list's paths are under (default: the list's folder).",
)
@click.option("--clips", default=1, show_default=True, help="Clips per video: 1 or 10 (tcp), 1 or 2 (mmaction2).")
@click.option("--crops", type=click.Choice(["1", "3"]), default="1", show_default=True, help="Spatial crops.")
@click.option(
    "--average",
    type=click.Choice(["max_prob", "prob", "score"]),
    help="View fusion (default: the run's protocol: max_prob for tcp, prob for mmaction2).",
)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--skip-bad", is_flag=True, help="Log and skip missing/corrupt videos instead of failing.")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint folder of RUN (default: its newest), or an official TCP/TSM checkpoint file (no RUN).",
)
@click.option("--frames", type=int, help="Frames of an official --checkpoint file (default: from its temporal kernel).")
@device_options
@format_option
def evaluate(
    run, ann_list: Path, root, clips, crops, average, batch_size, workers, skip_bad, checkpoint, frames, device,
    precision, fmt
) -> None:  # fmt: skip
    """Multi-view accuracy (clips × crops views, fused as the run's protocol does) of a trained RUN folder, or of an
    official TCP/TSM checkpoint file given with --checkpoint, on a list."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from polyzoo.shared.options import autocast_dtype, resolve_device
    from polyzoo.video.data import VideoDataset
    from polyzoo.video.train import PROTOCOL_FUSION, multiview_predict_fn, topk_metrics

    dev = torch.device(resolve_device(device))
    model, _, clip_cfg = _load_model(run, checkpoint, frames)
    model = model.to(dev)
    clip_cfg = dataclasses.replace(clip_cfg, num_clips=clips, num_crops=int(crops))
    data = VideoDataset(ann_list, root, clip_cfg, mode="test", skip_bad=skip_bad)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    fusion = average or PROTOCOL_FUSION[clip_cfg.protocol]
    predict = multiview_predict_fn(fusion)
    dtype = autocast_dtype(precision)
    outs, tgts = [], []
    with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
        for x, y in tqdm(loader, desc="eval", dynamic_ncols=True):
            o, t = predict(model, (x.to(dev, non_blocking=True), y))
            outs.append(o.float())  # on the device: one transfer at the end, not one per batch
            tgts.append(t)
    metrics = topk_metrics(torch.cat(outs).cpu(), torch.cat(tgts).cpu())
    echo_result({"videos": len(data), "views": f"{clips}x{crops}", "fusion": fusion, **metrics}, fmt)


@video.command()
@click.argument("clip", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run", type=click.Path(file_okay=False, path_type=Path), help="Trained run folder.")
@click.option(
    "--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Official TCP/TSM checkpoint."
)
@click.option("--frames", type=int, help="Frames of an official --checkpoint (default: from its temporal kernel).")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), help="Class names, one per line.")
@click.option("--clips", default=1, show_default=True)
@click.option("--crops", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--topk", default=5, show_default=True)
def predict(clip: Path, run, checkpoint, frames, labels, clips, crops, topk) -> None:
    """Top-k classes (with softmax scores) of one video CLIP, with a trained --run or an official --checkpoint."""
    from polyzoo.video.data import VideoDataset, VideoSample, read_label_map
    from polyzoo.video.train import PROTOCOL_FUSION, predict_clips

    model, model_cfg, clip_cfg = _load_model(run, checkpoint, frames)
    clip_cfg = dataclasses.replace(clip_cfg, num_clips=clips, num_crops=int(crops))
    names = read_label_map(labels) if labels else None
    if names is not None and len(names) != model_cfg.num_classes:
        raise click.BadParameter(
            f"{labels} has {len(names)} names but the model has {model_cfg.num_classes} classes", param_hint="--labels"
        )
    x, _ = VideoDataset([VideoSample(clip, 0)], config=clip_cfg, mode="test")[0]
    probs = predict_clips(model, x.unsqueeze(0), PROTOCOL_FUSION[clip_cfg.protocol])[0].softmax(-1)
    values, indices = probs.topk(min(topk, probs.numel()))
    for v, i in zip(values.tolist(), indices.tolist(), strict=True):
        click.echo(f"{v:.4f}  {names[i] if names else i}")


video.add_command(click.Command("test", callback=evaluate.callback, params=evaluate.params, hidden=True,
                                help="Old name of `eval`."))  # fmt: skip


@video.command("make-synthetic")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", "n_train", default=32, show_default=True, help="Training clips per class.")
@click.option("--val", "n_val", default=16, show_default=True, help="Validation clips per class.")
@click.option("--frames", default=8, show_default=True, help="Distinct time steps per clip (each held 2 frames).")
@click.option("--size", default=32, show_default=True)
@click.option("--seed", default=0, show_default=True)
def make_synthetic(out: Path, n_train, n_val, frames, size, seed) -> None:
    """Write the temporal-order clips (digit moving left/right, appearing/disappearing) with annotation lists."""
    from polyzoo.video.synthetic import SyntheticConfig, make_dataset

    lists = make_dataset(out, {"train": n_train, "val": n_val}, SyntheticConfig(size=size, steps=frames), seed=seed)
    for split, path in lists.items():
        click.echo(f"{split}: {path}")
    click.echo(f"labels: {out / 'label_map.txt'}")
