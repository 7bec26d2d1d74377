"""`polyzoo vision train` on 2 CPU processes (torchrun, gloo, the shared engine) against 1 process.

Same global batch: 1 process × 8 samples vs 2 processes × 4 (the engine's sampler order, sharded batch by batch,
gives rank 0 the first 4 and rank 1 the next 4 of the 8 a single process takes). The model is timm's
``test_convnext`` (the verb trains any timm model): ours all hold batch norm (EMO's depthwise convolutions, ECA's
ResNets, SoT's stem), which normalises each process's 4 samples on their own under DDP (PyTorch's SyncBatchNorm
runs on GPUs only), a different computation from one process's 8. With layer norms only, nothing couples samples
inside a batch and nothing draws from a process's random stream (augmentation is seeded per sample), so the two
runs compute the same mathematical update. They differ only in the order of the floating-point sums of the gradient mean
(two 4-sample means all-reduced and halved vs one 8-sample mean), which AdamW carries through 16 steps: the
weights agree to rounding (measured: largest absolute difference 5e-7), asserted within 1e-4 relative + 1e-6
absolute, not bit for bit.

The evaluation split has 21 images: with 2 processes × 4 per batch the sampler pads the last round with repeated
images; the engine must evaluate each image exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from polyzoo.shared.engine import find_last_checkpoint

MODEL = "test_convnext"  # timm's 0.2M-parameter ConvNeXt: layer norms only, no dropout, no drop path


def _images(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", [16, 16, 16, 16]), ("val", [6, 5, 5, 5])):
        for c, n in enumerate(per_class):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((20, 20, 3)) * 255).astype(np.uint8)
                pixels[..., c % 3] //= 2  # a little class signal
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")


def _train(run_dir, data, processes: int, batch: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += ["-m", "polyzoo.shared.cli", "vision", "train", "--model", MODEL, "--data", str(data)]
    cmd += ["--run-dir", str(run_dir), "--device", "cpu", "--batch-size", str(batch), "--epochs", "2", "--img-size"]
    cmd += ["32", "--lr", "0.003", "--workers", "0", "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = load_file(str(find_last_checkpoint(run_dir) / "model.safetensors"))
    return {"records": records, "weights": weights, "config": json.loads((run_dir / "config.json").read_text())}


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one(tmp_path):
    _images(tmp_path / "imgs")
    one = _train(tmp_path / "one", tmp_path / "imgs", 1, 8)
    two = _train(tmp_path / "two", tmp_path / "imgs", 2, 4)
    assert two["config"]["run"]["num_processes"] == 2
    train_one = [r for r in one["records"] if r["split"] == "train"]
    train_two = [r for r in two["records"] if r["split"] == "train"]
    assert [r["step"] for r in train_two] == [r["step"] for r in train_one] == [10, 16]  # 64 images / 8 a step
    assert [r["lr"] for r in train_two] == pytest.approx([r["lr"] for r in train_one], rel=1e-12)  # same schedule
    for a, b in zip(train_one, train_two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)  # the mean over both processes' samples
    for key, value in one["weights"].items():
        torch.testing.assert_close(two["weights"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    eval_one = [r for r in one["records"] if r["split"] == "eval"]
    eval_two = [r for r in two["records"] if r["split"] == "eval"]
    assert [r["samples"] for r in eval_two] == [r["samples"] for r in eval_one] == [21, 21]  # each image once
    for a, b in zip(eval_one, eval_two, strict=True):
        assert b["top1"] == a["top1"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
