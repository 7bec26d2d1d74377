"""``polyzoo recsys prepare``: ids identical to today's FeatureMap/CTRStream, the official split rule, the
validation carve, malformed rows, refused re-prepare, sequence fields, Parquet and MovieLens inputs, the folder
format. Files are tiny; small blocks (``block_bytes``) exercise the block boundaries and the slow path."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from polyzoo.recsys.data import (
    CTRStream,
    MovieLensStream,
    avazu_format,
    build_feature_map,
    build_movielens_feature_map,
    criteo_format,
)
from polyzoo.recsys.features import FeatureMap, ParseError, log_square_bin, log_square_bin_float32
from polyzoo.recsys.parquet import ParquetBatches, PreparedData, read_split
from polyzoo.recsys.prepare import PrepareError, crc32_series, prepare, read_manifest
from polyzoo.recsys.schema import load_schema
from polyzoo.shared.paths import shared_data_dir

SPLITS = ("train", "valid", "test")


def _shared(name: str) -> Path:
    path = shared_data_dir(__file__) / "ctr" / name
    if not path.is_file():
        pytest.skip(f"shared CTR sample {path} not found (set POLYZOO_SHARED_DATA)")
    return path


def _stream_ids(path, fmt, fmap, split, **kw):
    batches = list(CTRStream(path, fmt, fmap, batch_size=7, split=split, **kw))
    if not batches:
        return np.zeros((0, fmap.num_fields), dtype=np.int64), np.zeros(0)
    return torch.cat([b["ids"] for b in batches]).numpy(), torch.cat([b["label"] for b in batches]).numpy()


def _criteo_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Criteo rows with missing integers, -1/0/1, float32 bucket-edge integers, odd number spellings that Python's
    float accepts (' 7', '1_0', 'inf', 'nan', '1e3', '260.0') and repeated categorical values."""
    rng = np.random.default_rng(seed)
    odd = ["", "0", "-1", "1", "1202604", "1982759", " 7", "1_0", "inf", "-inf", "nan", "1e3", "260.0", "3", "17"]
    rows = []
    for _ in range(n):
        ints = [odd[rng.integers(len(odd))] for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"v{int(rng.zipf(1.6)) % 9}é" for _ in range(26)]
        rows.append([str(int(rng.random() < 0.3)), *ints, *cats])
    return rows


def _write(path: Path, rows, sep="\t", header=None) -> Path:
    text = "".join(sep.join(r) + "\n" for r in rows)
    path.write_text((sep.join(header) + "\n" if header else "") + text, encoding="utf-8")
    return path


@pytest.fixture
def criteo_file(tmp_path):
    return _write(tmp_path / "criteo.tsv", _criteo_rows(2300))


@pytest.mark.parametrize("protocol", ["official", "polyzoo"])
@pytest.mark.parametrize("block_bytes", [1 << 20, 20000])
def test_criteo_ids_identical_to_ctrstream(criteo_file, tmp_path, protocol, block_bytes):
    out = tmp_path / "out"
    summary = prepare(criteo_file, out, load_schema("criteo", protocol=protocol, threshold=2), block_bytes=block_bytes)
    fmt = criteo_format(threshold=2, protocol=protocol)
    ref, _ = build_feature_map(criteo_file, fmt, split="train")
    fmap = FeatureMap.load(out / "feature_map.json")
    assert fmap.vocabularies == ref.vocabularies and fmap.num_rows == ref.num_rows
    assert fmap.names == ref.names and summary["embedding_rows"] == ref.num_rows
    for split in ("train", "test"):
        ids, labels = _stream_ids(criteo_file, fmt, ref, split)
        df = read_split(out, split)
        assert df.columns == ["label", *ref.names]
        assert df.schema["label"] == pl.Float32 and all(df.schema[n] == pl.Int32 for n in ref.names)
        np.testing.assert_array_equal(df.drop("label").to_numpy(), ids)
        np.testing.assert_array_equal(df["label"].to_numpy(), labels)
    assert read_split(out, "valid").height == 0


