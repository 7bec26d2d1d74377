"""The streaming path of ``polyzoo recsys prepare`` (one Polars streaming parse, hashed intermediate) against the
block path (the reference: ``STREAMING = False``) and against ``CTRStream``: identical output files and ids on
clean inputs; on dirty inputs, on forced hash collisions and on unsupported schemas the block path runs instead,
with today's messages and ``--skip-bad`` counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import polyzoo.recsys.prepare as prep
from polyzoo.recsys.data import CTRStream, avazu_format, build_feature_map, criteo_format
from polyzoo.recsys.features import FeatureMap, ParseError
from polyzoo.recsys.parquet import read_split
from polyzoo.recsys.prepare import prepare
from polyzoo.recsys.schema import load_schema
from polyzoo.shared.paths import shared_data_dir

NAMES = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
# number spellings that Python's float and Polars' CSV float parser both accept (the others, e.g. '1_0' or '7 ',
# make Polars refuse the file, which then takes the block path: tested below)
ODD = ["", "0", "-1", "1", "1202604", "1982759", " 7", "inf", "-inf", "nan", "NaN", "1e3", "260.0", "3", "17", ".5"]


@pytest.fixture(autouse=True)
def _no_native_path(monkeypatch):
    """These tests are about the Polars streaming path: the native path (tested in test_prepare_native.py, and
    which declines most of these files anyway) is switched off."""
    monkeypatch.setattr(prep, "NATIVE", False)


def _rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ints = [ODD[rng.integers(len(ODD))] for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"v{int(rng.zipf(1.6)) % 11}é" for _ in range(26)]
        rows.append([str(int(rng.random() < 0.3)), *ints, *cats])
    return rows


def _write(path: Path, rows, sep: str = "\t", header: bool = False, eol: str = "\n") -> Path:
    text = (sep.join(NAMES) + eol if header else "") + "".join(sep.join(r) + eol for r in rows)
    path.write_bytes(text.encode("utf-8"))
    return path


def _both(monkeypatch, tmp_path: Path, *args, **kwargs) -> tuple[dict, dict, Path, Path]:
    """Prepare twice: the default (streaming where possible) and the block path; return both summaries and
    folders."""
    fast = prepare(*args[:1], tmp_path / "fast", *args[1:], **kwargs)
    monkeypatch.setattr(prep, "STREAMING", False)
    slow = prepare(*args[:1], tmp_path / "slow", *args[1:], **kwargs)
    monkeypatch.setattr(prep, "STREAMING", True)
    return fast, slow, tmp_path / "fast", tmp_path / "slow"


@pytest.mark.parametrize(
    ("protocol", "hash_buckets", "valid_share", "sep", "header"),
    [
        ("official", None, 0.0, "\t", False),
        ("polyzoo", None, 0.25, ",", True),
        ("official", 97, 0.0, "\t", True),
        ("polyzoo", 13, 0.1, ",", False),
    ],
)
def test_streaming_output_identical_to_block_path(
    monkeypatch, tmp_path, protocol, hash_buckets, valid_share, sep, header, same_folders
):
    path = _write(tmp_path / "c.txt", _rows(3100), sep=sep, header=header)
    schema = load_schema("criteo", protocol=protocol, threshold=2, hash_buckets=hash_buckets, valid_share=valid_share)
    fast, slow, a, b = _both(monkeypatch, tmp_path, path, schema, seed=5, shard_rows=1024, row_group_rows=256)
    assert fast["reader"] == "streaming" and slow["reader"] == "blocks"
    assert fast["rows"] == slow["rows"] and fast["embedding_rows"] == slow["embedding_rows"]
    assert not list(a.rglob(".prepare-intermediate*"))  # the intermediate is deleted before publishing
    same_folders(a, b)
    if valid_share == 0 and hash_buckets is None:  # and against CTRStream (an independent implementation)
        fmt = criteo_format(threshold=2, protocol=protocol)
        ref, _ = build_feature_map(path, fmt, split="train")
        assert FeatureMap.load(a / "feature_map.json").vocabularies == ref.vocabularies
        for split in ("train", "test"):
            ids = torch.cat([x["ids"] for x in CTRStream(path, fmt, ref, batch_size=500, split=split)]).numpy()
            np.testing.assert_array_equal(read_split(a, split).drop("label").to_numpy(), ids)


def test_separate_split_files_streaming(monkeypatch, tmp_path, same_folders):
    train = _write(tmp_path / "train.tsv", _rows(900, seed=1))
    valid = _write(tmp_path / "valid.tsv", _rows(120, seed=2))
    test = _write(tmp_path / "test.tsv", _rows(80, seed=3))
    schema = load_schema("criteo", threshold=1)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, train, schema, valid_input=valid, test_input=test)
    assert fast["reader"] == "streaming" and fast["rows"] == {"train": 900, "valid": 120, "test": 80}
    same_folders(a, b)


def test_train_expression_equals_split_codes():
    ks = np.arange(0, 50_000, 7, dtype=np.int64)
    df = pl.DataFrame({"k": pl.Series(ks, dtype=pl.UInt32)})
    for rule, share, seed, fixed in [
        ("mod1000", 0.0, 0, None),
        ("mod1000", 0.3, 11, None),
        ("all", 0.05, 2**70 + 3, None),
        ("mod1000", 0.2, 1, prep.TRAIN),
        ("mod1000", 0.2, 1, prep.TEST),
    ]:
        got = df.select(prep._train_expr(pl.col("k"), rule, share, seed, fixed)).to_series().to_numpy()
        want = prep._split_codes(ks, rule, share, seed, fixed) == prep.TRAIN
        np.testing.assert_array_equal(np.broadcast_to(got, want.shape), want)


def _weak_id_hash(column: str, seed: int) -> pl.Expr:
    """A deliberately weak id hash (the value's byte length: 'v1é' and 'v2é' collide); the check hash stays
    Polars' hash."""
    if seed == prep._SEED_ID:
        return pl.col(column).str.len_bytes().fill_null(0).cast(pl.UInt64)
    return pl.col(column).hash(seed)


@pytest.mark.parametrize("hash_buckets", [None, 7])
def test_forced_collisions_fall_back_to_the_string_path(monkeypatch, tmp_path, hash_buckets, same_folders):
    path = _write(tmp_path / "c.tsv", _rows(1500, seed=4))
    schema = load_schema("criteo", threshold=1, hash_buckets=hash_buckets, valid_share=0.1)
    monkeypatch.setattr(prep, "_row_hash", _weak_id_hash)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema, seed=2)
    assert fast["reader"] == "blocks"  # detected, so the exact string path ran
    assert not list(tmp_path.rglob(".prepare-intermediate*"))
    same_folders(a, b)


