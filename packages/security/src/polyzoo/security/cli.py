"""``polyzoo security``: distil (optionally backdoored) data sets, evaluate them, run defenses."""

from __future__ import annotations

from pathlib import Path

import click

from polyzoo.shared.cli import CommandGroup
from polyzoo.shared.options import data_root_option, device_options, echo_result, format_option, run_options

DATASET_HELP = "digits (scikit-learn, built in), fashion-mnist, cifar10 (python batches) or imagefolder"


@click.group(name="security", cls=CommandGroup)
def security() -> None:
    """Backdoor attacks against dataset distillation (NAIVEATTACK, DOORPING), DC/DSA/DM, defenses."""


@security.command()
@click.option("--dataset", default="digits", show_default=True, help=DATASET_HELP)
@data_root_option(help="folder of the data set (fashion-mnist: defaults to Debian's copy)")
@click.option("--method", type=click.Choice(["dc", "dsa", "dm"]), default="dc", show_default=True)
@click.option("--attack", type=click.Choice(["none", "naive", "doorping"]), default="none", show_default=True)
@click.option("--ipc", default=10, show_default=True, help="images per class")
@click.option("--iterations", default=1000, show_default=True)
@click.option("--model", default="convnet", show_default=True, help="convnet | convnet-linear | alexnet")
@click.option("--norm", default="none", show_default=True, help="ConvNet norm: none | instancenorm | ...")
@click.option("--width", default=128, show_default=True, help="ConvNet width")
@click.option("--init", type=click.Choice(["noise", "real"]), default=None, help="default: noise (dc/dsa), real (dm)")
@click.option("--outer-loop", type=int, default=None, help="default from ipc (official get_loops)")
@click.option("--inner-loop", type=int, default=None)
@click.option("--batch-real", default=256, show_default=True)
@click.option("--target", default=0, show_default=True, help="target label of the backdoor")
@click.option("--trigger-size", default=2, show_default=True)
@click.option("--portion", default=0.01, show_default=True, help="share of real training images poisoned")
@click.option("--checkpoint-every", default=50, show_default=True)
@run_options()
def distill(**kw) -> None:
    """Distil a data set into RUN_DIR (RUN_DIR/synset.safetensors). Rerunning with the same settings resumes from
    RUN_DIR/checkpoint.safetensors; other settings are refused unless --overwrite.

    --device places the images and networks; --precision bf16/fp16 runs the networks under autocast (the images,
    the matching loss and the trigger update stay float32). Under `torchrun`/`accelerate launch` the classes are
    shared out over the processes and the result is the one-process result."""
    import dataclasses

    from polyzoo.security.attacks import AttackConfig
    from polyzoo.security.data import load_dataset
    from polyzoo.security.distill import DistillConfig, Distiller, ProcessGroup
    from polyzoo.security.files import CHECKPOINT, SYNSET
    from polyzoo.shared.run import RunDir

    data_path = str(kw["data_root"]) if kw["data_root"] else None
    cfg = DistillConfig(
        method=kw["method"],
        ipc=kw["ipc"],
        iterations=kw["iterations"],
        model=kw["model"],
        norm=kw["norm"],
        width=kw["width"],
        init=kw["init"],
        outer_loop=kw["outer_loop"],
        inner_loop=kw["inner_loop"],
        batch_real=kw["batch_real"],
        seed=kw["seed"],
        checkpoint_every=kw["checkpoint_every"],
        attack=AttackConfig(kind=kw["attack"], target=kw["target"], size=kw["trigger_size"], portion=kw["portion"]),
    )
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "checkpoint_every"}
    if kw["precision"] != "fp32":  # changes the result (fp32 runs keep the config they always had)
        settings["precision"] = kw["precision"]
    data_spec = {"dataset": kw["dataset"], "data_root": str(Path(data_path).resolve()) if data_path else None}
    group = ProcessGroup(kw["device"])
    run = RunDir(
        kw["run_dir"],
        {"distill": settings, "data": data_spec},
        run_info={"device": str(group.device), "processes": group.world},
        resume=kw["resume"],
        overwrite=kw["overwrite"],
        engine_files=(CHECKPOINT, SYNSET, "evaluation.json", "defense.json"),
        is_main=group.is_main,
    )
    run.check()  # a changed configuration is refused before the data is loaded or anything is written
    data = load_dataset(kw["dataset"], data_path, seed=0)
    run.open()
    group.barrier()
    distiller = Distiller(
        data, cfg, run_dir=kw["run_dir"], dataset_path=data_path, device=kw["device"], precision=kw["precision"]
    )
    distiller.run(progress=group.is_main)
    if group.is_main:
        click.echo(f"wrote {Path(kw['run_dir']) / SYNSET}")


