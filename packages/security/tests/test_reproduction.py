"""The reproduction table: finished runs are reused, rows keep numbers, several processes share the runs."""

import dataclasses
import os
import statistics

import pytest

from polyzoo.security import jobs, reproduction
from polyzoo.security.defenses import DefenseConfig
from polyzoo.security.reproduction import QUICK, run_table, settings_key

TINY = dataclasses.replace(
    QUICK,
    seeds=(0,),
    context_seeds=0,
    defend=True,
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
    per_seed = {}
    rows, defense_rows = run_table(digits, TINY, run_root=tmp_path, per_seed=per_seed)
    assert [r[:2] for r in rows] == [["real init", "none"], ["dc", "none"], ["dc", "naive"], ["dc", "doorping"]]
    assert all(r[-1] == 1 for r in rows)  # one seed × one evaluation network
    # cells are numbers: the row's mean is the stored evaluation's value
    result = reproduction.read_json(tmp_path / "dc_doorping_s0" / "result.json")
    assert rows[3][3].mean == result["evals"][0]["asr_all"] and rows[3][3].n == 1
    assert all(isinstance(r[8], float) for r in defense_rows)
    assert per_seed[("dc", "doorping")]["asr_all"] == [result["evals"][0]["asr_all"]]  # seed 0, its one network
    ok, text = reproduction._verdict(per_seed)
    assert f"DOORPING ASR {result['evals'][0]['asr_all']:.2f}" in text
    assert ok is None and text.endswith("inconclusive")  # one distillation seed: no spread, nothing decided
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

    monkeypatch.setattr(jobs.time, "sleep", sleep)
    monkeypatch.setattr(reproduction, "_distill", lambda *a, **k: pytest.fail("a held run was started twice"))
    rows, _ = run_table(digits, TINY, run_root=tmp_path)
    assert polls == [1] and len(rows) == 4


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


def test_rows_use_sample_std_over_seeds_and_nets(digits, tmp_path, monkeypatch):
    """Two seeds × one net: the cell's ± is the sample std (ddof=1) of the two stored values."""
    st = dataclasses.replace(TINY, seeds=(0, 1))
    rows, _ = run_table(digits, st, run_root=tmp_path, defend=False)
    vals = [reproduction.read_json(tmp_path / f"dc_none_s{s}" / "result.json")["evals"][0]["cta"] for s in (0, 1)]
    cell = rows[1][2]
    assert cell.n == 2 and cell.mean == pytest.approx(statistics.fmean(vals))
    assert cell.std == pytest.approx(statistics.stdev(vals))


def test_defense_and_evaluation_use_the_attacks_target(digits, monkeypatch):
    """The table's evaluation and defenses measure the ASR at the synset's target, not at a fixed 0."""
    s = reproduction._distill(digits, "real init", "none", 0, TINY, None)
    s.config["attack"]["target"] = 7
    seen = []
    monkeypatch.setattr(reproduction, "attack_metrics", lambda *a: seen.append(a[-1]) or {})
    reproduction.evaluate_net(digits, s, TINY, 0)
    d = reproduction.defense_data(digits, s, 10, 0)
    assert seen == [7] and d.target == 7


def test_verdict_follows_the_rule_over_seeds():
    """Planted per-seed values: ASR 0.95 ± 0.01 clears 0.9 with CTA within 0.1 of clean (PASS); ASR 0.44 ± 0.02
    is far below (FAIL); ASR 0.90 ± 0.05 straddles the claim (INCONCLUSIVE)."""

    def table(asr):
        clean = {"cta": [0.92, 0.93, 0.91], "asr_all": [0.10, 0.11, 0.09]}
        door = {"cta": [0.90, 0.91, 0.89], "asr_all": asr}
        return {("dc", "none"): clean, ("dc", "naive"): clean, ("dc", "doorping"): door}

    assert reproduction._verdict(table([0.95, 0.96, 0.94]))[0] is True
    assert reproduction._verdict(table([0.44, 0.46, 0.42]))[0] is False
    assert reproduction._verdict(table([0.85, 0.90, 0.95]))[0] is None
    low_cta = table([0.95, 0.96, 0.94])
    low_cta[("dc", "doorping")]["cta"] = [0.70, 0.71, 0.69]  # 0.22 below clean: CTA not comparable
    assert reproduction._verdict(low_cta)[0] is False


def test_quick_settings_give_the_verdict_a_seed_spread():
    """Quick mode: the verdict's arms on >= 3 distillation seeds (compare_arms needs a spread to decide)."""
    assert len(QUICK.seeds) >= 3 and QUICK.context_seeds in range(1, len(QUICK.seeds) + 1)
    assert reproduction.FULL.defend and len(reproduction.FULL.seeds) >= 3


def test_context_rows_run_on_their_seeds_only(digits, tmp_path, monkeypatch):
    """context_seeds=1 with seeds (0, 1): real init and NAIVEATTACK on seed 0 only, the verdict's arms on both;
    without defend no defense runs."""
    st = dataclasses.replace(TINY, seeds=(0, 1), context_seeds=1, defend=False)
    monkeypatch.setattr(reproduction, "run_defenses", lambda *a, **k: pytest.fail("defenses ran with defend=False"))
    per_seed = {}
    rows, defense_rows = run_table(digits, st, run_root=tmp_path, per_seed=per_seed)
    expected = {"real_init_none_s0", "dc_naive_s0", "dc_none_s0", "dc_none_s1", "dc_doorping_s0", "dc_doorping_s1"}
    assert {p.name for p in tmp_path.iterdir()} == expected
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("real init", "none", 1),
        ("dc", "none", 2),
        ("dc", "naive", 1),
        ("dc", "doorping", 2),
    ]
    assert defense_rows == []
    assert [len(per_seed[k]["cta"]) for k in (("real init", "none"), ("dc", "naive"), ("dc", "doorping"))] == [1, 1, 2]
    stored = [reproduction.read_json(tmp_path / f"dc_doorping_s{s}" / "result.json") for s in (0, 1)]
    assert per_seed[("dc", "doorping")]["asr_all"] == [r["evals"][0]["asr_all"] for r in stored]
    assert all(r["defenses"] == [] for r in stored)