def test_hashing_ids_identical_and_crc32(criteo_file, tmp_path):
    out = tmp_path / "out"
    prepare(criteo_file, out, load_schema("criteo", hash_buckets=97), block_bytes=20000)
    fmt = criteo_format(hash_buckets=97)
    fmap = FeatureMap(fmt.fields)
    ids, _ = _stream_ids(criteo_file, fmt, fmap, "train")
    np.testing.assert_array_equal(read_split(out, "train").drop("label").to_numpy(), ids)
    words = ["", "a", "é", "日本語", "x" * 37, "0429f84b", "\t"]
    np.testing.assert_array_equal(crc32_series(pl.Series(words)), [zlib.crc32(w.encode()) for w in words])


def test_vectorised_binning_equals_scalar():
    from polyzoo.recsys.features import FieldSpec
    from polyzoo.recsys.prepare import _Encoder
    from polyzoo.recsys.schema import Schema, SchemaField

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [np.arange(-3000, 60000), [1202604, 1982759, 1e40, -1e200, 1e300], rng.integers(0, 1 << 40, 20000)]
    ).astype(np.float64)
    for f32 in (True, False):
        spec = FieldSpec("i", "integer", missing="zero_row", float32=f32)
        fmap = FeatureMap([spec])
        enc = _Encoder(
            Schema("t", "csv", ",", False, ["y", "i"], "y", None, "all", 0.0, [SchemaField(spec, "i")]), fmap
        )
        got = enc.encode_integer(0, x)
        scalar = log_square_bin_float32 if f32 else log_square_bin
        with np.errstate(over="ignore"):
            want = np.array([1 + scalar(float(v)) for v in x])
        np.testing.assert_array_equal(got, want)


def test_avazu_ids_identical(tmp_path):
    path = _shared("avazu_sample.txt")
    out = tmp_path / "out"
    prepare(path, out, load_schema("avazu", threshold=1), block_bytes=2000)
    ref, _ = build_feature_map(path, avazu_format(threshold=1), split="train")
    assert FeatureMap.load(out / "feature_map.json").vocabularies == ref.vocabularies
    for split in ("train", "test"):
        ids, labels = _stream_ids(path, avazu_format(), ref, split)
        df = read_split(out, split)
        if len(ids):
            np.testing.assert_array_equal(df.drop("label").to_numpy(), ids)
            np.testing.assert_array_equal(df["label"].to_numpy(), labels)


def test_criteo_shared_sample_header_and_comma(tmp_path):
    path = _shared("criteo_sample.txt")
    out = tmp_path / "out"
    prepare(path, out, load_schema("criteo", protocol="polyzoo", threshold=1))
    fmt = criteo_format(threshold=1, protocol="polyzoo")
    ref, _ = build_feature_map(path, fmt)
    ids, _ = _stream_ids(path, fmt, ref, "train")
    np.testing.assert_array_equal(read_split(out, "train").drop("label").to_numpy(), ids)