def test_collision_detection_per_table(monkeypatch, tmp_path, same_folders):
    # only two values collide in the id hash (one pair in one field): still detected
    rows = _rows(400, seed=6)
    for i, r in enumerate(rows):
        r[14 + 5] = "alpha" if i % 2 else "omega"

    def one_pair(column: str, seed: int) -> pl.Expr:
        h = pl.col(column).hash(seed)
        if seed != prep._SEED_ID:
            return h
        return pl.when(pl.col(column).is_in(["alpha", "omega"])).then(pl.lit(12345, dtype=pl.UInt64)).otherwise(h)

    path = _write(tmp_path / "c.tsv", rows)
    monkeypatch.setattr(prep, "_row_hash", one_pair)
    fast, _, a, b = _both(monkeypatch, tmp_path, path, load_schema("criteo", threshold=0))
    assert fast["reader"] == "blocks"
    same_folders(a, b)
    fmap = FeatureMap.load(a / "feature_map.json")
    assert sorted(fmap.vocabularies["C6"]) == ["alpha", "omega"]


def _good_line() -> list[str]:
    return ["1", *["2"] * 13, *["x"] * 26]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("short", "expected 40 '\\t'-separated fields, got 39"),  # Polars fills a short row with nulls
        ("long", "expected 40 '\\t'-separated fields, got 41"),
        ("label", "label: expected 0 or 1, got '2'"),
        ("number", "field I1: expected a number, got 'zz'"),
        ("utf8", "not UTF-8 text (byte 0xff at column 1)"),
    ],
)
def test_dirty_files_keep_todays_errors_and_skip_counts(monkeypatch, tmp_path, kind, message, same_folders):
    rows = [_good_line() for _ in range(30)]
    lines = ["\t".join(r) for r in rows]
    bad = {
        "short": "\t".join(_good_line()[:-1]),
        "long": "\t".join([*_good_line(), "extra"]),
        "label": "\t".join(["2", *_good_line()[1:]]),
        "number": "\t".join(["1", "zz", *_good_line()[2:]]),
        "utf8": None,
    }[kind]
    data = "\n".join(lines[:7]).encode() + b"\n" + (b"\xff\tbad" if bad is None else bad.encode()) + b"\n"
    data += "\n".join(lines[7:]).encode() + b"\n"
    path = tmp_path / "d.tsv"
    path.write_bytes(data)
    schema = load_schema("criteo", threshold=0)
    with pytest.raises(ParseError) as err:
        prepare(path, tmp_path / "out", schema)
    assert str(err.value) == f"{path}:8: {message}"
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob(".prepare-intermediate*"))
    fast, slow, a, b = _both(monkeypatch, tmp_path, path, schema, skip_bad=True)
    assert fast["reader"] == "blocks" and fast["bad_rows"] == slow["bad_rows"] == 1
    same_folders(a, b)


