"""tools/gpu/acceptance.py: the table, ratio and target logic on fake timings (fast), and the whole script at toy
sizes on the CPU in a subprocess (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu" / "acceptance.py"


@pytest.fixture(scope="module")
def acc():
    spec = importlib.util.spec_from_file_location("acceptance_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _row(acc, name, sps, baseline=None, status="ok", device="cuda:0"):
    return acc.Row(
        domain="d", name=name, model=name, mode="m", device=device, samples_per_s=sps, baseline=baseline, status=status
    )


# ------------------------------------------------------------------------------------------------ ratios, targets
def test_ratio_is_time_per_sample_over_the_baselines(acc):
    rows = [
        _row(acc, "eca_resnet50 train", 900.0, baseline="resnet50 train"),
        _row(acc, "resnet50 train", 1000.0),
        _row(acc, "x", 50.0, baseline="missing row"),
        _row(acc, "y", 10.0, baseline="broken"),
        _row(acc, "broken", None, status="error"),
    ]
    acc.compute_ratios(rows)
    # 1000 images/s for the baseline, 900 for the row: the row takes 1000/900 as long per image
    assert rows[0].ratio == pytest.approx(1000.0 / 900.0)
    assert rows[1].ratio is None  # no baseline
    assert rows[2].ratio is None and rows[3].ratio is None  # absent or failed baseline: no ratio


def _targets_for(acc, ratios: dict[str, float], device="cuda:0", quick=False):
    """Rows for every target's (row, baseline) pair, the row slower than its baseline by the given factor."""
    rows = []
    for t in acc.TARGETS:
        if t.row in ratios:
            rows += [
                _row(acc, t.row, 100.0 / ratios[t.row], baseline=t.baseline, device=device),
                _row(acc, t.baseline, 100.0, device=device),
            ]
    acc.compute_ratios(rows)
    return {t["row"]: t for t in acc.evaluate_targets(rows, quick)}


def test_targets_met_missed_and_not_run(acc):
    got = _targets_for(
        acc,
        {
            "eca_resnet50 train": 1.04,  # ≤ 1.05: met
            "emo_1m inference": 1.10,  # > 1.0 by 10 %
            "TCP head fwd+bwd": 0.03,  # exactly at the limit: met
            "RELIANT-SP → GCN full batch": 1.8,  # 1.8 / 1.5 = 1.2: missed by 20 %
        },
    )
    assert got["eca_resnet50 train"]["result"] == "met"
    assert got["emo_1m inference"]["result"] == "missed by 10%"
    assert got["TCP head fwd+bwd"]["result"] == "met"
    assert got["RELIANT-SP → GCN full batch"]["result"] == "missed by 20%"
    assert got["RELIANT-SP → GCN NeighborLoader"]["result"].startswith("n/a")
    assert all(t["measurement"] == "GPU" for k, t in got.items() if not t["result"].startswith("n/a"))
    # the four targets are all there, with its limits
    limits = {t["row"]: t["limit"] for t in got.values()}
    assert limits["eca_resnet50 train"] == 1.05 and limits["emo_1m inference"] == 1.0
    assert limits["TCP head fwd+bwd"] == 0.03 and limits["RELIANT-SP → GCN full batch"] == 1.5


def test_cpu_and_quick_targets_are_not_gpu_measurements(acc):
    cpu = _targets_for(acc, {"eca_resnet50 train": 1.0}, device="cpu")
    assert cpu["eca_resnet50 train"]["measurement"] == "not a GPU measurement"
    quick = _targets_for(acc, {"eca_resnet50 train": 1.0}, device="cuda:0", quick=True)
    assert quick["eca_resnet50 train"]["measurement"] == "not a GPU measurement (toy sizes)"


def test_failed_row_gives_na_with_its_status(acc):
    rows = [
        _row(acc, "eca_resnet50 train", None, baseline="resnet50 train", status="error"),
        _row(acc, "resnet50 train", 10.0),
    ]
    acc.compute_ratios(rows)
    got = {t["row"]: t for t in acc.evaluate_targets(rows, False)}
    assert got["eca_resnet50 train"]["result"] == "n/a (error)"


