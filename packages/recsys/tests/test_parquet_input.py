"""Training input from a prepared folder: the Parquet footer, the plan (balanced, disjoint, per rank and worker),
the seeded order and exact resume, bag fields (mean combiner), and the prepared loop against the stream loop.

Prepared folders are written here directly to the format of ``polyzoo recsys prepare`` (manifest.json,
feature_map.json, ``train/valid/test/part-NNNNN.parquet`` with a float32 ``label`` and one int32 or list<int32>
column per field), with polars: the locked pyarrow does not import beside the locked numpy < 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from polyzoo.recsys import parquet as pq
from polyzoo.recsys.data import CTRStream, build_feature_map
from polyzoo.recsys.features import FeatureMap, FieldSpec
from polyzoo.recsys.models import FieldEmbedding
from polyzoo.recsys.parquet import ParquetBatches, PreparedData, Unit, parquet_row_group_rows, plan_parts
from polyzoo.recsys.synthetic import SyntheticConfig, generate_synthetic, synthetic_format
from polyzoo.recsys.train import (
    InputSpec,
    TrainSpec,
    build_model,
    build_optimizers,
    evaluate,
    evaluate_prepared,
    fit,
    fit_prepared,
)


def write_prepared(
    root: Path, fmap: FeatureMap, splits: dict, row_group: int, shard_rows: int, bags=None, version: int = 1
) -> Path:
    """``splits[name] = (labels (n,), ids (n, F) int32, {bag field: list of lists})`` -> a prepared folder of
    format ``version`` (1: the ids given are global rows; 2: ids local to each field), the ids written as given."""
    bags = bags or {}
    root.mkdir(parents=True, exist_ok=True)
    fmap.save(root / "feature_map.json")
    manifest = {"format": "polyzoo-ctr-parquet", "version": version, "schema": {"fields": []}, "splits": {}}
    for name, (labels, ids, lists) in splits.items():
        (root / name).mkdir(exist_ok=True)
        entries = []
        for k, lo in enumerate(range(0, len(labels), shard_rows)):
            hi = min(lo + shard_rows, len(labels))
            cols: dict = {"label": pl.Series(labels[lo:hi], dtype=pl.Float32)}
            j = 0
            for f in fmap.names:
                if f in bags:
                    cols[f] = pl.Series(lists[f][lo:hi], dtype=pl.List(pl.Int32))
                else:
                    cols[f] = pl.Series(ids[lo:hi, j], dtype=pl.Int32)
                    j += 1
            rel = f"{name}/part-{k:05d}.parquet"
            pl.DataFrame(cols).write_parquet(root / rel, row_group_size=row_group)
            groups = -(-(hi - lo) // row_group)
            entries.append({"path": rel, "rows": hi - lo, "row_groups": groups})
        manifest["splits"][name] = entries
    manifest["schema"]["fields"] = [{"name": f, "max_len": n} for f, n in bags.items()]
    manifest.update({"sources": [], "settings": {}, "skipped": {"bad_rows": 0}})
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _hash_map(names, buckets=50) -> FeatureMap:
    return FeatureMap([FieldSpec(n, hash_buckets=buckets) for n in names])


def _rid_folder(tmp_path, n=1000, row_group=64, shard_rows=300, splits=("train",)) -> Path:
    """Field ``rid`` holds the row index (+1), so every batch row can be traced back to its row."""
    fmap = FeatureMap([FieldSpec("rid", hash_buckets=n + 10), FieldSpec("x", hash_buckets=7)])
    rng = np.random.default_rng(0)
    ids = np.stack([np.arange(1, n + 1), rng.integers(0, 8, n)], 1).astype(np.int32)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    data = {s: (labels, ids, {}) for s in splits}
    return write_prepared(tmp_path / "prep", fmap, data, row_group, shard_rows)


def _rows(batches) -> list[int]:
    return [int(r) - 1 for b in batches for r in b["ids"][:, 0]]


def _as_worker(monkeypatch, worker, workers):
    monkeypatch.setattr(pq, "get_worker_info", lambda: types.SimpleNamespace(id=worker, num_workers=workers))


def _rank_sequence(monkeypatch, ds_kwargs, data, workers):
    """What a DataLoader with ``workers`` workers yields: round-robin, worker 0 first (emulated in-process)."""
    if workers == 0:
        monkeypatch.setattr(pq, "get_worker_info", lambda: None)
        return list(ParquetBatches(data, "train", workers=0, **ds_kwargs))
    streams = []
    for w in range(workers):
        _as_worker(monkeypatch, w, workers)
        streams.append(list(ParquetBatches(data, "train", workers=workers, **ds_kwargs)))
    monkeypatch.setattr(pq, "get_worker_info", lambda: None)
    lengths = [len(s) for s in streams]  # padded: equal, or (after a resume) the last workers one item shorter
    assert lengths == sorted(lengths, reverse=True) and lengths[0] - lengths[-1] <= 1
    return [s[r] for r in range(lengths[0]) for s in streams if r < len(s)]  # round-robin, exhausted skipped


def test_row_group_rows_from_footer(tmp_path):
    path = tmp_path / "a.parquet"
    pl.DataFrame({"label": np.zeros(1000, np.float32), "b": [[1, 2]] * 1000}).write_parquet(path, row_group_size=128)
    assert parquet_row_group_rows(path) == [128] * 7 + [104]
    bad = tmp_path / "b.parquet"
    bad.write_bytes(b"label,f0\n" * 10)
    with pytest.raises(ValueError, match="not a Parquet file"):
        parquet_row_group_rows(bad)


def test_plan_is_balanced_contiguous_and_disjoint():
    sizes = [64, 64, 12, 64, 64, 40, 64, 64, 64, 5]
    units = [Unit("f", i, 0, n) for i, n in enumerate(sizes)]
    for parts in (1, 2, 3, 4):
        for shuffle in (False, True):
            plan = plan_parts(units, parts, seed=1, epoch=2, shuffle=shuffle)
            flat = [u for p in plan for u in p]
            assert sorted(flat, key=lambda u: u.row_group) == units  # every unit once
            if not shuffle:
                assert flat == units  # contiguous, in file order
            target = sum(sizes) / parts
            for p in plan:  # each cut sits within half a unit of its target: a part within one unit
                assert abs(sum(u.rows for u in p) - target) <= max(sizes)
    a = plan_parts(units, 2, seed=1, epoch=0, shuffle=True)
    assert a == plan_parts(units, 2, seed=1, epoch=0, shuffle=True)
    assert a != plan_parts(units, 2, seed=1, epoch=1, shuffle=True)


def test_no_shuffle_is_file_order_with_batches_spanning_row_groups(tmp_path, monkeypatch):
    data = PreparedData(_rid_folder(tmp_path))
    assert data.rows("train") == 1000 and data.widths == [1, 1]
    batches = _rank_sequence(monkeypatch, {"batch_size": 100}, data, 0)
    assert [len(b["label"]) for b in batches] == [100] * 10
    assert _rows(batches) == list(range(1000))
    assert batches[0]["ids"].dtype == torch.int32 and batches[0]["label"].dtype == torch.float32
    table = pl.concat([pl.read_parquet(tmp_path / "prep" / "train" / f"part-{k:05d}.parquet") for k in range(4)])
    np.testing.assert_array_equal(torch.cat([b["label"] for b in batches]).numpy(), table["label"].to_numpy())


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_once_per_epoch_over_ranks_and_workers(tmp_path, monkeypatch, world, workers, shuffle):
    data = PreparedData(_rid_folder(tmp_path))
    kw = {"batch_size": 50, "shuffle": shuffle, "seed": 3, "epoch": 1, "shuffle_buffer": 200}
    seen = []
    for rank in range(world):
        seq = _rank_sequence(monkeypatch, {**kw, "rank": rank, "world_size": world}, data, workers)
        sizes = ParquetBatches(data, "train", workers=workers, rank=rank, world_size=world, **kw).item_sizes()
        assert [len(b["label"]) for b in seq] == sizes[rank]  # the plan predicts every item
        seen += _rows(seq)
    assert sorted(seen) == list(range(1000))
    if shuffle:
        assert seen != sorted(seen)


def test_order_is_a_function_of_seed_and_epoch_and_resume_is_exact(tmp_path, monkeypatch):
    data = PreparedData(_rid_folder(tmp_path))
    kw = {"batch_size": 40, "shuffle": True, "shuffle_buffer": 150}
    for workers in (0, 2):
        full = _rank_sequence(monkeypatch, {**kw, "seed": 5, "epoch": 0}, data, workers)
        assert _rows(full) == _rows(_rank_sequence(monkeypatch, {**kw, "seed": 5, "epoch": 0}, data, workers))
        assert _rows(full) != _rows(_rank_sequence(monkeypatch, {**kw, "seed": 5, "epoch": 1}, data, workers))
        assert _rows(full) != _rows(_rank_sequence(monkeypatch, {**kw, "seed": 6, "epoch": 0}, data, workers))
        for k in (1, 5, 6, len(full) - 1):
            tail = _rank_sequence(monkeypatch, {**kw, "seed": 5, "epoch": 0, "start_item": k}, data, workers)
            assert [len(b["label"]) for b in tail] == [len(b["label"]) for b in full[k:]]
            assert _rows(tail) == _rows(full[k:])


def test_a_process_reads_only_its_row_groups(tmp_path, monkeypatch):
    data = PreparedData(_rid_folder(tmp_path))
    read = []
    original = pq._read_window

    def spy(units, *args):
        read.extend((u.path, u.row_group) for u in units)
        return original(units, *args)

    monkeypatch.setattr(pq, "_read_window", spy)
    monkeypatch.setattr(pq, "get_worker_info", lambda: None)
    mine = {}
    for rank in range(2):
        read.clear()
        rows = _rows(ParquetBatches(data, "train", 50, rank=rank, world_size=2))
        mine[rank] = set(read)
        assert len(read) == len(set(read))  # no row group read twice
        assert {r // 64 if r < 300 else None for r in rows} - {None} <= {g for p, g in read if "00000" in p}
    assert not mine[0] & mine[1] and len(mine[0] | mine[1]) == len(data.units["train"])
    read.clear()  # resuming at row 900 reads only the row groups of rows 900-999: shard 3's two (64 + 36 rows)
    assert _rows(ParquetBatches(data, "train", 100, start_item=9)) == list(range(900, 1000))
    assert read == [(str(tmp_path / "prep" / "train" / "part-00003.parquet"), g) for g in (0, 1)]


def test_bag_columns_are_padded_and_averaged(tmp_path, monkeypatch):
    fmap = FeatureMap(
        [FieldSpec("a", hash_buckets=5), FieldSpec("tags", hash_buckets=9), FieldSpec("b", hash_buckets=3)]
    )
    # global rows: a 1..5, tags 6..14, b 15..17
    ids = np.array([[1, 15], [2, 16], [0, 17], [5, 0]], dtype=np.int32)
    tags = [[6, 7, 14], [], [9], [8, 8]]
    root = write_prepared(
        tmp_path / "p", fmap, {"train": (np.ones(4, np.float32), ids, {"tags": tags})}, 3, 4, bags={"tags": 3}
    )
    data = PreparedData(root)
    assert data.bags == ["tags"] and data.widths == [1, 3, 1]
    monkeypatch.setattr(pq, "get_worker_info", lambda: None)
    (batch,) = list(ParquetBatches(data, "train", 8))
    expected = [[1, 6, 7, 14, 15], [2, 0, 0, 0, 16], [0, 9, 0, 0, 17], [5, 8, 8, 0, 0]]
    assert batch["ids"].tolist() == expected

    torch.manual_seed(0)
    emb = FieldEmbedding(fmap.num_rows, 4, field_widths=data.widths)
    out = emb(batch["ids"])
    w = emb.weight.detach()
    # transcription of TF's safe_embedding_lookup_sparse(combiner="mean"): invalid (0) ids dropped, mean of the
    # rest, zero vector for an empty bag
    ref = torch.zeros(4, 3, 4)
    for r, row in enumerate(expected):
        ref[r, 0] = w[row[0]]
        valid = [i for i in row[1:4] if i != 0]
        ref[r, 1] = sum(w[i] for i in valid) / len(valid) if valid else 0.0
        ref[r, 2] = w[row[4]]
    torch.testing.assert_close(out, ref)
    plain = FieldEmbedding(fmap.num_rows, 4, field_widths=[1, 1, 1])  # all width 1: the plain lookup
    plain.load_state_dict(emb.state_dict())
    torch.testing.assert_close(plain(batch["ids"][:, [0, 1, 4]]), w[batch["ids"][:, [0, 1, 4]].long()])


def test_version_2_field_ids_become_global_rows(tmp_path, monkeypatch):
    # the same rows as test_bag_columns_are_padded_and_averaged, stored as version 2 (ids local to each field:
    # a 1..5, tags 1..9, b 1..3; 0 = the zero row) give the same global rows (features.py: offsets[f] + k - 1)
    fmap = FeatureMap(
        [FieldSpec("a", hash_buckets=5), FieldSpec("tags", hash_buckets=9), FieldSpec("b", hash_buckets=3)]
    )
    assert fmap.offsets == [1, 6, 15]
    ids = np.array([[1, 1], [2, 2], [0, 3], [5, 0]], dtype=np.int32)
    tags = [[1, 2, 9], [], [4], [3, 3]]
    split = {"train": (np.ones(4, np.float32), ids, {"tags": tags})}
    root = write_prepared(tmp_path / "p", fmap, split, 3, 4, bags={"tags": 3}, version=2)
    monkeypatch.setattr(pq, "get_worker_info", lambda: None)
    (batch,) = list(ParquetBatches(PreparedData(root), "train", 8))
    expected = [[1, 6, 7, 14, 15], [2, 0, 0, 0, 16], [0, 9, 0, 0, 17], [5, 8, 8, 0, 0]]
    assert batch["ids"].tolist() == expected
    assert pq.read_split(root, "train").drop("label").to_dicts() == [
        {"a": 1, "tags": [6, 7, 14], "b": 15}, {"a": 2, "tags": [], "b": 16}, {"a": 0, "tags": [9], "b": 17},
        {"a": 5, "tags": [8, 8], "b": 0},
    ]  # fmt: skip
    # an id beyond its field (b has 3 rows; 4 would be another field's row) is refused, naming shard and row
    ids[3, 1] = 4
    root = write_prepared(tmp_path / "q", fmap, split, 3, 4, bags={"tags": 3}, version=2)
    with pytest.raises(ValueError, match=r"part-00000\.parquet: row 3, field 'b': id 4, expected 0\.\.3"):
        list(ParquetBatches(PreparedData(root), "train", 8))


def test_bag_model_trains_with_sparse_gradients(tmp_path, monkeypatch):
    fmap = FeatureMap([FieldSpec("a", hash_buckets=5), FieldSpec("tags", hash_buckets=9)])
    rng = np.random.default_rng(0)
    n = 64
    ids = rng.integers(1, 6, (n, 1)).astype(np.int32)
    tags = [list(rng.integers(6, 15, rng.integers(0, 4))) for _ in range(n)]
    labels = (rng.random(n) < 0.5).astype(np.float32)
    root = write_prepared(
        tmp_path / "p",
        fmap,
        {"train": (labels, ids, {"tags": tags}), "test": (labels, ids, {"tags": tags})},
        16,
        64,
        bags={"tags": 3},
    )
    data = PreparedData(root)
    spec = TrainSpec(
        model="xdeepint",
        embedding_dim=4,
        model_kwargs={"num_layers": 2, "num_subspaces": 2},
        batch_size=16,
        gftrl_l1=0.01,
        gftrl_l2=0.01,
    )
    net = build_model(spec, data.num_rows, len(data.fields), data.widths)
    before = net.embedding.weight.detach().clone()
    out = fit_prepared(net, build_optimizers(net, spec), data, spec, InputSpec(shuffle=False))
    assert out["step"] == 4 and np.isfinite(out["loss"])
    assert not torch.equal(before, net.embedding.weight)
    assert evaluate_prepared(net, data, "test")["rows"] == n


@pytest.fixture
def synth_prepared(tmp_path):
    """The synthetic CSV, its feature map, and a prepared folder holding the same encoded rows (train and test
    split by the official rule, encoded by CTRStream; row groups of 100 rows, so batches span row groups)."""
    path = tmp_path / "synth.csv"
    generate_synthetic(path, SyntheticConfig(rows=1500, cardinality=5, seed=4))
    fmt = synthetic_format()
    fmap, _ = build_feature_map(path, fmt, split="train")

    def encoded(split):
        (batch,) = list(CTRStream(path, fmt, fmap, 10**6, split=split))
        return batch["label"].numpy(), batch["ids"].numpy().astype(np.int32), {}

    root = write_prepared(tmp_path / "prep", fmap, {"train": encoded("train"), "test": encoded("test")}, 100, 450)
    return path, fmt, fmap, root


@pytest.mark.parametrize("model", ["xdeepint", "deepfm"])
def test_prepared_training_equals_stream_training(synth_prepared, model):
    """Same rows, same order, no shuffle: the prepared loop gives the stream loop's model and test metrics
    (what lets the synthetic / MovieLens reproductions switch to prepared folders)."""
    path, fmt, fmap, root = synth_prepared
    data = PreparedData(root)
    opt = "gftrl" if model == "xdeepint" else "adam"
    kwargs = {"num_layers": 2, "num_subspaces": 2} if model == "xdeepint" else {"hidden_units": (8,)}
    spec = TrainSpec(
        model=model,
        embedding_dim=4,
        optimizer=opt,
        model_kwargs=kwargs,
        epochs=2,
        batch_size=128,
        lr=1e-2,
        gftrl_alpha=0.1,
        gftrl_l1=0.01,
        gftrl_l2=0.01,
    )

    def make():
        torch.manual_seed(7)
        net = build_model(spec, fmap.num_rows, fmap.num_fields)
        return net, build_optimizers(net, spec)

    net_a, opt_a = make()
    fit(net_a, opt_a, lambda line: CTRStream(path, fmt, fmap, 128, split="train", start_line=line), spec)
    net_b, opt_b = make()
    out = fit_prepared(net_b, opt_b, data, spec, InputSpec(shuffle=False))
    assert out["epoch"] == 2 and out["step"] == 2 * -(-data.rows("train") // 128)
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ref = evaluate(net_a, CTRStream(path, fmt, fmap, 8192, split="test"))
    got = evaluate_prepared(net_b, data, "test")
    assert got["rows"] == ref["rows"] == data.rows("test")
    assert got["auc"] == pytest.approx(ref["auc"], abs=1e-12)
    assert got["logloss"] == pytest.approx(ref["logloss"], rel=1e-6)


def _small_spec(**kw):
    base = {
        "model": "xdeepint",
        "embedding_dim": 4,
        "model_kwargs": {"num_layers": 2, "num_subspaces": 2},
        "batch_size": 128,
        "checkpoint_every": 1,
        "gftrl_alpha": 0.1,
        "gftrl_l1": 0.01,
        "gftrl_l2": 0.01,
    }
    return TrainSpec(**{**base, **kw})


def test_prepared_resume_equals_straight_run(synth_prepared, tmp_path):
    _, _, fmap, root = synth_prepared
    data = PreparedData(root)
    spec = _small_spec(epochs=2)
    inputs = InputSpec(shuffle=True, shuffle_buffer=300, patience=0)

    def make():
        torch.manual_seed(0)
        net = build_model(spec, fmap.num_rows, fmap.num_fields)
        return net, build_optimizers(net, spec)

    net_a, opt_a = make()
    fit_prepared(net_a, opt_a, data, spec, inputs, tmp_path / "a")
    net_b, opt_b = make()
    assert fit_prepared(net_b, opt_b, data, spec, inputs, tmp_path / "b", stop_after_steps=13)["step"] == 13
    state = json.loads((tmp_path / "b" / "checkpoints" / "step_00000013" / "state.json").read_text())
    per_epoch = -(-data.rows("train") // 128)
    assert per_epoch == 11 and (state["epoch"], state["item"]) == (1, 13 - per_epoch)  # 1301 train rows
    net_c, opt_c = make()
    out = fit_prepared(net_c, opt_c, data, spec, inputs, tmp_path / "b")
    assert out["step"] == 22 and out["epoch"] == 2
    for (name, a), c in zip(net_a.state_dict().items(), net_c.state_dict().values(), strict=True):
        assert torch.equal(a, c), name


def test_validation_early_stopping_and_best_checkpoint(synth_prepared, tmp_path):
    _, _, fmap, root = synth_prepared
    labels, ids = [], []
    for split in ("train", "test"):
        df = pl.read_parquet(root / split / "*.parquet")
        labels.append(df["label"].to_numpy())
        ids.append(df.select(fmap.names).to_numpy().astype(np.int32))
    # valid = test rows with flipped labels: fitting train makes validation AUC worse every epoch
    prep = write_prepared(
        tmp_path / "p2",
        fmap,
        {"train": (labels[0], ids[0], {}), "valid": (1 - labels[1], ids[1], {}), "test": (labels[1], ids[1], {})},
        100,
        450,
    )
    data = PreparedData(prep)
    spec = _small_spec(epochs=6, checkpoint_every=0, optimizer="adam", lr=0.05)
    torch.manual_seed(0)
    net = build_model(spec, fmap.num_rows, fmap.num_fields)
    out = fit_prepared(net, build_optimizers(net, spec), data, spec, InputSpec(patience=2), tmp_path / "run")
    records = [
        r
        for r in (json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if "valid_auc" in r
    ]
    aucs = [r["valid_auc"] for r in records]
    best = int(np.argmax(aucs))
    assert out["stopped"] and len(aucs) == best + 3  # two epochs without improvement, then stop
    assert out["best"] == pytest.approx(max(aucs))
    saved = json.loads((tmp_path / "run" / "best" / "state.json").read_text())
    assert saved["epoch"] == best and saved["auc"] == pytest.approx(max(aucs))


def test_cli_trains_a_prepared_folder_and_evaluates_test(synth_prepared, tmp_path):
    from click.testing import CliRunner

    from polyzoo.recsys.cli import recsys

    _, _, _, root = synth_prepared
    run = tmp_path / "run"
    args = [
        "train",
        str(root),
        "--run-dir",
        str(run),
        "--embedding-dim",
        "4",
        "--layers",
        "2",
        "--subspaces",
        "2",
        "--batch-size",
        "256",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
        "--format",
        "json",
    ]
    res = CliRunner().invoke(recsys, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{") :])["step"] == 6  # 1301 train rows, batch 256
    res = CliRunner().invoke(recsys, ["eval", str(run), "--device", "cpu", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "eval.json").read_text())["rows"] == PreparedData(root).rows("test")
    res = CliRunner().invoke(recsys, [*args, "--precision", "bf16"])  # another setting: refused
    assert res.exit_code == 1 and "input.precision" in res.output


# ---------------------------------------------------------------------------------------------------------------
# Two processes (torchrun, gloo)


def _torchrun(args: list[str], nproc: int, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "polyzoo.shared.cli",
        "recsys",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_union_batches_and_evaluate_every_test_row_once(tmp_path):
    """2 CPU processes (gloo): rank r reads its half of the train row groups; step t is one step on the union of
    both ranks' t-th batches. Reference: one process fed those union batches in the same order (sum of the same
    gradients in another order: equal to float rounding, 1e-5). eval under 2 processes scores every test row
    once and matches 1 process (per-row probabilities can differ in the last bits with the batch composition)."""
    fmap = FeatureMap([FieldSpec(f"f{i}", hash_buckets=6) for i in range(4)])
    rng = np.random.default_rng(1)
    n = 512
    ids = (rng.integers(0, 6, (n, 4)) + 1 + 6 * np.arange(4)).astype(np.int32)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(ids[:, 0] % 3 - 1.0)))).astype(np.float32)
    test_ids = (rng.integers(0, 6, (301, 4)) + 1 + 6 * np.arange(4)).astype(np.int32)
    test_labels = (rng.random(301) < 0.5).astype(np.float32)
    # two shards of one row group each: rank 0 reads rows 0-255, rank 1 rows 256-511
    root = write_prepared(
        tmp_path / "prep", fmap, {"train": (labels, ids, {}), "test": (test_labels, test_ids, {})}, 256, 256
    )
    run = tmp_path / "run"
    common = [
        "--embedding-dim",
        "4",
        "--layers",
        "2",
        "--subspaces",
        "2",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--gftrl",
        "0.1",
        "1",
        "0.01",
        "0.01",
        "--no-shuffle",
        "--seed",
        "3",
        "--device",
        "cpu",
    ]
    res = _torchrun(["train", str(root), "--run-dir", str(run), *common, "--format", "json"], 2, tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    assert json.loads(res.stdout[res.stdout.index("{") :])["step"] == 16  # 256 rows / 32 per rank, 2 epochs

    from polyzoo.shared.io import load_safetensors
    from polyzoo.shared.run import find_last_checkpoint

    got = load_safetensors(find_last_checkpoint(run) / "model.safetensors")
    spec = TrainSpec(
        model="xdeepint",
        embedding_dim=4,
        model_kwargs={"num_layers": 2, "num_subspaces": 2},
        batch_size=64,
        epochs=2,
        gftrl_alpha=0.1,
        gftrl_l1=0.01,
        gftrl_l2=0.01,
        seed=3,
    )
    torch.manual_seed(3)
    net = build_model(spec, fmap.num_rows, fmap.num_fields)

    def union_batches(_line):
        for t in range(8):
            rows = np.r_[t * 32 : (t + 1) * 32, 256 + t * 32 : 256 + (t + 1) * 32]
            yield {"ids": torch.from_numpy(ids[rows]).long(), "label": torch.from_numpy(labels[rows]), "line": t + 1}

    fit(net, build_optimizers(net, spec), union_batches, spec)
    for name, ref in net.state_dict().items():
        torch.testing.assert_close(got[name], ref, rtol=1e-5, atol=1e-6, msg=name)

    res2 = _torchrun(["eval", str(run), "--device", "cpu", "--format", "json"], 2, tmp_path)
    assert res2.returncode == 0, res2.stderr[-4000:]
    two = json.loads((run / "eval.json").read_text())
    res1 = subprocess.run(
        [sys.executable, "-m", "polyzoo.shared.cli", "recsys", "eval", str(run), "--device", "cpu", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res1.returncode == 0, res1.stderr[-4000:]
    one = json.loads((run / "eval.json").read_text())
    assert two["rows"] == one["rows"] == 301
    assert two["auc"] == pytest.approx(one["auc"], abs=1e-6)
    assert two["logloss"] == pytest.approx(one["logloss"], rel=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_fp32_weights_and_states(synth_prepared, precision):
    _, _, fmap, root = synth_prepared
    data = PreparedData(root)
    spec = _small_spec(checkpoint_every=0)
    torch.manual_seed(0)
    net = build_model(spec, fmap.num_rows, fmap.num_fields)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opts = build_optimizers(net, spec)
    out = fit_prepared(net, opts, data, spec, InputSpec(shuffle=False, precision=precision))
    assert out["step"] == 11 and np.isfinite(out["loss"])
    assert all(v.dtype == torch.float32 for v in net.state_dict().values())
    states = [s for o in opts for st in o.state.values() for s in st.values() if isinstance(s, torch.Tensor)]
    assert states and all(s.dtype == torch.float32 for s in states)  # FTRL's n and z
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert "embedding.weight" in changed and len(changed) == len(before)


@pytest.mark.slow
def test_real_dataloader_workers_follow_the_round_robin_plan_and_resume(tmp_path, monkeypatch):
    """Two spawned DataLoader workers yield exactly the sequence the plan describes (emulated in-process by
    `_rank_sequence`), also when resuming mid-epoch (the parts rotate so worker 0 continues)."""
    data = PreparedData(_rid_folder(tmp_path))
    kw = {"batch_size": 40, "shuffle": True, "seed": 2, "shuffle_buffer": 150}
    expected = _rank_sequence(monkeypatch, kw, data, 2)
    for k in (0, 7):
        ds = ParquetBatches(data, "train", workers=2, start_item=k, **kw)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
        got = list(loader)
        assert [len(b["label"]) for b in got] == [len(b["label"]) for b in expected[k:]]
        assert _rows(got) == _rows(expected[k:])


ML_ROOT = Path(os.environ.get("POLYZOO_MOVIELENS_DIR", Path.home() / ".cache" / "polyzoo" / "ml-100k"))


def test_movielens_prepared_training_equals_stream_training(tmp_path):
    """MovieLens-100k (the full reproduction's data): the same encoded rows in a prepared folder train the same
    model as MovieLensStream, and score the same test metrics."""
    from polyzoo.recsys.data import MovieLensStream, build_movielens_feature_map
    from polyzoo.shared.paths import missing_data

    if not (ML_ROOT / "ml-100k.inter").is_file():
        missing_data(f"MovieLens-100k atomic files not in {ML_ROOT} (tools/data/recsys_movielens.py)")
    fmap = build_movielens_feature_map(ML_ROOT)

    def encoded(split):
        (batch,) = list(MovieLensStream(ML_ROOT, fmap, 10**6, split=split))
        return batch["label"].numpy(), batch["ids"].numpy().astype(np.int32), {}

    root = write_prepared(tmp_path / "ml", fmap, {"train": encoded("train"), "test": encoded("test")}, 8192, 50_000)
    data = PreparedData(root)
    spec = _small_spec(batch_size=2048, checkpoint_every=0)

    def make():
        torch.manual_seed(1)
        net = build_model(spec, fmap.num_rows, fmap.num_fields)
        return net, build_optimizers(net, spec)

    net_a, opt_a = make()
    fit(net_a, opt_a, lambda line: MovieLensStream(ML_ROOT, fmap, 2048, split="train", start_line=line), spec)
    net_b, opt_b = make()
    fit_prepared(net_b, opt_b, data, spec, InputSpec(shuffle=False))
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ref = evaluate(net_a, MovieLensStream(ML_ROOT, fmap, 8192, split="test"))
    got = evaluate_prepared(net_b, data, "test")
    assert got["rows"] == ref["rows"] == 100 * 199  # rows k with k mod 1000 > 800
    assert got["auc"] == pytest.approx(ref["auc"], abs=1e-12)


def test_shuffled_order_is_the_documented_one(tmp_path, monkeypatch):
    """One process, no workers: row groups permuted by default_rng([seed, epoch]), grouped into windows of at least
    `shuffle_buffer` rows, each window permuted by default_rng([seed, epoch, part 0, window]), then cut."""
    data = PreparedData(_rid_folder(tmp_path))  # shards of 300 rows in row groups of 64: 64,64,64,64,44 per shard
    monkeypatch.setattr(pq, "get_worker_info", lambda: None)
    got = _rows(ParquetBatches(data, "train", 70, shuffle=True, seed=9, epoch=4, shuffle_buffer=150))
    groups = []  # (first row, rows) of every row group, in manifest order
    for shard_start, shard_rows in ((0, 300), (300, 300), (600, 300), (900, 100)):
        groups += [(shard_start + g, min(64, shard_rows - g)) for g in range(0, shard_rows, 64)]
    groups = [groups[i] for i in np.random.default_rng([9, 4]).permutation(len(groups))]
    expected, window, w = [], [], 0
    for first, n in groups:
        window += list(range(first, first + n))
        if len(window) >= 150:
            expected += [window[i] for i in np.random.default_rng([9, 4, 0, w]).permutation(len(window))]
            window, w = [], w + 1
    if window:
        expected += [window[i] for i in np.random.default_rng([9, 4, 0, w]).permutation(len(window))]
    assert got == expected
