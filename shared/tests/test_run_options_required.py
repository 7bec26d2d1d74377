"""``run_options`` without a default run folder makes ``--run-dir`` required: click 8.3+ counts an explicit
``default=None`` as a given value, which let ``polyzoo vision train`` start without a run folder and end in a
TypeError instead of click's usage error."""

import click
from click.testing import CliRunner

from polyzoo.shared.options import data_root_option, run_options


def _command(**kw):
    @click.command()
    @run_options(**kw)
    @data_root_option(required=True)
    def cmd(run_dir, data_root, **_):
        click.echo(f"run_dir={run_dir}")

    return cmd


def test_missing_run_dir_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(_command(), ["--data-root", str(tmp_path)])
    assert res.exit_code == 2 and "Missing option '--run-dir'" in res.output


def test_missing_required_data_root_is_a_usage_error():
    res = CliRunner().invoke(_command(), ["--run-dir", "r"])
    assert res.exit_code == 2 and "Missing option '--data-root'" in res.output


def test_a_default_run_dir_is_used_and_shown(tmp_path):
    cmd = _command(run_dir_default="runs/x")
    res = CliRunner().invoke(cmd, ["--data-root", str(tmp_path)])
    assert res.exit_code == 0 and "run_dir=runs/x" in res.output
    assert "[default: runs/x]" in CliRunner().invoke(cmd, ["--help"]).output