def _splitmix64(x: int) -> int:  # transcription of Steele et al.'s SplitMix64 finaliser
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_split_rule_valid_share_and_train_only_vocabulary(tmp_path):
    rows = []
    for k in range(3000):
        rows.append([str(k % 2), *[str(k % 5)] * 13, f"u{k}", *["common"] * 24, f"only{k % 1000 > 800}"])
    path = _write(tmp_path / "c.tsv", rows)
    share, seed = 0.2, 7
    out = tmp_path / "out"
    s = prepare(path, out, load_schema("criteo", threshold=0, valid_share=share), seed=seed, block_bytes=30000)
    # transcription: official criteo_split.py train iff (k mod 1000)/1000 <= 0.8; valid iff a train row with
    # splitmix64(k + seed * golden) / 2**64 < share
    train_k = [k for k in range(3000) if (k % 1000) / 1000 <= 0.8]
    valid_k = [k for k in train_k if (_splitmix64((k + seed * 0x9E3779B97F4A7C15) % (1 << 64)) >> 11) / 2**53 < share]
    vs = set(valid_k)
    expect = {
        "train": [k for k in train_k if k not in vs],
        "valid": valid_k,
        "test": [k for k in range(3000) if (k % 1000) / 1000 > 0.8],
    }
    assert s["rows"] == {name: len(ks) for name, ks in expect.items()}
    assert 0.15 < len(valid_k) / len(train_k) < 0.25
    fmap = FeatureMap.load(out / "feature_map.json")
    # C1 = u{k} (once each, threshold 0): exactly the train-minus-valid rows are in the vocabulary
    assert sorted(fmap.vocabularies["C1"]) == sorted(f"u{k}" for k in expect["train"])
    assert fmap.vocabularies["C26"] == ["onlyFalse"]  # 'onlyTrue' appears only in test rows
    for name, ks in expect.items():
        c1 = read_split(out, name)["C1"].to_list()
        want = [fmap.offsets[12] + fmap.vocabularies["C1"].index(f"u{k}") if name == "train" else 0 for k in ks]
        assert c1 == want  # file order kept; valid/test values are out of vocabulary
    out2 = tmp_path / "out2"
    prepare(path, out2, load_schema("criteo", threshold=0, valid_share=share), seed=seed + 1, block_bytes=30000)
    assert read_manifest(out2)["splits"] != read_manifest(out)["splits"]  # the seed moves the carve


BAD_GOOD = ["1", *["2"] * 13, *["x"] * 26]


def _bad_file(tmp_path: Path) -> Path:
    good = "\t".join(BAD_GOOD) + "\n"
    lines = [
        good,
        "0\t1\t2\n",  # line 2: 3 fields
        good,
        "\n",  # line 4: blank (skipped, no row index)
        "\t".join(["0", "abc", *["1"] * 12, *["y"] * 26]) + "\n",  # line 5: unparsable integer
        "\t".join(["2", *["1"] * 13, *["y"] * 26]) + "\n",  # line 6: label 2
        good,
    ]
    data = "".join(lines).encode() + b"\xff\xfe bad\n" + good.encode() + b"1\t" + "\t".join(["1"] * 60).encode() + b"\n"
    path = tmp_path / "bad.tsv"
    path.write_bytes(data + good.encode())
    return path


@pytest.mark.parametrize("block_bytes", [1 << 20, 64])
def test_malformed_rows_errors_and_skip_counts(tmp_path, block_bytes):
    path = _bad_file(tmp_path)
    schema = load_schema("criteo", threshold=0)
    fmt = criteo_format(threshold=0)
    with pytest.raises(ParseError) as ctr_err:
        list(CTRStream(path, fmt, FeatureMap(criteo_format(hash_buckets=5).fields), batch_size=4))
    with pytest.raises(ParseError) as err:
        prepare(path, tmp_path / "out", schema, block_bytes=block_bytes)
    assert str(err.value) == str(ctr_err.value) == f"{path}:2: expected 40 '\\t'-separated fields, got 3"
    assert not (tmp_path / "out").exists()  # nothing published
    s = prepare(path, tmp_path / "out", schema, skip_bad=True, block_bytes=block_bytes)
    fmap, _ = build_feature_map(path, fmt, split=None, skip_bad=True)
    stream = CTRStream(path, fmt, fmap, batch_size=4, skip_bad=True)
    ids = torch.cat([b["ids"] for b in stream]).numpy()
    assert s["bad_rows"] == stream.stats["skipped"] == 5  # 3 fields, abc, label 2, not UTF-8, 61 fields
    assert read_manifest(tmp_path / "out")["skipped"] == {"bad_rows": 5}
    assert s["rows"]["train"] == len(ids) == 5  # lines 1, 3, 7, 9, 11
    np.testing.assert_array_equal(read_split(tmp_path / "out", "train").drop("label").to_numpy(), ids)


