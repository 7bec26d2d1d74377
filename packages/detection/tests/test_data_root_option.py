"""``--cfg-options data_root=DIR`` (tools/train.py, tools/test.py, ``polyzoo detection train/eval``) reaches every
dataloader's dataset and every evaluator's annotation file, not only the config's top-level variable."""

import argparse
from pathlib import Path

from polyzoo.detection.runner import _load_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _load(config: Path, *options: str):
    args = argparse.Namespace(config=str(config), launcher="none", cfg_options=list(options), work_dir=None)
    return _load_cfg(args)


def test_cmt_data_root_reaches_every_dataloader():
    cfg = _load(CONFIGS / "cmt" / "cmt_toy_cpu.py", "data_root=/elsewhere/toy/")
    assert cfg.data_root == "/elsewhere/toy/"
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[key]["dataset"]["data_root"] == "/elsewhere/toy/", key
        assert cfg[key]["dataset"]["ann_file"] == "toy_infos.pkl", key  # relative: mmengine joins it with data_root


def test_explicit_dataset_override_wins_and_unset_keeps_the_config():
    cfg = _load(CONFIGS / "cmt" / "cmt_toy_cpu.py", "data_root=/a/", "val_dataloader.dataset.data_root=/b/")
    assert cfg.train_dataloader.dataset.data_root == "/a/"
    assert cfg.val_dataloader.dataset.data_root == "/b/"
    plain = _load(CONFIGS / "cmt" / "cmt_toy_cpu.py", "train_cfg.max_iters=3")
    assert plain.train_dataloader.dataset.data_root == "data/cmt_toy/"


def test_reft_evaluator_annotation_files_follow_data_root():
    cfg = _load(CONFIGS / "reft" / "reft_tiny_shapes.py", "data_root=out/shapes")  # no trailing slash
    anns = [ev["ann_file"] for key in ("val_evaluator", "test_evaluator") for ev in cfg[key]]
    assert anns == ["out/shapes/val/annotations.json"] * len(anns) and len(anns) == 4
    assert cfg.train_dataloader.dataset.dataset.data_root == "out/shapes"  # inside the RefT episode wrapper
    assert cfg.val_dataloader.dataset.data_root == "out/shapes"
    assert all(h["support_dataset"]["data_root"] == "out/shapes" for h in cfg.custom_hooks)  # RefT support bank
