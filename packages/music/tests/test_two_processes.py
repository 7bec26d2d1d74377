"""`polyzoo music finetune` under torchrun with 2 CPU processes (transformers' Trainer, DDP over gloo) against 1
process, and the held-out evaluation (``--eval``) that must score each example exactly once.

Same global batch: 1 process × 4 examples vs 2 processes × 2. transformers' seeded sampler draws one order of the
training set for every process and hands each its share of each global batch; the loss is the mean over the
completion tokens of the *global* batch on both (transformers counts the tokens across processes,
``average_tokens_across_devices``); dropout is off (``--dropout 0``). Batches are right-padded to their longest
example, so the two runs pad to different lengths, which a causal model cannot see. So the runs compute the same
update and differ only in the order of floating-point sums (matrix products over other shapes, the gradient
all-reduce): weights and losses agree within 1e-4 relative + 1e-6 absolute, not bit for bit.

The held-out set has 5 examples, which 2 processes × 2 per batch cannot split evenly: the distributed sampler
repeats examples to even out the last round, and the evaluation must drop them (transformers'
``gather_for_metrics``): 5 examples and the same token count as 1 process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from polyzoo.music.dataset import make_example, write_jsonl


def _groove(seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    core = ["".join("o" if x else "-" for x in row) for row in (torch.rand(16, 6, generator=g) < 0.25).tolist()]
    return core * 16


def _finetune(run_dir, train, held_out, processes: int, batch: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += ["-m", "polyzoo.shared.cli", "music", "finetune", "--train", str(train), "--eval", str(held_out)]
    cmd += ["--from-scratch", "--layers", "1", "--dim", "16", "--heads", "2", "--dropout", "0", "--steps", "4"]
    cmd += ["--batch-size", str(batch), "--warmup", "0", "--lr", "0.003", "--save-every", "100", "--device", "cpu"]
    cmd += ["--log-every", "1"]
    cmd += ["--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    meta = json.loads((run_dir / "run.json").read_text())
    return {"meta": meta, "weights": load_file(str(run_dir / "final" / "model.safetensors"))}


@pytest.mark.slow
def test_two_processes_finetune_as_one_and_score_each_example_once(tmp_path):
    write_jsonl([make_example(_groove(i), f"g{i}") for i in range(8)], tmp_path / "train.jsonl")
    write_jsonl([make_example(_groove(100 + i), f"v{i}") for i in range(5)], tmp_path / "val.jsonl")
    one = _finetune(tmp_path / "one", tmp_path / "train.jsonl", tmp_path / "val.jsonl", 1, 4)
    two = _finetune(tmp_path / "two", tmp_path / "train.jsonl", tmp_path / "val.jsonl", 2, 2)
    assert one["meta"]["global_step"] == two["meta"]["global_step"] == 4
    for key, value in one["weights"].items():
        torch.testing.assert_close(two["weights"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    # each step's loss as logged (transformers gathers the processes' shares); its end-of-run "train_loss" is
    # rank 0's share only under DDP, so it is not compared
    losses_one = [(r["step"], r["loss"]) for r in one["meta"]["loss_history"]]
    losses_two = [(r["step"], r["loss"]) for r in two["meta"]["loss_history"]]
    assert [s for s, _ in losses_two] == [s for s, _ in losses_one] == [1, 2, 3, 4]
    assert [x for _, x in losses_two] == pytest.approx([x for _, x in losses_one], rel=1e-4)
    ev1, ev2 = one["meta"]["eval"], two["meta"]["eval"]
    assert ev1["eval_examples"] == ev2["eval_examples"] == 5  # every held-out example once
    assert ev2["eval_tokens"] == ev1["eval_tokens"] > 0
    assert ev2["eval_nll"] == pytest.approx(ev1["eval_nll"], rel=1e-5)