@pytest.mark.parametrize("block_bytes", [1 << 20, 100])
def test_first_error_in_file_order(tmp_path, block_bytes):
    good = "\t".join(BAD_GOOD)
    path = tmp_path / "f.tsv"
    lines = [good, good, "\t".join(["1", "zz", *["1"] * 12, *["x"] * 26]), good, "1\t2", good]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParseError, match=r"f\.tsv:3: field I1: expected a number, got 'zz'$"):
        prepare(path, tmp_path / "out", load_schema("criteo", threshold=0), block_bytes=block_bytes)
    av = tmp_path / "a.csv"
    cols = ["id", "click", "hour", *[f"c{i}" for i in range(21)]]
    av.write_text(",".join(cols) + "\n" + ",".join(["1", "0", "14102100", *["a"] * 21]) + "\n")
    av.write_text(av.read_text() + ",".join(["2", "1", "14139900", *["a"] * 21]) + "\n")
    with pytest.raises(ParseError, match=r"a\.csv:3: field hour: expected YYMMDDHH, got '14139900'"):
        prepare(av, tmp_path / "out", load_schema("avazu", threshold=0))


def test_refused_re_prepare_and_nothing_to_do(criteo_file, tmp_path):
    out = tmp_path / "out"
    schema = load_schema("criteo", threshold=2)
    first = prepare(criteo_file, out, schema)
    assert first["status"] == "prepared"
    manifest = (out / "manifest.json").read_text()
    again = prepare(criteo_file, out, load_schema("criteo", threshold=2))
    assert again["status"] == "up to date" and again["rows"] == first["rows"]
    assert (out / "manifest.json").read_text() == manifest
    (out / "manifest.json").write_text(manifest.replace('"version": 2', '"version": 1'))  # an older folder
    with pytest.raises(PrepareError, match=r"other settings or sources \(format version 1, now 2\).*--overwrite"):
        prepare(criteo_file, out, schema)
    (out / "manifest.json").write_text(manifest)
    with pytest.raises(PrepareError, match=r"other settings or sources.*threshold.*--overwrite"):
        prepare(criteo_file, out, load_schema("criteo", threshold=3))
    with pytest.raises(PrepareError, match=r"other settings.*split\.valid_share"):
        prepare(criteo_file, out, load_schema("criteo", threshold=2, valid_share=0.1))
    with pytest.raises(PrepareError, match=r"other settings.*split\.seed"):
        prepare(criteo_file, out, schema, seed=1)
    with pytest.raises(PrepareError, match=r"other settings.*protocol"):
        prepare(criteo_file, out, load_schema("criteo", threshold=2, protocol="polyzoo"))
    with open(criteo_file, "a") as fh:
        fh.write("\t".join(_criteo_rows(1, seed=9)[0]) + "\n")
    with pytest.raises(PrepareError, match="sources"):
        prepare(criteo_file, out, schema)
    redone = prepare(criteo_file, out, schema, overwrite=True)
    assert redone["status"] == "prepared" and sum(redone["rows"].values()) == sum(first["rows"].values()) + 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("unrelated")
    with pytest.raises(PrepareError, match="without a manifest"):
        prepare(criteo_file, other, schema)


def test_folder_format_shards_and_row_groups(criteo_file, tmp_path):
    out = tmp_path / "out"
    prepare(criteo_file, out, load_schema("criteo", threshold=2), row_group_rows=100, shard_rows=700, block_bytes=5000)
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "polyzoo-ctr-parquet" and m["version"] == 2
    assert set(m) == {"format", "version", "schema", "splits", "sources", "settings", "skipped"}
    assert m["schema"] == load_schema("criteo", threshold=2).to_dict() == m["settings"]["schema"]
    assert m["sources"][0]["path"] == str(criteo_file.resolve()) and m["sources"][0]["size"] > 0
    assert m["settings"]["split"]["rule"] == "mod1000" and m["settings"]["row_group_rows"] == 100
    train = m["splits"]["train"]
    assert [s["path"] for s in train] == [f"train/part-{i:05d}.parquet" for i in range(len(train))]
    assert [s["rows"] for s in train[:-1]] == [700] * (len(train) - 1) and len(train) == 3
    assert all(s["row_groups"] == math.ceil(s["rows"] / 100) for s in train)
    whole = tmp_path / "whole"
    prepare(criteo_file, whole, load_schema("criteo", threshold=2))
    assert read_split(out, "train").equals(read_split(whole, "train"))  # file order kept across shards
    assert m["splits"]["valid"] == []


