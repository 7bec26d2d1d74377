"""The `polyzoo` command end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from polyzoo.shared import cli
from polyzoo.shared.report import CheckResult

POLYZOO = Path(sys.executable).with_name("polyzoo")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(POLYZOO), *args], capture_output=True, text=True, timeout=300)


def test_help_lists_verbs_and_installed_domains():
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "reproduce" in proc.stdout and "info" in proc.stdout
    for domain in ["shared", "vision", "video", "detection", "graph", "recsys", "music", "security"]:
        assert f"polyzoo-{domain}" in proc.stdout


def test_version():
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"polyzoo {metadata.version('polyzoo-shared')}"


def test_reproduce_shared_writes_report_with_table_and_png(tmp_path):
    proc = _run("reproduce", "--quick", "--only", "shared", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = Path(re.search(r"report: (\S+)", proc.stdout).group(1))
    assert report.parent.parent == tmp_path and report.name == "REPORT.md"
    text = report.read_text()
    assert "| shared | PASS |" in text
    assert "| iterations | rel. error, full rank (M=4C)" in text
    pngs = list(report.parent.glob("*.png"))
    assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({pngs[0].name})" in text


def test_reproduce_unknown_domain_is_a_usage_error(tmp_path):
    proc = _run("reproduce", "--only", "nosuchdomain", "--out", str(tmp_path))
    assert proc.returncode == 2 and "no reproduction checks match" in proc.stderr


def test_failing_and_crashing_checks_are_reported_and_exit_nonzero(tmp_path, monkeypatch):
    def failing(ctx):
        return CheckResult(
            title="A claim that does not hold",
            compared="x vs y",
            data="none",
            columns=["a"],
            rows=[[1.0]],
            passed=False,
            verdict="x lost",
        )

    def crashing(ctx):
        raise RuntimeError("boom in the check")

    monkeypatch.setattr(
        "polyzoo.shared.report.discover_checks", lambda only: {"demo.fail": failing, "demo.crash": crashing}
    )
    result = CliRunner().invoke(cli.main, ["reproduce", "--out", str(tmp_path), "--jobs", "1"])
    assert result.exit_code == 1
    report = next(tmp_path.glob("*/REPORT.md")).read_text()
    assert "| demo.fail | FAIL |" in report and "| demo.crash | ERROR |" in report
    assert "RuntimeError: boom in the check" in report


def test_domain_commands_come_from_entry_points(monkeypatch):
    eps = {
        "demo": metadata.EntryPoint("demo", "polyzoo.shared.cli:info", cli.COMMANDS_GROUP),
        "broken": metadata.EntryPoint("broken", "polyzoo.no_such_module:cmd", cli.COMMANDS_GROUP),
    }
    monkeypatch.setattr(cli._DomainGroup, "_entry_points", lambda self: eps)
    runner = CliRunner()
    help_text = runner.invoke(cli.main, ["--help"]).output
    assert "demo" in help_text and "broken" in help_text and "(unavailable)" in help_text
    assert "polyzoo-shared" in runner.invoke(cli.main, ["demo"]).output
    broken = runner.invoke(cli.main, ["broken"])
    assert broken.exit_code == 1 and "could not load the 'broken' commands" in broken.output


def test_command_runs_with_tuned_allocator_unless_opted_out():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "POLYZOO_MALLOC_TUNING")}
    tuned = subprocess.run([str(POLYZOO), "info"], capture_output=True, text=True, env=env, timeout=120)
    assert tuned.returncode == 0 and "allocator: tuned glibc malloc" in tuned.stdout
    env["POLYZOO_MALLOC_TUNING"] = "0"
    plain = subprocess.run([str(POLYZOO), "info"], capture_output=True, text=True, env=env, timeout=120)
    assert "allocator: GLIBC_TUNABLES=(unset)" in plain.stdout


@pytest.mark.parametrize("args", [["reproduce", "--help"], ["info"]])
def test_subcommands_run(args):
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
