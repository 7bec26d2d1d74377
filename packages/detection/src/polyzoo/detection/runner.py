"""``tools/train.py`` and ``tools/test.py`` for mmengine configs (CMT, RefT), in the style of mmdet's tools.

Both build an mmengine ``Runner`` from a config (``default_scope`` decides mmdet3d or mmdet; plugins come in with
the config's ``custom_imports``) and support distributed launch (``--launcher pytorch`` under ``torchrun``).

Checkpoint loading keeps ``torch.load(weights_only=True)``: mmengine's data-only globals are allowlisted inside a
scoped block (:mod:`polyzoo.detection.checkpoint`). Full unpickling happens only with ``--trust-checkpoint`` and only
while the runner resumes, for a checkpoint your own run wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import os.path as osp
from collections.abc import Sequence
from typing import Any

from polyzoo.detection.checkpoint import mmengine_safe_globals, trusted_full_unpickling


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", help="folder for logs and checkpoints (default ./work_dirs/<config name>)")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="override config entries, e.g. train_cfg.max_iters=10 model.pts_bbox_head.num_query=50",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)


def _load_cfg(args: argparse.Namespace) -> Any:
    from mmengine.config import Config, DictAction

    try:
        cfg = Config.fromfile(args.config)
    except SyntaxError as e:
        raise ValueError(f"{args.config}: line {e.lineno}: not a valid Python config ({e.msg})") from None
    cfg.launcher = args.launcher
    if args.cfg_options:
        action = DictAction(option_strings=[], dest="cfg_options")
        ns = argparse.Namespace()
        action(None, ns, args.cfg_options)
        old_root = cfg.get("data_root")
        cfg.merge_from_dict(ns.cfg_options)
        if "data_root" in ns.cfg_options:
            propagate_data_root(cfg, old_root, cfg.data_root)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.launcher != "none" and "LOCAL_RANK" not in os.environ:  # distributed launch only: in one process a
        os.environ["LOCAL_RANK"] = str(args.local_rank)  # stray LOCAL_RANK makes later Accelerate code go distributed
    return cfg


def distributed_without_cuda(cfg: Any) -> None:
    """``--launcher pytorch`` on CPUs (under ``torchrun``, gloo). mmengine's launcher assumes GPUs: it calls
    ``torch.cuda.set_device(LOCAL_RANK)``, takes ``env_cfg.dist_cfg.backend`` (nccl in the configs) and wraps the
    model in DDP with ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU module. Without CUDA the process
    group is created here with gloo (mmengine then finds it initialised) and the DDP wrapper gets no device ids
    (mmengine's defaults otherwise: ``broadcast_buffers=False``, the config's ``find_unused_parameters``). Runs
    on the resolved config after the run contract, so these launch details are not part of the compared config."""
    import torch

    if cfg.get("launcher", "none") != "pytorch" or torch.cuda.is_available():
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    env = cfg.get("env_cfg") or {}
    env.setdefault("dist_cfg", {})["backend"] = "gloo"
    cfg.env_cfg = env
    wrapper = cfg.get("model_wrapper_cfg") or dict(
        type="MMDistributedDataParallel",
        broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False),
    )
    wrapper["device_ids"] = None
    cfg.model_wrapper_cfg = wrapper


def eval_precision(cfg: Any, precision: str, on_cpu: bool) -> None:
    """``--precision`` for mmengine's validation and test loops: bf16/fp16 turn on their autocast (``fp16=True``,
    in the dtype set here as the process's CUDA autocast dtype); mmengine's CPU autocast runs bfloat16 only."""
    import torch

    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"--precision: expected fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp32":
        return
    if on_cpu and precision == "fp16":
        raise ValueError("--precision fp16 on the CPU: mmengine's CPU autocast runs bfloat16 only (use bf16 or fp32)")
    if not on_cpu:
        torch.set_autocast_dtype("cuda", torch.bfloat16 if precision == "bf16" else torch.float16)
    for key in ("val_cfg", "test_cfg"):
        if cfg.get(key) is not None:
            cfg[key]["fp16"] = True


def propagate_data_root(cfg: Any, old_root: str | None, new_root: str) -> None:
    """Make ``--cfg-options data_root=DIR`` reach what the config derived from it when it was read.

    A config's ``data_root`` variable is copied into each dataloader's ``dataset.data_root``, hooks' datasets (RefT's
    support bank) and evaluators' ``ann_file`` (``data_root + "annotations/..."``) as the file is parsed, so
    overriding the top-level key afterwards changes nothing the runner reads. Here every nested ``data_root`` still
    equal to the config's original ``old_root`` becomes ``new_root`` and every nested ``ann_file`` that starts with
    ``old_root`` is moved under ``new_root``. Values the user set explicitly in the same ``--cfg-options`` (no longer
    equal to ``old_root``) are kept."""
    if not old_root or old_root == new_root:
        return
    seen: set[int] = set()  # `test_evaluator = val_evaluator` may leave one object under two keys: move it once

    def visit(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data_root" and value == old_root:
                    node[key] = new_root
                elif key == "ann_file" and isinstance(value, str) and value.startswith(old_root):
                    node[key] = osp.join(new_root, value[len(old_root) :].lstrip("/"))
                else:
                    visit(value)
        elif isinstance(node, list | tuple):
            for value in node:
                visit(value)

    for key in list(cfg.keys()):
        if key != "data_root":
            visit(cfg.get(key))


def _broadcast_buffers_before_validation(runner: Any) -> None:
    """Under several processes, give every process rank 0's buffers (BatchNorm running statistics) before each
    validation epoch. mmengine's DDP wrapper does not broadcast buffers (``broadcast_buffers=False``), so each
    process's statistics drift with its own batches, and a validation split across processes would score each
    scene with another model, none of them the one rank 0 checkpoints. With this hook the several-process
    validation scores exactly the checkpointed model (a slow test compares it with a one-process ``test.py``).
    mmengine's own ``SyncBuffersHook`` averages the buffers instead, which no checkpoint holds."""
    import torch.distributed as dist
    from mmengine.hooks import Hook

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return

    class BroadcastBuffersHook(Hook):
        def before_val_epoch(self, runner: Any) -> None:
            model = runner.model.module if hasattr(runner.model, "module") else runner.model
            for buf in model.buffers():
                dist.broadcast(buf.data, src=0)

    runner.register_hook(BroadcastBuffersHook(), priority="HIGHEST")