def test_shards_hold_ids_local_to_each_field(criteo_file, tmp_path):
    # version 2: a shard column holds the field's own id k (0 = the zero row), which CTRStream's global row
    # offsets[f] + k - 1 gives back (features.py's layout); the reader turns them into those global rows
    out = tmp_path / "out"
    prepare(criteo_file, out, load_schema("criteo", threshold=2), block_bytes=5000)
    fmap = FeatureMap.load(out / "feature_map.json")
    ids, _ = _stream_ids(criteo_file, criteo_format(threshold=2), fmap, "train")
    offsets = np.asarray(fmap.offsets)
    local = np.where(ids > 0, ids - offsets + 1, 0)
    assert (local <= np.asarray(fmap.sizes)).all() and (local >= 0).all()
    frames = [pl.read_parquet(out / s["path"]) for s in read_manifest(out)["splits"]["train"]]
    np.testing.assert_array_equal(pl.concat(frames).drop("label").to_numpy(), local)
    assert (local > 0).any(axis=0).sum() > 20  # (most fields have some value in the vocabulary)
    data = PreparedData(out)
    batches = list(ParquetBatches(data, "train", 64, pad=False))
    np.testing.assert_array_equal(torch.cat([b["ids"] for b in batches]).numpy(), ids)


def test_sequence_fields_and_custom_schema(tmp_path):
    schema_path = tmp_path / "s.yaml"
    schema_path.write_text(
        "label: y\nheader: true\ndelimiter: ','\nsplit: {rule: all}\n"
        "fields:\n  - {name: u, type: categorical, threshold: 0}\n"
        "  - {name: tags, type: sequence, separator: '|', max_len: 2, threshold: 1}\n"
        "  - {name: n, type: numeric, binning: log_square, num_buckets: 4}\n"
        "  - {name: h, column: tags, type: sequence, separator: '|', max_len: 3, hash_buckets: 5}\n"
    )
    rows = [["y", "u", "tags", "n"], ["1", "a", "x|y|z", "3"], ["0", "b", "", ""], ["1", "a", "y||x", "1e9"]]
    rows += [["0", "c", "q|y", "-2"]]
    path = tmp_path / "d.csv"
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    out = tmp_path / "out"
    prepare(path, out, load_schema(schema_path))
    fmap = FeatureMap.load(out / "feature_map.json")
    # transcription: token counts over all rows (rule all): y 3, x 2, z 1, q 1 -> kept (> 1): y, x
    assert fmap.vocabularies["tags"] == ["y", "x"] and fmap.vocabularies["u"] == ["a", "b", "c"]
    t0 = fmap.offsets[1]
    df = read_split(out, "train")
    assert df.schema["tags"] == pl.List(pl.Int32)
    assert df["tags"].to_list() == [[t0 + 1, t0], [], [t0, t0 + 1], [0, t0]]  # first max_len tokens, OOV -> 0
    n0 = fmap.offsets[2]
    assert df["n"].to_list() == [n0 + 2, 0, n0 + 3, n0 + 1]  # ⌊ln 10⌋ = 2; clipped to 3; ⌊ln 5⌋ = 1
    h0 = fmap.offsets[3]

    def hashed(tok):
        return h0 + zlib.crc32(tok.encode()) % 5

    assert df["h"].to_list() == [[hashed("x"), hashed("y"), hashed("z")], [], [hashed("y"), hashed("x")],
                                 [hashed("q"), hashed("y")]]  # fmt: skip
    with pytest.raises(ValueError, match="sequence field"):
        fmap.encode(["a", "x", "1", "y"])


