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
    cfg = _cfg(tmp_path / "b")
    apply_run_options(cfg, device="cpu", precision="bf16")
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"


def test_cmt_check_default_steps_equal_the_library_default():
    from polyzoo.detection.cli import cmt_check
    from polyzoo.detection.cmt.learning_check import LearningCheckConfig

    steps = next(p for p in cmt_check.params if p.name == "steps")
    assert steps.default == LearningCheckConfig.steps
