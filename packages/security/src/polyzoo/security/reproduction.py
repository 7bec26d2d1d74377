"""Reproduction check for ``polyzoo reproduce``: Backdoor Attacks Against Dataset Distillation (NDSS 2023).

Claim (abstract): DOORPING reaches an ASR close to 1.0 with a CTA comparable to the clean distilled set, while
NAIVEATTACK only has "decent ASR in some cases". Measured: CTA and ASR (both conventions) of networks trained on a
set distilled with no attack, NAIVEATTACK and DOORPING, then three defenses on the clean and the DOORPING set.

``--quick``: scikit-learn digits (8×8), scaled far down so that it runs in about a minute on one CPU thread
(settings in :data:`QUICK`). Where its time went before (one seed, 40 DC iterations, 2 evaluation nets, defenses;
233 s on one thread under contention): the three distillations 74% (a DOORPING DC iteration: gradient matching and
image steps 46%, DOORPING's trigger updates 30%, the inner network training 24%), the defenses 15%, the
evaluation networks 10%; deterministic algorithms cost nothing measurable on the CPU and nothing reads back from a
device per step there. Quick mode therefore keeps the learning of each run (width, loops, evaluation protocol) and
drops work the verdict does not use: the verdict's arms (no attack, DOORPING) run on 3 seeds with one evaluation
network each (the verdict's unit is the seed), the context rows (real init, NAIVEATTACK) on the first seed only,
no defenses, and DC runs 5 iterations instead of 40 (seed 0's DOORPING ASR, one network, after 5, 6, 10, 20, 30,
40 iterations: 0.39, 0.52, 0.27, 0.22, 0.10, 0.45, with no trend towards the claim's 0.9, so the longer run does
not buy a different verdict at this scale).
Full: Fashion-MNIST (``--data-root`` or Debian's ``dataset-fashion-mnist``), DC and DM, 10 images
per class, 3 seeds, with the reduced iteration counts of :data:`FULL` (the official 1000 DC iterations take hours of
GPU time; they are far out of reach on a CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyzoo.security.attacks import AttackConfig
from polyzoo.security.data import ImageData, load_digits, load_fashion_mnist
from polyzoo.security.defenses import DEFENSES, DefenseConfig, defense_data, run_defense
from polyzoo.security.distill import DistillConfig, Distiller
from polyzoo.security.evaluate import EvalConfig, attack_metrics, train_network
from polyzoo.security.jobs import RESULT, run_claimed
from polyzoo.shared.io import read_json, write_json_atomic
from polyzoo.shared.report import CheckResult, ReproContext, combine_status, compare_arms, mean_std

__all__ = [
    "FULL",
    "QUICK",
    "ReproSettings",
    "check",
    "evaluate_net",
    "run_config",
    "run_defenses",
    "run_table",
    "settings_key",
]

log = logging.getLogger(__name__)

PAPER = (
    "DOORPING: ASR close to 1.0 in all cases with CTA comparable to clean distillation; NAIVEATTACK: decent ASR in "
    "some cases (abstract; the tables were not retrievable)."
)


@dataclasses.dataclass
class ReproSettings:
    methods: tuple[str, ...] = ("dc",)
    seeds: tuple[int, ...] = (0,)
    context_seeds: int = 0  # seeds the rows outside the verdict (real init, NAIVEATTACK) run on; 0: every seed
    ipc: int = 10
    iterations: dict[str, int] = dataclasses.field(default_factory=lambda: {"dc": 40, "dm": 100})
    width: int = 32
    norm: str = "instancenorm"
    batch_real: int = 64
    outer_loop: int = 3
    inner_loop: int = 10
    portion: float = 0.1
    dm_trigger_every: int = 10
    trigger_steps: int = 200
    doorping_hook: str = "official"  # what DOORPING's hook reads (polyzoo.security.attacks): official | clone
    eval_epochs: int = 150
    num_eval: int = 2
    defend: bool = True  # run the defenses (on the first seed's clean and DOORPING sets)
    defense_clean: int = 300
    defense_test: int = 0  # test images the defenses are measured on (a fixed random subset); 0: all
    checkpoint_every: int = 10
    defense: DefenseConfig = dataclasses.field(
        default_factory=lambda: DefenseConfig(nc_steps=60, unlearn_epochs=5, finetune_epochs=5, strip_n=10)
    )


QUICK = ReproSettings(seeds=(0, 1, 2), context_seeds=1, iterations={"dc": 5, "dm": 100}, num_eval=1, defend=False)
"""Measured with ``polyzoo reproduce --quick --only security --threads 1`` beside other CPU-bound processes
(load 6–7 on two cores): 91 s for the check, 45 CPU-seconds for the whole command (the settings before: 233 s,
115 CPU-seconds; see the module docstring for where the time went). The verdict's arms (no attack, DOORPING) run
on 3 distillation seeds with one evaluation network each, the context rows (real init, NAIVEATTACK) on the first
seed, no defenses (``polyzoo security defend`` runs them on any synthetic set; full mode runs them)."""
FULL = ReproSettings(
    methods=("dc", "dm"),
    seeds=(0, 1, 2),
    iterations={"dc": 6, "dm": 200},
    width=128,
    norm="none",
    batch_real=64,
    outer_loop=10,
    inner_loop=10,
    portion=0.01,
    dm_trigger_every=20,
    trigger_steps=1000,
    eval_epochs=300,
    num_eval=1,
    defense_clean=500,
    defense_test=2000,
    checkpoint_every=1,
    defense=DefenseConfig(nc_steps=60, nc_batch=64, unlearn_epochs=5, finetune_epochs=5, strip_n=10),
)
"""Sized to fit about 3 core-hours on this CPU (measured at width 128, one thread: a DC outer round with
``batch_real`` 64 about 3.5 s, a 100-image training epoch about 0.45 s, a DM iteration about 1.2 s). The official
runs use 1000 DC iterations (20,000 for DM), ``batch_real`` 256, inner loop 50 and 10 evaluation networks."""


REAL_INIT = "real init"
"""Pseudo-method of the baseline row: the real images a seed's distillation starts from, not distilled at all."""


