"""``polyzoo reproduce``'s runner and report: links that resolve, run folders inside the report, the console (one
bar per check, start/end lines, check output in a log), the verdict rule (Welch interval) and the thread defaults."""

import io
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polyzoo.shared import perf
from polyzoo.shared.report import (
    SILENCE_S,
    CheckResult,
    Progress,
    ReproContext,
    combine_status,
    compare_arms,
    figure,
    run_checks,
    t_quantile,
    write_report,
)

LINK = re.compile(r"!?\[[^\]]*\]\(([^)]+)\)")


def _links(report: Path) -> list[str]:
    return LINK.findall(report.read_text())


# --- verdict rule -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (60, 2.0003)])
def test_t_quantile_matches_the_printed_table(df, expected):
    # two-sided 95% critical values of Student's t, as printed in standard tables
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_t_quantile_matches_scipy_at_non_integer_df():
    stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.7, 3.9, 7.5, 25.2):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6)
    with pytest.raises(ValueError):
        t_quantile(0.3, 4)


def _welch_reference(a, b):
    """Welch's interval written out from the formulas (Welch 1947), with SciPy's t quantile."""
    stats = pytest.importorskip("scipy.stats")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    d = statistics.mean(a) - statistics.mean(b)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    return d - half, d + half


def test_compare_arms_is_welchs_interval_against_the_margin():
    a, b = [0.81, 0.84, 0.83], [0.70, 0.75, 0.71, 0.72]
    low, high = _welch_reference(a, b)
    c = compare_arms(a, b, names=("ECA", "none"))
    assert (c.low, c.high) == (pytest.approx(low), pytest.approx(high))
    assert c.diff == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert c.passed is True and c.status == "PASS" and "ECA − none" in c.text and "Welch" in c.text
    # the same arms swapped: the claim "none beats ECA" fails
    assert compare_arms(b, a).passed is False
    # a margin inside the interval: inconclusive; a non-inferiority margin below it: pass
    mid = (low + high) / 2
    assert compare_arms(a, b, margin=mid).passed is None
    assert compare_arms(a, b, margin=low - 1e-3).passed is True
    assert compare_arms(a, b, margin=high + 1e-3).passed is False


def test_compare_arms_within_the_seed_spread_is_inconclusive():
    # the recsys case of issue 23: a 0.007 AUC gap with a seed spread of 0.017 decides nothing
    a = [0.760, 0.745, 0.779]  # std 0.017
    b = [0.767, 0.760, 0.778]
    c = compare_arms(a, b, margin=-0.005)
    assert c.low < -0.005 < c.high and c.passed is None and c.status == "INCONCLUSIVE"


def test_compare_arms_edge_cases():
    one = compare_arms([0.9], [0.1, 0.2])  # no spread in one arm
    assert one.passed is None and math.isinf(one.low) and "no seed spread" in one.text
    exact = compare_arms([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])  # zero spread: the difference itself decides
    assert exact.passed is True and exact.low == exact.high == pytest.approx(0.5)
    assert compare_arms([0.5, 0.5], [0.5, 0.5]).passed is None
    scaled = compare_arms([0.81, 0.84, 0.83], [0.70, 0.75, 0.71], scale=100, digits=2)
    assert scaled.diff == pytest.approx(100 * (0.8266666 - 0.72), abs=1e-3)
    assert combine_status(True, True) is True and combine_status(True, None) is None
    assert combine_status(None, False, True) is False


# --- runner and report --------------------------------------------------------------------------------------------


def _figure_check(ctx: ReproContext) -> CheckResult:
    bar = ctx.progress(3, "training")
    run = ctx.run_dir("fake/run")
    (run / "checkpoint.txt").write_text("x")
    for i in range(3):
        print(f"noisy library line {i}")  # must go to the log, not the console
        print("a warning", file=sys.stderr)
        bar.update(postfix=f"loss {1.0 / (i + 1):.2f}")
    from tqdm import tqdm

    for _ in tqdm(range(500), desc="library bar", mininterval=0):  # a library's own bar: one line in the log
        pass
    fig = ctx.figure_path("fake_figure")
    with figure(fig, figsize=(2, 2)) as (_, ax):
        ax.plot([0, 1])
    return CheckResult(
        title="fake",
        compared="a",
        data="b",
        columns=["x"],
        rows=[[1]],
        passed=None,
        verdict="c",
        figures=[fig],
        notes=[f"run folder: {ctx.relative(run)}"],
        seeds=[0, 1, 2],
    )


def _failing_check(ctx: ReproContext) -> CheckResult:
    torch.set_num_threads(1)  # a check that changes the threads and raises: the runner restores them
    raise RuntimeError("boom")


