"""``polyzoo graph``: train a teacher, distil it (vanilla KD or RELIANT), evaluate runs; each prints a metric table.

Runs live in folders (``--run-dir``) under the shared run contract: re-running the same command in the same folder
resumes where it stopped; a different configuration (the data spec included) is refused before anything is
written, unless ``--overwrite``.

``--device``/``--precision`` place and autocast the models; ``--batch-size``/``--num-neighbors`` train on PyG
``NeighborLoader`` mini-batches, the path every run under ``torchrun``/``accelerate launch`` takes (each process a
disjoint share of the seeds; evaluation gathers every node once). Without them one process trains full-batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch

from polyzoo.graph.datasets import DATASETS, DEFAULT_PROTOCOL, PROTOCOLS, load_dataset
from polyzoo.graph.metrics import fairness_report
from polyzoo.graph.models import STUDENTS, TEACHERS, build_model
from polyzoo.graph.reliant import BiasProxy
from polyzoo.graph.synthetic import BiasedSBMConfig, biased_sbm
from polyzoo.graph.training import (
    DistillConfig,
    MiniBatch,
    TeacherConfig,
    distill,
    load_logits,
    train_teacher,
)
from polyzoo.shared.cli import CommandGroup
from polyzoo.shared.io import load_safetensors, read_json
from polyzoo.shared.options import device_options, format_option, run_options
from polyzoo.shared.report import markdown_table

ROWS = ("acc", "auc", "f1", "sp", "eo", "acc_s0", "acc_s1", "auc_s0", "auc_s1", "f1_s0", "f1_s1")


def _minibatch_options(f):
    f = click.option(
        "--num-neighbors",
        default=None,
        help="Neighbours drawn per hop in mini-batches, comma-separated (e.g. 10,10) [default: every neighbour over "
        "the model's receptive field: exact full-graph outputs].",
    )(f)
    return click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Train on NeighborLoader mini-batches of this many seed nodes (over all processes) [default: full "
        "batch on one process; all seeds in one step under several processes].",
    )(f)


def _minibatch(opts: dict[str, Any]) -> MiniBatch | None:
    if opts["batch_size"] is None and opts["num_neighbors"] is None:
        return None  # full batch on one process; MiniBatch() by default under several
    hops = None
    if opts["num_neighbors"] is not None:
        try:
            hops = [int(k) for k in str(opts["num_neighbors"]).split(",")]
        except ValueError:
            raise click.BadParameter(
                f"expected comma-separated integers, got {opts['num_neighbors']!r}", param_hint="--num-neighbors"
            ) from None
    return MiniBatch(batch_size=opts["batch_size"], num_neighbors=hops)


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _load_graph(spec: dict[str, Any]):
    if spec["dataset"] == "synthetic":
        return biased_sbm(BiasedSBMConfig(num_nodes=spec["nodes"], seed=spec["graph_seed"]))
    if spec.get("data_root") is None:
        raise click.UsageError(f"--data-root is required for dataset {spec['dataset']!r}")
    if not Path(spec["data_root"]).is_dir():
        raise FileNotFoundError(f"{spec['data_root']}: the data folder does not exist")
    # a run folder written before the protocol option was built with the PyGDebias conventions
    kwargs: dict[str, Any] = {"split_seed": spec["split_seed"], "protocol": spec.get("protocol", "pygdebias")}
    if spec["dataset"] in ("nba", "pokec_z", "pokec_n"):
        kwargs["split"] = spec["split"]
    return load_dataset(spec["dataset"], spec["data_root"], **kwargs)


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per metric, one column per model."""
    rows = [[row, *(f"{columns[n].get(row, float('nan')):.4f}" for n in columns)] for row in ROWS]
    return markdown_table(["metric", *columns], rows)


@click.group("graph", cls=CommandGroup)
def graph() -> None:
    """RELIANT fair knowledge distillation for GNNs (PyTorch Geometric): teacher, distill, eval."""


