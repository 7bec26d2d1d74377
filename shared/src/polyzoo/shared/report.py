"""The reproduction report of ``polyzoo reproduce``: checks contributed by every installed domain (entry-point
group ``polyzoo.reproductions``), run one after another, written to ``<out>/<timestamp>/REPORT.md`` with PNG
plots beside it.

A check is a callable ``check(ctx: ReproContext) -> CheckResult | list[CheckResult]``. It states what it
compared, on what data, the measured table, the paper's number where one applies, and whether the claim held.
A check that raises is reported as an error (with its traceback), never hidden.

What every reproduction shares lives here, once: :func:`mean_std` (a :class:`MeanStd` table cell; the std is the
*sample* standard deviation, ddof = 1, and the report says so), :func:`markdown_table` (the report's and the CLIs'
Markdown tables), :func:`figure` / :func:`mean_std_bars` (matplotlib figures written beside the report) and
:func:`compare_arms` (the one rule that turns per-seed values of two arms into PASS / FAIL / INCONCLUSIVE).

While a check runs, :meth:`ReproContext.progress` is its one progress bar on the console and
:meth:`ReproContext.run_dir` its working folder inside the report folder (``<report>/runs/<name>``); whatever the
check prints (library logs, progress bars of its own) goes to ``<report>/logs/<check>.log``, not to the console.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import logging
import math
import os
import platform
import re
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import torch

from polyzoo.shared.io import atomic_path

__all__ = [
    "MACHINE_NOTE",
    "STD_NOTE",
    "VERDICT_RULE",
    "CheckResult",
    "Comparison",
    "MeanStd",
    "Progress",
    "ReproContext",
    "combine_status",
    "compare_arms",
    "discover_checks",
    "figure",
    "markdown_table",
    "mean_std",
    "mean_std_bars",
    "reproducible_runtime",
    "run_checks",
    "run_checks_parallel",
    "t_quantile",
    "thread_environ",
    "write_report",
]

log = logging.getLogger(__name__)

GROUP = "polyzoo.reproductions"

STD_NOTE = (
    "mean ± std: the std is the sample standard deviation (ddof = 1) over the runs; one run shows its value alone"
)


@dataclasses.dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof = 1) of ``n`` values; a table cell that keeps its numbers.

    ``std`` is NaN when ``n < 2``; ``digits`` only decides how the cell is printed (``str``)."""

    mean: float
    std: float
    n: int
    digits: int = 4

    def __str__(self) -> str:
        if self.n == 0:
            return "-"
        if self.n < 2:
            return f"{self.mean:.{self.digits}f}"
        return f"{self.mean:.{self.digits}f} ± {self.std:.{self.digits}f}"