@pytest.mark.parametrize("kind", ["blank", "crlf", "bom", "trailing_blank", "sequence"])
def test_other_inputs_take_the_block_path_with_the_same_output(monkeypatch, tmp_path, kind, same_folders):
    rows = _rows(300, seed=7)
    path = _write(tmp_path / "c.tsv", rows, eol="\r\n" if kind == "crlf" else "\n")
    data = path.read_bytes()
    if kind == "blank":
        data = data.replace(b"\n", b"\n\n", 3)
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "trailing_blank":
        data += b"\n\n"
    path.write_bytes(data)
    schema = load_schema("criteo", threshold=1)
    if kind == "sequence":  # a multi-hot field: the block path (the streaming path has no sequence fields)
        fields = [{"name": f"I{i}", "type": "integer"} for i in range(1, 14)]
        fields += [{"name": f"C{i}", "type": "categorical"} for i in range(1, 26)]
        fields.append({"name": "C26", "type": "sequence", "separator": "é", "max_len": 3})
        spec = {"name": "seq", "columns": NAMES, "label": "label", "delimiter": "\t", "fields": fields}
        (tmp_path / "s.json").write_text(json.dumps(spec))
        schema = load_schema(tmp_path / "s.json", threshold=1)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema)
    assert fast["reader"] == "blocks"
    same_folders(a, b)


def test_avazu_hour_transforms_streaming(monkeypatch, tmp_path, same_folders):
    path = shared_data_dir(__file__) / "ctr" / "avazu_sample.txt"
    if not path.is_file():
        pytest.skip(f"shared CTR sample {path} not found")
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, load_schema("avazu", threshold=1))
    assert fast["reader"] == "streaming"
    same_folders(a, b)
    ref, _ = build_feature_map(path, avazu_format(threshold=1), split="train")
    assert FeatureMap.load(a / "feature_map.json").vocabularies == ref.vocabularies


def test_bad_hour_falls_back_with_todays_message(tmp_path):
    cols = ["id", "click", "hour", *[f"c{i}" for i in range(21)]]
    av = tmp_path / "a.csv"
    lines = [cols, ["1", "0", "14102100", *["a"] * 21], ["2", "1", "14139900", *["a"] * 21]]
    av.write_text("".join(",".join(r) + "\n" for r in lines))
    with pytest.raises(ParseError, match=r"a\.csv:3: field hour: expected YYMMDDHH, got '14139900'$"):
        prepare(av, tmp_path / "out", load_schema("avazu", threshold=0))
    assert not list(tmp_path.rglob(".prepare-intermediate*"))
