"""polyzoo.security.jobs: run folders claimed by one process at a time, finished runs read back."""

import json
import os
import subprocess
import sys

from polyzoo.security import jobs


def test_claim_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "dc_none_s0"
    run_dir.mkdir()
    (run_dir / "claim").write_text(dead.stdout.strip())
    assert jobs.claim(run_dir)
    assert (run_dir / "claim").read_text() == str(os.getpid())
    assert jobs.claim(run_dir)  # this process's own claim


def test_claim_of_a_live_process_is_respected(tmp_path):
    (tmp_path / "claim").write_text(str(os.getppid()))  # alive, and not this process
    assert not jobs.claim(tmp_path)
    assert (tmp_path / "claim").read_text() == str(os.getppid())


def test_run_claimed_reads_finished_runs_runs_free_ones_and_waits_for_held_ones(tmp_path, monkeypatch):
    done, free, held = tmp_path / "done", tmp_path / "free", tmp_path / "held"
    done.mkdir()
    (done / jobs.RESULT).write_text(json.dumps({"v": 1}))
    held.mkdir()
    (held / "claim").write_text(str(os.getppid()))
    ran, polls = [], []

    def run(key, folder):
        ran.append(key)
        return {"v": key}

    def sleep(_s):  # the holder finishes while we wait
        polls.append(1)
        (held / jobs.RESULT).write_text(json.dumps({"v": 3}))

    monkeypatch.setattr(jobs.time, "sleep", sleep)
    out = jobs.run_claimed({"done": done, "free": free, "held": held, "none": None}, run, poll_seconds=0)
    assert out == {"done": {"v": 1}, "free": {"v": "free"}, "held": {"v": 3}, "none": {"v": "none"}}
    assert sorted(ran) == ["free", "none"] and polls == [1]