def mean_std(values: Iterable[float], digits: int = 4, scale: float = 1.0) -> MeanStd:
    """:class:`MeanStd` of ``values`` times ``scale`` (e.g. 100 for percent), NaN values left out; the one
    definition of ± in every report: sample standard deviation, ddof = 1 (``statistics.stdev``)."""
    vals = [scale * float(v) for v in values if not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return MeanStd(math.nan, math.nan, 0, digits)
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    return MeanStd(mean, std, n, digits)


VERDICT_RULE = (
    "Verdict rule (every comparison of two arms over seeds, `polyzoo.shared.report.compare_arms`): a claim "
    "'A exceeds B by more than δ' PASSES when the whole 95% Welch confidence interval of mean(A) − mean(B) lies "
    "above δ, FAILS when it lies wholly below δ, and is INCONCLUSIVE when it contains δ (the difference is within "
    "the seed spread). Welch (1947): unequal variances, Welch–Satterthwaite degrees of freedom, Student-t quantile; "
    "an arm with fewer than 2 seeds has no spread, so its comparison is INCONCLUSIVE."
)

MACHINE_NOTE = (
    "What may differ across machines: floating-point results depend on the CPU's instruction set (which "
    "oneDNN/MKL kernels run), the number of threads (the order of reductions), library versions and the device "
    "(CPU or CUDA), so a table cell can move in its last digits or, through training, by about a seed's spread. "
    "On one machine with the same threads, versions and device, a rerun gives the same numbers (seeded, "
    "deterministic algorithms on). Times depend on the machine and its load. Verdicts by the rule above are "
    "meant to hold across machines, except that a result near the rule's boundary can move between PASS or FAIL "
    "and INCONCLUSIVE."
)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` > 0 degrees of freedom (non-integer allowed):
    Newton's method on the CDF, integrated from the density by Simpson's rule (no SciPy in polyzoo-shared)."""
    if not (0.5 < p < 1.0) or not df > 0:
        raise ValueError(f"t_quantile: need 0.5 < p < 1 and df > 0, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(x: float, steps: int = 2000) -> float:  # Simpson on [0, x], x > 0
        h = x / steps
        inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
        return 0.5 + h / 3 * (density(0.0) + inner + density(x))

    x = 1.0  # the CDF is concave on x > 0: Newton from below the root climbs to it monotonically
    for _ in range(100):
        step = (cdf(x) - p) / density(x)
        x -= step
        if abs(step) < 1e-10 * max(1.0, x):
            break
    return x


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare_arms`: the difference of the arms' means, its 95% Welch interval and the
    verdict on the claim ``mean(a) − mean(b) > margin`` (``passed``: True PASS, False FAIL, None INCONCLUSIVE)."""

    a: MeanStd
    b: MeanStd
    diff: float
    low: float
    high: float
    margin: float
    passed: bool | None
    text: str

    @property
    def status(self) -> str:
        return "INCONCLUSIVE" if self.passed is None else ("PASS" if self.passed else "FAIL")


def compare_arms(
    a: Iterable[float],
    b: Iterable[float],
    margin: float = 0.0,
    names: tuple[str, str] = ("A", "B"),
    scale: float = 1.0,
    digits: int = 4,
    confidence: float = 0.95,
) -> Comparison:
    """Decide the claim "``a`` exceeds ``b`` by more than ``margin``" from per-seed values of the two arms, by
    :data:`VERDICT_RULE`: the ``confidence`` Welch interval of mean(a) − mean(b) (values times ``scale``; ``margin``
    in the scaled unit) wholly above the margin: PASS; wholly below: FAIL; else INCONCLUSIVE. A non-inferiority
    claim ("a is at most δ worse than b") is ``margin=-δ``; for "lower is better" pass the arms swapped.

    With zero spread in both arms the interval is the difference itself (decided unless it equals the margin)."""
    ma, mb = mean_std(a, digits, scale), mean_std(b, digits, scale)
    diff = ma.mean - mb.mean
    if ma.n < 2 or mb.n < 2:
        low, high, passed = -math.inf, math.inf, None
        interval = f"{min(ma.n, mb.n)} run(s) in an arm: no seed spread"
    else:
        va, vb = ma.std**2 / ma.n, mb.std**2 / mb.n
        se = math.sqrt(va + vb)
        if se == 0:
            half = 0.0
        else:
            df = (va + vb) ** 2 / (va**2 / (ma.n - 1) + vb**2 / (mb.n - 1))
            half = t_quantile(0.5 + confidence / 2, df) * se
        low, high = diff - half, diff + half
        passed = True if low > margin else (False if high < margin else None)
        interval = f"{confidence:.0%} Welch interval [{low:+.{digits}f}, {high:+.{digits}f}], n = {ma.n}/{mb.n}"
    status = "INCONCLUSIVE" if passed is None else ("PASS" if passed else "FAIL")
    text = (
        f"{names[0]} − {names[1]} = {diff:+.{digits}f} ({interval}); claim > {margin:+.{digits}g}: {status} "
        "(rule: Welch interval vs margin, see the header)"
    )
    return Comparison(ma, mb, diff, low, high, margin, passed, text)


def combine_status(*passed: bool | None) -> bool | None:
    """All sub-claims PASS: True; any FAIL: False; otherwise None (INCONCLUSIVE)."""
    if any(p is False for p in passed):
        return False
    return True if all(p is True for p in passed) else None


SILENCE_S = 25.0
"""A check's progress line is printed again after this many seconds without console output."""


class Progress:
    """A check's one progress bar on the console (``stream``; ``None``: nowhere). On a terminal one line redrawn
    in place (every second, so the elapsed time moves); otherwise (a log file) a line when the bar starts, at most
    every ``interval`` seconds while it advances, and after :data:`SILENCE_S` seconds of silence. Usable as a
    context manager (leaving it does nothing: the runner closes the bar when the check ends)."""

    def __init__(self, name: str, stream: IO[str] | None = None, interval: float = 10.0) -> None:
        self.name, self.stream, self.interval = name, stream, interval
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.total: int | None = None
        self.n = 0
        self.desc = ""
        self.postfix = ""
        self.started = self.last_line = time.monotonic()
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def reset(self, total: int | None, desc: str = "") -> Progress:
        """Start counting again towards ``total`` steps (None: unknown), labelled ``desc``."""
        with self._lock:
            self.total, self.n, self.desc, self.postfix = total, 0, desc, ""
            self._draw(force=True)
        return self

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """Advance by ``n`` steps; ``postfix``: a short status shown after the bar (e.g. the last loss)."""
        with self._lock:
            self.n += n
            if postfix is not None:
                self.postfix = postfix
            self._draw(force=self.total is not None and self.n >= self.total)

    def set_postfix(self, text: str) -> None:
        with self._lock:
            self.postfix = text
            self._draw()

    def tick(self) -> None:
        """The runner's heartbeat (once a second): redraw a terminal line; re-print a silent log line."""
        with self._lock:
            if self.tty or time.monotonic() - self.last_line >= SILENCE_S:
                self._draw(force=True)

    def close(self) -> None:
        with self._lock:
            if self.tty and self.stream is not None:
                self.stream.write("\r\033[K")
                self.stream.flush()
            self.stream = None

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        parts = [f"  {self.name}"]
        if self.desc:
            parts.append(self.desc)
        if self.total:
            done = min(self.n / self.total, 1.0)
            parts.append(f"[{'#' * round(20 * done):<20}] {self.n}/{self.total}")
        elif self.n:
            parts.append(str(self.n))
        parts.append(f"{elapsed:.0f} s")
        if self.total and 0 < self.n < self.total:
            parts.append(f"~{elapsed * (self.total - self.n) / self.n:.0f} s left")
        if self.postfix:
            parts.append(self.postfix)
        return " ".join(parts)

    def _draw(self, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not (force or self.tty or now - self.last_line >= self.interval):
            return
        if self.tty:  # one terminal row (a wrapped line could not be redrawn in place)
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r\033[K" + self.line()[:width])
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self.last_line = now


@dataclasses.dataclass
class ReproContext:
    """What a check gets: where to put its figures and runs, how long to run, where real data lives, which device
    to train on, its progress bar."""

    out_dir: Path
    quick: bool = True
    data_root: Path | None = None
    seed: int = 0
    device: str = "cpu"  # "cpu" or "cuda" (resolved by `polyzoo reproduce --device`)
    runtime: dict[str, str] = dataclasses.field(default_factory=dict)  # threads, allocator, ... (report header)
    bar: Progress | None = dataclasses.field(default=None, repr=False, compare=False)

    def figure_path(self, name: str) -> Path:
        """Path for a PNG in the report folder (``name`` without extension)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{name}.png"

    def run_dir(self, name: str) -> Path:
        """A check's working folder inside the report folder, ``<out_dir>/runs/<name>`` (created): checkpoints,
        generated data, anything it writes besides figures. ``name`` is a relative path such as ``music`` or
        ``vision/eca``. Kept after the run; name it in the report with :meth:`relative`."""
        rel = Path(name)
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"run_dir: expected a relative folder name without '..', got {name!r}")
        path = self.out_dir / "runs" / rel
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: str | Path) -> str:
        """``path`` as the report names it: relative to the report folder (POSIX separators)."""
        return _link(path, self.out_dir)

    def progress(self, total: int | None, desc: str = "") -> Progress:
        """The running check's progress bar, reset to count ``total`` steps labelled ``desc``; call
        ``.update()`` per step. Outside ``polyzoo reproduce`` (e.g. in tests) a bar that shows nothing."""
        if self.bar is None:
            self.bar = Progress("check", None)
        return self.bar.reset(total, desc)

    def seeds(self, n: int) -> list[int]:
        """``n`` seeds starting at :attr:`seed`."""
        return [self.seed + i for i in range(n)]


@dataclasses.dataclass
class CheckResult:
    """One section of the report."""

    title: str
    compared: str  # what was compared, and the claim it tests
    data: str  # on what data
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    passed: bool | None  # None: INCONCLUSIVE (the difference lies within the seed spread or the test-set noise)
    verdict: str  # one sentence: what the numbers say about the claim
    paper: str | None = None  # the paper's number(s), where one applies
    figures: Sequence[Path] = ()
    notes: Sequence[str] = ()
    seeds: Sequence[int] = ()  # the seeds the claim ran on (the report's summary lists them)

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL`` or ``INCONCLUSIVE`` (``passed is None``)."""
        return "INCONCLUSIVE" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclasses.dataclass
class _Outcome:
    name: str
    seconds: float
    results: list[CheckResult]
    error: str | None = None
    log: Path | None = None  # what the check printed

    @property
    def passed(self) -> bool:
        """No error and no FAIL (an INCONCLUSIVE result does not fail the run)."""
        return self.error is None and all(r.passed is not False for r in self.results)

    @property
    def status(self) -> str:
        """ERROR, FAIL (any result failed), INCONCLUSIVE (none failed, some inconclusive) or PASS."""
        if self.error is not None:
            return "ERROR"
        statuses = {r.status for r in self.results}
        return next((s for s in ("FAIL", "INCONCLUSIVE") if s in statuses), "PASS")


def discover_checks(only: Iterable[str] = ()) -> dict[str, Callable[[ReproContext], Any]]:
    """Entry points of ``polyzoo.reproductions``, named ``<domain>`` or ``<domain>.<check>``; ``only`` keeps
    those whose domain (the part before the first dot) or full name is listed."""
    only = set(only)
    found = {}
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        if only and ep.name not in only and ep.name.split(".")[0] not in only:
            continue
        found[ep.name] = ep
    return found


class _LineLog(io.TextIOBase):
    """A check's log: text into ``fh``, where a line redrawn with carriage returns (a library's progress bar)
    leaves only its last state, so a bar writes one line into the log rather than one per redraw."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh, self.line, self.cr = fh, "", False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for part in re.split(r"(\r|\n)", text):
            if part == "\n":
                self.fh.write(self.line + "\n")
                self.line, self.cr = "", False
            elif part == "\r":
                self.cr = True
            elif part:
                if self.cr:  # the line is being redrawn: drop its previous state
                    self.line, self.cr = "", False
                self.line += part
        return len(text)

    def flush(self) -> None:
        self.fh.flush()

    def fileno(self) -> int:
        return self.fh.fileno()

    def close(self) -> None:
        if self.line:
            self.fh.write(self.line + "\n")
            self.line = ""
        self.fh.flush()
        super().close()


def _heartbeat(bar: Progress, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        bar.tick()


def _check_callable(ep: Any) -> Callable[[ReproContext], Any]:
    return ep.load() if hasattr(ep, "load") else ep


def _run_one(name: str, ep: Any, ctx: ReproContext, log_path: Path) -> _Outcome:
    """Run one check with its console output going to ``log_path``; an exception becomes an ERROR outcome."""
    t0 = time.perf_counter()
    with open(log_path, "a", buffering=1, encoding="utf-8") as fh, _LineLog(fh) as out:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                res = _check_callable(ep)(ctx)
            results = list(res) if isinstance(res, list | tuple) else [res]
            return _Outcome(name, time.perf_counter() - t0, results, log=log_path)
        except Exception:
            return _Outcome(name, time.perf_counter() - t0, [], traceback.format_exc(), log=log_path)


def run_checks(
    checks: dict[str, Any],
    ctx: ReproContext,
    console: IO[str] | None = None,
    jobs: int = 1,
    threads: int | None = None,
    deterministic: bool = True,
) -> list[_Outcome]:
    """Run ``checks`` and return their outcomes in the order given. On ``console`` (default: standard error) a line
    when each starts and ends and one progress bar per running check (:meth:`ReproContext.progress`, redrawn at
    least every :data:`SILENCE_S` s); what a check prints itself goes to ``<out_dir>/logs/<name>.log``. In the log, a
    line redrawn with carriage returns (a library's own progress bar) keeps only its last state.

    ``jobs == 1``: one after another in this process; torch's thread count is restored after each check, so that
    one check's setting cannot change the next one's results. ``jobs > 1``: each check in a fresh process (spawned;
    at most ``jobs`` at a time), with ``threads`` torch threads (and the same ``OMP_NUM_THREADS``/MKL/OpenBLAS/Polars
    thread counts unless the user set them) and deterministic algorithms as ``deterministic`` says; a process that
    dies is reported as the check's ERROR (see :func:`run_checks_parallel`)."""
    console = sys.stderr if console is None else console
    if jobs > 1 and len(checks) > 1:
        return run_checks_parallel(checks, ctx, console, jobs, threads or 1, deterministic)
    outcomes = []
    for i, (name, ep) in enumerate(checks.items(), 1):
        log.info("reproduce: running %s", name)
        console.write(f"[{i}/{len(checks)}] {name}: started\n")
        console.flush()
        log_path = ctx.out_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        bar, before = Progress(name, console), torch.get_num_threads()
        ctx.bar = bar
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(bar, stop), daemon=True)
        beat.start()
        try:
            outcome = _run_one(name, ep, ctx, log_path)
        finally:
            stop.set()
            beat.join()
            bar.close()
            ctx.bar = None
            torch.set_num_threads(before)
        outcomes.append(outcome)
        console.write(f"[{i}/{len(checks)}] {name}: {outcome.status} in {outcome.seconds:.1f} s\n")
        console.flush()
    return outcomes


# --- several checks at once ---------------------------------------------------------------------------------------

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POLARS_MAX_THREADS")
"""Set to a parallel check's thread count in its process unless the user set them."""


class _RemoteProgress:
    """A check's progress bar inside a worker process: every call is sent to the runner, which draws it."""

    def __init__(self, queue: Any, name: str) -> None:
        self.queue, self.name = queue, name
        self.n, self.total = 0, None

    def __enter__(self) -> _RemoteProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def reset(self, total: int | None, desc: str = "") -> _RemoteProgress:
        self.n, self.total = 0, total
        self.queue.put((self.name, "reset", (total, desc)))
        return self

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        self.queue.put((self.name, "update", (n, postfix)))

    def set_postfix(self, text: str) -> None:
        self.queue.put((self.name, "postfix", text))

    def tick(self) -> None:
        return None

    def close(self) -> None:
        return None


def _worker(
    name: str, ep: Any, ctx: ReproContext, log_path: str, threads: int, deterministic: bool, queue: Any
) -> None:
    """A spawned process running one check (the target of :func:`run_checks_parallel`): sends its progress and
    finally ``(name, "done", outcome)``; an outcome that cannot be sent becomes an ERROR naming why."""
    os.environ.setdefault("POLYZOO_CHECK_PROCESS", name)
    with reproducible_runtime(threads, deterministic):
        ctx.bar = _RemoteProgress(queue, name)
        # C-level output of the check's libraries goes to its log too
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        outcome = _run_one(name, ep, ctx, Path(log_path))
    try:
        queue.put((name, "done", outcome))
    except Exception:  # an unpicklable result: report it rather than vanish
        queue.put((name, "done", _Outcome(name, outcome.seconds, [], traceback.format_exc(), log=Path(log_path))))


@contextlib.contextmanager
def thread_environ(threads: int) -> Iterator[None]:
    """``os.environ`` as a spawned check process starts with: :data:`THREAD_VARIABLES` set to ``threads`` unless the
    user set them (restored on leaving)."""
    added = {k: str(threads) for k in THREAD_VARIABLES if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class _Board:
    """The console of several running checks: on a terminal one line with every running bar, redrawn each second;
    otherwise each bar prints its own lines (see :class:`Progress`)."""

    def __init__(self, console: IO[str]) -> None:
        self.console = console
        self.tty = bool(getattr(console, "isatty", lambda: False)())
        self.bars: dict[str, Progress] = {}

    def start(self, name: str) -> Progress:
        bar = Progress(name, None if self.tty else self.console)
        self.bars[name] = bar
        return bar

    def stop(self, name: str) -> None:
        self.bars.pop(name).close()

    def write(self, text: str) -> None:
        if self.tty:
            self.console.write("\r\033[K")
        self.console.write(text)
        self.redraw()

    def redraw(self) -> None:
        if self.tty and self.bars:
            width = shutil.get_terminal_size().columns - 1
            self.console.write("\r\033[K" + " |".join(b.line() for b in self.bars.values())[:width])
        self.console.flush()

    def tick(self) -> None:
        for bar in self.bars.values():
            bar.tick()
        self.redraw()

    def close(self) -> None:
        if self.tty:
            self.console.write("\r\033[K")
            self.console.flush()


def run_checks_parallel(
    checks: dict[str, Any], ctx: ReproContext, console: IO[str], jobs: int, threads: int, deterministic: bool
) -> list[_Outcome]:
    """:func:`run_checks` with ``jobs`` checks at a time, each in a fresh spawned process with ``threads`` torch
    threads (a fresh process per check: nothing one check sets, such as threads, RNG state or imported
    configuration, reaches another). Checks start in the order given. The results come back through a
    :mod:`multiprocessing` queue from processes this function started (never from a file)."""
    import multiprocessing as mp
    import queue as queue_mod

    mpc = mp.get_context("spawn")
    messages = mpc.Queue()
    board = _Board(console)
    pending = list(enumerate(checks.items(), 1))
    running: dict[str, tuple[int, Any, float]] = {}
    done: dict[str, _Outcome] = {}
    (ctx.out_dir / "logs").mkdir(parents=True, exist_ok=True)
    child_ctx = dataclasses.replace(ctx, bar=None)

    def finish(name: str, outcome: _Outcome, started: bool = True) -> None:
        i, proc, _ = running.pop(name)
        if started:
            proc.join()
        board.stop(name)
        done[name] = outcome
        board.write(f"[{i}/{len(checks)}] {name}: {outcome.status} in {outcome.seconds:.1f} s\n")

    try:
        while pending or running:
            while pending and len(running) < jobs:
                i, (name, ep) = pending.pop(0)
                log_path = ctx.out_dir / "logs" / f"{name}.log"
                log_path.write_text("")
                proc = mpc.Process(  # entry points and module-level functions pickle by reference
                    target=_worker,
                    args=(name, ep, child_ctx, str(log_path), threads, deterministic, messages),
                    name=f"polyzoo-check-{name}",
                    daemon=True,
                )
                running[name] = (i, proc, time.perf_counter())
                board.start(name)
                board.write(f"[{i}/{len(checks)}] {name}: started\n")
                try:
                    with thread_environ(threads):
                        proc.start()
                except Exception:  # e.g. a check that cannot be pickled (a local function): its ERROR, not the run's
                    finish(name, _Outcome(name, 0.0, [], traceback.format_exc(), log=log_path), started=False)
            try:
                name, kind, payload = messages.get(timeout=1.0)
            except queue_mod.Empty:
                board.tick()
                for name, (_, proc, t0) in list(running.items()):
                    if proc.exitcode is not None:  # died without sending its result (killed, out of memory, crash)
                        with contextlib.suppress(queue_mod.Empty):  # its last messages may still be in the pipe
                            while True:
                                _dispatch(messages.get(timeout=0.2), board, finish)
                        if name in running:
                            error = f"the check's process exited with code {proc.exitcode} before it reported\n"
                            log_path = ctx.out_dir / "logs" / f"{name}.log"
                            finish(name, _Outcome(name, time.perf_counter() - t0, [], error, log=log_path))
                continue
            _dispatch((name, kind, payload), board, finish)
    finally:
        for _, proc, _ in running.values():
            proc.terminate()
            proc.join()
        board.close()
    return [done[name] for name in checks]


def _dispatch(message: tuple[str, str, Any], board: _Board, finish: Callable[[str, _Outcome], None]) -> None:
    name, kind, payload = message
    bar = board.bars.get(name)
    if kind == "done":
        finish(name, payload)
    elif bar is None:
        return
    elif kind == "reset":
        bar.reset(*payload)
    elif kind == "update":
        bar.update(*payload)
    elif kind == "postfix":
        bar.set_postfix(payload)
    if kind != "done" and board.tty:
        board.redraw()


@contextlib.contextmanager
def reproducible_runtime(threads: int | None, deterministic: bool) -> Iterator[dict[str, str]]:
    """Fix what decides the checks' numbers on this machine (threads, deterministic algorithms), yield its
    description for the report, and restore torch's previous settings on leaving (the command may run in-process,
    e.g. under click's test runner)."""
    from polyzoo.shared.perf import runtime_settings

    det = torch.utils.deterministic
    before = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        det.fill_uninitialized_memory,
        torch.backends.cudnn.benchmark,
    )
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read at CUDA start
            torch.use_deterministic_algorithms(True, warn_only=True)
            # no NaN-filling of torch.empty (a cost on every allocation; results do not depend on it)
            det.fill_uninitialized_memory = False
            torch.backends.cudnn.benchmark = False
        yield runtime_settings()
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])
        det.fill_uninitialized_memory, torch.backends.cudnn.benchmark = before[3], before[4]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Callable[[Any], str] = _fmt) -> str:
    """A Markdown table: a header of ``columns``, one line per row; cells printed with ``fmt`` (default: floats
    to 4 significant digits, :class:`MeanStd` as ``mean ± std``, anything else with ``str``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def figure(path: str | Path, nrows: int = 1, ncols: int = 1, dpi: int = 110, **subplots_kw: Any) -> Iterator[tuple]:
    """A matplotlib figure (Agg backend) ``(fig, axes)`` from ``plt.subplots(nrows, ncols, **subplots_kw)``; on
    leaving the block it is laid out tightly and written to ``path`` (PNG, atomically); always closed."""
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, **subplots_kw)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)


def mean_std_bars(ax, labels: Sequence[str], stats: Sequence[MeanStd], **bar_kw: Any):
    """Bars of the means with ± sample-std error bars (none where a single run has no std)."""
    errs = [0.0 if math.isnan(s.std) else s.std for s in stats]
    return ax.bar(list(labels), [s.mean for s in stats], yerr=errs, **bar_kw)


def _versions() -> str:
    dists = sorted(
        (d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"].startswith("polyzoo")
    )
    return ", ".join(f"{n} {v}" for n, v in dists)


def _link(path: Path | str, report_dir: Path) -> str:
    """``path`` relative to the report's folder, as a Markdown link target (POSIX separators)."""
    return Path(os.path.relpath(Path(path).absolute(), report_dir.absolute())).as_posix()