class _Recorder:
    """Stands in for the device: records the device each distillation and evaluation network is given, and runs
    them on the CPU."""

    def __init__(self, monkeypatch):
        from polyzoo.security.distill import Distiller
        from polyzoo.security.evaluate import train_network

        self.distill, self.train = [], []
        rec = self

        class FakeDistiller(Distiller):
            def __init__(self, *a, device="cpu", **k):
                rec.distill.append(device)
                super().__init__(*a, **k)

        def fake_train(*a, device=None, **k):
            rec.train.append(device)
            return train_network(*a, device="cpu", **k)

        monkeypatch.setattr(reproduction, "Distiller", FakeDistiller)
        monkeypatch.setattr(reproduction, "train_network", fake_train)


def test_device_reaches_distillation_and_evaluation(digits, monkeypatch):
    rec = _Recorder(monkeypatch)
    result = reproduction.run_config(digits, "dc", "doorping", 0, TINY, None, defend=True, device="cuda")
    assert rec.distill == ["cuda"] and rec.train == ["cuda"] * TINY.num_eval
    assert len(result["defenses"]) == 3  # the defenses got the network (moved to the CPU) and ran
    rec.distill.clear(), rec.train.clear()
    reproduction.run_config(digits, "real init", "none", 0, TINY, None, defend=False)
    assert rec.distill == ["cpu"] and rec.train == ["cpu"] * TINY.num_eval  # the default stays the CPU


def test_check_trains_on_the_contexts_device(digits, tmp_path, monkeypatch):
    """check() hands ctx.device to every distillation and evaluation network, starts its seeds at ctx.seed, and
    a quick run without defenses reports the main table alone."""
    from polyzoo.shared.report import ReproContext

    rec = _Recorder(monkeypatch)
    st = dataclasses.replace(TINY, seeds=(0, 1, 2), context_seeds=1, defend=False)
    monkeypatch.setattr(reproduction, "QUICK", st)
    monkeypatch.setattr(reproduction, "load_digits", lambda: digits)
    results = reproduction.check(ReproContext(out_dir=tmp_path / "report", quick=True, seed=5, device="cuda"))
    runs = 2 * 3 + 2  # no attack and DOORPING on 3 seeds, real init and NAIVEATTACK on the first
    assert rec.distill == ["cuda"] * runs and rec.train == ["cuda"] * runs * st.num_eval
    assert len(results) == 1 and results[0].seeds == [5, 6, 7]
    assert [r[-1] for r in results[0].rows] == [1, 3, 1, 3]
    assert any("device cuda" in n for n in results[0].notes)
    assert sorted(p.name for p in (tmp_path / "report" / "runs" / "security").iterdir())[:3] == [
        "dc_doorping_s5",
        "dc_doorping_s6",
        "dc_doorping_s7",
    ]


def test_settings_key_separates_devices(digits):
    key = settings_key(digits, TINY)
    assert settings_key(digits, TINY, "cpu") == key  # the CPU's key is the one written before devices counted
    assert settings_key(digits, TINY, "cuda") != key
    assert settings_key(digits, TINY, "cuda:0") == settings_key(digits, TINY, "cuda")