def _load(synset_path: str):
    from polyzoo.security.data import load_dataset
    from polyzoo.security.distill import load_synset

    s = load_synset(synset_path)
    data = load_dataset(s.dataset["name"], s.dataset.get("path"), seed=0)
    return s, data


_synset_option = click.option(
    "--synset",
    "synset_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="synset.safetensors written by `polyzoo security distill`",
)


@security.command(name="eval")
@_synset_option
@click.option("--num-eval", default=10, show_default=True, help="fresh networks trained on the synthetic set")
@click.option("--epochs", type=int, default=None, help="default: 300 (dc), 1000 with DSA augmentation (dsa/dm)")
@click.option("--model", default=None, help="evaluation network (default: the distillation network)")
@click.option("--out", "out_path", default=None, help="JSON results (default: beside the synset); resumes")
@device_options
@format_option
def evaluate(
    synset_path: str,
    num_eval: int,
    epochs: int | None,
    model: str | None,
    out_path: str | None,
    device: str,
    precision: str,
    fmt: str,
) -> None:
    """Train fresh networks on a synthetic set; report CTA and ASR (with and without target-class images).

    OUT records the evaluation settings and the synthetic set's SHA-256; it is resumed only when both match, and
    recomputed from scratch otherwise (another --epochs/--model/--precision, or the set distilled again). Under
    `torchrun`/`accelerate launch` the networks are shared out over the processes (network i on process
    i mod processes, the same seed i as with one process) and every network's metrics are gathered once."""
    import dataclasses

    import torch
    from tqdm.auto import tqdm

    from polyzoo.security.distill import ProcessGroup
    from polyzoo.security.evaluate import attack_metrics, default_eval_config, train_network
    from polyzoo.shared.report import mean_std

    group = ProcessGroup(device)
    s, data = _load(synset_path)
    cfg = default_eval_config(
        s.config["method"], model or s.config["model"], s.config["norm"], epochs, s.config.get("width", 128)
    )
    out = Path(out_path) if out_path else Path(synset_path).with_name("evaluation.json")
    settings = {"eval": dataclasses.asdict(cfg), "target": s.target}
    if precision != "fp32":
        settings["precision"] = precision
    basis = _basis(synset_path, settings)
    runs = _resumable(out, basis).get("runs", [])[:num_eval]
    keys = ("cta", "asr_all", "asr_nontarget")
    bar = tqdm(desc="evaluate", initial=len(runs), total=num_eval, disable=not group.is_main)
    while len(runs) < num_eval:  # one round: a network per process
        first = len(runs)
        width = min(group.world, num_eval - first)
        got = torch.zeros(width, len(keys), dtype=torch.float64, device=group.device)
        i = first + group.rank
        if group.rank < width:
            net = train_network(
                s.images, s.labels, data.num_classes, cfg, seed=i, device=group.device, precision=precision
            )
            m = attack_metrics(net, data.test_x, data.test_y, s.trigger, s.mask, s.target, precision=precision)
            got[group.rank] = torch.tensor([m[k] for k in keys], dtype=torch.float64)
        group.all_reduce(got)  # each row is written by exactly one process: the sum is that row
        runs += [dict(zip(keys, row, strict=True)) for row in got.cpu().tolist()]
        bar.update(width)
        if group.is_main:
            _write(out, {**basis, "runs": runs})
    bar.close()
    summary = {k: mean_std(r[k] for r in runs) for k in keys}
    table = {k: {"mean": v.mean, "std": None if v.n < 2 else v.std, "n": v.n} for k, v in summary.items()}
    if group.is_main:
        _write(out, {**basis, "runs": runs, "summary": table})  # std: sample (ddof=1); none for a single network
    group.barrier()
    if not group.is_main:
        return
    rows = [{"metric": k, **v} for k, v in table.items()]
    echo_result(rows, fmt)
    if fmt == "table":
        click.echo(f"(std: sample, ddof=1, over {len(runs)} networks; wrote {out})")