def _distill(
    data: ImageData,
    method: str,
    attack: str,
    seed: int,
    st: ReproSettings,
    run_dir: Path | None,
    device: str = "cpu",
):
    if method == REAL_INIT:  # iterations=0: the synthetic set as initialised (the same draw as DC's and DM's)
        return _distill(data, "dc", attack, seed, dataclasses.replace(st, iterations={"dc": 0}), None, device)
    cfg = DistillConfig(
        method=method,
        ipc=st.ipc,
        iterations=st.iterations[method],
        width=st.width,
        norm=st.norm,
        init="real",
        batch_real=st.batch_real,
        outer_loop=st.outer_loop,
        inner_loop=st.inner_loop,
        dm_trigger_every=st.dm_trigger_every,
        seed=seed,
        checkpoint_every=st.checkpoint_every,
        attack=AttackConfig(
            kind=attack, portion=st.portion, trigger_steps=st.trigger_steps, doorping_hook=st.doorping_hook
        ),
    )
    return Distiller(data, cfg, run_dir=run_dir, dataset_path=None, device=device).run(progress=False)


def settings_key(data: ImageData, st: ReproSettings, device: str = "cpu") -> str:
    """A short hash of everything that decides one run's result (not which methods/seeds the table lists), so
    that finished runs are reused only under the same settings; a device other than the CPU is part of it (its
    numbers differ), the CPU's key is the one written before the device was recorded."""
    fields = dataclasses.asdict(st)
    fields.pop("methods")
    fields.pop("seeds")
    fields.pop("context_seeds")
    fields.pop("defend")
    key = [data.name, len(data.train_y), list(data.train_x.shape[1:]), fields]
    if torch.device(device).type != "cpu":
        key.append(torch.device(device).type)
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def evaluate_net(data: ImageData, s, st: ReproSettings, seed: int, k: int = 0, device: str = "cpu"):
    """The table's ``k``-th evaluation network for ``seed``: trained on ``device`` on the set ``s`` and measured on
    the real test set; returns ``(net, {cta, asr_all, asr_nontarget})``."""
    ecfg = EvalConfig(width=st.width, norm=st.norm, epochs=st.eval_epochs)
    net = train_network(s.images, s.labels, data.num_classes, ecfg, seed=1000 * seed + k, device=device)
    return net, attack_metrics(net, data.test_x, data.test_y, s.trigger, s.mask, s.target)


