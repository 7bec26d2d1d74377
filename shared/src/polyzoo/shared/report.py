"""The reproduction report of ``polyzoo reproduce``: checks contributed by every installed domain (entry-point
group ``polyzoo.reproductions``), run one after another, written to ``<out>/<timestamp>/REPORT.md`` with PNG
plots beside it.

A check is a callable ``check(ctx: ReproContext) -> CheckResult | list[CheckResult]``. It states what it
compared, on what data, the measured table, the paper's number where one applies, and whether the claim held.
A check that raises is reported as an error (with its traceback), never hidden.

What every reproduction shares lives here, once: :func:`mean_std` (a :class:`MeanStd` table cell; the std is the
*sample* standard deviation, ddof = 1, and the report says so), :func:`markdown_table` (the report's and the CLIs'
Markdown tables) and :func:`figure` / :func:`mean_std_bars` (matplotlib figures written beside the report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import platform
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from polyzoo.shared.io import atomic_path

__all__ = [
    "STD_NOTE",
    "CheckResult",
    "MeanStd",
    "ReproContext",
    "discover_checks",
    "figure",
    "markdown_table",
    "mean_std",
    "mean_std_bars",
    "run_checks",
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


@dataclasses.dataclass
class ReproContext:
    """What a check gets: where to put its figures, how long to run, where real data lives."""

    out_dir: Path
    quick: bool = True
    data_root: Path | None = None
    seed: int = 0

    def figure_path(self, name: str) -> Path:
        """Path for a PNG in the report folder (``name`` without extension)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{name}.png"


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


def run_checks(checks: dict[str, Any], ctx: ReproContext) -> list[_Outcome]:
    outcomes = []
    for name, ep in checks.items():
        log.info("reproduce: running %s", name)
        t0 = time.perf_counter()
        try:
            fn = ep.load() if hasattr(ep, "load") else ep
            res = fn(ctx)
            results = list(res) if isinstance(res, list | tuple) else [res]
            outcomes.append(_Outcome(name, time.perf_counter() - t0, results))
        except Exception:
            outcomes.append(_Outcome(name, time.perf_counter() - t0, [], traceback.format_exc()))
    return outcomes


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


def write_report(outcomes: list[_Outcome], ctx: ReproContext, command: str) -> Path:
    """Write ``REPORT.md`` into ``ctx.out_dir`` (atomically) and return its path."""
    now = dt.datetime.now().astimezone()
    lines = [
        "# polyzoo reproduction report",
        "",
        f"- date: {now:%Y-%m-%d %H:%M:%S %Z}",
        f"- command: `{command}`",
        f"- mode: {'quick' if ctx.quick else 'full'}; data root: {ctx.data_root or '-'}; seed: {ctx.seed}",
        f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        f"- packages: {_versions()}",
        f"- {STD_NOTE}",
        "",
        "## Summary",
        "",
        markdown_table(
            ["check", "status", "time (s)"],
            [[o.name, o.status, round(o.seconds, 1)] for o in outcomes],
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
                rel = Path(fig).relative_to(ctx.out_dir) if Path(fig).is_absolute() else Path(fig)
                lines += [f"![{r.title}]({rel.as_posix()})", ""]
            lines += [f"- {n}" for n in r.notes] + ([""] if r.notes else [])
    path = ctx.out_dir / "REPORT.md"
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path
