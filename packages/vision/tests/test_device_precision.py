"""`polyzoo vision train/eval --device/--precision` reach what runs the model: the shared engine's Accelerator
(train) and ``torch.autocast`` (eval)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import polyzoo.shared.engine as engine
from polyzoo.vision.cli import vision


def _train(tmp_path, *extra):
    args = ["train", "--model", "emo_1m", "--data", "digits", "--limit", "16", "--max-steps", "1", "--batch-size", "8"]
    args += ["--img-size", "16", "--run-dir", str(tmp_path / "run"), "--format", "json", *extra]
    return CliRunner().invoke(vision, args)


def test_train_and_eval_pass_device_and_precision_on(tmp_path, monkeypatch):
    seen: dict = {}
    real_accelerator, real_autocast = engine.Accelerator, torch.autocast

    def accelerator(**kwargs):
        seen["accelerator"] = kwargs
        return real_accelerator(**kwargs)

    def autocast(device_type, dtype=None, enabled=True, **kwargs):
        seen.setdefault("autocast", []).append((device_type, dtype, enabled))
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kwargs)

    monkeypatch.setattr(engine, "Accelerator", accelerator)
    out = _train(tmp_path, "--device", "cpu", "--precision", "bf16")
    assert out.exit_code == 0, out.output
    assert seen["accelerator"]["cpu"] is True and seen["accelerator"]["mixed_precision"] == "bf16"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["train"]["mixed_precision"] == "bf16" and config["run"]["train"]["device"] == "cpu"

    monkeypatch.setattr(torch, "autocast", autocast)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
        res = CliRunner().invoke(
            vision, ["eval", "--run", str(tmp_path / "run"), "--device", "cpu", "--precision", precision]
        )
        assert res.exit_code == 0, res.output
        calls = seen.pop("autocast")
        # the verb's own autocast first (inner ones, e.g. the covariance ops', turn it off for float32)
        assert calls[0] == ("cpu", dtype, dtype is not None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    out = _train(tmp_path, "--device", "cuda")
    assert out.exit_code == 1 and "CUDA is not available" in out.output and "Traceback" not in out.output