def run_defenses(data: ImageData, net: torch.nn.Module, s, seed: int, st: ReproSettings) -> list[dict[str, Any]]:
    """Every defense on ``net`` (trained on the distilled set ``s``): the defender holds ``st.defense_clean`` clean
    training images (drawn with ``seed``); measured on a fixed random ``st.defense_test`` test images (0: all).
    The defenses run on the CPU (:mod:`polyzoo.security.defenses` keeps its data there): a network trained on
    another device is copied to the CPU first."""
    net = copy.deepcopy(net).cpu()
    d = defense_data(data, s, st.defense_clean, seed, test_size=st.defense_test)
    rows = []
    for name in DEFENSES:
        r = run_defense(name, net, d, st.defense)
        rows.append({"defense": name, **{k: r[k] for k in ("before", "after", "statistic_name", "statistic")}})
    return rows


def run_config(
    data: ImageData,
    method: str,
    attack: str,
    seed: int,
    st: ReproSettings,
    run_dir: Path | None,
    defend: bool,
    device: str = "cpu",
) -> dict[str, Any]:
    """Distil one set, train ``st.num_eval`` networks on it and measure them (distillation and training on
    ``device``); with ``defend`` also run every defense on the first of them. With a ``run_dir`` the distillation
    checkpoints there and the finished result is written to ``result.json`` (atomically) and returned as is by
    later calls."""
    result_path = run_dir / RESULT if run_dir is not None else None
    if result_path is not None and result_path.exists():
        return read_json(result_path)
    t0 = time.perf_counter()
    s = _distill(data, method, attack, seed, st, run_dir, device)
    distill_s = time.perf_counter() - t0
    log.info("distilled %s/%s seed %d in %.0f s", method, attack, seed, distill_s)
    evals, nets = [], []
    for k in range(st.num_eval):
        net, metrics = evaluate_net(data, s, st, seed, k, device)
        evals.append(metrics)
        nets.append(net)
    defenses = run_defenses(data, nets[0], s, seed, st) if defend else []
    result = {
        "method": method,
        "attack": attack,
        "seed": seed,
        "evals": evals,
        "defenses": defenses,
        "distill_seconds": distill_s,
        "total_seconds": time.perf_counter() - t0,
    }
    if result_path is not None:
        write_json_atomic(result_path, result)
    return result


def table_arms(st: ReproSettings) -> list[tuple[str, str]]:
    """The table's (method, attack) rows in order: the real-image initialisation, then per method no attack,
    NAIVEATTACK and DOORPING."""
    return [(REAL_INIT, "none")] + [(m, a) for m in st.methods for a in ("none", "naive", "doorping")]


def arm_seeds(st: ReproSettings, method: str, attack: str) -> tuple[int, ...]:
    """The distillation seeds of one row: every seed for the verdict's arms (no attack, DOORPING); the first
    ``st.context_seeds`` for the rows that only give context (real init, NAIVEATTACK) when it is set."""
    context = method == REAL_INIT or attack == "naive"
    return st.seeds[: st.context_seeds] if context and st.context_seeds else st.seeds


