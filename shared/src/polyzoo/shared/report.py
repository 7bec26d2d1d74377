"""The reproduction report of ``polyzoo reproduce``: checks contributed by every installed domain (entry-point
group ``polyzoo.reproductions``), run one after another, written to ``<out>/<timestamp>/REPORT.md`` with PNG
plots beside it.

A check is a callable ``check(ctx: ReproContext) -> CheckResult | list[CheckResult]``. It states what it
compared, on what data, the measured table, the paper's number where one applies, and whether the claim held.
A check that raises is reported as an error (with its traceback), never hidden.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import platform
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from polyzoo.shared.io import atomic_path

__all__ = ["CheckResult", "ReproContext", "discover_checks", "run_checks", "write_report"]

log = logging.getLogger(__name__)

GROUP = "polyzoo.reproductions"


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
    passed: bool
    verdict: str  # one sentence: what the numbers say about the claim
    paper: str | None = None  # the paper's number(s), where one applies
    figures: Sequence[Path] = ()
    notes: Sequence[str] = ()


@dataclasses.dataclass
class _Outcome:
    name: str
    seconds: float
    results: list[CheckResult]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(r.passed for r in self.results)


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
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


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
        "",
        "## Summary",
        "",
        _table(
            ["check", "status", "time (s)"],
            [[o.name, "PASS" if o.passed else ("ERROR" if o.error else "FAIL"), round(o.seconds, 1)] for o in outcomes],
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
                f"## {r.title} ({o.name}): {'PASS' if r.passed else 'FAIL'}",
                "",
                f"**Compared.** {r.compared}",
                "",
                f"**Data.** {r.data}",
                "",
                _table(r.columns, r.rows),
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
