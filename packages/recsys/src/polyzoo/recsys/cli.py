"""``polyzoo recsys prepare|train|eval|select``: vocabularies, resumable streaming training, metrics, and the
feature/interaction selection report of group-lasso FTRL."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import click

from polyzoo.shared.cli import CommandGroup
from polyzoo.shared.options import device_options, echo_result, format_option, run_options

log = logging.getLogger(__name__)

FORMATS = ("criteo", "avazu", "movielens", "synthetic")


def _format(name: str, threshold: int, hash_buckets: int, num_fields: int = 8, protocol: str = "official") -> Any:
    from polyzoo.recsys.data import avazu_format, criteo_format, movielens_format
    from polyzoo.recsys.synthetic import synthetic_format

    if name == "criteo":
        return criteo_format(threshold, hash_buckets, protocol=protocol)
    if name == "avazu":
        return avazu_format(threshold, hash_buckets)
    if name == "movielens":
        return movielens_format(threshold, hash_buckets)
    fmt = synthetic_format(num_fields)
    for f in fmt.fields:
        f.threshold, f.hash_buckets = threshold, hash_buckets
    return fmt


def _stream(fmt_name: str, path: Path, fmap: Any, batch_size: int, split: str | None, skip_bad: bool, start: int = 0):
    from polyzoo.recsys.data import CTRStream, MovieLensStream, format_for_map

    if fmt_name == "movielens":
        return MovieLensStream(path, fmap, batch_size, split=split, skip_bad=skip_bad, start_line=start)
    fmt = format_for_map(_format(fmt_name, 0, 0, fmap.num_fields), fmap)
    return CTRStream(path, fmt, fmap, batch_size, split=split, skip_bad=skip_bad, start_line=start)


def _split(value: str) -> str | None:
    return None if value == "all" else value


@click.group(name="recsys", cls=CommandGroup)
def recsys() -> None:
    """xDeepInt with group-lasso FTRL on streaming CTR data (Criteo, Avazu, MovieLens, synthetic)."""


_format_opt = click.option(
    "--data-format",
    "fmt_name",
    type=click.Choice(FORMATS),
    default="criteo",
    show_default=True,
    help="input format; movielens takes the folder holding ml-100k.inter/.user/.item",
)
_skip_opt = click.option("--skip-bad", is_flag=True, help="count and skip malformed rows instead of failing on them")


@recsys.command()
@click.argument("input_path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="prepared folder to write (manifest.json, feature_map.json, train/valid/test Parquet shards); "
    "a path ending in .json writes only the feature map (the former behaviour, for CTRStream)",
)
@_format_opt
@click.option(
    "--schema",
    "schema_name",
    default=None,
    help="schema: criteo, avazu, movielens or a YAML/JSON schema file (default: the --data-format's built-in)",
)
@click.option(
    "--threshold",
    type=int,
    default=None,
    help="keep categorical values seen more than this often [default: the schema's; criteo/avazu 20, movielens 0]",
)
@click.option("--hash-buckets", type=int, default=None, help="> 0: hash categorical values (CRC32), no vocabulary")
@click.option(
    "--split",
    type=click.Choice(["train", "all"]),
    default="train",
    show_default=True,
    help="feature-map-only (.json) output: rows counted (official 80/20 rule)",
)
@click.option("--num-fields", default=8, show_default=True, help="fields of the synthetic format")
@click.option(
    "--protocol",
    type=click.Choice(["official", "polyzoo"]),
    default="official",
    show_default=True,
    help="Criteo: official = I1-I12, missing integer -> bucket 0, float32 binning; polyzoo = I1-I13, zero row",
)
@click.option(
    "--valid-share",
    type=float,
    default=None,
    help="share of train rows carved out as validation (splitmix64 of the row index and --seed) "
    "[default: the schema's, 0 for the built-ins = the official protocol]",
)
@click.option("--seed", default=0, show_default=True, help="seed of the validation carve")
@click.option("--valid-input", type=click.Path(exists=True, path_type=Path), default=None, help="a separate valid file")
@click.option("--test-input", type=click.Path(exists=True, path_type=Path), default=None, help="a separate test file")
@click.option("--overwrite", is_flag=True, help="replace an --out prepared with other settings or from changed inputs")
@click.option("--row-group-rows", default=65536, show_default=True, help="rows per Parquet row group")
@click.option("--shard-rows", default=1 << 20, show_default=True, help="rows per Parquet shard")
@click.option("--block-mb", default=32, show_default=True, help="raw text read per block (bounds memory)")
@click.option(
    "--compression",
    type=click.Choice(["lz4", "zstd", "snappy", "uncompressed"]),
    default="lz4",
    show_default=True,
    help="Parquet codec",
)
@_skip_opt
def prepare(
    input_path: Path,
    out: Path,
    fmt_name: str,
    schema_name: str | None,
    threshold: int | None,
    hash_buckets: int | None,
    split: str,
    num_fields: int,
    protocol: str,
    valid_share: float | None,
    seed: int,
    valid_input: Path | None,
    test_input: Path | None,
    overwrite: bool,
    row_group_rows: int,
    shard_rows: int,
    block_mb: int,
    compression: str,
    skip_bad: bool,
) -> None:
    """Prepare INPUT_PATH once: vocabularies (train rows only) and encoded Parquet shards in --out, streamed with
    bounded memory; rerunning with the same settings and unchanged inputs does nothing, other settings are refused
    unless --overwrite."""
    if out.suffix == ".json":
        _prepare_feature_map(input_path, out, fmt_name, threshold, hash_buckets, split, num_fields, protocol, skip_bad)
        return
    from polyzoo.recsys.prepare import prepare as run_prepare
    from polyzoo.recsys.schema import load_schema, synthetic_schema

    if split != "train":
        raise click.BadParameter(
            "applies to a feature-map-only (.json) --out; a prepared folder counts train rows only "
            "(the split rule comes from the schema; --valid-share, --valid-input, --test-input)",
            param_hint="--split",
        )

    name = schema_name or fmt_name
    if name == "synthetic":
        schema = synthetic_schema(num_fields, threshold or 0, hash_buckets or 0)
        if valid_share is not None:
            schema.valid_share = valid_share
    else:
        schema = load_schema(
            name,
            protocol=protocol if name == "criteo" else None,
            threshold=threshold,
            hash_buckets=hash_buckets,
            valid_share=valid_share,
        )
    summary = run_prepare(
        input_path,
        out,
        schema,
        valid_input=valid_input,
        test_input=test_input,
        seed=seed,
        skip_bad=skip_bad,
        overwrite=overwrite,
        block_bytes=block_mb << 20,
        row_group_rows=row_group_rows,
        shard_rows=shard_rows,
        compression=compression,
        progress=True,
    )
    click.echo(json.dumps(summary))


def _prepare_feature_map(
    input_path: Path,
    out: Path,
    fmt_name: str,
    threshold: int | None,
    hash_buckets: int | None,
    split: str,
    num_fields: int,
    protocol: str,
    skip_bad: bool,
) -> None:
    """The former ``prepare``: only the feature map JSON (vocabulary pass of :mod:`polyzoo.recsys.data`)."""
    from polyzoo.recsys.data import build_feature_map, build_movielens_feature_map
    from polyzoo.shared.run import check_output_file

    threshold = 20 if threshold is None else threshold
    check_output_file(out, "feature map")  # before the pass over the data
    if fmt_name == "movielens":
        fmap = build_movielens_feature_map(input_path, threshold, _split(split))
        stats = {}
    else:
        fmt = _format(fmt_name, threshold, hash_buckets or 0, num_fields, protocol)
        fmap, stats = build_feature_map(input_path, fmt, _split(split), skip_bad)
    fmap.save(out)
    click.echo(json.dumps({"feature_map": str(out), "num_rows": fmap.num_rows, "fields": fmap.num_fields, **stats}))


def _distributed(device: str) -> tuple[str, int, int]:
    """``(device, rank, world_size)`` of this process (:class:`polyzoo.shared.distributed.ProcessGroup`: under
    ``torchrun`` the process group is joined, NCCL on CUDA with one GPU per local rank, gloo on CPU)."""
    from polyzoo.shared.distributed import ProcessGroup

    group = ProcessGroup(device)
    return str(group.device), group.rank, group.world


def _end_distributed() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@recsys.command()
@click.argument("input_path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--feature-map",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="raw input: the feature map of `prepare` (a prepared folder holds its own)",
)
@run_options()
@_format_opt
@click.option(
    "--model",
    type=click.Choice(["xdeepint", "lr", "fm", "deepfm", "dcn", "dcnv1", "xdeepfm"]),
    default="xdeepint",
    show_default=True,
)
@click.option(
    "--optimizer",
    type=click.Choice(["gftrl", "adam", "adagrad"]),
    default="gftrl",
    show_default=True,
    help="gftrl = group-lasso FTRL on embeddings + L1 FTRL on the rest (the paper)",
)
@click.option("--embedding-dim", default=16, show_default=True)
@click.option("--layers", default=4, show_default=True, help="PIN layers L")
@click.option("--subspaces", default=16, show_default=True, help="PIN subspaces h (1 vector-wise ... D bit-wise)")
@click.option("--epochs", default=1, show_default=True)
@click.option("--batch-size", default=4096, show_default=True, help="rows per step and per process")
@click.option("--lr", default=1e-3, show_default=True, help="adam/adagrad learning rate")
@click.option(
    "--gftrl",
    "gftrl",
    nargs=4,
    type=float,
    default=(0.02, 1.0, 10.0, 10.0),
    show_default=True,
    help="GFTRL α β λ1 λ2 (official)",
)
@click.option(
    "--ftrl",
    "ftrl",
    nargs=3,
    type=float,
    default=(0.02, 0.1, 0.1),
    show_default=True,
    help="PIN FTRL lr λ1 λ2 (TF semantics)",
)
@click.option("--checkpoint-every", default=200, show_default=True)
@click.option("--split", type=click.Choice(["train", "all"]), default="train", show_default=True, help="raw input")
@click.option(
    "--patience",
    default=2,
    show_default=True,
    help="prepared input: stop after this many epochs without a better validation AUC (0: never)",
)
@click.option(
    "--shuffle/--no-shuffle", default=True, show_default=True, help="prepared input: seeded row-group + buffer shuffle"
)
@click.option("--shuffle-buffer", default=65_536, show_default=True, help="prepared input: rows mixed per window")
@click.option("--workers", default=0, show_default=True, help="prepared input: DataLoader workers per process")
@_skip_opt
@format_option
def train(
    input_path: Path,
    feature_map: Path | None,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    seed: int,
    device: str,
    precision: str,
    log_with: str,
    fmt_name: str,
    model: str,
    optimizer: str,
    embedding_dim: int,
    layers: int,
    subspaces: int,
    epochs: int,
    batch_size: int,
    lr: float,
    gftrl: tuple[float, ...],
    ftrl: tuple[float, ...],
    checkpoint_every: int,
    split: str,
    patience: int,
    shuffle: bool,
    shuffle_buffer: int,
    workers: int,
    skip_bad: bool,
    fmt: str,
) -> None:
    """Train on INPUT_PATH into RUN_DIR: a prepared folder (`polyzoo recsys prepare`: Parquet shards, train/valid/test,
    validation each epoch, early stopping, best checkpoint; runs under `torchrun` on several processes) or a raw
    file (streamed, fp32, one process). Rerunning with the same settings resumes from the last complete
    checkpoint; other settings (a changed feature map included) are refused unless --overwrite."""
    import hashlib

    from polyzoo.recsys.features import FeatureMap
    from polyzoo.recsys.parquet import PreparedData, is_prepared
    from polyzoo.recsys.train import InputSpec, TrainSpec, build_model, build_optimizers, fit, fit_prepared
    from polyzoo.shared.run import RunDir
    from polyzoo.shared.seed import seed_everything

    prepared = is_prepared(input_path)
    if not prepared and precision != "fp32":
        raise click.BadParameter(
            "a raw input trains in fp32 only; bf16/fp16 need a prepared folder", param_hint="--precision"
        )
    if not prepared and feature_map is None:
        raise click.BadParameter(
            f"{input_path} is a raw input: pass the feature map of `prepare`", param_hint="--feature-map"
        )
    kwargs = {"num_layers": layers, "num_subspaces": subspaces} if model == "xdeepint" else {}
    spec = TrainSpec(
        model=model,
        embedding_dim=embedding_dim,
        model_kwargs=kwargs,
        optimizer=optimizer,
        lr=lr,
        gftrl_alpha=gftrl[0],
        gftrl_beta=gftrl[1],
        gftrl_l1=gftrl[2],
        gftrl_l2=gftrl[3],
        ftrl_alpha=ftrl[0],
        ftrl_l1=ftrl[1],
        ftrl_l2=ftrl[2],
        epochs=epochs,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        seed=seed,
    )
    if prepared:
        data = PreparedData(input_path)
        inputs = InputSpec(shuffle, shuffle_buffer, workers, patience, precision=precision)
        dev, rank, world = _distributed(device)
        try:
            seed_everything(spec.seed)
            net = build_model(spec, data.num_rows, len(data.fields), data.widths).to(dev)
            opts = build_optimizers(net, spec)
            result = fit_prepared(
                net,
                opts,
                data,
                spec,
                inputs,
                run_dir,
                resume=resume,
                progress=True,
                overwrite=overwrite,
                run_info={"device": dev, "processes": world},
            )
            if rank == 0:
                data.feature_map.save(run_dir / "feature_map.json")
                echo_result({"run": str(run_dir), **result}, fmt)
        finally:
            _end_distributed()
        return
    fmap = FeatureMap.load(feature_map)
    data_spec = {
        "format": fmt_name,
        "input": str(input_path.resolve()),
        "split": split,
        "skip_bad": skip_bad,
        "feature_map_sha256": hashlib.sha256(feature_map.read_bytes()).hexdigest(),
    }
    RunDir(run_dir, {"train": dataclasses.asdict(spec), "data": data_spec}, resume=resume, overwrite=overwrite).check()
    fmap.check_source(input_path)  # a changed input is refused before the run folder is written
    dev, _, world = _distributed(device)
    if world > 1:
        _end_distributed()
        raise click.UsageError("several processes need a prepared folder (`polyzoo recsys prepare`)")
    seed_everything(spec.seed)
    net = build_model(spec, fmap.num_rows, fmap.num_fields).to(dev)
    opts = build_optimizers(net, spec)
    result = fit(
        net,
        opts,
        lambda line: _stream(fmt_name, input_path, fmap, batch_size, _split(split), skip_bad, line),
        spec,
        run_dir,
        resume=resume,
        progress=True,
        data_spec=data_spec,
        overwrite=overwrite,
    )
    fmap.save(run_dir / "feature_map.json")
    echo_result({"run": str(run_dir), **result}, fmt)


def _load_run(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The model of a run (its best checkpoint when it has one, else its last), its feature map and its config."""
    from polyzoo.recsys.features import FeatureMap
    from polyzoo.recsys.train import TrainSpec, build_model, load_best_or_last_weights
    from polyzoo.shared.io import read_json

    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run_dir} a `polyzoo recsys train` run folder?")
    cfg = read_json(path).get("config") or {}
    if "train" not in cfg or "data" not in cfg:
        raise ValueError(f"{path}: not a `polyzoo recsys train` run config")
    fmap = FeatureMap.load(run_dir / "feature_map.json")
    spec = TrainSpec(**cfg["train"])
    net = build_model(spec, fmap.num_rows, fmap.num_fields, cfg["data"].get("widths"))
    net.load_state_dict(load_best_or_last_weights(run_dir))
    return net, fmap, cfg