def _build_runner(cfg: Any) -> Any:
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    return Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)


def _guard_loading(runner: Any, trust: bool, path: str | None) -> None:
    """Wrap ``runner.load_or_resume`` so checkpoint reading happens under the chosen loading policy."""
    original = runner.load_or_resume

    def load_or_resume() -> None:
        ctx = trusted_full_unpickling(path) if trust else contextlib.nullcontext()
        with mmengine_safe_globals(), ctx:
            original()

    runner.load_or_resume = load_or_resume


# config entries that do not change what is trained (not compared by the run contract)
RUN_ONLY_KEYS = (
    "work_dir",
    "launcher",
    "resume",
    "visualizer",
    "vis_backends",
    "log_level",
    "log_processor",
    "default_hooks",
    "env_cfg",
)
_VIS_BACKENDS = {"tensorboard": "TensorboardVisBackend", "wandb": "WandbVisBackend", "mlflow": "MLflowVisBackend"}


def select_device(device: str) -> None:
    """``--device`` for mmengine, which picks CUDA whenever it sees a GPU: ``cpu`` hides the GPUs and ``cuda:N``
    shows only GPU N, through ``CUDA_VISIBLE_DEVICES`` (so it must run before CUDA starts)."""
    import torch

    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine (use --device cpu)")


