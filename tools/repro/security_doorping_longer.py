"""Continue the security reproduction's DOORPING runs past FULL's iteration count and measure them at each stop.

The Fashion-MNIST table (``polyzoo reproduce --only security``) runs DC for ``FULL.iterations["dc"]`` iterations,
far fewer than the official 1000. This script copies a finished run folder (``<method>_doorping_s<seed>``) to
``--out``, resumes its distillation (each iteration reseeds from (seed, iteration), so the continued run equals a
longer run from scratch) and, at every iteration count in ``--stops``, trains one evaluation network exactly as the
table does and prints one JSON line: CTA, both ASR conventions, the trigger's mean value inside the mask and the
synthetic images' mean value there, per class. With ``--defend`` the last stop's network also goes through every
defense, as the table's defense rows do.

    uv run python tools/repro/security_doorping_longer.py \\
        --runs reports/security/security_runs/<hash> --seed 1 --stops 15 30 --out runs/doorping_longer
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from polyzoo.security import reproduction as R
from polyzoo.security.data import load_fashion_mnist
from polyzoo.security.files import CHECKPOINT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="the reproduction's security_runs/<hash> folder")
    parser.add_argument("--method", default="dc", choices=["dc", "dm"])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--stops", type=int, nargs="+", required=True, help="iteration counts to measure at")
    parser.add_argument("--out", type=Path, required=True, help="folder for the continued run")
    parser.add_argument("--data-root", type=Path, default=None, help="Fashion-MNIST folder (default: Debian's)")
    parser.add_argument(
        "--defend", action="store_true", help="at the last stop, also run every defense as the table does (seed's net)"
    )
    args = parser.parse_args()

    src = args.runs / f"{args.method}_doorping_s{args.seed}"
    dst = args.out / src.name
    if not (src / CHECKPOINT).is_file() and not (dst / CHECKPOINT).is_file():
        parser.error(f"{src}/{CHECKPOINT} not found: run `polyzoo reproduce --only security` first")
    if not dst.exists():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("claim", "result.json"))
    data = load_fashion_mnist(args.data_root)
    for stop in sorted(args.stops):
        st = dataclasses.replace(R.FULL, iterations={**R.FULL.iterations, args.method: stop})
        t0 = time.perf_counter()
        s = R._distill(data, args.method, "doorping", args.seed, st, dst)
        net, m = R.evaluate_net(data, s, st, args.seed)  # the table's first network for this seed
        inside = s.mask.bool()
        patch = {c: round(float(s.images[s.labels == c][:, inside].mean()), 3) for c in range(data.num_classes)}
        line = {
            "method": args.method,
            "seed": args.seed,
            "iterations": stop,
            **{k: round(v, 4) for k, v in m.items()},
            "trigger_mean_in_mask": round(float(s.trigger[inside].mean()), 1),
            "synthetic_mean_in_mask_by_class": patch,
            "seconds": round(time.perf_counter() - t0),
        }
        print(json.dumps(line), flush=True)
        if args.defend and stop == max(args.stops):
            for r in R.run_defenses(data, net, s, args.seed, st):
                print(json.dumps({"defense": r.pop("defense"), **r}), flush=True)


if __name__ == "__main__":
    main()
