"""CMT learning check on toy scenes: overfit a handful of scenes with masked-modality training, then detect with
both sensors, with LiDAR removed (points zeroed) and with cameras removed (images zeroed).

This is detection's ``--quick`` reproduction (entry point ``detection.cmt``). It trains the mmdet3d model built
from ``packages/detection/configs/cmt/cmt_toy_cpu.py`` (random init) with AdamW in a plain loop over the mmdet3d
pipeline on ``ctx.device`` (``polyzoo reproduce --device``), and scores centre-distance AP at 0.5/1/2/4 m on the
training scenes (an overfitting check, not a generalisation claim).

Full mode: 3000 steps of 2 scenes at the constant lr 1e-3 (as before). Quick mode (a minute on one thread): 350 steps
of all 4 scenes, lr 1e-3 down a cosine (:func:`check_config`). What the plain loop spends besides the model: the
file-loading head of the training pipeline runs once per scene (:class:`CachedHead`), AdamW and gradient clipping use
torch's ``foreach`` kernels, and deterministic algorithms run without their NaN fill of new tensors.
"""

from __future__ import annotations

import copy
import logging
import math
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
    # "constant": lr throughout (the default, the numbers above); "cosine": lr decays to 0 along a half cosine over
    # ``steps`` (the quick check's schedule, see :data:`QUICK`)
    lr_schedule: str = "constant"
    warmup: int = 0  # steps of linear warmup (lr · (step + 1) / warmup) before the schedule (cosine: over the rest)
    device: str = "cpu"  # "cpu" or "cuda": where the model trains and predicts (torch.device(device))
    eval_every: int = 0  # > 0: also score AP every this many steps (the "curve" entry of the result; costs evals)
    # torch fills every torch.empty with NaN under deterministic algorithms (a guard against reading uninitialised
    # memory, which changes no result of a correct program); off here it saved ~10% of a step (spconv allocates many
    # buffers). Deterministic algorithms stay on either way.
    fill_uninitialized_memory: bool = False


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` ("cpu", "cuda" or "cuda:N", as ``polyzoo reproduce --device`` gives it) as a torch.device, checked
    by :func:`polyzoo.shared.options.resolve_device` (a ValueError naming the device when this machine lacks it)."""
    from polyzoo.shared.options import resolve_device as check_device

    return torch.device(check_device(str(device)))


def lr_at(cfg: LearningCheckConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule: expected 'constant' or 'cosine', got {cfg.lr_schedule!r}")
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * (step - cfg.warmup) / (cfg.steps - cfg.warmup)))


class CachedHead:
    """``dataset[i]`` with the deterministic head of the training pipeline run once per scene.

    The toy training set has 4 scenes and is drawn from 1000 times; every transform before ``ModalMask3D`` (file
    loading, resize, range and name filters) draws nothing at random and gives the same result each time, so it runs
    once here and each draw deep-copies that result through the rest (``ModalMask3D``'s draw, packing). The items are
    identical to ``dataset[i]`` (tested); only the repeated file reads and resizes are gone."""

    def __init__(self, dataset, first_random: str = "ModalMask3D") -> None:
        transforms = list(dataset.pipeline.transforms)
        names = [type(t).__name__ for t in transforms]
        if first_random not in names:
            raise ValueError(f"CachedHead: the pipeline has no {first_random} ({names})")
        cut = names.index(first_random)
        head, self.tail = transforms[:cut], transforms[cut:]
        self.items = []
        for i in range(len(dataset)):
            results = copy.deepcopy(dataset.get_data_info(i))
            results["box_type_3d"], results["box_mode_3d"] = dataset.box_type_3d, dataset.box_mode_3d
            for t in head:
                results = t(results)
                if results is None:
                    raise ValueError(f"CachedHead: {type(t).__name__} dropped scene {i} of the training set")
            self.items.append(results)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        results = copy.deepcopy(self.items[i])
        for t in self.tail:
            results = t(results)
        return results


# Quick mode (``polyzoo reproduce --quick``, a budget of about a minute on one thread; full mode keeps 3000 steps of
# batch 2 at the constant lr 1e-3): batches of all 4 scenes, lr 1e-3 decayed to 0 along a cosine. Measured (seed 0,
# AP@2m both sensors / AP@4m cameras only) at the end of such schedules: 250 steps 0.30 / 0.40, 300 steps 0.29 / 0.36,
# 350 steps 0.92 / 0.78, 400 steps 0.85 / 0.77; batch 2 with the same cosine, 450 steps: 0.44 / 0.39; batch 2 cosine
# from 2e-3: 0.12 / 0.20; from 1.5e-3 with 30 warmup steps (400 steps): 0.27 / 0.33. A batch of 4 costs about 1.5-1.75
# batches of 2 here. The jump between 300 and 350 steps says the margin is one of schedule length, not of the claim:
# a run that falls short is INCONCLUSIVE in quick mode, never FAIL.
QUICK_STEPS = 350
QUICK_BATCH = 4
QUICK_LR = 1e-3


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
    """Centre-distance AP of the model's predictions on every sample of ``dataset`` (a list of prepared items or a
    dataset; the model's data preprocessor moves them to the model's device)."""
    from mmengine.dataset import pseudo_collate

    was_training = model.training
    model.eval()
    preds, gts = [], []
    for i in range(len(dataset)):
        data = model.data_preprocessor(pseudo_collate([dataset[i]]), training=False)
        sample = model(**data, mode="predict")[0]
        p = sample.pred_instances_3d
        preds.append((p.bboxes_3d.gravity_center.cpu().numpy(), p.scores_3d.cpu().numpy(), p.labels_3d.cpu().numpy()))
        g = sample.gt_instances_3d
        gts.append((g.bboxes_3d.gravity_center.cpu().numpy(), g.labels_3d.cpu().numpy()))
    model.train(was_training)
    return center_distance_ap(preds, gts)


def run_learning_check(out_dir: str | Path, cfg: LearningCheckConfig | None = None, progress=None) -> dict:
    """Generate toy scenes under ``out_dir``, train on ``cfg.device``, evaluate. Returns losses and AP tables.

    ``progress``: an object with ``update(n, postfix=...)`` (the reproduce runner's bar) advanced once per step;
    None: a tqdm bar unless ``cfg.progress`` is False."""
    from mmengine.dataset import pseudo_collate
    from tqdm import tqdm

    from polyzoo.shared.seed import seed_everything

    cfg = cfg or LearningCheckConfig()
    device = resolve_device(cfg.device)
    lr_at(cfg, 0)  # validates the schedule's name before any work
    out_dir = Path(out_dir)
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # with one thread: reruns on one machine are identical
    torch.utils.deterministic.fill_uninitialized_memory = cfg.fill_uninitialized_memory
    try:
        seed_everything(cfg.seed)
        data_root = out_dir / "toy_scenes"
        write_toy_dataset(data_root, ToySceneConfig(num_scenes=cfg.num_scenes, seed=cfg.seed))
        model, train_set, test_sets = _build(data_root)
        model.to(device)  # mmengine's BaseModel.to also points the data preprocessor at the device
        for t in train_set.pipeline.transforms:
            if hasattr(t, "rng"):
                t.rng = np.random.default_rng(cfg.seed)
        train_items = CachedHead(train_set)
        test_items = {modal: [ds[i] for i in range(len(ds))] for modal, ds in test_sets.items()}
        # foreach: one update over all parameters at once (CPU defaults to a Python loop over ~200 tensors); same rule
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, foreach=True)
        rng = np.random.default_rng(cfg.seed)
        history, curve = [], []
        eval_seconds = 0.0
        start = time.perf_counter()
        model.train()
        bar = None if progress is not None else tqdm(total=cfg.steps, desc="CMT toy training", disable=not cfg.progress)
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            idx = rng.choice(len(train_items), size=min(cfg.batch_size, len(train_items)), replace=False)
            data = model.data_preprocessor(pseudo_collate([train_items[int(i)] for i in idx]), training=True)
            losses = model(**data, mode="loss")
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0, foreach=True)
            opt.step()
            history.append({k: float(v.detach()) for k, v in losses.items()})
            postfix = f"loss {history[-1]['loss_cls'] + history[-1]['loss_bbox']:.3f}"
            if bar is not None:
                bar.set_postfix_str(postfix, refresh=False)
                bar.update(1)
            else:
                progress.update(1, postfix=postfix)
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
                t_eval = time.perf_counter()
                curve.append({"step": step + 1, **{str(m): evaluate(model, it) for m, it in test_items.items()}})
                eval_seconds += time.perf_counter() - t_eval
        if bar is not None:
            bar.close()
        train_seconds = time.perf_counter() - start - eval_seconds
        results = {modal: evaluate(model, items) for modal, items in test_items.items()}
        curve.append({"step": cfg.steps, **{str(m): results[m] for m in results}})
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill
        torch.use_deterministic_algorithms(previous_det, warn_only=previous_warn)
        torch.set_num_threads(previous_threads)
    return {
        "history": history,
        "ap": results,
        "curve": curve,
        "train_seconds": train_seconds,
        "steps": cfg.steps,
        "device": str(device),
    }


def check_config(quick: bool, seed: int = 0, device: str = "cpu") -> LearningCheckConfig:
    """The check's settings: full mode 3000 steps of batch 2 at the constant lr 1e-3; quick mode :data:`QUICK_STEPS`
    steps of batch :data:`QUICK_BATCH` from :data:`QUICK_LR` down a cosine to 0."""
    if quick:
        return LearningCheckConfig(
            steps=QUICK_STEPS, batch_size=QUICK_BATCH, lr=QUICK_LR, lr_schedule="cosine", seed=seed, device=device
        )
    return LearningCheckConfig(steps=3000, seed=seed, device=device)


def check(ctx) -> list:
    """``polyzoo reproduce --only detection.cmt``: the learning check as a report table, trained on ``ctx.device``.

    Both claims are existence claims on one run (the model *can* overfit the scenes; camera-only inference *can*
    still detect): reaching the thresholds shows them. Not reaching them after the quick schedule is no evidence
    against them (the run may simply be too short), so quick mode then says INCONCLUSIVE; full mode says FAIL."""
    from polyzoo.shared.report import CheckResult

    cfg = check_config(ctx.quick, ctx.seed, ctx.device)
    run_dir = ctx.run_dir("detection.cmt")
    bar = ctx.progress(cfg.steps, "CMT toy training steps")
    out = run_learning_check(run_dir, cfg, progress=bar)
    ap = out["ap"]
    hist = out["history"]
    first = np.mean([h["loss_cls"] + h["loss_bbox"] for h in hist[:10]])
    last = np.mean([h["loss_cls"] + h["loss_bbox"] for h in hist[-10:]])
    names = {None: "LiDAR + cameras", "points": "cameras only (points zeroed)", "image": "LiDAR only (images zeroed)"}
    thresholds = ("AP@0.5", "AP@1", "AP@2", "AP@4", "mAP")
    rows = [[names[m], *[round(ap[m][k], 3) for k in thresholds]] for m in (None, "points", "image")]
    schedule = f"batch {cfg.batch_size}, AdamW lr {cfg.lr:g}" + (
        " cosine to 0" if cfg.lr_schedule == "cosine" else " constant"
    )
    overfit = ap[None]["AP@2"] >= 0.5
    camera_only = ap["points"]["AP@4"] >= 0.2
    shown = overfit and camera_only
    passed = True if shown else (None if ctx.quick else False)
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
            data="4 generated toy scenes (3 classes, 4 cameras 64×160, LiDAR on surfaces + ground), seed "
            f"{cfg.seed}, one run",
            columns=["inputs", *thresholds],
            rows=rows,
            passed=passed,
            verdict=(
                (
                    ""
                    if shown or not ctx.quick
                    else "Inconclusive: the quick schedule did not reach a threshold, which "
                    "shows nothing against the claim (run without --quick to decide). "
                )
                + f"after {out['steps']} steps ({out['train_seconds']:.0f} s, {schedule}, {out['device']}) the "
                f"last-layer matching loss fell "
                f"{first:.2f} → {last:.2f}; AP@2m {ap[None]['AP@2']:.2f} with both sensors, AP@4m "
                f"{ap['points']['AP@4']:.2f} with LiDAR removed, AP@4m {ap['image']['AP@4']:.2f} with cameras removed"
            ),
            paper="nuScenes val NDS: 72.9 with both sensors, 44.7 without LiDAR, 68.1 without cameras (fusion model)",
            figures=figures,
            notes=(
                "Toy data and a tiny model: it shows the mechanisms learn and that masked-modality training keeps "
                "a camera-only path, not the paper's accuracy.",
                "Existence claims on one run: reaching both thresholds shows them (PASS); in quick mode a shortfall "
                "is INCONCLUSIVE (a short run proves nothing against them), in full mode (3000 steps) it is FAIL. "
                "AP is scored on the training scenes, so the only noise is the run's seed.",
            ),
        )
    ]