def test_report_links_resolve_with_a_relative_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ctx = ReproContext(out_dir=Path("reports") / "20260101-000000", runtime={"threads": "2"})
    console = io.StringIO()
    threads = torch.get_num_threads()
    outcomes = run_checks({"fake": _figure_check, "broken": _failing_check}, ctx, console=console)
    assert torch.get_num_threads() == threads
    report = write_report(outcomes, ctx, "polyzoo reproduce --quick")
    text = report.read_text()
    links = _links(report)
    assert len(links) == 3  # the figure and two logs
    for link in links:
        assert not Path(link).is_absolute() and (report.parent / link).is_file(), link
    assert "![fake](fake_figure.png)" in text and "reports/" not in text
    assert str(tmp_path) not in text  # nothing absolute, no temp folder
    assert (report.parent / "runs" / "fake" / "run" / "checkpoint.txt").is_file()
    assert "run folder: runs/fake/run" in text
    # the summary lists status, seeds and the log
    assert re.search(r"\| fake \| INCONCLUSIVE \| 0, 1, 2 \| [\d.]+ \| \[log\]\(logs/fake.log\) \|", text)
    assert "| broken | ERROR |" in text and "RuntimeError: boom" in text
    for needle in ("Verdict rule", "Welch", "What may differ across machines", "runtime: threads: 2", "seeds: base"):
        assert needle in text
    # the console: start and end lines and the bar; what the check printed is in its log only
    out = console.getvalue()
    assert "[1/2] fake: started" in out and "[1/2] fake: INCONCLUSIVE in" in out and "[2/2] broken: ERROR in" in out
    assert "fake training [####################] 3/3" in out and "noisy library line" not in out
    log = (report.parent / "logs" / "fake.log").read_text()
    assert log.count("noisy library line") == 3 and log.count("a warning") == 3
    bar_lines = [line for line in log.splitlines() if "library bar" in line]
    assert len(bar_lines) == 1 and "500/500" in bar_lines[0] and "\r" not in log


def test_run_dir_stays_inside_the_report(tmp_path):
    ctx = ReproContext(out_dir=tmp_path / "r")
    assert ctx.run_dir("music") == (tmp_path / "r" / "runs" / "music") and (tmp_path / "r/runs/music").is_dir()
    for bad in ("", "/abs", "../escape", "a/../../b"):
        with pytest.raises(ValueError, match="run_dir"):
            ctx.run_dir(bad)
    assert ctx.seeds(3) == [0, 1, 2] and ReproContext(out_dir=tmp_path, seed=5).seeds(2) == [5, 6]
    # outside the runner, progress() works and shows nothing
    bar = ctx.progress(2, "x")
    bar.update()
    assert bar.n == 1 and bar.stream is None


