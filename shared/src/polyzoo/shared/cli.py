"""The ``polyzoo`` command. Domains add their verbs through the entry-point group ``polyzoo.commands``
(each entry a ``click`` command or group), so installing a domain package adds its subcommand."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

import click

from polyzoo.shared.perf import apply_thread_defaults, reexec_with_tuned_malloc

COMMANDS_GROUP = "polyzoo.commands"
DEBUG_ENV = "POLYZOO_DEBUG"

# Exceptions that mean "the input or the environment is not what was expected": one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes UnicodeDecodeError, json.JSONDecodeError, polyzoo's RunError/UnsafeCheckpointError
    OSError,  # FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, disk full
    EOFError,  # a truncated or empty file read by pickle/torch (click would print a bare "Aborted!")
    LookupError,  # an unknown name in a registry
    FloatingPointError,  # a loss that became NaN or inf
)


def debug_enabled(ctx: click.Context | None = None) -> bool:
    """``--debug`` on the ``polyzoo`` command, or ``POLYZOO_DEBUG=1``: errors keep their traceback."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no"):
        return True
    root = ctx.find_root() if ctx is not None else click.get_current_context(silent=True)
    root = root.find_root() if root is not None else None
    return bool(root is not None and root.params.get("debug"))


def error_line(e: BaseException) -> str:
    """The one line a user sees for an exception (without the ``Error:`` that click adds)."""
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start} ({e.reason})"
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}"
    if isinstance(e, OSError) and e.filename is not None:
        reason = e.strerror or type(e).__name__
        target = f" -> {e.filename2}" if e.filename2 else ""
        return f"{e.filename}{target}: {reason}"
    if isinstance(e, EOFError):
        return f"unexpected end of file (the file is empty or truncated){': ' + str(e) if str(e) else ''}"
    if isinstance(e, KeyError) and len(e.args) == 1:
        return f"unknown name {e.args[0]!r}"
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, USER_ERRORS):
        return text
    return f"internal error ({type(e).__name__}: {text}); rerun with --debug for the traceback and please report it"


