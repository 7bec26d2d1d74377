"""``polyzoo video``: train, test (multi-view accuracy) and predict with TSN/TSM/timm + GAP/TCP video classifiers
on videos listed in mmaction2-style annotation files, decoded with decord."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click

__all__ = ["video"]

log = logging.getLogger(__name__)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


@click.group(name="video")
def video() -> None:
    """TCP (temporal-attentive covariance pooling) video recognition with a decord clip pipeline.

    Annotation lists have one `relative/path.mp4 label` per line (mmaction2's format); paths are relative to
    --root (default: the list's folder).
    """


@video.command()
@click.option("--train-list", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Training list.")
@click.option("--val-list", type=click.Path(dir_okay=False, path_type=Path), help="Validation list (evaluated).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Folder the lists' paths are under.")
@click.option("--name", required=True, help="Run name: the run lives in RUNS_DIR/NAME and resumes from there.")
@click.option("--runs-dir", default="runs", show_default=True, help="Folder of runs.")
@click.option(
    "--backbone",
    default="tsn_r50",
    show_default=True,
    help="tsn_r50 | tsm_r50 | tsn_resnetXX | tsm_resnetXX | tiny | timm:<model name>.",
)
@click.option("--head", type=click.Choice(["tcp", "gap"]), default="tcp", show_default=True)
@click.option("--frames", default=8, show_default=True, help="Segments T per clip (TSN sampling).")
@click.option("--num-classes", type=int, help="Classes (default: largest label in the training list + 1).")
@click.option("--tcp-dim", default=128, show_default=True, help="TCP reduced dimension d (d(d+1)/2 features).")
@click.option("--tcp-level", type=click.Choice(["video", "frame"]), default="video", show_default=True)
@click.option("--last-stride", type=click.Choice(["1", "2"]), default="1", show_default=True, help="ResNet layer4.")
@click.option("--dropout", default=0.5, show_default=True)
@click.option("--epochs", default=50, show_default=True)
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--batch-size", default=8, show_default=True)
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
@click.option("--seed", default=0, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Resume RUNS_DIR/NAME if it exists.")
def train(**kw) -> None:
    """Train a video classifier; the run resumes exactly from its newest checkpoint."""
    from polyzoo.shared.engine import TrainConfig
    from polyzoo.video.data import ClipConfig, VideoDataset, read_annotations
    from polyzoo.video.models import ModelConfig
    from polyzoo.video.train import OptimConfig, build_trainer

    train_samples = read_annotations(kw["train_list"], kw["root"])
    num_classes = kw["num_classes"] or max(s.label for s in train_samples) + 1
    clip_cfg = ClipConfig(
        num_segments=kw["frames"],
        input_size=kw["input_size"],
        scale_size=kw["scale_size"],
        scales=_floats(kw["scales"]),
        flip=not kw["no_flip"],
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
        name=kw["name"],
        runs_dir=kw["runs_dir"],
        epochs=kw["epochs"],
        max_steps=kw["max_steps"],
        batch_size=kw["batch_size"],
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
        extra={"train_list": str(kw["train_list"])},
    )
    metrics = trainer.fit(resume=kw["resume"])
    skipped = len(train_data.skipped) + (len(val_data.skipped) if val_data is not None else 0)
    if kw["skip_bad"]:
        click.echo(f"skipped {skipped} unreadable videos (in the main process; workers log their own)")
    click.echo(f"run: {trainer.run_dir}")
    for k, v in metrics.items():
        click.echo(f"{k}: {v:.4f}")


@video.command()
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--list", "ann_list", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Test list.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="Folder the list's paths are under.")
@click.option("--clips", default=1, show_default=True, help="Clips per video (temporal views).")
@click.option("--crops", type=click.Choice(["1", "3"]), default="1", show_default=True, help="Spatial crops.")
@click.option("--average", type=click.Choice(["score", "prob"]), default="score", show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--skip-bad", is_flag=True, help="Log and skip missing/corrupt videos instead of failing.")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), help="Default: newest of RUN.")
def test(run: Path, ann_list: Path, root, clips, crops, average, batch_size, workers, skip_bad, checkpoint) -> None:
    """Multi-view accuracy (clips × crops views, scores averaged) of a trained RUN folder on a list."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from polyzoo.video.data import VideoDataset
    from polyzoo.video.train import load_run, multiview_predict_fn, topk_metrics

    model, _, clip_cfg = load_run(run, checkpoint)
    clip_cfg = dataclasses.replace(clip_cfg, num_clips=clips, num_crops=int(crops))
    data = VideoDataset(ann_list, root, clip_cfg, mode="test", skip_bad=skip_bad)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
    predict = multiview_predict_fn(average)
    outs, tgts = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="test", dynamic_ncols=True):
            o, t = predict(model, batch)
            outs.append(o)
            tgts.append(t)
    metrics = topk_metrics(torch.cat(outs), torch.cat(tgts))
    click.echo(f"{len(data)} videos, {clips}×{crops} views")
    for k, v in metrics.items():
        click.echo(f"{k}: {v:.4f}")


@video.command()
@click.argument("clip", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run", required=True, type=click.Path(file_okay=False, path_type=Path), help="Trained run folder.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), help="Class names, one per line.")
@click.option("--clips", default=1, show_default=True)
@click.option("--crops", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option("--topk", default=5, show_default=True)
def predict(clip: Path, run: Path, labels, clips, crops, topk) -> None:
    """Top-k classes (with softmax scores) of one video CLIP."""
    from polyzoo.video.data import VideoDataset, VideoSample, read_label_map
    from polyzoo.video.train import load_run, predict_clips

    model, model_cfg, clip_cfg = load_run(run)
    clip_cfg = dataclasses.replace(clip_cfg, num_clips=clips, num_crops=int(crops))
    names = read_label_map(labels) if labels else None
    if names is not None and len(names) != model_cfg.num_classes:
        raise click.BadParameter(
            f"{labels} has {len(names)} names but the model has {model_cfg.num_classes} classes", param_hint="--labels"
        )
    x, _ = VideoDataset([VideoSample(clip, 0)], config=clip_cfg, mode="test")[0]
    probs = predict_clips(model, x.unsqueeze(0))[0].softmax(-1)
    values, indices = probs.topk(min(topk, probs.numel()))
    for v, i in zip(values.tolist(), indices.tolist(), strict=True):
        click.echo(f"{v:.4f}  {names[i] if names else i}")


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