def test_parquet_input_matches_csv(criteo_file, tmp_path):
    rows = [line.split("\t") for line in criteo_file.read_text(encoding="utf-8").splitlines()]
    names = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    df = pl.DataFrame({n: [r[i] for r in rows] for i, n in enumerate(names)})
    df = df.with_columns([pl.when(pl.col(n) == "").then(None).otherwise(pl.col(n)).alias(n) for n in names])
    pq = tmp_path / "c.parquet"
    df.write_parquet(pq)
    schema_text = (Path(__file__).parents[1] / "src/polyzoo/recsys/schemas/criteo.yaml").read_text()
    sp = tmp_path / "criteo_parquet.yaml"
    sp.write_text(schema_text.replace("reader: csv", "reader: parquet"))
    prepare(pq, tmp_path / "a", load_schema(sp, threshold=2), block_bytes=256 * 500)
    prepare(criteo_file, tmp_path / "b", load_schema("criteo", threshold=2))
    for split in ("train", "test"):
        assert read_split(tmp_path / "a", split).equals(read_split(tmp_path / "b", split))


def test_movielens_ids_identical(tmp_path):
    root = tmp_path / "ml"
    root.mkdir()
    (root / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{1 + k % 3}\t{10 + k % 4}\t{1 + k % 5}\t{k}\n" for k in range(1200))
    )
    (root / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttech\t85711\n2\t53\tF\tother\t94043\n3\t33\tF\tother\t11111\n"
    )
    (root / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tA\t1995\tComedy\n11\tB\t1994\tDrama War\n12\tC\t1990\tDrama\n"
    )
    out = tmp_path / "out"
    prepare(root, out, load_schema("movielens"))
    ref = build_movielens_feature_map(root)
    assert FeatureMap.load(out / "feature_map.json").vocabularies == ref.vocabularies
    for split in ("train", "test"):
        batches = list(MovieLensStream(root, ref, batch_size=5000, split=split))
        df = read_split(out, split)
        np.testing.assert_array_equal(df.drop("label").to_numpy(), batches[0]["ids"].numpy())
        np.testing.assert_array_equal(df["label"].to_numpy(), batches[0]["label"].numpy())


def test_separate_split_files(criteo_file, tmp_path):
    test_file = _write(tmp_path / "t.tsv", _criteo_rows(50, seed=3))
    out = tmp_path / "out"
    s = prepare(criteo_file, out, load_schema("criteo", threshold=2), test_input=test_file)
    assert s["rows"] == {"train": 2300, "valid": 0, "test": 50}
    fmt = criteo_format(threshold=2)
    ref, _ = build_feature_map(criteo_file, fmt, split=None)  # every row of the train file counts
    assert FeatureMap.load(out / "feature_map.json").vocabularies == ref.vocabularies
    ids, _ = _stream_ids(test_file, fmt, ref, None)
    np.testing.assert_array_equal(read_split(out, "test").drop("label").to_numpy(), ids)
    assert read_manifest(out)["settings"]["split"]["rule"] == "files"


def test_cli_prepare_folder(tmp_path, criteo_file):
    from polyzoo.recsys.cli import recsys

    out = tmp_path / "out"
    args = ["prepare", str(criteo_file), "--out", str(out), "--threshold", "2", "--valid-share", "0.1", "--seed", "3"]
    res = CliRunner().invoke(recsys, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index('{"status"') :].strip())  # after the progress bar (stderr)
    assert summary["status"] == "prepared" and summary["rows"]["valid"] > 0
    assert "prepare (2 passes)" in res.output  # the bar counts the bytes once per pass (counting, encoding)
    hashed = CliRunner().invoke(
        recsys, ["prepare", str(criteo_file), "--out", str(tmp_path / "h"), "--hash-buckets", "64"]
    )
    assert hashed.exit_code == 0, hashed.output
    assert "prepare:" in hashed.output and "passes" not in hashed.output  # no vocabulary: one pass
    m = read_manifest(out)
    assert m["settings"]["split"]["seed"] == 3 and m["settings"]["protocol"] == "official"
    res = CliRunner().invoke(recsys, [*args[:-1], "4"])
    assert res.exit_code != 0 and "other settings" in res.output