# ------------------------------------------------------------------------------------------------ timing
def test_measure_interleaves_and_reports_seconds_per_step(acc):
    import torch

    calls: list[tuple[str, int]] = []

    def sleeper(name: str, seconds: float):
        def run(k: int) -> None:
            calls.append((name, k))
            time.sleep(seconds * k)

        return run

    ctx = acc.Ctx(device=torch.device("cpu"), precision="fp32", quick=False, steps=None)
    got = acc.measure(ctx, {"a": sleeper("a", 0.02), "b": sleeper("b", 0.005)}, steps=7, warmup=2)
    # warm-up: one call of 2 steps each; then 5 rounds A, B, A, B, ... of 2, 2, 1, 1, 1 steps (7 in all)
    assert calls[:2] == [("a", 2), ("b", 2)]
    timed = calls[2:]
    assert [n for n, _ in timed] == ["a", "b"] * 5
    assert [k for n, k in timed if n == "a"] == [2, 2, 1, 1, 1]
    # sleep never returns early; a loaded machine may make it late, hence the loose upper bounds
    assert 0.02 <= got["a"].seconds_per_step < 0.5
    assert 0.005 <= got["b"].seconds_per_step < 0.5
    assert got["a"].seconds_per_step > got["b"].seconds_per_step


def test_step_counts_quick_full_and_override(acc):
    import torch

    cpu = torch.device("cpu")
    assert acc.Ctx(cpu, "fp32", quick=False, steps=None).n_steps(100) == (100, 10)
    assert acc.Ctx(cpu, "fp32", quick=False, steps=None).n_steps(20) == (20, 3)  # at least 3 warm-up steps
    assert acc.Ctx(cpu, "fp32", quick=True, steps=None).n_steps(100) == (2, 1)
    assert acc.Ctx(cpu, "fp32", quick=False, steps=7).n_steps(100) == (7, 3)


# ------------------------------------------------------------------------------------------------ cases, output
def test_failing_and_skipped_cases_give_rows_and_the_exit_status(acc, monkeypatch, tmp_path, capsys):
    def good(ctx):
        return [_row(acc, "good", 5.0, device=str(ctx.device))]

    def bad(ctx):
        raise RuntimeError("out of memory\nsecond line")

    def absent(ctx):
        raise acc.Skip("no data here")

    monkeypatch.setattr(
        acc,
        "CASES",
        (
            acc.Case("vision", good, (("good", "good"),)),
            acc.Case("graph", bad, (("bad 1", "m1"), ("bad 2", "m2"))),
            acc.Case("music", absent, (("absent", "m"),)),
        ),
    )
    out = tmp_path / "sub" / "report.json"
    status = acc.main(["--device", "cpu", "--format", "json", "--out", str(out)])
    assert status == 1
    printed = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in printed["rows"]}
    assert rows["good"]["status"] == "ok" and rows["good"]["samples_per_s"] == 5.0
    assert rows["bad 1"]["status"] == rows["bad 2"]["status"] == "error"
    assert rows["bad 1"]["note"] == "RuntimeError: out of memory"  # one line
    assert rows["absent"]["status"] == "skipped" and rows["absent"]["note"] == "no data here"
    assert json.loads(out.read_text()) == printed
    assert not list(out.parent.glob(".*tmp"))  # written atomically, no temporary left

    md = tmp_path / "report.md"
    monkeypatch.setattr(acc, "CASES", (acc.Case("vision", good, (("good", "good"),)),))
    assert acc.main(["--device", "cpu", "--only", "vision", "--out", str(md)]) == 0
    text = md.read_text()
    assert "| domain | model |" in text and "| good |" in text and "Targets (issue 16)" in text
    table = capsys.readouterr().out
    assert "samples/s" in table and "not a GPU measurement" in table


