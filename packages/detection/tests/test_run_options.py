"""`polyzoo detection train`'s run options on an mmengine config: the run contract on the work dir, precision and
device mapped to mmengine's optimizer wrappers, trackers as visualisation backends (no training here)."""

from pathlib import Path

import pytest
from mmengine.config import Config

from polyzoo.detection.runner import apply_run_options
from polyzoo.shared.run import ConfigMismatchError, RunError

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cmt" / "cmt_toy_cpu.py"


def _cfg(work, **changes):
    cfg = Config.fromfile(str(CONFIG))
    cfg.work_dir = str(work)
    cfg.merge_from_dict(changes)
    return cfg


def test_changed_config_is_refused_before_writing(tmp_path):
    work = tmp_path / "work"
    assert apply_run_options(_cfg(work), device="cpu") == "new"
    stored = (work / "config.json").read_bytes()
    (work / "last_checkpoint").write_text(str(work / "iter_1.pth"))
    (work / "iter_1.pth").write_bytes(b"x")
    cfg = _cfg(work)
    assert apply_run_options(cfg, device="cpu") == "resume" and cfg.resume
    with pytest.raises(ConfigMismatchError, match=r"mmengine_config\.optim_wrapper\.optimizer\.lr"):
        apply_run_options(_cfg(work, **{"optim_wrapper.optimizer.lr": 0.5}), device="cpu")
    assert (work / "config.json").read_bytes() == stored
    with pytest.raises(RunError, match="--no-resume"):
        apply_run_options(_cfg(work), device="cpu", resume=False)
    cfg = _cfg(work, **{"optim_wrapper.optimizer.lr": 0.5})
    assert apply_run_options(cfg, device="cpu", overwrite=True) == "restart"
    assert not (work / "iter_1.pth").exists() and not cfg.resume


def test_precision_device_and_trackers(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cfg = _cfg(tmp_path / "a", **{"optim_wrapper.type": "AmpOptimWrapper"})
    apply_run_options(cfg, device="cpu", seed=3, log_with="tensorboard")
    assert cfg.optim_wrapper.type == "OptimWrapper"  # AMP asked on a CPU: the plain wrapper
    assert cfg.randomness.seed == 3
    assert {"type": "TensorboardVisBackend"} in cfg.visualizer.vis_backends
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(ValueError, match="needs a GPU"):  # mmengine's AmpOptimWrapper asserts CUDA when built
        apply_run_options(_cfg(tmp_path / "b"), device="cpu", precision="bf16")


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", "bfloat16"), ("fp16", "float16")])
def test_precision_on_a_gpu_reaches_the_optimizer_wrapper_and_the_loops(tmp_path, monkeypatch, precision, dtype):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine (no CUDA call is made)
    before = torch.get_autocast_dtype("cuda")
    try:
        cfg = _cfg(tmp_path / precision)
        apply_run_options(cfg, device="auto", precision=precision)
        assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == dtype
        assert cfg.optim_wrapper.get("loss_scale") == ("dynamic" if precision == "fp16" else None)
        assert cfg.val_cfg.fp16 and cfg.test_cfg.fp16  # mmengine's loops run under autocast...
        assert torch.get_autocast_dtype("cuda") == getattr(torch, dtype)  # ...in this dtype
    finally:
        torch.set_autocast_dtype("cuda", before)


def test_eval_precision_on_the_cpu():
    from polyzoo.detection.runner import eval_precision

    cfg = Config.fromfile(str(CONFIG))
    eval_precision(cfg, "fp32", on_cpu=True)
    assert not cfg.test_cfg.get("fp16")
    eval_precision(cfg, "bf16", on_cpu=True)  # mmengine's CPU autocast: bfloat16
    assert cfg.test_cfg.fp16 and cfg.val_cfg.fp16
    with pytest.raises(ValueError, match="bfloat16 only"):
        eval_precision(cfg, "fp16", on_cpu=True)


def test_cmt_check_default_steps_equal_the_library_default():
    from polyzoo.detection.cli import cmt_check
    from polyzoo.detection.cmt.learning_check import LearningCheckConfig

    steps = next(p for p in cmt_check.params if p.name == "steps")
    assert steps.default == LearningCheckConfig.steps
