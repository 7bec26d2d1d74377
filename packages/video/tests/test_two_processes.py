"""`polyzoo video train` on 2 CPU processes (torchrun, gloo, the shared engine) against 1 process.

The TCP head (and the tiny backbone) hold batch norm, which under DDP normalises each process's clips on their own
(PyTorch's SyncBatchNorm runs on GPUs only). The 1-process run that computes the same update is therefore not one
batch of 8 but the same two batches of 4 accumulated (``--grad-accum 2``): the engine's sampler hands rank 0 and
rank 1 the batches that one process takes one after the other, each batch is normalised with its own statistics
in both runs, and the accumulated gradient (two halves summed) is DDP's mean of the two. Augmentation (segment
offsets, multi-scale crops, flips) is seeded per clip and dropout is off, so the trained *parameters* agree to
float rounding (asserted within 1e-4 relative + 1e-6 absolute). The batch-norm *running statistics* do not: DDP
keeps rank 0's (it broadcasts rank 0's buffers before each forward), the accumulating run updates them with both
batches. So the 2-process evaluation, which uses them, is compared with a 1-process `polyzoo video eval` of the
2-process run's own checkpoint: the same videos, views and fusion, the same numbers.

The validation list has 20 clips: with 2 processes × 4 per batch the sampler pads the last round with repeated
clips; the engine must evaluate each clip exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from polyzoo.shared.engine import find_last_checkpoint
from polyzoo.video.cli import video

SETTINGS = [
    "--backbone", "tiny", "--frames", "4", "--tcp-dim", "8", "--input-size", "32", "--scale-size", "36",
    "--scales", "1,0.875", "--dropout", "0", "--workers", "0", "--lr", "0.01", "--epochs", "2", "--lr-steps", "1",
    "--batch-size", "4", "--device", "cpu", "--format", "json",
]  # fmt: skip


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    from polyzoo.video.synthetic import SyntheticConfig, make_dataset

    out = tmp_path_factory.mktemp("synthetic2")
    return make_dataset(out, {"train": 8, "val": 5}, SyntheticConfig(size=32, steps=4, hold=2), seed=0)


def _train(run_dir, lists, processes: int, accumulate: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += ["-m", "polyzoo.shared.cli", "video", "train", "--train-list", str(lists["train"]), "--val-list"]
    cmd += [str(lists["val"]), "--run-dir", str(run_dir), "--grad-accum", str(accumulate), *SETTINGS]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = load_file(str(find_last_checkpoint(run_dir) / "model.safetensors"))
    return {"records": records, "weights": weights, "config": json.loads((run_dir / "config.json").read_text())}


@pytest.mark.slow
def test_two_processes_train_as_one_accumulating_and_evaluate_each_clip_once(lists, tmp_path):
    one = _train(tmp_path / "one", lists, 1, 2)
    two = _train(tmp_path / "two", lists, 2, 1)
    assert two["config"]["run"]["num_processes"] == 2
    train_one = [r for r in one["records"] if r["split"] == "train"]
    train_two = [r for r in two["records"] if r["split"] == "train"]
    assert [r["step"] for r in train_two] == [r["step"] for r in train_one] == [8]  # 32 clips / 8 a step, 2 epochs
    assert train_two[0]["lr"] == train_one[0]["lr"] == pytest.approx(0.001)  # divided by 10 after epoch 1 in both
    for key in ("loss", "acc"):  # means over the same 16 batches of 4
        assert train_two[0][key] == pytest.approx(train_one[0][key], rel=1e-4)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = [k for k in one["weights"] if not k.endswith(buffers)]
    assert len(params) > 10
    for key in params:
        torch.testing.assert_close(two["weights"][key], one["weights"][key], rtol=1e-4, atol=1e-6, msg=key)

    evals = [r for r in two["records"] if r["split"] == "eval"]
    assert [r["samples"] for r in evals] == [20, 20]  # after each epoch, every clip once
    alone = CliRunner().invoke(
        video, ["eval", str(tmp_path / "two"), "--list", str(lists["val"]), "--workers", "0", "--format", "json"]
    )
    assert alone.exit_code == 0, alone.output
    result = json.loads(alone.stdout)
    assert result["videos"] == 20
    assert evals[-1]["top1"] == result["top1"]
    assert evals[-1]["loss"] == pytest.approx(result["loss"], rel=1e-5)
