"""Mutation testing for polyzoo's core math: a small self-contained AST mutator.

Usage (from the repository root, not part of CI's default run)::

    uv run python tools/mutation.py                         # every configured module
    uv run python tools/mutation.py --module music.evaluation --module recsys.optim
    uv run python tools/mutation.py --module shared.ops.matrix --list     # the mutants, nothing run
    uv run python tools/mutation.py --module graph.metrics --sample 30    # a seeded random sample
    uv run python tools/mutation.py --module music.evaluation --only 12,40 --show

Why not mutmut/cosmic-ray: mutmut 3 copies the tree into ``mutants/`` and runs the tests from there, which does
not fit a uv workspace of editable installs sharing the ``polyzoo`` namespace package across eight ``src`` folders
without per-package configuration; a mutator of ~300 lines that needs no dependency was quicker to make exact.

How it works: the module's source is parsed; every mutation site (see ``Mutator``) gets an index. For one mutant,
the module's whole subpackage (e.g. ``polyzoo/music``) is copied into a temporary folder, the mutated module is
written there (``ast.unparse``), and the targeted tests run in a fresh ``pytest -x`` process with that folder first
on ``PYTHONPATH`` (``polyzoo`` is a namespace package, so the copied subpackage shadows the editable install). A
mutant is *killed* when the tests fail (or time out: the per-mutant timeout is twice the clean run plus 20 s),
*survived* when they pass. Before the mutants, the unmutated (unparsed) copy must pass and must be the module the
tests import, or the module is reported as broken.

Mutations: binary/augmented operator swaps (+ -, * /, // /, % //, ** *, << >>, & |, ^ |), comparison flips
(< <=, > >=, == !=, is / is not, in / not in), integer and float constants ±1, True/False, ``not x`` → ``x``,
``-x`` → ``x``, and/or swap, negated ``if``/``while``/ternary conditions, slice upper bound +1 and deletion of
in-place statements (augmented assignments and assignments into a subscript/attribute).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Target:
    source: str  # the module file, relative to ROOT
    package_dir: str  # the subpackage folder copied as a whole (its parent is the namespace root)
    tests: tuple[str, ...]  # pytest arguments (files, -k expressions)
    functions: tuple[str, ...] = ()  # qualified names to mutate (empty: the whole module)


MODULES: dict[str, Target] = {
    "shared.ops.matrix": Target(
        "shared/src/polyzoo/shared/ops/matrix.py",
        "shared/src/polyzoo/shared",
        ("shared/tests/test_matrix.py", "shared/tests/test_pooling.py"),
    ),
    "shared.ops.pooling": Target(
        "shared/src/polyzoo/shared/ops/pooling.py",
        "shared/src/polyzoo/shared",
        ("shared/tests/test_pooling_mutants.py", "shared/tests/test_pooling.py"),
    ),
    "shared.ops.attention": Target(
        "shared/src/polyzoo/shared/ops/attention.py",
        "shared/src/polyzoo/shared",
        ("shared/tests/test_attention_mutants.py", "shared/tests/test_attention.py"),
    ),
    "graph.metrics": Target(
        "packages/graph/src/polyzoo/graph/metrics.py",
        "packages/graph/src/polyzoo/graph",
        (
            "packages/graph/tests/test_metrics_mutants.py",
            "packages/graph/tests/test_metrics.py",
        ),
    ),
    "security.evaluate": Target(
        "packages/security/src/polyzoo/security/evaluate.py",
        "packages/security/src/polyzoo/security",
        (
            "packages/security/tests/test_evaluate_mutants.py",
            "packages/security/tests/test_distill_eval.py::test_asr_conventions",
            "packages/security/tests/test_distill_eval.py::test_train_network_through_train_epoch_equals_the_official_loop",
        ),
        ("train_epoch", "train_network", "predict", "accuracy", "attack_metrics"),
    ),
    "music.evaluation": Target(
        "packages/music/src/polyzoo/music/evaluation.py",
        "packages/music/src/polyzoo/music",
        ("packages/music/tests/test_evaluation.py",),
        (
            "levenshtein",
            "bars",
            "bar_string",
            "stabilities",
            "two_means_1d",
            "groove_metrics",
            "summarize",
            "random_baseline",
            "repeat_baseline",
            "_bar_keys",
            "duplication_counts",
            "duplication_summary",
        ),
    ),
    "detection.cmt.evaluation": Target(
        "packages/detection/src/polyzoo/detection/cmt/evaluation.py",
        "packages/detection/src/polyzoo/detection",
        ("packages/detection/tests/test_cmt_ap_mutants.py", "packages/detection/tests/test_cmt_core.py", "-k", "ap"),
    ),
    "recsys.train.metrics": Target(
        "packages/recsys/src/polyzoo/recsys/train.py",
        "packages/recsys/src/polyzoo/recsys",
        ("packages/recsys/tests/test_metrics_mutants.py", "packages/recsys/tests/test_train.py", "-k", "metrics"),
        ("metrics",),
    ),
    "recsys.optim": Target(
        "packages/recsys/src/polyzoo/recsys/optim.py",
        "packages/recsys/src/polyzoo/recsys",
        ("packages/recsys/tests/test_optim.py",),
    ),
}

BINOP_SWAP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.BitXor: ast.BitOr,
}
CMP_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
BOOL_SWAP = {ast.And: ast.Or, ast.Or: ast.And}
SYMBOL = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.And: "and",
    ast.Or: "or",
}


@dataclasses.dataclass
class Site:
    index: int
    line: int
    where: str
    what: str


class Mutator(ast.NodeTransformer):
    """Numbers the mutation sites in visiting order; with ``target`` set, applies only that one."""

    def __init__(self, functions: tuple[str, ...] = (), target: int | None = None) -> None:
        self.functions = set(functions)
        self.target = target
        self.sites: list[Site] = []
        self.scope: list[str] = []
        self.applied = False

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    def _active(self) -> bool:
        if not self.functions:
            return True
        return any(".".join(self.scope[: i + 1]) in self.functions for i in range(len(self.scope)))

    def _site(self, node: ast.AST, what: str) -> bool:
        """Register a site; True when it is the one to apply."""
        if not self._active():
            return False
        index = len(self.sites)
        self.sites.append(Site(index, getattr(node, "lineno", 0), ".".join(self.scope) or "<module>", what))
        if index == self.target:
            self.applied = True
            return True
        return False

    def _scoped(self, node: ast.AST) -> ast.AST:
        self.scope.append(node.name)  # type: ignore[attr-defined]
        # annotations are never mutated
        for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:  # type: ignore[attr-defined]
            arg.annotation = None
        if getattr(node, "returns", None) is not None:
            node.returns = None  # type: ignore[attr-defined]
        body = node.body  # type: ignore[attr-defined]
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            docstring, rest = body[:1], body[1:]
        else:
            docstring, rest = [], body
        node.body = rest  # type: ignore[attr-defined]
        self.generic_visit(node)
        node.body = docstring + (node.body or [ast.Pass()])  # type: ignore[attr-defined]
        self.scope.pop()
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    # -- mutations -----------------------------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        new = BINOP_SWAP.get(type(node.op))
        if new is not None and self._site(node, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"):
            node.op = new()
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        new = BINOP_SWAP.get(type(node.op))
        if new is not None and self._site(node, f"{SYMBOL[type(node.op)]}= -> {SYMBOL[new]}="):
            node.op = new()
        if self._site(node, f"delete `{ast.unparse(node)}`"):
            return ast.Pass()
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        self.generic_visit(node)
        if all(isinstance(t, ast.Subscript | ast.Attribute) for t in node.targets) and self._site(
            node, f"delete `{ast.unparse(node)}`"
        ):
            return ast.Pass()
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for k, op in enumerate(node.ops):
            new = CMP_SWAP.get(type(op))
            if new is not None and self._site(node, f"{SYMBOL[type(op)]} -> {SYMBOL[new]}"):
                node.ops[k] = new()
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        new = BOOL_SWAP[type(node.op)]
        if self._site(node, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"):
            node.op = new()
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not | ast.USub) and self._site(node, f"drop unary `{ast.unparse(node)}`"):
            return node.operand
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        v = node.value
        if isinstance(v, bool):
            if self._site(node, f"{v} -> {not v}"):
                return ast.copy_location(ast.Constant(not v), node)
        elif isinstance(v, int | float):
            for delta in (1, -1):
                if self._site(node, f"{v!r} -> {v + delta!r}"):
                    return ast.copy_location(ast.Constant(v + delta), node)
        return node

    def _negate_test(self, node: ast.If | ast.While | ast.IfExp) -> None:
        if self._site(node, f"negate `{ast.unparse(node.test)}`"):
            node.test = ast.UnaryOp(ast.Not(), node.test)

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        self._negate_test(node)
        return node

    def visit_While(self, node: ast.While) -> ast.AST:
        self.generic_visit(node)
        self._negate_test(node)
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        self.generic_visit(node)
        self._negate_test(node)
        return node

    def visit_Slice(self, node: ast.Slice) -> ast.AST:
        self.generic_visit(node)
        if node.upper is not None and self._site(node, f"slice upper `{ast.unparse(node.upper)}` + 1"):
            node.upper = ast.BinOp(node.upper, ast.Add(), ast.Constant(1))
        return node


def mutant_source(tree: ast.Module, functions: tuple[str, ...], target: int | None) -> tuple[str, list[Site]]:
    m = Mutator(functions, target)
    new = ast.fix_missing_locations(m.visit(copy.deepcopy(tree)))
    if target is not None and not m.applied:
        raise IndexError(f"no mutation site {target}")
    return ast.unparse(new) + "\n", m.sites


def run_tests(name: str, target: Target, source: str, timeout: float) -> tuple[str, float, str]:
    """Run the targeted tests against ``source`` as the module; returns (outcome, seconds, output tail)."""
    with tempfile.TemporaryDirectory(prefix="polyzoo-mut-") as tmp:
        pkg = ROOT / target.package_dir
        dest = Path(tmp) / pkg.relative_to(pkg.parents[1])  # <tmp>/polyzoo/<sub>
        shutil.copytree(pkg, dest, ignore=shutil.ignore_patterns("__pycache__"))
        (dest / (ROOT / target.source).relative_to(pkg)).write_text(source)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        env.setdefault("OMP_NUM_THREADS", "1")
        # a test file added later may be absent (a run on an older checkout)
        tests = [t for t in target.tests if ".py" not in t or (ROOT / t.split("::")[0]).is_file()]
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - t0, ""
        seconds = time.monotonic() - t0
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        if proc.returncode == 0:
            return "survived", seconds, "\n".join(tail)
        if proc.returncode == 5:
            return "no-tests", seconds, "\n".join(tail)
        return "killed", seconds, "\n".join(tail)


def imported_from_copy(name: str, target: Target) -> bool:
    """The tests must import the copy, not the editable install: checked once per module."""
    parts = Path(target.source).with_suffix("").parts
    module = ".".join(parts[parts.index("src") + 1 :])
    with tempfile.TemporaryDirectory(prefix="polyzoo-mut-") as tmp:
        pkg = ROOT / target.package_dir
        dest = Path(tmp) / pkg.relative_to(pkg.parents[1])
        shutil.copytree(pkg, dest, ignore=shutil.ignore_patterns("__pycache__"))
        env = dict(os.environ, PYTHONPATH=tmp)
        out = subprocess.run(
            [sys.executable, "-c", f"import {module} as m; print(m.__file__)"], env=env, capture_output=True, text=True
        )
        return out.stdout.strip().startswith(tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--module", action="append", choices=sorted(MODULES), help="repeatable; default: all")
    p.add_argument("--list", action="store_true", help="list the mutants and stop")
    p.add_argument("--sample", type=int, default=0, help="run a seeded random sample of this many mutants per module")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated mutant indices")
    p.add_argument("--show", action="store_true", help="print the diff line of each mutant")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    names = args.module or list(MODULES)
    results: dict[str, dict] = {}
    for name in names:
        target = MODULES[name]
        tree = ast.parse((ROOT / target.source).read_text())
        clean, sites = mutant_source(tree, target.functions, None)
        if args.list:
            for s in sites:
                print(f"{name} #{s.index} line {s.line} {s.where}: {s.what}")
            continue
        chosen = sites
        if args.only:
            keep = {int(i) for i in args.only.split(",")}
            chosen = [s for s in sites if s.index in keep]
        elif args.sample and args.sample < len(sites):
            chosen = sorted(random.Random(args.seed).sample(sites, args.sample), key=lambda s: s.index)
        if not imported_from_copy(name, target):
            print(f"{name}: BROKEN — the tests would not import the mutated copy")
            results[name] = {"broken": True}
            continue
        outcome, base_s, tail = run_tests(name, target, clean, timeout=600)
        if outcome != "survived":
            print(f"{name}: BROKEN — the unmutated copy does not pass its tests ({outcome}): {tail}")
            results[name] = {"broken": True}
            continue
        timeout = 2 * base_s + 20
        print(
            f"{name}: {len(chosen)} of {len(sites)} mutants, clean run {base_s:.1f} s, timeout {timeout:.0f} s",
            flush=True,
        )
        rows = []
        for s in chosen:
            src, _ = mutant_source(tree, target.functions, s.index)
            outcome, secs, _ = run_tests(name, target, src, timeout)
            rows.append({**dataclasses.asdict(s), "outcome": outcome, "seconds": round(secs, 1)})
            if outcome != "killed" or args.show:
                print(f"  {outcome:8s} #{s.index} line {s.line} {s.where}: {s.what}", flush=True)
        killed = sum(r["outcome"] in ("killed", "timeout") for r in rows)
        score = killed / len(rows) if rows else float("nan")
        print(f"{name}: killed {killed}/{len(rows)} = {score:.0%}", flush=True)
        results[name] = {"total_sites": len(sites), "run": len(rows), "killed": killed, "mutants": rows}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.list:
        print("\nsummary:")
        for name, r in results.items():
            if r.get("broken"):
                print(f"  {name:28s} BROKEN")
            else:
                print(f"  {name:28s} {r['killed']}/{r['run']} killed (of {r['total_sites']} sites)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
