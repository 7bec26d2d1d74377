"""``polyzoo graph``: train a teacher, distil it (vanilla KD or RELIANT), evaluate runs; each prints a metric table.

Runs live in folders (``--run-dir``); re-running the same command in the same folder resumes where it stopped
(a different configuration in an existing folder is refused).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch

from polyzoo.graph.datasets import DATASETS, load_dataset
from polyzoo.graph.metrics import fairness_report
from polyzoo.graph.models import STUDENTS, TEACHERS, build_model
from polyzoo.graph.reliant import BiasProxy
from polyzoo.graph.synthetic import BiasedSBMConfig, biased_sbm
from polyzoo.graph.training import DistillConfig, TeacherConfig, distill, train_teacher
from polyzoo.shared.io import load_torch_file, read_json, write_json_atomic
from polyzoo.shared.report import markdown_table

ROWS = ("acc", "auc", "f1", "sp", "eo", "acc_s0", "acc_s1", "auc_s0", "auc_s1", "f1_s0", "f1_s1")


def _load_graph(spec: dict[str, Any]):
    if spec["dataset"] == "synthetic":
        return biased_sbm(BiasedSBMConfig(num_nodes=spec["nodes"], seed=spec["graph_seed"]))
    if spec.get("data_root") is None:
        raise click.UsageError(f"--data-root is required for dataset {spec['dataset']!r}")
    kwargs: dict[str, Any] = {"split_seed": spec["split_seed"]}
    if spec["dataset"] in ("nba", "pokec_z", "pokec_n"):
        kwargs["split"] = spec["split"]
    return load_dataset(spec["dataset"], spec["data_root"], **kwargs)


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per metric, one column per model."""
    rows = [[row, *(f"{columns[n].get(row, float('nan')):.4f}" for n in columns)] for row in ROWS]
    return markdown_table(["metric", *columns], rows)


@click.group("graph")
def graph() -> None:
    """RELIANT fair knowledge distillation for GNNs (PyTorch Geometric): teacher, distill, eval."""


@graph.command()
@click.option("--dataset", type=click.Choice(sorted({*DATASETS, "synthetic"})), default="synthetic", show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path), help="folder holding the dataset's raw files")
@click.option("--split-seed", default=20, show_default=True, help="seed of the official split rule")
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
@click.option("--seed", default=42, show_default=True)
@click.option("--run-dir", type=click.Path(path_type=Path), required=True, help="run folder (resumed if present)")
def teacher(run_dir: Path, **opts: Any) -> None:
    """Train a GCN/GraphSAGE/GIN teacher with early stopping on validation accuracy; print its test metrics."""
    spec = {k: opts[k] for k in ("dataset", "split_seed", "split", "nodes", "graph_seed")}
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
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "data.json", spec)
    res = train_teacher(data, cfg, run_dir, progress=True)
    click.echo(f"teacher {cfg.model} on {spec['dataset']}: best epoch {res.best_epoch}, ran {res.epochs_run}")
    click.echo(format_table({"teacher": res.metrics}))


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
@click.option("--seed", default=0, show_default=True)
@click.option("--run-dir", type=click.Path(path_type=Path), required=True, help="run folder (resumed if present)")
def distill_cmd(teacher_dir: Path, run_dir: Path, **opts: Any) -> None:
    """Distil a teacher run into a student: vanilla KD (--fair none) or RELIANT (--fair sp|eo)."""
    if not (teacher_dir / "logits.pt").is_file():
        raise click.UsageError(f"{teacher_dir}: no logits.pt; train it with `polyzoo graph teacher` first")
    spec = read_json(teacher_dir / "data.json")
    data = _load_graph(spec)
    teacher_logits = load_torch_file(teacher_dir / "logits.pt")
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
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "data.json", {**spec, "teacher_run": str(teacher_dir.resolve())})
    res = distill(data, teacher_logits, cfg, run_dir, progress=True)
    teacher_metrics = fairness_report(teacher_logits, data.y, data.sens, data.test_mask)
    click.echo(f"student {cfg.student} ({'vanilla KD' if cfg.fair == 'none' else 'RELIANT ' + cfg.fair})")
    click.echo(format_table({"teacher": teacher_metrics, "student": res.metrics}))


def _evaluate_run(run_dir: Path) -> dict[str, float]:
    for name in ("config.json", "data.json", "model.pt"):
        if not (run_dir / name).is_file():
            raise click.UsageError(f"{run_dir}: missing {name}; is it a finished `polyzoo graph` run?")
    cfg = read_json(run_dir / "config.json")
    data = _load_graph(read_json(run_dir / "data.json"))
    state = load_torch_file(run_dir / "model.pt")
    if "student" in cfg:
        c = DistillConfig(**cfg)
        proxy = BiasProxy(data.num_nodes, c.proxy if c.fair != "none" else "none", sens=data.sens)
        proxy.load_state_dict(state["proxy"])
        model = build_model(c.student, data.num_features + proxy.width, c.hidden, 2, c.num_layers, c.dropout)
        model.load_state_dict(state["student"])
        x = proxy.augment(data.x, c.proxy_view)
    else:
        c = TeacherConfig(**cfg)
        model = build_model(c.model, data.num_features, c.hidden, 2, c.num_layers, c.dropout)
        model.load_state_dict(state)
        x = data.x
    model.eval()
    with torch.no_grad():
        logits = model(x, data.edge_index)
    return fairness_report(logits, data.y, data.sens, data.test_mask)


@graph.command("eval")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def eval_cmd(run_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Re-evaluate finished runs (teacher or student) on their test split and print the metric table."""
    columns = {str(d): _evaluate_run(d) for d in run_dirs}
    click.echo(json.dumps(columns, indent=2) if as_json else format_table(columns))


__all__ = ["format_table", "graph"]
