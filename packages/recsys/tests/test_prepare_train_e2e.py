"""The two halves of the Parquet data path together, through the CLI: ``prepare`` writes a folder from raw text,
``train`` reads it (valid split, early stopping bookkeeping) and ``eval`` scores its test split. The halves are
tested apart in test_prepare.py and test_parquet_input.py; this checks that they agree on the folder format,
including a multi-hot sequence field described by a schema file."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from click.testing import CliRunner

from polyzoo.recsys.cli import recsys


def _json_tail(text: str) -> dict:
    return json.loads(text[text.rindex("\n{") + 1 :] if "\n{" in text else text[text.index("{") :])


def test_prepare_then_train_then_eval_with_a_sequence_field(tmp_path):
    rng = np.random.default_rng(0)
    tags = ["a", "b", "c", "d", "e"]
    lines = ["y,user,tags,age"]
    for _ in range(1200):
        user = f"u{rng.integers(30)}"
        row_tags = rng.choice(tags, size=rng.integers(0, 4), replace=False)
        label = int(("a" in row_tags) ^ (rng.random() < 0.1))  # the label follows one tag of the bag
        lines.append(f"{label},{user},{'|'.join(row_tags)},{rng.integers(0, 90)}")
    raw = tmp_path / "data.csv"
    raw.write_text("\n".join(lines) + "\n")
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "label: y\nheader: true\ndelimiter: ','\nsplit: {rule: mod1000, valid_share: 0.2}\n"
        "fields:\n  - {name: user, type: categorical, threshold: 0}\n"
        "  - {name: tags, type: sequence, separator: '|', max_len: 3, threshold: 0}\n"
        "  - {name: age, type: numeric, binning: log_square, num_buckets: 8}\n"
    )
    prep = tmp_path / "prep"
    runner = CliRunner()
    res = runner.invoke(recsys, ["prepare", str(raw), "--schema", str(schema), "--out", str(prep), "--seed", "1"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((prep / "manifest.json").read_text())
    rows = {s: sum(part["rows"] for part in parts) for s, parts in manifest["splits"].items()}
    assert sum(rows.values()) == 1200 and min(rows.values()) > 0  # train, valid and test all non-empty
    train_df = pl.concat([pl.read_parquet(prep / p["path"]) for p in manifest["splits"]["train"]])
    assert train_df.schema["tags"] == pl.List(pl.Int32)

    run = tmp_path / "run"
    args = ["train", str(prep), "--run-dir", str(run), "--model", "xdeepint", "--embedding-dim", "4"]
    args += ["--layers", "2", "--subspaces", "2", "--batch-size", "64", "--epochs", "8", "--device", "cpu"]
    args += ["--optimizer", "adam", "--lr", "0.02", "--patience", "0", "--format", "json", "--seed", "0"]
    res = runner.invoke(recsys, args)
    assert res.exit_code == 0, res.output
    assert _json_tail(res.stdout)["epoch"] == 8
    res = runner.invoke(recsys, ["eval", str(run), "--device", "cpu", "--format", "json"])
    assert res.exit_code == 0, res.output
    result = _json_tail(res.stdout)
    assert result["auc"] > 0.75  # the tag bag carries the label (10% noise): a model that reads bags learns it