@graph.command()
@click.option("--dataset", type=click.Choice(sorted({*DATASETS, "synthetic"})), default="synthetic", show_default=True)
@click.option(
    "--data-root", type=click.Path(path_type=Path, file_okay=False), help="folder holding the dataset's raw files"
)
@click.option(
    "--protocol",
    type=click.Choice(list(PROTOCOLS)),
    default=DEFAULT_PROTOCOL,
    show_default=True,
    help="dataset protocol: RELIANT's own loaders (the paper) or PyGDebias' (normalisation, split, adjacency)",
)
@click.option("--split-seed", type=int, default=None, help="split seed [default: the protocol's: German 0, else 20]")
@click.option("--split", type=click.Choice(["official", "disjoint"]), default="official", help="NBA/Pokec split")
@click.option("--nodes", default=1000, show_default=True, help="synthetic graph: number of nodes")
@click.option("--graph-seed", default=0, show_default=True, help="synthetic graph: generator seed")
@click.option("--model", type=click.Choice(sorted(TEACHERS)), default="gcn", show_default=True)
@click.option("--hidden", default=64, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--dropout", default=0.5, show_default=True)
@click.option("--lr", default=0.01, show_default=True)
@click.option("--weight-decay", default=1e-3, show_default=True)
@click.option("--epochs", default=1000, show_default=True)
@click.option("--patience", default=100, show_default=True)
@_minibatch_options
@run_options(seed_default=TeacherConfig.seed)
@format_option
def teacher(run_dir: Path, **opts: Any) -> None:
    """Train a GCN/GraphSAGE/GIN teacher with early stopping on validation accuracy; print its test metrics."""
    spec = {k: opts[k] for k in ("dataset", "protocol", "split_seed", "split", "nodes", "graph_seed")}
    spec["data_root"] = str(opts["data_root"].resolve()) if opts["data_root"] else None
    data = _load_graph(spec)
    cfg = TeacherConfig(
        model=opts["model"],
        hidden=opts["hidden"],
        num_layers=opts["layers"],
        dropout=opts["dropout"],
        lr=opts["lr"],
        weight_decay=opts["weight_decay"],
        epochs=opts["epochs"],
        patience=opts["patience"],
        seed=opts["seed"],
    )
    res = train_teacher(
        data,
        cfg,
        run_dir,
        progress=True,
        data_spec=spec,
        resume=opts["resume"],
        overwrite=opts["overwrite"],
        device=opts["device"],
        precision=opts["precision"],
        minibatch=_minibatch(opts),
    )
    if not _is_main():
        return
    _echo(
        {"teacher": res.metrics},
        opts["fmt"],
        f"teacher {cfg.model} on {spec['dataset']}: best epoch {res.best_epoch}, ran {res.epochs_run}",
    )


@graph.command("distill")
@click.option("--teacher", "teacher_dir", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--student", type=click.Choice(sorted(STUDENTS)), default="mlp", show_default=True)
@click.option("--fair", type=click.Choice(["none", "sp", "eo"]), default="sp", show_default=True)
@click.option("--alpha", default=1000.0, show_default=True, help="weight of the bias surrogate")
@click.option("--proxy", type=click.Choice(["random", "oracle", "none"]), default="random", show_default=True)
@click.option("--proxy-view", type=click.Choice(["node", "mean"]), default="node", show_default=True)
@click.option(
    "--fair-nodes",
    type=click.Choice(["auto", "non_train", "train"]),
    default="auto",
    show_default=True,
    help="Nodes of the bias surrogate: auto = non-training nodes for sp (official), labelled training nodes for eo "
    "(the official non_train reads test labels).",
)
@click.option("--kd", type=click.Choice(["euclidean", "kl"]), default="euclidean", show_default=True)
@click.option("--temperature", default=1.0, show_default=True)
@click.option("--hidden", default=64, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--dropout", default=0.5, show_default=True)
@click.option("--lr", default=0.01, show_default=True)
@click.option("--weight-decay", default=5e-4, show_default=True)
@click.option("--epochs", default=500, show_default=True)
@click.option("--patience", default=100, show_default=True)
@_minibatch_options
@run_options(seed_default=DistillConfig.seed)
@format_option
def distill_cmd(teacher_dir: Path, run_dir: Path, **opts: Any) -> None:
    """Distil a teacher run into a student: vanilla KD (--fair none) or RELIANT (--fair sp|eo)."""
    spec = _run_config(teacher_dir)["data"]
    teacher_logits = load_logits(teacher_dir)
    data = _load_graph(spec)
    cfg = DistillConfig(
        student=opts["student"],
        hidden=opts["hidden"],
        num_layers=opts["layers"],
        dropout=opts["dropout"],
        lr=opts["lr"],
        weight_decay=opts["weight_decay"],
        epochs=opts["epochs"],
        patience=opts["patience"],
        seed=opts["seed"],
        kd=opts["kd"],
        temperature=opts["temperature"],
        fair=opts["fair"],
        alpha=opts["alpha"],
        proxy=opts["proxy"],
        proxy_view=opts["proxy_view"],
        fair_nodes=opts["fair_nodes"],
    )
    res = distill(
        data,
        teacher_logits,
        cfg,
        run_dir,
        progress=True,
        data_spec={**spec, "teacher_run": str(teacher_dir.resolve())},
        resume=opts["resume"],
        overwrite=opts["overwrite"],
        device=opts["device"],
        precision=opts["precision"],
        minibatch=_minibatch(opts),
    )
    if not _is_main():
        return
    teacher_metrics = fairness_report(teacher_logits, data.y, data.sens, data.test_mask)
    title = f"student {cfg.student} ({'vanilla KD' if cfg.fair == 'none' else 'RELIANT ' + cfg.fair})"
    _echo({"teacher": teacher_metrics, "student": res.metrics}, opts["fmt"], title)


def _echo(columns: dict[str, dict[str, float]], fmt: str, title: str | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps(columns, indent=2))
        return
    if title:
        click.echo(title)
    click.echo(format_table(columns))


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The compared part of a graph run's config.json (``teacher`` or ``student`` settings and ``data``)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run_dir} a `polyzoo graph` run folder?")
    cfg = read_json(path).get("config")
    if not isinstance(cfg, dict) or "data" not in cfg or not ({"teacher", "student"} & set(cfg)):
        raise ValueError(f"{path}: not a `polyzoo graph teacher` or `distill` run config")
    return cfg


def _evaluate_run(run_dir: Path, device: str = "cpu", precision: str = "fp32") -> dict[str, float]:
    """Test metrics of a finished run, recomputed on ``device`` (full batch, under ``precision`` autocast)."""
    from polyzoo.shared.options import autocast_dtype, resolve_device

    cfg = _run_config(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: not found; the run in {run_dir} has not finished")
    state = load_safetensors(weights)
    data = _load_graph(cfg["data"])
    if "student" in cfg:
        c = DistillConfig(**cfg["student"])
        proxy = BiasProxy(data.num_nodes, c.proxy if c.fair != "none" else "none", sens=data.sens)
        proxy.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("proxy.")})
        model = build_model(c.student, data.num_features + proxy.width, c.hidden, 2, c.num_layers, c.dropout)
        model.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("student.")})
        x = proxy.augment(data.x, c.proxy_view)
    else:
        c = TeacherConfig(**cfg["teacher"])
        model = build_model(c.model, data.num_features, c.hidden, 2, c.num_layers, c.dropout)
        model.load_state_dict(state)
        x = data.x
    dev = torch.device(resolve_device(device))
    dtype = autocast_dtype(precision)
    model.to(dev).eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
        logits = model(x.to(dev), data.edge_index.to(dev)).float().cpu()
    return fairness_report(logits, data.y, data.sens, data.test_mask)


@graph.command("eval")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, file_okay=False))
@device_options
@format_option
def eval_cmd(run_dirs: tuple[Path, ...], device: str, precision: str, fmt: str) -> None:
    """Re-evaluate finished runs (teacher or student) on their test split and print the metric table."""
    columns = {str(d): _evaluate_run(d, device, precision) for d in run_dirs}
    _echo(columns, fmt)


__all__ = ["format_table", "graph"]