def _basis(synset_path: str, settings: dict) -> dict:
    """What a results file was computed from: the synthetic set (path and SHA-256) and the settings."""
    from polyzoo.security.files import file_sha256

    return {"synset": str(synset_path), "synset_sha256": file_sha256(synset_path), "settings": settings}


def _resumable(out: Path, basis: dict) -> dict:
    """``out``'s content when it was computed from ``basis`` (same synthetic set and settings), else ``{}``."""
    import logging

    from polyzoo.shared.io import read_json

    if not out.is_file():
        return {}
    old = read_json(out)
    same = isinstance(old, dict) and all(old.get(k) == basis[k] for k in ("synset_sha256", "settings"))
    if not same:
        logging.getLogger(__name__).warning("%s was computed from another synthetic set or settings: recomputing", out)
        return {}
    return old


def _write(out: Path, obj: dict) -> None:
    from polyzoo.shared.io import write_json_atomic

    write_json_atomic(out, obj)


@security.command()
@_synset_option
@click.option(
    "--defense",
    "defenses",
    multiple=True,
    default=("neural-cleanse", "strip", "fine-pruning"),
    show_default=True,
    type=click.Choice(["neural-cleanse", "strip", "fine-pruning"]),
    help="defense to run (repeatable)",
)
@click.option("--clean-size", default=500, show_default=True, help="clean real images the defender holds")
@click.option("--epochs", type=int, default=None, help="training epochs of the defended network")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_path", default=None, help="JSON results (default: beside the synset); resumes")
def defend(synset_path: str, defenses, clean_size: int, epochs: int | None, seed: int, out_path: str | None) -> None:
    """Train a network on a synthetic set, apply defenses, report CTA/ASR before and after."""
    from tqdm.auto import tqdm

    from polyzoo.security.defenses import defense_data, run_defense
    from polyzoo.security.evaluate import default_eval_config, train_network

    s, data = _load(synset_path)
    cfg = default_eval_config(
        s.config["method"], s.config["model"], s.config["norm"], epochs, s.config.get("width", 128)
    )
    out = Path(out_path) if out_path else Path(synset_path).with_name("defense.json")
    basis = _basis(synset_path, {"epochs": cfg.epochs, "clean_size": clean_size, "seed": seed, "target": s.target})
    results = _resumable(out, basis).get("defenses", {})
    if any(name not in results for name in defenses):
        net = train_network(s.images, s.labels, data.num_classes, cfg, seed=seed)
        d = defense_data(data, s, clean_size, seed)
        for name in tqdm(defenses, desc="defend"):
            if name in results:
                continue
            results[name] = run_defense(name, net, d)
            _write(out, {**basis, "defenses": results})
    click.echo(f"{'defense':<16}{'CTA before':>11}{'CTA after':>10}{'ASR before':>11}{'ASR after':>10}  (ASR: all)")
    for name in defenses:
        r = results[name]
        click.echo(
            f"{name:<16}{r['before']['cta']:>11.4f}{r['after']['cta']:>10.4f}"
            f"{r['before']['asr_all']:>11.4f}{r['after']['asr_all']:>10.4f}"
        )
    click.echo(f"wrote {out}")


security.add_command(
    click.Command("evaluate", callback=evaluate.callback, params=evaluate.params, hidden=True, help="Old name of eval.")
)