def apply_run_options(
    cfg: Any,
    *,
    resume: bool = True,
    overwrite: bool = False,
    seed: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    log_with: str = "none",
) -> str:
    """Give an mmengine config the polyzoo run contract (:mod:`polyzoo.shared.run`) with ``cfg.work_dir`` as the
    run folder: its ``config.json`` holds the resolved config (less :data:`RUN_ONLY_KEYS`); the same config resumes
    from mmengine's last checkpoint, another one is refused before anything is written unless ``overwrite`` (then
    the work dir's checkpoints are removed). Returns ``"new"``, ``"resume"`` or ``"restart"``.

    ``device`` ``cpu`` hides the GPUs (before CUDA starts), ``cuda:N`` selects one; ``precision`` bf16/fp16 selects
    ``AmpOptimWrapper`` with that dtype and autocast in the validation loop (:func:`eval_precision`); it needs a GPU
    (mmengine's ``AmpOptimWrapper`` does), so it is refused on the CPU; fp32 selects ``OptimWrapper`` (also for a
    config that asks AMP on a CPU machine); ``log_with`` adds the matching mmengine visualisation backend.
    """
    import torch

    from polyzoo.shared.run import RunDir

    if seed is not None:
        cfg.randomness = dict(seed=seed, deterministic=False)
    select_device(device)
    on_cpu = device == "cpu" or not torch.cuda.is_available()
    wrapper = cfg.get("optim_wrapper")
    if precision in ("bf16", "fp16") and on_cpu:
        raise ValueError(
            f"--precision {precision}: mixed-precision training of an mmengine config needs a GPU (AmpOptimWrapper); "
            "use --precision fp32 on the CPU"
        )
    eval_precision(cfg, precision, on_cpu)
    if wrapper is not None:
        if precision in ("bf16", "fp16"):
            wrapper.type = "AmpOptimWrapper"
            wrapper.dtype = "bfloat16" if precision == "bf16" else "float16"
            if precision == "fp16":
                wrapper.loss_scale = "dynamic"
        elif wrapper.get("type") == "AmpOptimWrapper" and on_cpu:
            wrapper.type = "OptimWrapper"
            for key in ("dtype", "loss_scale"):
                wrapper.pop(key, None)
    if log_with != "none":
        vis = cfg.get("visualizer") or dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")])
        vis.setdefault("vis_backends", [dict(type="LocalVisBackend")])
        vis["vis_backends"] = [*vis["vis_backends"], dict(type=_VIS_BACKENDS[log_with])]
        cfg.visualizer = vis
    compared = {k: v for k, v in cfg.to_dict().items() if k not in RUN_ONLY_KEYS}
    config = {"mmengine_config": compared, "precision": precision}
    run = RunDir(
        cfg.work_dir,
        config,
        resume=resume,
        overwrite=overwrite,
        engine_files=("*.pth", "last_checkpoint"),
        is_main=int(os.environ.get("RANK", "0")) == 0,  # under torchrun only rank 0 writes the run files
    ).open()
    action = run.action
    cfg.resume = action == "resume" and osp.exists(osp.join(cfg.work_dir, "last_checkpoint"))
    return action


def train_main(argv: Sequence[str] | None = None, prepare: Any = None) -> Any:
    """Train a model from an mmengine config. Returns the trained model. ``prepare(cfg)`` runs on the resolved
    config before the runner is built (``polyzoo detection train`` applies the run contract there)."""
    parser = argparse.ArgumentParser(description="Train a detector from an mmengine config (mmdet3d/mmdet plugins).")
    parser.add_argument("config", help="config file, e.g. packages/detection/configs/cmt/cmt_tiny_cpu.py")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (AmpOptimWrapper)")
    parser.add_argument("--auto-scale-lr", action="store_true", help="scale lr by world size × batch size")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from PATH, or from the latest checkpoint in the work dir when no path is given",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow full unpickling while resuming (only for a checkpoint your own run wrote)",
    )
    _add_common(parser)
    args = parser.parse_args(argv)
    cfg = _load_cfg(args)
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg or "base_batch_size" not in cfg.auto_scale_lr:
            raise ValueError(f"{args.config}: --auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)`")
        cfg.auto_scale_lr.enable = True
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if prepare is not None:
        prepare(cfg)
    distributed_without_cuda(cfg)
    runner = _build_runner(cfg)
    _broadcast_buffers_before_validation(runner)
    _guard_loading(runner, args.trust_checkpoint, args.resume)
    return runner.train()


def test_main(argv: Sequence[str] | None = None, prepare: Any = None) -> dict:
    """Evaluate a checkpoint with an mmengine config. Returns the metrics dict. ``prepare(cfg)`` runs on the resolved
    config before the runner is built (``polyzoo detection eval`` applies ``--precision`` there)."""
    parser = argparse.ArgumentParser(description="Test a detector checkpoint with an mmengine config.")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file (mmengine .pth or a plain state dict)")
    parser.add_argument("--out", help="dump raw predictions to this .pkl file")
    _add_common(parser)
    args = parser.parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint file")
    if osp.getsize(args.checkpoint) == 0:
        raise ValueError(f"{args.checkpoint}: empty file; expected a checkpoint")
    cfg = _load_cfg(args)
    cfg.load_from = args.checkpoint
    if prepare is not None:
        prepare(cfg)
    distributed_without_cuda(cfg)
    runner = _build_runner(cfg)
    if args.out is not None:
        from mmengine.evaluator import DumpResults

        if not args.out.endswith((".pkl", ".pickle")):
            raise ValueError(f"--out {args.out}: expected a .pkl or .pickle file")
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    _guard_loading(runner, False, args.checkpoint)
    return runner.test()