def _installed_packages() -> list[tuple[str, str]]:
    return sorted(
        (d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"].startswith("polyzoo-")
    )


class CommandGroup(click.Group):
    """The group class of the ``polyzoo`` command and of every domain's command group: an exception raised by a
    subcommand becomes one ``Error: ...`` line and exit status 1 (no traceback unless ``--debug`` or
    ``POLYZOO_DEBUG=1``), whether the domain runs under ``polyzoo`` or on its own."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; an exception becomes one ``Error: ...`` line and exit status 1, unless
        :func:`debug_enabled` (then it propagates with its traceback)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as e:
            if debug_enabled(ctx):
                raise
            raise click.ClickException(error_line(e)) from None


class _DomainGroup(CommandGroup):
    """A group whose extra subcommands come from installed packages' entry points, loaded on demand."""

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=COMMANDS_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._entry_points().get(name)
        if ep is None:
            return None
        try:
            loaded = ep.load()
        except Exception as e:  # a broken domain must not break the other verbs
            message = f"could not load the '{name}' commands ({ep.value}): {type(e).__name__}: {e}"

            @click.command(name=name, help=f"(unavailable) {message}")
            def broken() -> None:
                raise click.ClickException(message)

            return broken
        if not isinstance(loaded, click.Command):
            raise click.ClickException(f"entry point {name} = {ep.value} is not a click command")
        return loaded

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Installed packages"):
            formatter.write_dl(_installed_packages() or [("(none)", "")])
        super().format_epilog(ctx, formatter)


@click.group(cls=_DomainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    metadata.version("polyzoo-shared"), "-V", "--version", package_name="polyzoo-shared", message="polyzoo %(version)s"
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help=f"Show the full traceback of an error (or set {DEBUG_ENV}=1).")
def main(verbose: int, debug: bool) -> None:
    """polyzoo: faithful, tested PyTorch implementations of ten research methods.

    Each domain package (vision, video, detection, graph, recsys, music, security) adds its own subcommand
    when installed. `polyzoo reproduce --quick` checks every installed method's claim on small data.

    Every training verb takes the same run options (--run-dir, --resume/--no-resume, --overwrite, --seed,
    --device, --precision, --log-with); evaluation verbs are called `eval` and take --format table|json.
    Errors print one line; --debug shows the traceback.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
def info() -> None:
    """List installed polyzoo packages, their subcommands and their reproduction checks, and the runtime settings
    (threads, OpenMP wait policy, allocator) this command runs with."""
    from polyzoo.shared.perf import runtime_settings

    click.echo("runtime:")
    for key, value in runtime_settings().items():
        click.echo(f"  {key}: {value}")
    click.echo("packages:")
    for name, version in _installed_packages():
        click.echo(f"  {name} {version}")
    click.echo("subcommands (entry points 'polyzoo.commands'):")
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        click.echo(f"  {ep.name:<12} {ep.value}")
    click.echo("reproduction checks (entry points 'polyzoo.reproductions'):")
    for ep in sorted(metadata.entry_points(group="polyzoo.reproductions"), key=lambda e: e.name):
        click.echo(f"  {ep.name:<24} {ep.value}")


@main.command()
@click.option("--quick", is_flag=True, help="Small settings that finish in minutes on a CPU.")
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="DOMAIN",
    help="Run only this domain's checks (repeatable), e.g. --only shared --only graph.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="The report goes to OUT/<timestamp>/REPORT.md.",
)
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of real data sets for the longer checks (see each package's README).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Base seed (a check with n seeds runs seed … seed+n-1)."
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the checks that train run (auto: cuda when a GPU is present).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch intra-op threads (default: torch's, one per core; recorded in the report).",
)
@click.option(
    "--deterministic/--no-deterministic",
    default=True,
    show_default=True,
    help="torch.use_deterministic_algorithms (warn-only) so that a rerun on this machine gives the same numbers.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Checks run at once, each in its own process with cores/jobs torch threads (default: one per core, at "
    "most 4, on a CPU; 1 with --device cuda). The small models of the quick checks barely gain from a second thread, "
    "so two checks at a time on two cores take about half the time of one after another.",
)
def reproduce(
    quick: bool,
    only: tuple[str, ...],
    out: Path,
    data_root: Path | None,
    seed: int,
    device: str,
    threads: int | None,
    deterministic: bool,
    jobs: int | None,
) -> None:
    """Run the reproduction checks of every installed package and write a report with tables and plots.

    Exits with status 1 when a check fails or errors (the report says which and why); an INCONCLUSIVE check
    (a difference within its seed spread) does not fail the run.
    """
    from polyzoo.shared.options import resolve_device
    from polyzoo.shared.report import (
        ReproContext,
        discover_checks,
        reproducible_runtime,
        run_checks,
        thread_environ,
        write_report,
    )

    checks = discover_checks(only)
    if not checks:
        available = sorted({ep.name.split(".")[0] for ep in metadata.entry_points(group="polyzoo.reproductions")})
        raise click.UsageError(f"no reproduction checks match --only {' '.join(only)}; installed: {available}")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    resolved = resolve_device(device)
    jobs, threads = _jobs_and_threads(jobs, threads, resolved, len(checks))
    t0 = time.perf_counter()
    # with several jobs the header shows the thread variables the check processes get
    environ = thread_environ(threads) if jobs > 1 and threads is not None else contextlib.nullcontext()
    with environ, reproducible_runtime(threads, deterministic) as runtime:
        if jobs > 1:
            runtime["checks at once"] = f"{jobs}, each in its own process with the threads above"
        ctx = ReproContext(
            out_dir=out.absolute() / stamp,
            quick=quick,
            data_root=data_root,
            seed=seed,
            device=resolved,
            runtime=runtime,
        )
        click.echo(f"running {len(checks)} check(s) on {ctx.device}: {', '.join(checks)}", err=True)
        click.echo("runtime: " + "; ".join(f"{k}: {v}" for k, v in runtime.items()), err=True)
        outcomes = run_checks(checks, ctx, jobs=jobs, threads=threads, deterministic=deterministic)
        wall = time.perf_counter() - t0
    path = write_report(outcomes, ctx, "polyzoo " + shlex.join(sys.argv[1:]), wall_seconds=wall)
    click.echo(
        f"checks: {wall:.1f} s wall ({sum(o.seconds for o in outcomes):.1f} s summed over checks, {jobs} at once)",
        err=True,
    )
    for o in outcomes:
        click.echo(f"{o.status:12} {o.name} ({o.seconds:.1f} s)", err=True)
    click.echo(f"report: {path}")
    if not all(o.passed for o in outcomes):
        sys.exit(1)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _jobs_and_threads(jobs: int | None, threads: int | None, device: str, n_checks: int) -> tuple[int, int | None]:
    """``--jobs``/``--threads`` resolved: by default one check per core (at most 4) on a CPU, one on a GPU; with
    several jobs each gets cores/jobs threads unless ``--threads`` says otherwise."""
    cores = _cores()
    if jobs is None:
        jobs = 1 if device.startswith("cuda") else max(1, min(cores, 4, n_checks))
    jobs = min(jobs, max(n_checks, 1))
    if jobs > 1 and threads is None:
        threads = max(1, cores // jobs)
    return jobs, threads


def entry() -> None:
    """The ``polyzoo`` script: sets the OpenMP wait policy to PASSIVE unless the user chose one (idle threads sleep
    instead of spinning, so that a machine shared with other CPU-bound processes does not collapse a run; opt out
    with ``POLYZOO_THREAD_TUNING=0``), re-executes itself once with glibc malloc tuned for large tensors (opt out
    with ``POLYZOO_MALLOC_TUNING=0``; both in :mod:`polyzoo.shared.perf`), then runs the command."""
    apply_thread_defaults()
    reexec_with_tuned_malloc([sys.executable, "-m", "polyzoo.shared.cli", *sys.argv[1:]])
    main(prog_name="polyzoo")


if __name__ == "__main__":
    main(prog_name="polyzoo")