def run_table(
    data: ImageData,
    st: ReproSettings,
    run_root: Path | None = None,
    defend: bool = True,
    poll_seconds: float = 10.0,
    on_done: Callable[[tuple[str, str, int]], None] | None = None,
    per_seed: dict[tuple[str, str], dict[str, list[float]]] | None = None,
    device: str = "cpu",
) -> tuple[list[list[Any]], list[list[Any]]]:
    """Rows ``[method, attack, CTA, ASR all, ASR non-target, nets]`` (the three metrics as
    :class:`~polyzoo.shared.report.MeanStd` over seeds × nets; the first row is the undistilled real-image
    initialisation, evaluated the same way) and the defense rows ``[method, set, defense, CTA before, CTA after,
    ASR before, ASR after, statistic, value]``; the defenses run on the first seed's clean and DOORPING sets.
    Cells are numbers; the report formats them.

    With a ``run_root``, each (method, attack, seed) run lives in its own folder there: finished runs are reused,
    and several processes given the same ``run_root`` share the work (:func:`polyzoo.security.jobs.run_claimed`).
    ``on_done(key)`` is called after each (method, attack, seed) run this process computes. A ``per_seed`` dict
    receives, per (method, attack), each metric's per-seed means over the evaluation nets (the verdict's units).
    ``device``: where the distillations and evaluation networks run ("cpu" or "cuda"; the defenses run on the CPU)."""
    configs = [(m, a, seed) for m, a in table_arms(st) for seed in arm_seeds(st, m, a)]

    def wants_defense(method: str, attack: str, seed: int) -> bool:
        first = seed == st.seeds[0] and attack in ("none", "doorping")
        return defend and st.defend and method != REAL_INIT and first

    def folder(m: str, a: str, seed: int) -> Path | None:
        return run_root / f"{m.replace(' ', '_')}_{a}_s{seed}" if run_root is not None else None

    def run(key: tuple[str, str, int], run_dir: Path | None) -> dict[str, Any]:
        result = run_config(data, *key, st, run_dir, wants_defense(*key), device)
        if on_done is not None:
            on_done(key)
        return result

    results = run_claimed({key: folder(*key) for key in configs}, run, poll_seconds)

    rows, defense_rows = [], []
    for method in (REAL_INIT, *st.methods):
        for attack in ("none",) if method == REAL_INIT else ("none", "naive", "doorping"):
            seeds = arm_seeds(st, method, attack)
            runs = [e for seed in seeds for e in results[(method, attack, seed)]["evals"]]
            metrics = [mean_std((r[key] for r in runs), digits=3) for key in ("cta", "asr_all", "asr_nontarget")]
            rows.append([method, attack, *metrics, len(runs)])
            if per_seed is not None:
                per_seed[(method, attack)] = {
                    key: [float(np.mean([e[key] for e in results[(method, attack, seed)]["evals"]])) for seed in seeds]
                    for key in ("cta", "asr_all")
                }
        for attack in ("none", "doorping") if method != REAL_INIT else ():
            for r in results[(method, attack, st.seeds[0])]["defenses"]:
                defense_rows.append(
                    [
                        method,
                        "clean" if attack == "none" else "DOORPING",
                        r["defense"],
                        r["before"]["cta"],
                        r["after"]["cta"],
                        r["before"]["asr_all"],
                        r["after"]["asr_all"],
                        r["statistic_name"],
                        r["statistic"],
                    ]
                )
    return rows, defense_rows


ASR_CLAIM = 0.9  # "ASR close to 1.0": at least 0.9
CTA_DROP = 0.1  # "CTA comparable to clean distillation": at most 0.1 below


def _verdict(per_seed: dict[tuple[str, str], dict[str, list[float]]]) -> tuple[bool | None, str]:
    """The claim per method, by the report's rule over distillation seeds (per-seed means over the evaluation nets):
    DOORPING's ASR exceeds ``ASR_CLAIM`` and its CTA is at most ``CTA_DROP`` below clean distillation's. One seed has
    no spread, so it decides nothing (INCONCLUSIVE)."""
    verdicts, parts = [], []
    for method in sorted({m for m, _ in per_seed} - {REAL_INIT}):
        clean, naive, door = (per_seed[(method, a)] for a in ("none", "naive", "doorping"))
        asr = compare_arms(door["asr_all"], [ASR_CLAIM] * len(door["asr_all"]), names=("DOORPING ASR", "claim"))
        cta = compare_arms(door["cta"], clean["cta"], margin=-CTA_DROP, names=("DOORPING CTA", "clean CTA"))
        verdicts.append(combine_status(asr.passed, cta.passed))
        parts.append(
            f"{method}: DOORPING ASR {np.mean(door['asr_all']):.2f} (naive {np.mean(naive['asr_all']):.2f}, clean "
            f"{np.mean(clean['asr_all']):.2f}): {asr.text}; {cta.text}"
        )
    passed = combine_status(*verdicts)
    outcome = {True: "claim held", False: "claim not reproduced", None: "inconclusive"}[passed]
    return passed, "; ".join(parts) + f" — {outcome}"