def test_only_filters_domains(acc, monkeypatch, capsys):
    seen = []

    def case(ctx):
        seen.append(ctx.quick)
        return []

    monkeypatch.setattr(acc, "CASES", (acc.Case("vision", case, ()), acc.Case("graph", case, ())))
    assert acc.main(["--device", "cpu", "--only", "graph", "--quick", "--format", "json"]) == 0
    assert seen == [True]
    capsys.readouterr()


def test_bad_arguments_are_refused(acc, capsys):
    for argv in (["--device", "gpu"], ["--steps", "0"], ["--only", "nothing"]):
        with pytest.raises(SystemExit) as e:
            acc.parse_args(argv)
        assert e.value.code == 2
    capsys.readouterr()


# ------------------------------------------------------------------------------------------------ the whole script
# every row the quick run must produce (the cases), written here independently of the script
EXPECTED = {
    "eca_resnet50 train": "resnet50 train",
    "resnet50 train": None,
    "eca_resnet50 inference": "resnet50 inference",
    "resnet50 inference": None,
    "emo_1m train": "mobilenetv2_100 train",
    "mobilenetv2_100 train": None,
    "emo_1m inference": "mobilenetv2_100 inference",
    "mobilenetv2_100 inference": None,
    "sot_small train": None,
    "sot_small inference": None,
    "TSN-R50 + TCP train": None,
    "TSN-R50 backbone fwd+bwd": None,
    "TCP head fwd+bwd": "TSN-R50 backbone fwd+bwd",
    "CMT train": None,
    "RefT R50 train": None,
    "KD → MLP full batch": None,
    "RELIANT-SP → MLP full batch": "KD → MLP full batch",
    "KD → GCN full batch": None,
    "RELIANT-SP → GCN full batch": "KD → GCN full batch",
    "KD → GCN NeighborLoader": None,
    "RELIANT-SP → GCN NeighborLoader": "KD → GCN NeighborLoader",
    "xDeepInt (GFTRL + FTRL)": "xDeepFM (Adam)",
    "xDeepInt (Adam)": "xDeepFM (Adam)",
    "xDeepFM (Adam)": None,
    "GPT-2 small finetune": None,
    "DM + DOORPING": "DM",
    "DM": None,
}
NEEDS_DATA = {"CMT train", "DM + DOORPING", "DM"}  # the nuScenes sample; Fashion-MNIST


@pytest.mark.slow
def test_quick_cpu_run_produces_every_row(tmp_path):
    from polyzoo.shared.paths import data_required

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = tmp_path / "acceptance.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--format", "json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=3600,
        env=env,
        cwd=REPO,
    )
    report = json.loads(proc.stdout)
    rows = {r["name"]: r for r in report["rows"]}
    errors = {n: r["note"] for n, r in rows.items() if r["status"] == "error"}
    assert not errors, f"cases failed: {errors}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert set(EXPECTED) <= set(rows), f"missing rows {sorted(set(EXPECTED) - set(rows))}"
    for name, baseline in EXPECTED.items():
        r = rows[name]
        if r["status"] == "skipped":
            assert name in NEEDS_DATA, f"{name} skipped: {r['note']}"
            assert r["note"], f"{name} skipped without a reason"
            assert not data_required(), f"{name} skipped under POLYZOO_REQUIRE_DATA: {r['note']}"
            continue
        assert r["status"] == "ok"
        assert r["device"] == "cpu"
        sps = r["samples_per_s"]
        assert sps is not None and math.isfinite(sps) and sps > 0, f"{name}: samples/s {sps}"
        assert r["baseline"] == baseline
        if baseline is not None and rows[baseline]["status"] == "ok":
            expected = rows[baseline]["samples_per_s"] / sps
            assert r["ratio"] == pytest.approx(expected), name
    assert len(report["targets"]) >= 4
    assert all(t["measurement"] == "not a GPU measurement (toy sizes)" for t in report["targets"])
    assert json.loads(out.read_text()) == report
