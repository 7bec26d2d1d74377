"""CMT learning check on toy scenes: overfit a handful of scenes with masked-modality training, then detect with
both sensors, with LiDAR removed (points zeroed) and with cameras removed (images zeroed).

This is detection's ``--quick`` reproduction (entry point ``detection.cmt``). It trains the mmdet3d model built
from ``packages/detection/configs/cmt/cmt_toy_cpu.py`` (random init) with AdamW in a plain loop over the mmdet3d
pipeline, and scores centre-distance AP at 0.5/1/2/4 m on the training scenes (an overfitting check, not a
generalisation claim).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polyzoo.detection.cmt.evaluation import center_distance_ap
from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[4] / "configs" / "cmt"


@dataclass
class LearningCheckConfig:
    # AP@2m with both sensors on the 4 default scenes (constant lr 1e-3, seed 0). With the official pos2embed and box
    # code order (issue 21) and the toy config's former two-block-per-stage sparse encoder: 1000 steps 0.32, 1500 steps
    # 0.62 (AP@4m cameras only 0.40). With the lighter encoder of cmt_toy_cpu.py (issue 23), measured every 250 steps:
    # AP@2m 0.32 / 0.41 / 0.76 / 0.82 at 250 / 500 / 750 / 1000 steps (AP@4m cameras only 0.20 / 0.37 / 0.38 / 0.64);
    # 1000 steps keep a margin over the check's 0.5 and 0.2.
    steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-3
    num_scenes: int = 4
    seed: int = 0
    threads: int = 1  # tiny model: one thread is as fast and far better on a shared machine
    progress: bool = True


def config_path(name: str = "cmt_toy_cpu.py") -> Path:
    path = CONFIG_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"CMT config {path} not found: the learning check needs the repository's packages/detection/configs/cmt"
        )
    return path


def _build(data_root: Path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401  (registers CMT)

    init_default_scope("mmdet3d")
    from mmdet3d.registry import DATASETS, MODELS

    cfg = Config.fromfile(str(config_path()))
    root = str(data_root) + "/"
    cfg.train_dataloader.dataset.data_root = root
    cfg.test_dataloader.dataset.data_root = root
    model = MODELS.build(cfg.model)
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    test_sets = {}
    for modal in (None, "points", "image"):
        ds_cfg = cfg.test_dataloader.dataset.copy()
        ds_cfg.pipeline = [
            dict(t, mask_modal=modal) if t["type"] == "ModalMask3D" else t for t in cfg.test_dataloader.dataset.pipeline
        ]
        test_sets[modal] = DATASETS.build(ds_cfg)
    return model, train_set, test_sets


@torch.no_grad()
def evaluate(model, dataset) -> dict[str, float]:
    """Centre-distance AP of the model's predictions on every sample of ``dataset``."""
    from mmengine.dataset import pseudo_collate

    model.eval()
    preds, gts = [], []
    for i in range(len(dataset)):
        data = model.data_preprocessor(pseudo_collate([dataset[i]]), training=False)
        sample = model(**data, mode="predict")[0]
        p = sample.pred_instances_3d
        preds.append((p.bboxes_3d.gravity_center.numpy(), p.scores_3d.numpy(), p.labels_3d.numpy()))
        g = sample.gt_instances_3d
        gts.append((g.bboxes_3d.gravity_center.numpy(), g.labels_3d.numpy()))
    return center_distance_ap(preds, gts)


