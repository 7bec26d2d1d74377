"""The reproduction table's run cache: finished runs are reused, claims let several processes share the runs."""

import dataclasses
import os
import subprocess
import sys

import pytest

from polyzoo.security import reproduction
from polyzoo.security.defenses import DefenseConfig
from polyzoo.security.reproduction import QUICK, run_table, settings_key

TINY = dataclasses.replace(
    QUICK,
    iterations={"dc": 1, "dm": 1},
    width=8,
    batch_real=8,
    outer_loop=2,
    inner_loop=1,
    trigger_steps=3,
    eval_epochs=2,
    num_eval=1,
    defense_clean=40,
    defense_test=60,
    defense=DefenseConfig(nc_steps=2, nc_batch=16, unlearn_epochs=1, finetune_epochs=1, strip_n=2, prune_steps=4),
)


def test_finished_runs_are_reused(digits, tmp_path, monkeypatch):
    rows, defense_rows = run_table(digits, TINY, run_root=tmp_path)
    assert [r[:2] for r in rows] == [["real init", "none"], ["dc", "none"], ["dc", "naive"], ["dc", "doorping"]]
    assert all(r[-1] == 1 for r in rows)  # one seed × one evaluation network
    # the defenses run on the first seed's clean and DOORPING sets, every defense once
    assert [(r[1], r[2]) for r in defense_rows] == [
        (s, d) for s in ("clean", "DOORPING") for d in ("neural-cleanse", "strip", "fine-pruning")
    ]
    runs = ["dc_doorping_s0", "dc_naive_s0", "dc_none_s0", "real_init_none_s0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == runs

    def fail(*_a, **_k):
        raise AssertionError("a finished run was distilled again")

    monkeypatch.setattr(reproduction, "_distill", fail)
    assert run_table(digits, TINY, run_root=tmp_path) == (rows, defense_rows)


def test_waits_for_a_run_held_by_a_live_process(digits, tmp_path, monkeypatch):
    run_table(digits, TINY, run_root=tmp_path)
    held = tmp_path / "dc_naive_s0"
    result = (held / "result.json").read_text()
    (held / "result.json").unlink()
    (held / "claim").write_text(str(os.getppid()))  # alive, and not this process
    polls = []

    def sleep(_s):  # the other process "finishes" while this one waits
        polls.append(1)
        (held / "result.json").write_text(result)

    monkeypatch.setattr(reproduction.time, "sleep", sleep)
    monkeypatch.setattr(reproduction, "_distill", lambda *a, **k: pytest.fail("a held run was started twice"))
    rows, _ = run_table(digits, TINY, run_root=tmp_path)
    assert polls == [1] and len(rows) == 4


def test_claim_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "dc_none_s0"
    run_dir.mkdir()
    (run_dir / "claim").write_text(dead.stdout.strip())
    assert reproduction._claim(run_dir)
    assert (run_dir / "claim").read_text() == str(os.getpid())
    assert reproduction._claim(run_dir)  # this process's own claim


def test_real_init_row_is_the_distillations_starting_point(digits):
    from polyzoo.security.distill import DistillConfig, Distiller

    start = reproduction._distill(digits, "real init", "none", 3, TINY, None)
    cfg = DistillConfig(method="dm", ipc=TINY.ipc, iterations=0, width=TINY.width, norm=TINY.norm, init="real", seed=3)
    assert start.images.equal(Distiller(digits, cfg).synset().images)
    assert start.history == []


def test_settings_key_follows_what_decides_a_run(digits):
    key = settings_key(digits, TINY)
    assert settings_key(digits, dataclasses.replace(TINY, seeds=(0, 1, 2), methods=("dc", "dm"))) == key
    assert settings_key(digits, dataclasses.replace(TINY, eval_epochs=3)) != key