def check(ctx: ReproContext) -> list[CheckResult]:
    torch.manual_seed(ctx.seed)
    if ctx.quick:
        data, st, where = load_digits(), QUICK, "scikit-learn digits (1,257 train / 540 test, 8×8)"
    else:
        data = load_fashion_mnist(Path(ctx.data_root) / "fashion-mnist" if ctx.data_root else None)
        st, where = FULL, "Fashion-MNIST 60k/10k resized to 32×32"
    st = dataclasses.replace(st, seeds=tuple(ctx.seeds(len(st.seeds))))  # the report's base seed onwards
    # full mode: shared by every report under the same --out, so concurrent invocations split the runs between them
    shared_root = ctx.out_dir.parent / "security_runs" / settings_key(data, st, ctx.device)
    run_root = ctx.run_dir("security") if ctx.quick else shared_root
    runs = sum(len(arm_seeds(st, m, a)) for m, a in table_arms(st))
    bar = ctx.progress(runs, "distil + evaluate (method × attack × seed)")
    per_seed: dict[tuple[str, str], dict[str, list[float]]] = {}
    rows, defense_rows = run_table(
        data,
        st,
        run_root=run_root,
        on_done=lambda key: bar.update(postfix=f"{key[0]}/{key[1]} seed {key[2]}"),
        per_seed=per_seed,
        device=ctx.device,
    )
    passed, verdict = _verdict(per_seed)
    settings = (
        f"ConvNet width {st.width} ({st.norm} norm), ipc {st.ipc}, iterations {st.iterations}, outer/inner "
        f"{st.outer_loop}/{st.inner_loop}, batch_real {st.batch_real}, poison portion {st.portion}, trigger 2×2 "
        f"bottom-right, target {AttackConfig().target}, real init, {len(st.seeds)} seed(s) × {st.num_eval} "
        "evaluation net(s) "
        f"({st.eval_epochs} epochs, no augmentation, for DC and DM sets alike)"
        + (
            f"; the context rows (real init, NAIVEATTACK) on the first {st.context_seeds} seed(s)"
            if st.context_seeds and st.context_seeds < len(st.seeds)
            else ""
        )
        + f"; distillation and evaluation networks on device {ctx.device}"
    )
    main = CheckResult(
        title="Backdoor attacks against dataset distillation: CTA and ASR",
        compared="networks trained on sets distilled without attack, with NAIVEATTACK and with DOORPING (first row: "
        "the undistilled real images the distillation starts from)",
        data=where,
        columns=["method", "attack", "CTA", "ASR (all test images)", "ASR (non-target only)", "nets"],
        rows=rows,
        passed=passed,
        verdict=verdict,
        paper=PAPER,
        notes=[
            settings,
            "Both ASR conventions: official (every stamped test image) and BackdoorBench (non-target).",
            f"DOORPING hook semantics {st.doorping_hook!r}: "
            + (
                "as the official code, the hook reads the layer output after the in-place ReLU that follows it, so "
                "an update whose selected neuron starts negative leaves the trigger unchanged."
                if st.doorping_hook == "official"
                else "the hook reads a copy of the pre-activation (not the official code's reading)."
            ),
            f"Runs (checkpoints, result.json per method/attack/seed): {ctx.relative(run_root)}",
        ]
        + (
            []
            if st.defend
            else [
                "No defenses in this mode (full mode runs them; `polyzoo security defend --synset "
                "<run>/synset.safetensors` runs them on any of these sets)."
            ]
        ),
    )
    main.seeds = list(st.seeds)
    if not st.defend:
        return [main]
    defense = CheckResult(
        title="Defenses on clean vs DOORPING distilled data",
        compared="Neural Cleanse (+unlearning), STRIP, fine-pruning on a network trained on the distilled set",
        data=where,
        columns=[
            "method",
            "distilled set",
            "defense",
            "CTA before",
            "CTA after",
            "ASR before",
            "ASR after",
            "statistic",
            "value",
        ],
        rows=defense_rows,
        passed=True,
        verdict="reported as measured (the paper's defense tables were not retrievable for comparison)",
        notes=[
            "ASR here: official convention (all stamped test images).",
            f"Defenses run on the first seed's evaluation network; the defender holds {st.defense_clean} clean "
            "training images; measured on "
            + (f"a fixed random {st.defense_test} of the test images." if st.defense_test else "all test images."),
        ],
    )
    defense.seeds = list(st.seeds[:1])
    return [main, defense]