def run_learning_check(out_dir: str | Path, cfg: LearningCheckConfig | None = None) -> dict:
    """Generate toy scenes under ``out_dir``, train, evaluate. Returns losses and AP tables."""
    from mmengine.dataset import pseudo_collate
    from tqdm import tqdm

    from polyzoo.shared.seed import seed_everything

    cfg = cfg or LearningCheckConfig()
    out_dir = Path(out_dir)
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # with one thread: reruns on one machine are identical
    try:
        seed_everything(cfg.seed)
        data_root = out_dir / "toy_scenes"
        write_toy_dataset(data_root, ToySceneConfig(num_scenes=cfg.num_scenes, seed=cfg.seed))
        model, train_set, test_sets = _build(data_root)
        for t in train_set.pipeline.transforms:
            if hasattr(t, "rng"):
                t.rng = np.random.default_rng(cfg.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
        rng = np.random.default_rng(cfg.seed)
        history = []
        start = time.perf_counter()
        model.train()
        bar = tqdm(range(cfg.steps), desc="CMT toy training", disable=not cfg.progress)
        for _ in bar:
            idx = rng.choice(len(train_set), size=min(cfg.batch_size, len(train_set)), replace=False)
            data = model.data_preprocessor(pseudo_collate([train_set[int(i)] for i in idx]), training=True)
            losses = model(**data, mode="loss")
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
            opt.step()
            history.append({k: float(v.detach()) for k, v in losses.items()})
            bar.set_postfix(loss=f"{float(loss):.3f}")
        train_seconds = time.perf_counter() - start
        results = {modal: evaluate(model, ds) for modal, ds in test_sets.items()}
    finally:
        torch.use_deterministic_algorithms(previous_det, warn_only=previous_warn)
        torch.set_num_threads(previous_threads)
    return {"history": history, "ap": results, "train_seconds": train_seconds, "steps": cfg.steps}


def check(ctx) -> list:
    """``polyzoo reproduce --only detection.cmt``: the learning check as a report table."""
    from polyzoo.shared.report import CheckResult

    steps = LearningCheckConfig.steps if ctx.quick else 3000
    run_dir = ctx.run_dir("detection.cmt")
    out = run_learning_check(run_dir, LearningCheckConfig(steps=steps, seed=ctx.seed))
    ap = out["ap"]
    hist = out["history"]
    first = np.mean([h["loss_cls"] + h["loss_bbox"] for h in hist[:10]])
    last = np.mean([h["loss_cls"] + h["loss_bbox"] for h in hist[-10:]])
    names = {None: "LiDAR + cameras", "points": "cameras only (points zeroed)", "image": "LiDAR only (images zeroed)"}
    thresholds = ("AP@0.5", "AP@1", "AP@2", "AP@4", "mAP")
    rows = [[names[m], *[round(ap[m][k], 3) for k in thresholds]] for m in (None, "points", "image")]
    overfit = ap[None]["AP@2"] >= 0.5
    camera_only = ap["points"]["AP@4"] >= 0.2
    figures = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot([h["loss_cls"] + h["loss_bbox"] for h in hist], lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("matching loss (last layer)")
        ax.set_yscale("log")
        fig.tight_layout()
        path = ctx.figure_path("cmt_toy_loss")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figures.append(path)
    except ImportError:  # matplotlib is optional here
        pass
    return [
        CheckResult(
            title="CMT learns toy scenes and still detects with LiDAR removed",
            compared=(
                "centre-distance AP of the tiny CMT (random init, masked-modality training) on the scenes it was "
                "trained on, with both sensors and with one removed; claim: it overfits (AP@2m ≥ 0.5 with both) and "
                "camera-only inference still detects (AP@4m ≥ 0.2)"
            ),
            data="4 generated toy scenes (3 classes, 4 cameras 64×160, LiDAR on surfaces + ground)",
            columns=["inputs", *thresholds],
            rows=rows,
            passed=bool(overfit and camera_only),
            verdict=(
                f"after {out['steps']} steps ({out['train_seconds']:.0f} s) the last-layer matching loss fell "
                f"{first:.2f} → {last:.2f}; AP@2m {ap[None]['AP@2']:.2f} with both sensors, AP@4m "
                f"{ap['points']['AP@4']:.2f} with LiDAR removed, AP@4m {ap['image']['AP@4']:.2f} with cameras removed"
            ),
            paper="nuScenes val NDS: 72.9 with both sensors, 44.7 without LiDAR, 68.1 without cameras (fusion model)",
            figures=figures,
            notes=(
                "Toy data and a tiny model: it shows the mechanisms learn and that masked-modality training keeps "
                "a camera-only path, not the paper's accuracy.",
            ),
        )
    ]
