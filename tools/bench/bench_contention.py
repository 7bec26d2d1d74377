"""Why a polyzoo run collapses when another CPU-bound process shares the machine, and which thread settings avoid
it: ``uv run python tools/bench/run.py contention [--quick]`` (or run this file directly).

Workload (representative of the reproduction checks: many small tensors, so per-op synchronisation dominates): a
small CNN (3×3 conv stem + three conv/BN/ReLU stages, 16/32/64 channels, global pool, linear) trained with AdamW on
batches of 64 grey 16×16 images (the ECA check's quick shapes), plus a 256² matmul chain (the graph/recsys
checks' dense layers). Each setting runs in a fresh process (OpenMP reads its variables at start), once alone and
once beside a busy-loop process (one pure-Python ``while True`` process: "another CPU-bound process"), interleaved
and repeated; the table gives the median wall time of each and the ratio beside / alone.

Settings (see ``polyzoo.shared.perf.thread_settings``): ``default`` (torch's own: as many OpenMP threads as cores,
libgomp's default wait policy, i.e. threads spin before sleeping), ``PASSIVE`` (``OMP_WAIT_POLICY=PASSIVE``: idle
OpenMP threads sleep at once), ``GOMP_SPINCOUNT=0`` (the libgomp knob with the same effect), ``1 thread``
(``OMP_NUM_THREADS=1``), ``interop 1`` (``torch.set_num_interop_threads(1)``, default policy).

Measured numbers depend on what else runs: on a machine already shared, "alone" means "without the extra busy
loop"; compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=0": {"GOMP_SPINCOUNT": "0"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "1 thread + PASSIVE": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    "interop 1": {"POLYZOO_BENCH_INTEROP": "1"},
}
# variables the parent may have set that would blur the settings
CLEARED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "POLYZOO_THREADS")


def _worker(steps: int) -> None:
    import torch
    from torch import nn

    if os.environ.get("POLYZOO_BENCH_INTEROP"):
        torch.set_num_interop_threads(int(os.environ["POLYZOO_BENCH_INTEROP"]))
    torch.manual_seed(0)

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    model = nn.Sequential(
        block(1, 16, 1),
        block(16, 16, 1),
        block(16, 32, 2),
        block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(64, 1, 16, 16), torch.randint(0, 10, (64,))
    a, w = torch.randn(256, 256), torch.randn(256, 256) / 16

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        h = a
        for _ in range(8):
            h = torch.relu(h @ w)

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}))


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _time(setting: str, steps: int, beside: bool) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED} | SETTINGS[setting]
    busy = _busy() if beside else None
    try:
        if busy is not None:
            time.sleep(0.3)  # let the busy loop start
        out = subprocess.run(
            [sys.executable, __file__, "--worker", "--steps", str(steps)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    res = json.loads(out.strip().splitlines()[-1])
    return res["seconds"], res["threads"]


def run(quick: bool = False, settings: list[str] | None = None, repeats: int | None = None) -> str:
    names = settings or list(SETTINGS)
    steps, default_repeats = (30, 1) if quick else (60, 3)
    repeats = repeats or default_repeats
    times: dict[tuple[str, bool], list[float]] = {(n, b): [] for n in names for b in (False, True)}
    threads: dict[str, int] = {}
    for _ in range(repeats):
        for name in names:  # interleaved: alone and beside each setting, in turn, so drifting load hits all alike
            for beside in (False, True):
                seconds, threads[name] = _time(name, steps, beside)
                times[(name, beside)].append(seconds)
    lines = [
        f"{steps} steps (small CNN fwd+bwd+AdamW, batch 64 at 16², + 8 matmuls 256²), median of {repeats}; "
        f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}",
        "",
        "| setting | torch threads | alone (s) | beside a busy loop (s) | beside / alone |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        alone, beside = statistics.median(times[(name, False)]), statistics.median(times[(name, True)])
        lines.append(f"| {name} | {threads[name]} | {alone:.2f} | {beside:.2f} | {beside / alone:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=150, help=argparse.SUPPRESS)
    p.add_argument("--settings", nargs="*", choices=list(SETTINGS), help="settings to compare (default: all)")
    p.add_argument("--repeats", type=int, default=None, help="rounds (default: 1 with --quick, else 3)")
    args = p.parse_args()
    if args.worker:
        _worker(args.steps)
    else:
        print(run(args.quick, args.settings, args.repeats))


if __name__ == "__main__":
    main()