def _seeds_cell(results: Sequence[CheckResult]) -> str:
    seeds = sorted({s for r in results for s in r.seeds})
    return ", ".join(map(str, seeds)) if seeds else "-"


def write_report(outcomes: list[_Outcome], ctx: ReproContext, command: str, wall_seconds: float | None = None) -> Path:
    """Write ``REPORT.md`` into ``ctx.out_dir`` (atomically) and return its path. Every link (figures, logs) is
    relative to the report's folder, so the report shows its images wherever the folder is moved or viewed.
    ``wall_seconds``: how long the checks took from the first start to the last end (several may run at once)."""
    now = dt.datetime.now().astimezone()
    report_dir = ctx.out_dir
    runtime = ctx.runtime or _runtime()
    lines = [
        "# polyzoo reproduction report",
        "",
        f"- date: {now:%Y-%m-%d %H:%M:%S %Z}",
        f"- command: `{command}`",
        f"- mode: {'quick' if ctx.quick else 'full'}; data root: {ctx.data_root or '-'}; device: {ctx.device}",
        f"- seeds: base seed {ctx.seed}; a check with n seeds runs seeds {ctx.seed} … {ctx.seed} + n − 1 "
        "(listed per check in the summary)",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, torch {torch.__version__}"
        + (f", CUDA {torch.cuda.get_device_name(0)}" if ctx.device.startswith("cuda") else ""),
        "- runtime: " + "; ".join(f"{k}: {v}" for k, v in runtime.items()),
        f"- packages: {_versions()}",
        f"- {STD_NOTE}",
        f"- {VERDICT_RULE}",
        f"- {MACHINE_NOTE}",
        "",
        "## Summary",
        "",
        f"Checks took {_fmt_wall(wall_seconds, outcomes)}.",
        "",
        markdown_table(
            ["check", "status", "seeds", "time (s)", "console output"],
            [
                [
                    o.name,
                    o.status,
                    _seeds_cell(o.results),
                    round(o.seconds, 1),
                    f"[log]({_link(o.log, report_dir)})" if o.log else "-",
                ]
                for o in outcomes
            ],
        ),
        "",
    ]
    for o in outcomes:
        if o.error:
            lines += [
                f"## {o.name}: ERROR",
                "",
                "The check raised before it produced a result:",
                "",
                "```",
                o.error.rstrip(),
                "```",
                "",
            ]
            continue
        for r in o.results:
            lines += [
                f"## {r.title} ({o.name}): {r.status}",
                "",
                f"**Compared.** {r.compared}",
                "",
                f"**Data.** {r.data}",
                "",
                markdown_table(r.columns, r.rows),
                "",
            ]
            if r.paper:
                lines += [f"**Paper.** {r.paper}", ""]
            lines += [f"**Verdict.** {r.verdict}", ""]
            for fig in r.figures:
                lines += [f"![{r.title}]({_link(fig, report_dir)})", ""]
            lines += [f"- {n}" for n in r.notes] + ([""] if r.notes else [])
    path = report_dir / "REPORT.md"
    report_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def _fmt_wall(wall: float | None, outcomes: list[_Outcome]) -> str:
    summed = sum(o.seconds for o in outcomes)
    if wall is None:
        return f"{summed:.1f} s in all"
    return f"{wall:.1f} s wall-clock ({summed:.1f} s summed over the checks)"


def _runtime() -> dict[str, str]:
    from polyzoo.shared.perf import runtime_settings

    return runtime_settings()
