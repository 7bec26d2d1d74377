"""`polyzoo video train/eval --device/--precision/--grad-accum` reach what runs the model: the shared engine's
Accelerator (train) and ``torch.autocast`` (eval)."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

import polyzoo.shared.engine as engine
from polyzoo.video.cli import video


def test_train_and_eval_pass_device_and_precision_on(synthetic_lists, tmp_path, monkeypatch):
    seen: dict = {}
    real_accelerator, real_autocast = engine.Accelerator, torch.autocast

    def accelerator(**kwargs):
        seen["accelerator"] = kwargs
        return real_accelerator(**kwargs)

    def autocast(device_type, dtype=None, enabled=True, **kwargs):
        seen.setdefault("autocast", []).append((device_type, dtype, enabled))
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kwargs)

    monkeypatch.setattr(engine, "Accelerator", accelerator)
    run = tmp_path / "run"
    args = [
        "train", "--train-list", str(synthetic_lists["train"]), "--run-dir", str(run), "--backbone", "tiny",
        "--frames", "4", "--tcp-dim", "8", "--batch-size", "2", "--grad-accum", "2", "--input-size", "32",
        "--scale-size", "32", "--scales", "1", "--workers", "0", "--max-steps", "1", "--device", "cpu",
        "--precision", "bf16",
    ]  # fmt: skip
    out = CliRunner().invoke(video, args)
    assert out.exit_code == 0, out.output
    acc = seen["accelerator"]
    assert acc["cpu"] is True and acc["mixed_precision"] == "bf16" and acc["gradient_accumulation_steps"] == 2
    config = json.loads((run / "config.json").read_text())["config"]["train"]
    assert config["mixed_precision"] == "bf16" and config["gradient_accumulation_steps"] == 2

    monkeypatch.setattr(torch, "autocast", autocast)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
        args = ["eval", str(run), "--list", str(synthetic_lists["val"]), "--workers", "0", "--device", "cpu"]
        res = CliRunner().invoke(video, [*args, "--precision", precision])
        assert res.exit_code == 0, res.output
        calls = seen.pop("autocast")
        # the verb's own autocast first (inner ones, e.g. the covariance ops', turn it off for float32)
        assert calls[0] == ("cpu", dtype, dtype is not None)
