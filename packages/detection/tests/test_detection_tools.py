"""tools/train.py and tools/test.py logic (mmengine Runner) on toy scenes: train, resume, test, all with
``torch.load(weights_only=True)``."""

from pathlib import Path

import pytest
import torch

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cmt" / "cmt_toy_cpu.py"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_train_resume_test_cycle(tmp_path, monkeypatch):
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset
    from polyzoo.detection.runner import test_main, train_main

    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    data = str(write_toy_dataset(tmp_path / "data", ToySceneConfig(num_scenes=2, seed=5)).parent) + "/"
    work = tmp_path / "work"
    common = [
        "--work-dir", str(work), "--cfg-options",
        f"train_dataloader.dataset.data_root={data}", f"val_dataloader.dataset.data_root={data}",
        f"test_dataloader.dataset.data_root={data}", "train_dataloader.batch_size=1",
        "default_hooks.checkpoint.interval=1", "default_hooks.logger.interval=1",
    ]  # fmt: skip
    train_main([str(CONFIG), *common, "train_cfg.max_iters=1", "train_cfg.val_interval=100"])
    ckpt = work / "iter_1.pth"
    assert ckpt.is_file()
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(ckpt, weights_only=True)  # a real mmengine checkpoint needs the scoped allowlist
    model = train_main([str(CONFIG), *common, "train_cfg.max_iters=2", "train_cfg.val_interval=100", "--resume"])
    assert (work / "iter_2.pth").is_file() and model is not None
    from polyzoo.detection.checkpoint import mmengine_safe_globals

    with mmengine_safe_globals():
        meta = torch.load(work / "iter_2.pth", weights_only=True)["meta"]
    assert meta["iter"] == 2  # resumed from iteration 1, not retrained from 0
    metrics = test_main([str(CONFIG), str(work / "iter_2.pth"), *common[:6]])
    assert {"cda/AP@0.5", "cda/AP@4", "cda/mAP"} <= set(metrics)
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