@recsys.command(name="eval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="data to evaluate on (default: the training input)",
)
@click.option(
    "--split",
    type=click.Choice(["test", "valid", "train", "all"]),
    default="test",
    show_default=True,
    help="valid: prepared input only; all: raw input only",
)
@click.option("--batch-size", default=8192, show_default=True)
@click.option("--workers", default=0, show_default=True, help="prepared input: DataLoader workers per process")
@_skip_opt
@device_options
@format_option
def eval_cmd(
    run_dir: Path,
    input_path: Path | None,
    split: str,
    batch_size: int,
    workers: int,
    skip_bad: bool,
    device: str,
    precision: str,
    fmt: str,
) -> None:
    """AUC and log loss (scikit-learn) of the run's best checkpoint (highest validation AUC; else its last one);
    also written to RUN_DIR/eval.json. A prepared input is scored every row once, also under `torchrun`."""
    from polyzoo.recsys.parquet import PreparedData, is_prepared
    from polyzoo.recsys.train import evaluate, evaluate_prepared
    from polyzoo.shared.io import write_json_atomic

    net, fmap, cfg = _load_run(run_dir)
    info = cfg["data"]
    path = input_path or Path(info.get("prepared") or info["input"])
    if is_prepared(path):
        if split == "all":
            raise click.BadParameter("a prepared folder has train, valid and test splits", param_hint="--split")
        dev, rank, _ = _distributed(device)
        try:
            net = net.to(dev)
            result = evaluate_prepared(net, PreparedData(path), split, batch_size, workers, precision)
        finally:
            _end_distributed()
        if rank != 0:
            return
    else:
        from polyzoo.shared.options import resolve_device

        if split == "valid":
            raise click.BadParameter("a raw input has no validation split", param_hint="--split")
        net = net.to(resolve_device(device))
        result = evaluate(net, _stream(info["format"], path, fmap, batch_size, _split(split), skip_bad))
    write_json_atomic(run_dir / "eval.json", {"input": str(path), "split": split, **result})
    echo_result(result, fmt)