def test_progress_on_a_log_prints_rarely_and_again_after_silence(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("polyzoo.shared.report.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = Progress("vision.eca", out, interval=10.0)
    bar.reset(100, "seeds × arms")
    for _ in range(50):  # fifty quick steps within one second: no new lines
        bar.update()
    assert out.getvalue().count("\n") == 1
    clock[0] += 11
    bar.update()
    assert out.getvalue().count("\n") == 2 and "51/100" in out.getvalue().splitlines()[-1]
    clock[0] += SILENCE_S - 1
    bar.tick()
    assert out.getvalue().count("\n") == 2
    clock[0] += 2
    bar.tick()  # silent for SILENCE_S seconds: the heartbeat prints the line again
    assert out.getvalue().count("\n") == 3 and "~" in out.getvalue().splitlines()[-1]
    bar.close()
    bar.update()
    assert out.getvalue().count("\n") == 3


def test_cli_reproduce_writes_a_report_whose_links_resolve(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from polyzoo.shared.cli import main

    monkeypatch.chdir(tmp_path)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    res = CliRunner().invoke(main, ["reproduce", "--quick", "--only", "shared", "--out", "reports", "--threads", "1"])
    assert res.exit_code == 0, res.output
    # the command restores torch's settings when it returns (it may run in-process)
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == det
    (report,) = Path("reports").glob("*/REPORT.md")
    assert _links(report) and all((report.parent / link).is_file() for link in _links(report))
    text = report.read_text()
    assert "torch threads (intra-op / inter-op): 1 /" in text and "device: cpu" in text
    assert "deterministic algorithms: True" in text
    assert "[1/1] shared: PASS" in res.output


# --- thread defaults ----------------------------------------------------------------------------------------------


def test_thread_defaults_respect_the_user():
    env: dict[str, str] = {}
    assert perf.apply_thread_defaults(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env["OMP_WAIT_POLICY"] == "PASSIVE"
    for user in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}, {"POLYZOO_THREAD_TUNING": "0"}):
        env = dict(user)
        assert perf.apply_thread_defaults(env) == {} and env == user


def test_polyzoo_script_runs_with_the_passive_wait_policy():
    exe = shutil.which("polyzoo", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the polyzoo script is not installed beside this Python")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "GLIBC_TUNABLES")}
    out = subprocess.run([exe, "info"], env=env, capture_output=True, text=True, check=True).stdout
    assert "OMP_WAIT_POLICY: PASSIVE" in out and "tuned glibc malloc" in out
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([exe, "info"], env=env, capture_output=True, text=True, check=True).stdout
    assert "OMP_WAIT_POLICY: ACTIVE" in out


def test_line_log_keeps_the_last_state_of_a_redrawn_line():
    from polyzoo.shared.report import _LineLog

    buf = io.StringIO()
    log = _LineLog(buf)
    log.write("\rbar 1/3")
    log.write("\rbar 2/3\rbar 3/3")
    log.write("\n")
    log.write("windows line\r\n")
    log.write("partial ")
    log.write("line")
    log.close()
    assert buf.getvalue() == "bar 3/3\nwindows line\npartial line\n"


# --- several checks at once ---------------------------------------------------------------------------------------

FAKE_CHECKS = """
import os, sys, time
import torch
from polyzoo.shared.report import CheckResult


def slow(ctx):
    bar = ctx.progress(2, "steps")
    print("python output of slow")
    os.write(1, b"C-level output of slow\\n")
    time.sleep(1.5)
    bar.update(postfix="half")
    bar.update()
    return CheckResult(
        title="slow", compared="a", data="b", columns=["threads", "OMP_NUM_THREADS", "pid"],
        rows=[[torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), os.getpid()]], passed=True, verdict="ok",
    )


def quick(ctx):
    torch.set_num_threads(2)  # changes its own process only
    return CheckResult(
        title="quick", compared="a", data="b", columns=["pid", "deterministic"],
        rows=[[os.getpid(), torch.are_deterministic_algorithms_enabled()]], passed=None, verdict="within noise",
    )


def crash(ctx):
    print("about to die")
    sys.stdout.flush()
    os._exit(3)


def boom(ctx):
    raise RuntimeError("boom in a worker")
"""


def test_parallel_checks_run_in_their_own_processes(tmp_path, monkeypatch):
    """``jobs > 1``: each check in a fresh process with the given threads; results, logs (Python and C-level
    output), progress and errors come back; a process that dies is that check's ERROR; the order stays the given
    one whatever finishes first."""
    from importlib.metadata import EntryPoint

    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "polyzoo_fake_checks.py").write_text(FAKE_CHECKS)
    monkeypatch.syspath_prepend(str(mod))  # spawned processes get this sys.path
    eps = {
        name: EntryPoint(name, f"polyzoo_fake_checks:{fn}", "polyzoo.reproductions")
        for name, fn in [("a.slow", "slow"), ("b.quick", "quick"), ("c.crash", "crash"), ("d.boom", "boom")]
    }
    ctx = ReproContext(out_dir=tmp_path / "rep")
    console = io.StringIO()
    omp_before = os.environ.get("OMP_NUM_THREADS")
    outcomes = run_checks(eps, ctx, console=console, jobs=2, threads=1, deterministic=True)
    assert [o.name for o in outcomes] == list(eps)
    slow, quick, crash, boom = outcomes
    assert slow.status == "PASS" and quick.status == "INCONCLUSIVE"
    threads, omp, pid_slow = slow.results[0].rows[0]
    assert threads == 1 and omp == "1"
    pid_quick, deterministic = quick.results[0].rows[0]
    assert deterministic is True and len({pid_slow, pid_quick, os.getpid()}) == 3
    assert crash.status == "ERROR" and "exited with code 3" in crash.error
    assert boom.status == "ERROR" and "RuntimeError: boom in a worker" in boom.error
    log = (ctx.out_dir / "logs" / "a.slow.log").read_text()
    assert "python output of slow" in log and "C-level output of slow" in log
    assert "about to die" in (ctx.out_dir / "logs" / "c.crash.log").read_text()
    out = console.getvalue()
    assert "a.slow steps [####################] 2/2" in out and "python output" not in out
    for i, name in enumerate(eps, 1):
        assert f"[{i}/4] {name}: started" in out and re.search(rf"\[{i}/4\] {re.escape(name)}: \w+ in", out)
    assert os.environ.get("OMP_NUM_THREADS") == omp_before  # the parent's environment is left as it was


def test_jobs_default_to_one_per_core_on_a_cpu_and_one_on_a_gpu(monkeypatch):
    from polyzoo.shared import cli

    monkeypatch.setattr(cli, "_cores", lambda: 2)
    assert cli._jobs_and_threads(None, None, "cpu", 11) == (2, 1)
    assert cli._jobs_and_threads(None, None, "cpu", 1) == (1, None)
    assert cli._jobs_and_threads(None, None, "cuda", 11) == (1, None)
    assert cli._jobs_and_threads(3, None, "cpu", 11) == (3, 1)
    assert cli._jobs_and_threads(2, 4, "cpu", 11) == (2, 4)
    monkeypatch.setattr(cli, "_cores", lambda: 16)
    assert cli._jobs_and_threads(None, None, "cpu", 11) == (4, 4)
