"""The engine under 2 CPU processes (torchrun, gloo): it trains, evaluates over the whole set, and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).with_name("ddp_job.py")


def _torchrun(runs_dir: Path, mode: str, stop_at: int) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(JOB),
        str(runs_dir),
        mode,
        str(stop_at),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_two_process_cpu_run_trains_and_resumes_exactly(tmp_path):
    full = _torchrun(tmp_path / "a", "fresh", 0)
    assert full.returncode == 0, full.stderr[-3000:]
    ref = json.loads((tmp_path / "a" / "ddp" / "result.json").read_text())
    # 64 samples, batch 4 per process, 2 processes: 8 steps per epoch, 2 epochs
    assert ref["processes"] == 2 and ref["steps"] == 16
    assert 0.0 <= ref["metrics"]["eval_accuracy"] <= 1.0

    broken = _torchrun(tmp_path / "b", "fresh", 5)
    assert broken.returncode != 0
    resumed = _torchrun(tmp_path / "b", "resume", 0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = json.loads((tmp_path / "b" / "ddp" / "result.json").read_text())
    assert got["weights"] == ref["weights"]
