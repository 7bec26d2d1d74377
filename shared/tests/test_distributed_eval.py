"""The engine's evaluation under 2 CPU processes (torchrun, gloo): the distributed sampler pads the last round of
batches with repeated samples; the gathered set must hold every sample exactly once, in order, with the outputs
of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("ddp_eval_job.py")


def _run(runs_dir: Path, processes: int, n_eval: int, batch: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd += [str(JOB), str(runs_dir), str(n_eval), str(batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((runs_dir / "ev" / "eval.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("n_eval", "batch"), [(21, 4), (3, 4)])
def test_two_process_evaluation_sees_each_sample_once(tmp_path, n_eval, batch):
    one = _run(tmp_path / "one", 1, n_eval, batch)
    two = _run(tmp_path / "two", 2, n_eval, batch)
    assert two["processes"] == 2
    assert two["ids"] == list(range(n_eval))  # no sample dropped, none repeated, in dataset order
    assert two["result"] == {"eval_n": float(n_eval)}
    assert two["outputs"] == one["outputs"]  # one linear layer per sample: the same floats on 1 or 2 processes
