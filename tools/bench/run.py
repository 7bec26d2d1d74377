"""Run polyzoo benchmarks: ``uv run python tools/bench/run.py [NAME...] [--quick]``.

Each benchmark is a module ``bench_<name>.py`` beside this file with a ``run(quick: bool) -> str`` function
that times its contenders interleaved in one process (medians of repeats) and returns a printable table with
the ratios. Without names, every benchmark runs.

Allocator: with glibc's default malloc, every fresh large tensor pays first-touch page faults
(../shared/notes/cpu-performance.md). Unless POLYZOO_BENCH_NO_TUNE=1, this runner re-executes itself once with
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736`` (glibc keeps freed
memory), the setting PyTorch's CPU tuning guide's advice amounts to. All contenders of a benchmark run under
the same setting; the header says which.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import platform
import sys
from pathlib import Path

import torch

from polyzoo.shared.perf import GLIBC_MALLOC_TUNABLES as TUNED

HERE = Path(__file__).resolve().parent


def available() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def main() -> int:
    benches = available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {list(benches)})")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke run)")
    parser.add_argument("--device", default="cpu", help="device for benchmarks that take one (e.g. cuda)")
    args = parser.parse_args()
    if os.environ.get("GLIBC_TUNABLES") != TUNED and os.environ.get("POLYZOO_BENCH_NO_TUNE") != "1":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": TUNED})
    unknown = [n for n in args.names if n not in benches]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {list(benches)}")
    print(
        f"# polyzoo benchmarks — {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(default malloc)')}"
    )
    for name in args.names or benches:
        print(f"\n## {name}\n")
        run = load(benches[name]).run
        kwargs = {"device": args.device} if "device" in inspect.signature(run).parameters else {}
        if args.device != "cpu" and not kwargs:
            print(f"({name} runs on the CPU only)")
        print(run(quick=args.quick, **kwargs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