def test_crlf_lines_and_header_give_the_same_ids(tmp_path):
    rows = _criteo_rows(300, seed=5)
    names = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    path = tmp_path / "crlf.csv"
    path.write_bytes((",".join(names) + "\r\n" + "".join(",".join(r) + "\r\n" for r in rows)).encode())
    out = tmp_path / "out"
    prepare(path, out, load_schema("criteo", threshold=1), block_bytes=5000)
    fmt = criteo_format(threshold=1)
    ref, _ = build_feature_map(path, fmt)
    ids, labels = _stream_ids(path, fmt, ref, "train")
    df = read_split(out, "train")
    np.testing.assert_array_equal(df.drop("label").to_numpy(), ids)
    np.testing.assert_array_equal(df["label"].to_numpy(), labels)


def test_older_feature_map_versions_still_load(tmp_path):
    # a version-2 map (written before sequence fields existed): no separator / max_len keys
    v2 = {
        "format_version": 2,
        "fields": [
            {
                "name": "c",
                "kind": "categorical",
                "threshold": 0,
                "hash_buckets": 0,
                "num_buckets": 64,
                "missing": "zero_row",
                "float32": False,
            },
            {
                "name": "i",
                "kind": "integer",
                "threshold": 20,
                "hash_buckets": 0,
                "num_buckets": 64,
                "missing": "as_zero",
                "float32": True,
            },
        ],
        "vocabularies": {"c": ["a", "b"]},
        "num_rows": 1 + 2 + 64,
        "source": None,
        "settings": {},
    }
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    fmap = FeatureMap.load(tmp_path / "v2.json")
    assert fmap.encode(["b", ""]) == [2, 3] and fmap.fields[0].max_len == 0
    fmap.save(tmp_path / "v3.json")
    assert json.loads((tmp_path / "v3.json").read_text())["format_version"] == 3


def test_shard_writer_reports_a_frame_written_only_once_all_its_rows_are(tmp_path):
    """The native path reuses a block's arrays once the writer says the frame over them was written: the callback
    must not come while any of the frame's rows waits for a later shard, and the shards hold the rows in order."""
    import polars as pl

    from polyzoo.recsys.prepare import _ShardWriter

    schema = pl.Schema({"label": pl.Float32, "x": pl.Int32})
    writer = _ShardWriter(tmp_path, "train", schema, row_group_rows=2, shard_rows=5, compression="lz4")
    done: list[int] = []
    heights = [3, 4, 0, 6, 2]  # shards cut at rows 5, 10, 15: frames straddle them
    start = 0
    for i, h in enumerate(heights):
        x = list(range(start, start + h))
        start += h
        frame = pl.DataFrame({"label": [0.0] * h, "x": x}, schema=schema)
        writer.add(frame, lambda i=i: done.append(i))
        # every frame reported is wholly inside the shards written so far (an empty one at once), the rest are not
        written = sum(s["rows"] for s in writer.shards)
        ends = [sum(heights[: k + 1]) for k in range(len(heights))]
        assert sorted(done) == [k for k in range(i + 1) if heights[k] == 0 or ends[k] <= written], (i, done, written)
    shards = writer.close()
    assert sorted(done) == list(range(len(heights)))
    assert [s["rows"] for s in shards] == [5, 5, 5]
    rows = pl.concat([pl.read_parquet(tmp_path / s["path"]) for s in shards])["x"].to_list()
    assert rows == list(range(sum(heights)))


def test_prepare_imports_no_torch() -> None:
    """``polyzoo recsys prepare`` needs no torch: importing it (1.2 s here) used to double the start-up of a small
    prepare (through ``polyzoo.shared.io``'s module-level import)."""
    import subprocess
    import sys

    code = "import sys, polyzoo.recsys.prepare, polyzoo.shared.io; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