def selection_report(net: Any, fmap: Any) -> dict[str, Any]:
    """Zero-row ratio of the embeddings (overall and per field: features dropped by GFTRL) and zero-weight ratio
    of the interaction kernels (per PIN layer: interactions dropped by L1 FTRL)."""
    from polyzoo.recsys.optim import zero_row_mask, zero_weight_ratio

    table = net.embedding if getattr(net, "embedding", None) is not None else net.linear  # LR: first-order table
    weight = table.weight.detach()
    zero = zero_row_mask(weight)[1:]  # row 0 is the always-zero missing/OOV row
    fields = {}
    for i, name in enumerate(fmap.names):
        start, size = fmap.offsets[i] - 1, fmap.sizes[i]
        block = zero[start : start + size]
        fields[name] = {
            "rows": size,
            "zero_rows": int(block.sum()),
            "zero_ratio": float(block.float().mean()) if size else 0.0,
        }
    report: dict[str, Any] = {"embedding_zero_row_ratio": float(zero.float().mean()), "fields": fields}
    if hasattr(net, "pin_weight_parameters"):
        kernels = net.pin_weight_parameters()
        report["pin_zero_weight_ratio"] = zero_weight_ratio(kernels)
        report["pin_layers"] = [zero_weight_ratio([k]) for k in kernels]
    return report


@recsys.command(name="select")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", default=10, show_default=True, help="list this many most-dropped fields")
def select_cmd(run_dir: Path, top: int) -> None:
    """Feature and interaction selection of a run: zero embedding rows per field and zero PIN weights
    (written to RUN_DIR/selection.json)."""
    from polyzoo.shared.io import write_json_atomic

    net, fmap, _ = _load_run(run_dir)
    report = selection_report(net, fmap)
    write_json_atomic(run_dir / "selection.json", report)
    click.echo(f"embedding zero-row ratio: {report['embedding_zero_row_ratio']:.4f}")
    if "pin_zero_weight_ratio" in report:
        click.echo(
            f"PIN zero-weight ratio: {report['pin_zero_weight_ratio']:.4f} "
            f"(per layer: {', '.join(f'{r:.3f}' for r in report['pin_layers'])})"
        )
    ranked = sorted(report["fields"].items(), key=lambda kv: -kv[1]["zero_ratio"])[:top]
    for name, f in ranked:
        click.echo(f"  {name}: {f['zero_rows']}/{f['rows']} rows zero ({f['zero_ratio']:.3f})")
