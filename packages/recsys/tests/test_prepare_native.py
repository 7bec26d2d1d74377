"""The native path of ``polyzoo recsys prepare`` (numba kernels over the raw bytes, exact packed keys) against the
block path (the reference: ``NATIVE = False, STREAMING = False``) and ``CTRStream``: identical output folders on
the inputs it takes; on every input outside its scope it declines (the next path runs, with the same output or
the same error and nothing left behind). Unit checks of ``polyzoo.recsys.native`` against a transcription in this
file (key packing, counting tables, integer buckets)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import polyzoo.recsys.prepare as prep
from polyzoo.recsys import native
from polyzoo.recsys.data import CTRStream, avazu_format, build_feature_map, criteo_format
from polyzoo.recsys.features import FeatureMap, FieldSpec, ParseError
from polyzoo.recsys.parquet import read_split
from polyzoo.recsys.prepare import prepare
from polyzoo.recsys.schema import load_schema
from polyzoo.shared.paths import shared_data_dir

NAMES = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
# integer spellings inside the native scope (-?[0-9]{1,18} or empty): leading zeros, -0, the LUT edges
# (|v| <= 2**16 read from the table, beyond computed), 16-18 digit values
INTS = [
    "", "0", "00", "007", "-0", "-00", "1", "-1", "2", "-12", "3", "17", "260", "1202604",
    "65535", "65536", "65537", "-65535", "-65536", "-65537", "131072", "-4294967297",
    "1234567890123456", "-9876543210987654", "12345678901234567", "123456789012345678", "-999999999999999999",
    "000000000000000001",
]  # fmt: skip
# token pieces: printable ASCII incl. punctuation, quotes and spaces (never the delimiter: chosen per file)
PUNCT = " -_.:;!?#$%&'\"()*+/<=>@[\\]^`{|}~"


def _token(rng: np.random.Generator, sep: str) -> str:
    n = int(rng.integers(1, 9))
    alphabet = "abcxyz0123456789" + PUNCT.replace(sep, "")
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=n))


def _rows(n: int, seed: int = 0, sep: str = "\t", distinct: int = 40) -> list[list[str]]:
    """Criteo-shaped rows: a 0/1 label, 13 integers from INTS (and random ones), 26 categorical values: a per-column
    pool of ``distinct`` tokens of 1..8 bytes drawn Zipf-like (so thresholds matter), ~10 % empty."""
    rng = np.random.default_rng(seed)
    fixed = ["a b", "x-1", "12345678", "-", " ", 'a"b', "'", "zzzzzzzz", "0", "00"]
    pools = [fixed + [_token(rng, sep) for _ in range(distinct)] for _ in range(26)]
    if sep == ",":  # a tab inside a comma-separated value (not on the first line: the delimiter is detected there)
        for p in pools:
            p.append("t\tab")
    rows = []
    for i in range(n):
        ints = [INTS[j] if j < len(INTS) else str(int(rng.integers(-(10**6), 10**6))) for j in
                rng.integers(len(INTS) + 8, size=13)]  # fmt: skip
        cats = []
        for c in range(26):
            if rng.random() < 0.1:
                cats.append("")
            else:
                v = pools[c][int(rng.zipf(1.3)) % len(pools[c])]
                cats.append(v.replace("\t", "") if i == 0 else v)
        rows.append([str(int(rng.random() < 0.3)), *ints, *cats])
    return rows


def _write(path: Path, rows, sep: str = "\t", header: bool = False, eol: str = "\n", names=NAMES) -> Path:
    text = (sep.join(names) + eol if header else "") + "".join(sep.join(r) + eol for r in rows)
    path.write_bytes(text.encode("utf-8"))
    return path


def _block(monkeypatch):
    monkeypatch.setattr(prep, "NATIVE", False)
    monkeypatch.setattr(prep, "STREAMING", False)


def _native(monkeypatch):
    monkeypatch.setattr(prep, "NATIVE", True)
    monkeypatch.setattr(prep, "STREAMING", True)


def _errors(monkeypatch, tmp_path: Path, exc, path, schema, left, **kwargs) -> list[str]:
    """The messages of the ``exc`` that ``prepare`` raises with the native path on, then with the block path only;
    each time nothing but the files ``left`` stays in ``tmp_path`` (no output, no staged folder, no intermediate)."""
    messages = []
    for on in (True, False):
        (_native if on else _block)(monkeypatch)
        with pytest.raises(exc) as err:
            prepare(path, tmp_path / "out", schema, **kwargs)
        messages.append(str(err.value))
        assert sorted(tmp_path.iterdir()) == sorted(left)
    _native(monkeypatch)
    return messages


def _both(monkeypatch, tmp_path: Path, path, schema, **kwargs) -> tuple[dict, dict, Path, Path]:
    """Prepare with the native path switched on (the default) and with the block path only."""
    _native(monkeypatch)
    fast = prepare(path, tmp_path / "fast", schema, **kwargs)
    _block(monkeypatch)
    slow = prepare(path, tmp_path / "slow", schema, **kwargs)
    _native(monkeypatch)
    assert slow["reader"] == "blocks"
    return fast, slow, tmp_path / "fast", tmp_path / "slow"


def _avazu_names() -> list[str]:
    return list(load_schema("avazu").columns)


def _leftovers(root: Path) -> list[Path]:
    return [p for pat in (".prepare-native*", ".prepare-intermediate*") for p in root.rglob(pat)]


# ------------------------------------------------------------------------------------------------------------
# 1. identity with the block path


@pytest.mark.parametrize(
    ("protocol", "threshold", "hash_buckets", "valid_share", "sep", "header", "seed"),
    [
        ("official", 2, None, 0.0, "\t", False, 0),
        ("polyzoo", 2, None, 0.0, ",", True, 3),
        ("official", 0, 97, 0.2, ",", False, 7),
        ("polyzoo", 5, None, 0.2, "\t", True, 11),
        ("polyzoo", 1, 97, 0.0, "\t", False, 2**40 + 1),
        ("official", 3, None, 0.2, ",", True, 1),
    ],
)
def test_native_output_identical_to_block_path(
    monkeypatch, tmp_path, protocol, threshold, hash_buckets, valid_share, sep, header, seed, same_folders
):
    path = _write(tmp_path / "c.txt", _rows(2100, seed=seed % 97, sep=sep), sep=sep, header=header)
    schema = load_schema(
        "criteo", protocol=protocol, threshold=threshold, hash_buckets=hash_buckets, valid_share=valid_share
    )
    fast, slow, a, b = _both(monkeypatch, tmp_path, path, schema, seed=seed, shard_rows=700, row_group_rows=256)
    assert fast["reader"] == "native"
    assert fast["rows"] == slow["rows"] and fast["embedding_rows"] == slow["embedding_rows"]
    assert sum(fast["rows"].values()) == 2100 and fast["rows"]["test"] > 0
    assert (fast["rows"]["valid"] > 0) == (valid_share > 0)
    assert not _leftovers(tmp_path)
    same_folders(a, b)
    fmap = FeatureMap.load(a / "feature_map.json")
    if hash_buckets is None:  # the packed keys decode back to the values (spaces, quotes, 8 bytes)
        vocab = {v for name, vs in fmap.vocabularies.items() for v in vs}
        assert {"a b", "12345678", "zzzzzzzz", 'a"b', " "} & vocab


@pytest.mark.parametrize("hash_buckets", [None, 5])
def test_empty_and_constant_columns(monkeypatch, tmp_path, hash_buckets, same_folders):
    """A categorical column empty on every row, one holding one value, an integer column empty on every row."""
    rows = _rows(1200, seed=6)
    for r in rows:
        r[14 + 4], r[14 + 5], r[3] = "", "same", ""
    path = _write(tmp_path / "c.tsv", rows)
    schema = load_schema("criteo", protocol="polyzoo", threshold=0, hash_buckets=hash_buckets)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema, block_bytes=1 << 16)
    assert fast["reader"] == "native"
    same_folders(a, b)
    if hash_buckets is None:
        fmap = FeatureMap.load(a / "feature_map.json")
        assert fmap.vocabularies["C5"] == [] and fmap.vocabularies["C6"] == ["same"]


def test_native_ids_equal_ctrstream(monkeypatch, tmp_path):
    path = _write(tmp_path / "c.tsv", _rows(2500, seed=5))
    for protocol in ("official", "polyzoo"):
        schema = load_schema("criteo", protocol=protocol, threshold=2)
        _native(monkeypatch)
        out = tmp_path / protocol
        assert prepare(path, out, schema, block_bytes=1 << 16)["reader"] == "native"
        fmt = criteo_format(threshold=2, protocol=protocol)
        ref, _ = build_feature_map(path, fmt, split="train")
        assert FeatureMap.load(out / "feature_map.json").vocabularies == ref.vocabularies
        for split in ("train", "test"):
            batches = list(CTRStream(path, fmt, ref, batch_size=500, split=split))
            ids = torch.cat([x["ids"] for x in batches]).numpy()
            labels = torch.cat([x["label"] for x in batches]).numpy()
            got = read_split(out, split)
            np.testing.assert_array_equal(got.drop("label").to_numpy(), ids)
            np.testing.assert_array_equal(got["label"].to_numpy(), labels)


# ------------------------------------------------------------------------------------------------------------
# 2. many blocks, table growth, threads


def _wide_rows(n: int) -> list[list[str]]:
    """Columns with thousands of distinct values (C1: every row; C2: 3000; C3: 6000; C4: 700), so that the
    per-thread tables (4096 slots at first) grow at different times, several times, and the arena is repacked."""
    rows = _rows(n, seed=9)
    for i, r in enumerate(rows):
        r[14] = f"{i:x}"
        r[15] = f"k{(i * 7919) % 3000}"
        r[16] = "" if i % 13 == 0 else f"{(i * 31) % 6000:08d}"
        r[17] = f"v {i % 700}"
    return rows


def test_many_blocks_and_table_growth(monkeypatch, tmp_path, same_folders):
    n = 14000
    path = _write(tmp_path / "w.tsv", _wide_rows(n))
    assert path.stat().st_size > 20 * (1 << 16)  # many blocks
    schema = load_schema("criteo", protocol="polyzoo", threshold=0, valid_share=0.1)
    kw = dict(seed=4, block_bytes=1 << 16, shard_rows=1500, row_group_rows=300)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema, **kw)
    assert fast["reader"] == "native"
    same_folders(a, b)
    fmap = FeatureMap.load(a / "feature_map.json")
    train = {k for k in range(n) if k % 1000 <= 800}
    assert len(fmap.vocabularies["C1"]) < len(train) and len(fmap.vocabularies["C1"]) > 0.8 * len(train)
    # (train rows only: valid and test rows excluded, so a few of C2's 3000 values are missing)
    assert set(fmap.vocabularies["C2"]) <= {f"k{i}" for i in range(3000)} and len(fmap.vocabularies["C2"]) > 2100
    assert sorted(fmap.vocabularies["C4"]) == sorted(f"v {i}" for i in range(700))


def test_thread_counts_give_identical_folders(monkeypatch, tmp_path, same_folders):
    path = _write(tmp_path / "w.tsv", _wide_rows(9000))
    schema = load_schema("criteo", protocol="official", threshold=1, valid_share=0.2)
    outs = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(prep, "NATIVE_THREADS", threads)
        out = tmp_path / f"t{threads}"
        assert (
            prepare(path, out, schema, seed=3, block_bytes=1 << 16, shard_rows=1000, row_group_rows=128)["reader"]
            == "native"
        )
        outs.append(out)
    _block(monkeypatch)
    prepare(path, tmp_path / "ref", schema, seed=3, block_bytes=1 << 16, shard_rows=1000, row_group_rows=128)
    for out in outs:
        same_folders(out, tmp_path / "ref")


@pytest.mark.parametrize("eol", [True, False])
@pytest.mark.parametrize("delta", [-1, 0, 1, 2])
def test_block_boundaries(monkeypatch, tmp_path, delta, eol, same_folders):
    """Files whose size is 2 native buffers (2 x 64 KiB) plus ``delta`` bytes, with and without the last line's
    line end; and a line end exactly at a buffer's last byte."""
    target = 2 * (1 << 16) + delta
    rows = _small_rows(3000, ["1", "2", "3.5"], seed=8)
    lines = [";".join(r) for r in rows]
    size = np.cumsum([len(x) + 1 for x in lines])
    n = int(np.searchsorted(size, target - 40))  # whole lines to ~40 bytes short of the target
    lines = lines[:n]
    pad = target - (int(size[n - 1]) if n else 0) - len(";".join(["1", "2", "3", "c", ""])) - (1 if eol else 0)
    lines.append(";".join(["1", "2", "3", "c", "u" * pad]))
    # and line k's end at byte 65535 (the buffer's last): lengthen line 0 by the distance from the nearest end
    ends = np.cumsum([len(x) + 1 for x in lines]) - 1
    k = int(np.searchsorted(ends, (1 << 16) - 1))
    shift = (1 << 16) - 1 - int(ends[k - 1]) if k else 0
    lines[0] += "u" * shift
    lines[-1] = lines[-1][: len(lines[-1]) - shift]
    data = ("\n".join(lines) + ("\n" if eol else "")).encode()
    assert len(data) == target and data[(1 << 16) - 1] == 10
    path = tmp_path / "b.txt"
    path.write_bytes(data)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, _small_schema(tmp_path, ";"), block_bytes=1 << 16)
    assert fast["reader"] == "native" and fast["rows"]["train"] == n + 1
    same_folders(a, b)


def test_line_longer_than_a_block(monkeypatch, tmp_path, same_folders):
    """A skipped column (Avazu's id) may hold any printable bytes at any length: a line longer than the native
    block buffer (64 KiB) is read into a bigger one."""
    names = _avazu_names()
    rng = np.random.default_rng(1)
    lines = [",".join(names)]
    for i in range(3000):
        ident = "9" * 150_000 if i in (5, 2900) else str(int(rng.integers(10**12)))
        rest = [f"{int(rng.integers(6))}x" for _ in range(21)]
        lines.append(",".join([ident, str(i % 2), f"141021{i % 24:02d}", *rest]))
    lines[-1] = "8" * 70_000 + lines[-1]  # the last line long (its id) and without a line end
    path = tmp_path / "a.csv"
    path.write_text("\n".join(lines))
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, load_schema("avazu", threshold=1), block_bytes=1 << 16)
    assert fast["reader"] == "native"
    same_folders(a, b)


# ------------------------------------------------------------------------------------------------------------
# 3. declines: the next path runs with the same output, or the same error and nothing left behind


def _dirty(tmp_path: Path, bad_line: bytes, at: int = 1200, n: int = 1500, eol: bytes = b"\n") -> Path:
    rows = _rows(n, seed=12)
    lines = [("\t".join(r)).encode() for r in rows]
    lines[at] = bad_line
    path = tmp_path / "d.tsv"
    path.write_bytes(eol.join(lines) + eol)
    return path


def _line(**change) -> bytes:
    """A clean line with some fields replaced (by column name)."""
    row = dict(zip(NAMES, ["1", *["5"] * 13, *["tok"] * 26], strict=True))
    row.update(change)
    return "\t".join(row.values()).encode("utf-8")


SAME_OUTPUT = {  # outside the native scope, but well formed: the output equals the block path's
    "non_ascii": _line(C3="vé"),
    "nul": _line(C3="a\x00b"),
    "stray_cr": _line(C3="a\rb"),
    "del_byte": _line(C3="a\x7fb"),
    "ctrl_byte": _line(C3="a\x01b"),
    "nine_bytes": _line(C3="123456789"),
    "int_float": _line(I2="1.5"),
    "int_exp": _line(I2="1e3"),
    "int_space": _line(I2=" 7"),
    "int_plus": _line(I2="+5"),
    "int_19_digits": _line(I2="1234567890123456789"),
    "int_inf": _line(I2="inf"),
    "int_nan": _line(I2="nan"),
    "label_float": _line(label="1.0"),
    "label_space": _line(label=" 0"),
    "blank_line": b"",
}


@pytest.mark.parametrize("kind", sorted(SAME_OUTPUT))
def test_declines_with_the_same_output(monkeypatch, tmp_path, kind, same_folders):
    path = _dirty(tmp_path, SAME_OUTPUT[kind])
    schema = load_schema("criteo", threshold=1, valid_share=0.1)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema, seed=1, block_bytes=1 << 16)
    assert fast["reader"] != "native"
    assert fast["bad_rows"] == 0
    same_folders(a, b)
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("at", [0, 2999])
def test_decline_in_some_block_leaves_nothing_behind(monkeypatch, tmp_path, threads, at, same_folders):
    """The kernel declines in the first or the last of many blocks, with 1 or 3 threads: the other path's output,
    and none of the native intermediate files (written for the blocks before and beside it) left."""
    monkeypatch.setattr(prep, "NATIVE_THREADS", threads)
    path = _dirty(tmp_path, _line(C9="vé"), at=at, n=3000)
    assert path.stat().st_size > 6 * (1 << 16)
    schema = load_schema("criteo", threshold=1)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema, block_bytes=1 << 16)
    assert fast["reader"] == "streaming"
    same_folders(a, b)
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("kind", ["crlf", "bom", "trailing_blank"])
def test_declines_on_line_ends_and_bom(monkeypatch, tmp_path, kind, same_folders):
    rows = _rows(1500, seed=13)
    path = _write(tmp_path / "c.tsv", rows, eol="\r\n" if kind == "crlf" else "\n")
    data = path.read_bytes()
    if kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "trailing_blank":
        data += b"\n\n"
    path.write_bytes(data)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, load_schema("criteo", threshold=1), block_bytes=1 << 16)
    assert fast["reader"] != "native"
    same_folders(a, b)
    assert not _leftovers(tmp_path)


MALFORMED = {  # (line, the block path's message for line 1201 of d.tsv)
    "short": (b"\t".join(_line().split(b"\t")[:-1]), "expected 40 '\\t'-separated fields, got 39"),
    "long": (_line() + b"\textra", "expected 40 '\\t'-separated fields, got 41"),
    "label_2": (_line(label="2"), "label: expected 0 or 1, got '2'"),
    "label_empty": (_line(label=""), "label: expected 0 or 1, got ''"),
    "int_minus": (_line(I4="-"), "field I4: expected a number, got '-'"),
    "int_trailing_minus": (_line(I4="1-"), "field I4: expected a number, got '1-'"),
    "int_word": (_line(I4="zz"), "field I4: expected a number, got 'zz'"),
    "utf8": (b"\xff\tbad", "not UTF-8 text (byte 0xff at column 1)"),
}


@pytest.mark.parametrize("at", [3, 1200])
@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_gives_the_block_paths_error(monkeypatch, tmp_path, kind, at):
    bad, message = MALFORMED[kind]
    path = _dirty(tmp_path, bad, at=at)
    schema = load_schema("criteo", threshold=0)
    messages = _errors(monkeypatch, tmp_path, ParseError, path, schema, [path], block_bytes=1 << 16)
    assert messages[0] == messages[1] == f"{path}:{at + 1}: {message}"


# ------------------------------------------------------------------------------------------------------------
# custom schemas: binning none (check_number), a multi-byte delimiter, a delimiter that is an integer's sign


def _small_schema(tmp_path: Path, delimiter: str, name: str = "s") -> object:
    spec = {
        "name": name,
        "columns": ["y", "n", "i", "c", "unused"],
        "label": "y",
        "delimiter": delimiter,
        "header": False,
        "split": {"rule": "all"},
        "fields": [
            {"name": "n", "type": "numeric", "binning": "none"},
            {"name": "i", "type": "integer", "num_buckets": 12},
            {"name": "c", "type": "categorical"},
        ],
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    return load_schema(tmp_path / f"{name}.json", threshold=0)


def _small_rows(n: int, numbers: list[str], seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [
        [str(i % 2), numbers[i % len(numbers)], INTS[int(rng.integers(len(INTS)))], f"c{int(rng.integers(50))}",
         "x" * int(rng.integers(0, 30))]
        for i in range(n)
    ]  # fmt: skip


def test_binning_none_values_python_float_accepts_stay_native(monkeypatch, tmp_path, same_folders):
    numbers = ["1", "1.5", "nan", "inf", "-inf", "1e3", "1_0", " 7", ".5", "", "00", "-0"]
    path = _write(tmp_path / "n.txt", _small_rows(600, numbers), sep=";")
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, _small_schema(tmp_path, ";"))
    assert fast["reader"] == "native"
    same_folders(a, b)
    # the raw spellings are the vocabulary (binning none: a number kept as its string)
    assert set(FeatureMap.load(a / "feature_map.json").vocabularies["n"]) == set(numbers) - {""}


def test_binning_none_value_python_float_refuses(monkeypatch, tmp_path):
    rows = _small_rows(600, ["1", "2.5"])
    rows[450][1] = "1.2.3"  # ASCII, <= 8 bytes: the kernel accepts it; the check declines
    path = _write(tmp_path / "n.txt", rows, sep=";")
    schema = _small_schema(tmp_path, ";")
    messages = _errors(monkeypatch, tmp_path, ParseError, path, schema, [path, tmp_path / "s.json"])
    assert messages[0] == messages[1] == f"{path}:451: field n: expected a number, got '1.2.3'"


def test_columns_read_by_two_fields(monkeypatch, tmp_path, same_folders):
    """One integer column binned twice (other buckets, float32, as_zero) and one categorical column read by a
    vocabulary field and a hashing field: native and identical."""
    spec = {
        "name": "two",
        "columns": ["y", "n", "i", "c", "unused"],
        "label": "y",
        "delimiter": ",",
        "split": {"rule": "mod1000", "valid_share": 0.3},
        "fields": [
            {"name": "i", "type": "integer", "num_buckets": 12},
            {"name": "c", "type": "categorical", "threshold": 2},
            {"name": "i32", "type": "integer", "column": "i", "num_buckets": 40, "float32": True, "missing": "as_zero"},
            {"name": "c_hashed", "type": "categorical", "column": "c", "hash_buckets": 7},
        ],
    }
    (tmp_path / "two.json").write_text(json.dumps(spec))
    schema = load_schema(tmp_path / "two.json")
    path = _write(tmp_path / "t.csv", _small_rows(1500, ["1"], seed=4), sep=",", header=True, names=spec["columns"])
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema, seed=6, row_group_rows=100, shard_rows=400)
    assert fast["reader"] == "native" and fast["rows"]["valid"] > 0
    same_folders(a, b)


def test_label_column_read_as_a_field_declines(monkeypatch, tmp_path, same_folders):
    spec = {
        "name": "lab",
        "columns": ["y", "n", "i", "c", "unused"],
        "label": "y",
        "delimiter": ",",
        "header": False,
        "fields": [{"name": "i", "type": "integer"}, {"name": "y_too", "type": "categorical", "column": "y"}],
    }
    (tmp_path / "lab.json").write_text(json.dumps(spec))
    path = _write(tmp_path / "l.csv", _small_rows(900, ["1"]), sep=",")
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, load_schema(tmp_path / "lab.json", threshold=0))
    assert fast["reader"] == "streaming"
    same_folders(a, b)


def test_multibyte_delimiter_declines(monkeypatch, tmp_path):
    """The native path declines a delimiter of two UTF-8 bytes; the block path then gives its own answer (today
    Polars' error: its CSV reader takes one-byte separators only), the same with the native path on or off."""
    path = _write(tmp_path / "m.txt", _small_rows(400, ["1", "2"]), sep="§")
    schema = _small_schema(tmp_path, "§")
    messages = _errors(monkeypatch, tmp_path, ValueError, path, schema, [path, tmp_path / "s.json"])
    assert messages[0] == messages[1] and "single byte" in messages[0]


def _minus_rows(n: int) -> list[list[str]]:
    """Rows for ``-`` as the delimiter: no negative or empty integer values, no ``-`` inside values."""
    rows = _small_rows(n, ["1", "2", "3"])
    for r in rows:
        r[2] = r[2].lstrip("-") or "0"
        r[3] = r[3].replace("-", "")
    return rows


def test_minus_as_delimiter(monkeypatch, tmp_path, same_folders):
    """With ``-`` as the delimiter a clean file is native and identical."""
    path = _write(tmp_path / "m.txt", _minus_rows(500), sep="-")
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, _small_schema(tmp_path, "-"))
    assert fast["reader"] == "native"
    same_folders(a, b)


def test_minus_as_delimiter_empty_integer_declines(monkeypatch, tmp_path, same_folders):
    rows = _minus_rows(500)
    rows[7][2] = ""  # an empty integer value, then the delimiter '-' and a non-digit
    path = _write(tmp_path / "m.txt", rows, sep="-")
    _fast, _slow, a, b = _both(monkeypatch, tmp_path, path, _small_schema(tmp_path, "-"))
    same_folders(a, b)


def test_minus_as_delimiter_with_an_extra_field(monkeypatch, tmp_path):
    """With '-' as the delimiter, an empty integer field followed by digits is two fields, not a negative number
    (the kernel once read the delimiter as the value's sign and accepted this line, one field too many)."""
    lines = ["-".join(r) for r in _minus_rows(500)]
    lines[300] = "1-2--5-c1-x"  # 6 fields: y, n, i='', '5', c1, x (the schema has 5 columns)
    path = tmp_path / "m.txt"
    path.write_text("\n".join(lines) + "\n")
    schema = _small_schema(tmp_path, "-")
    for on in (False, True):
        (_native if on else _block)(monkeypatch)
        with pytest.raises(ParseError, match=r"m\.txt:301: expected 5 '-'-separated fields, got 6$"):
            prepare(path, tmp_path / "out", schema)


# ------------------------------------------------------------------------------------------------------------
# 4. separate split files; 5. the last line without a line end; header-only and empty files


@pytest.mark.parametrize(
    ("layout", "threads"), [("valid_and_test", None), ("test_only_with_share", None), ("small_train", 1)]
)
def test_separate_split_files_native(monkeypatch, tmp_path, layout, threads, same_folders):
    """(The inputs' intermediate files once shared names, so a valid/test file overwrote the train file's.)"""
    monkeypatch.setattr(prep, "NATIVE_THREADS", threads)
    n_train = 60 if layout == "small_train" else 900
    train = _write(tmp_path / "train.tsv", _rows(n_train, seed=1))
    valid = _write(tmp_path / "valid.tsv", _rows(700 if layout == "small_train" else 120, seed=2), header=True)
    test = _write(tmp_path / "test.csv", _rows(80, seed=3, sep=","), sep=",")
    if layout == "test_only_with_share":
        schema = load_schema("criteo", threshold=1, valid_share=0.25)
        kw = dict(test_input=test, seed=8)
    else:
        schema = load_schema("criteo", threshold=1)
        kw = dict(valid_input=valid, test_input=test)
    fast, slow, a, b = _both(monkeypatch, tmp_path, train, schema, **kw)
    assert fast["reader"] == "native"
    assert fast["rows"] == slow["rows"]
    if layout == "test_only_with_share":
        assert fast["rows"]["test"] == 80 and 0 < fast["rows"]["valid"] < 900 - 100
    else:
        assert fast["rows"] == {"train": n_train, "valid": 700 if layout == "small_train" else 120, "test": 80}
    same_folders(a, b)
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("header", [False, True])
def test_last_line_without_line_end(monkeypatch, tmp_path, header, same_folders):
    path = _write(tmp_path / "c.tsv", _rows(1300, seed=4), header=header)
    path.write_bytes(path.read_bytes()[:-1])
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, load_schema("criteo", threshold=1), block_bytes=1 << 16)
    assert fast["reader"] == "native" and sum(fast["rows"].values()) == 1300
    same_folders(a, b)


@pytest.mark.parametrize("content", ["header_only", "header_no_eol", "empty"])
@pytest.mark.parametrize("hash_buckets", [None, 97])
def test_no_data_rows_same_error(monkeypatch, tmp_path, content, hash_buckets):
    path = tmp_path / "e.tsv"
    path.write_text({"header_only": "\t".join(NAMES) + "\n", "header_no_eol": "\t".join(NAMES), "empty": ""}[content])
    schema = load_schema("criteo", threshold=1, hash_buckets=hash_buckets)
    messages = _errors(monkeypatch, tmp_path, ValueError, path, schema, [path])
    what = "no usable train rows to build vocabularies from" if hash_buckets is None else "no train rows"
    assert messages[0] == messages[1] and messages[0].startswith(f"{path}: {what}")


# ------------------------------------------------------------------------------------------------------------
# 6. Avazu (hour transforms; the id column skipped)


@pytest.mark.parametrize("hash_buckets", [None, 13])
def test_avazu_sample_native(monkeypatch, tmp_path, hash_buckets, same_folders):
    path = shared_data_dir(__file__) / "ctr" / "avazu_sample.txt"
    if not path.is_file():
        pytest.skip(f"shared CTR sample {path} not found")
    schema = load_schema("avazu", threshold=1, hash_buckets=hash_buckets)
    fast, _slow, a, b = _both(monkeypatch, tmp_path, path, schema)
    assert fast["reader"] == "native"
    same_folders(a, b)
    if hash_buckets is None:
        ref, _ = build_feature_map(path, avazu_format(threshold=1), split="train")
        assert FeatureMap.load(a / "feature_map.json").vocabularies == ref.vocabularies


@pytest.mark.parametrize(("hour", "at"), [("", 2), ("14139900", 3), ("", 60), ("", 852), ("1410210", 853)])
def test_avazu_bad_hour_gives_the_block_paths_error(monkeypatch, tmp_path, hour, at):
    """(Lines 852, 853 are data rows 850, 851: test rows, which the transform checks too.)"""
    names = _avazu_names()
    lines = [",".join(names)]
    for i in range(max(80, at)):
        h = hour if i + 2 == at else f"141021{i % 24:02d}"
        lines.append(",".join([str(10**15 + i), str(i % 2), h, *[f"a{i % 3}"] * 21]))
    av = tmp_path / "a.csv"
    av.write_text("\n".join(lines) + "\n")
    messages = _errors(monkeypatch, tmp_path, ParseError, av, load_schema("avazu", threshold=0), [av])
    assert messages[0] == messages[1] == f"{av}:{at}: field hour: expected YYMMDDHH, got {hour!r}"


# ------------------------------------------------------------------------------------------------------------
# 7. units of polyzoo.recsys.native against a transcription here


def _pack(value: str) -> int:
    """A value's key: its bytes as a little-endian unsigned integer (at most 8 bytes)."""
    raw = value.encode("ascii")
    assert 1 <= len(raw) <= 8
    return int.from_bytes(raw, "little")


def test_pack_and_decode_keys():
    values = ["a", "ab", "a b", "x-1", "12345678", "~~~~~~~~", " ", "\t", "0", "zz\"'", "\x7e\x20"]
    keys = np.array([_pack(v) for v in values], dtype=np.uint64)
    assert native.decode_keys(keys) == values
    assert _pack("a") == 97 and _pack("ab") == 97 + 98 * 256 and _pack("12345678") == 0x3837363534333231


def _layout():
    # columns: label, an integer, a categorical, a skipped one, another categorical
    kinds = np.array([native.LABEL, native.INT, native.CAT, native.SKIP, native.CAT], dtype=np.int8)
    slots = np.array([0, 0, 0, 0, 1], dtype=np.int64)
    return kinds, slots


_H = 4  # the integer table of the tests below: buckets 100 + v for v in -4..4, 99 for an empty value


def _int_args(n: int, keep: bool) -> tuple:
    """``scan_block``'s integer arguments for one integer column (:func:`_layout`): the table, its row, the bucket
    output (row 1 of a 2-row array, row 0 must stay untouched), ``keep``, the values (-7 = unwritten), ``left``."""
    luts = np.array([[100 + v for v in range(-_H, _H + 1)] + [99]], dtype=np.int32)
    buckets = np.full((2, n), -9, dtype=np.int32)
    return (luts, np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64), buckets,
            np.array([keep], dtype=np.uint8), np.full((1, n), -7.0), np.zeros(1, dtype=np.int64))  # fmt: skip


def _scan(text: bytes, train: np.ndarray, capacity: int, keep: bool = True):
    kinds, slots = _layout()
    buf = np.frombuffer(text, dtype=np.uint8).copy()
    n = text.count(b"\n")
    tables = native.Tables(2, capacity)
    label = np.full(n, -1, dtype=np.int8)
    locs = np.full((2, n), -9, dtype=np.int32)
    int_args = _int_args(n, keep)
    p = r = 0
    grows = 0
    while True:
        p, r, outcome = native.scan_block(buf, p, r, native.byte_classes(ord("\t")), kinds, slots, train,
                                          *tables.args(), label, locs, *int_args)  # fmt: skip
        if outcome != native.GROW:
            break
        tables.grow()
        grows += 1
    _, _, _, buckets, _, ints, left = int_args
    assert (buckets[0] == -9).all()
    return outcome, p, r, tables, label, ints, locs, grows, buckets[1], int(left[0])


def _want_buckets(values: list[str]) -> tuple[list[int], list[float], int]:
    """What the kernel gives for integer values with :func:`_int_args`' table: buckets, values (keep), beyond."""
    buckets = [99 if not v else 100 + int(v) if abs(int(v)) <= _H else -1 for v in values]
    return buckets, [float(v) if v else np.nan for v in values], sum(1 for v in values if v and abs(int(v)) > _H)


@pytest.mark.parametrize(("capacity", "keep"), [(8, True), (4096, True), (4096, False)])
def test_scan_block_counts_equal_a_counter(capacity, keep):
    rng = np.random.default_rng(3)
    pool_a = ["a", "b b", "12345678", "-", "x-1", *[f"u{i}" for i in range(300)]]
    pool_b = ["q", "r", "s", ""]
    rows = []
    for _ in range(2000):
        rows.append([str(int(rng.integers(2))), INTS[int(rng.integers(len(INTS)))],
                     "" if rng.random() < 0.1 else pool_a[int(rng.integers(len(pool_a)))],
                     "anything at all, any length " * int(rng.integers(3)),
                     pool_b[int(rng.integers(len(pool_b)))]])  # fmt: skip
    text = "".join("\t".join(r) + "\n" for r in rows).encode()
    train = (rng.random(len(rows)) < 0.7).astype(np.int64)
    outcome, p, r, tables, label, ints, locs, grows, buckets, left = _scan(text, train, capacity, keep)
    assert (outcome, p, r) == (native.OK, len(text), len(rows))
    assert (grows > 0) == (capacity == 8)
    np.testing.assert_array_equal(label, [int(row[0]) for row in rows])
    want_buckets, want_ints, beyond = _want_buckets([row[1] for row in rows])
    np.testing.assert_array_equal(buckets, want_buckets)
    assert left == beyond > 0
    if keep:  # every value, else only those beyond the table (the rest unwritten)
        np.testing.assert_array_equal(ints[0], want_ints)
    else:
        np.testing.assert_array_equal(ints[0], np.where(np.array(want_buckets) == -1, want_ints, -7.0))
    for j, col in ((0, 2), (1, 4)):
        order = list(dict.fromkeys(row[col] for row in rows if row[col]))  # entry numbers: first appearance
        counts = Counter(row[col] for row, t in zip(rows, train, strict=True) if t and row[col])
        keys, got_counts = tables.entries(j)
        assert keys.tolist() == [_pack(v) for v in order]
        assert native.decode_keys(keys) == order
        assert got_counts.tolist() == [counts[v] for v in order]
        assert int(tables.nent[j]) == len(order)
        assert int(tables.empty[j]) == sum(1 for row in rows if not row[col])
        want_locs = [order.index(row[col]) if row[col] else -1 for row in rows]
        np.testing.assert_array_equal(locs[j], want_locs)


@pytest.mark.parametrize(
    "line",
    [
        b"1\t5\tabc\tskip\tq\r",  # CR
        b"1\t5\ta\xc3\xa9\tskip\tq",  # non-ASCII
        b"1\t5\ta\x00\tskip\tq",  # NUL
        b"1\t5\ta\x7f\tskip\tq",  # DEL
        b"1\t5\t123456789\tskip\tq",  # 9 bytes
        b"1\t5\tabc\tskip\t123456789",  # 9 bytes in the last field
        b"1\t-\tabc\tskip\tq",  # a lone minus
        b"1\t1-\tabc\tskip\tq",
        b"1\t--1\tabc\tskip\tq",
        b"1\t+1\tabc\tskip\tq",
        b"1\t1.0\tabc\tskip\tq",
        b"1\t 1\tabc\tskip\tq",
        b"1\t1234567890123456789\tabc\tskip\tq",  # 19 digits
        b"1\t-1234567890123456789\tabc\tskip\tq",
        b"2\t5\tabc\tskip\tq",
        b"\t5\tabc\tskip\tq",
        b"10\t5\tabc\tskip\tq",
        b"1\t5\tabc\tskip",  # a field short
        b"1\t5\tabc\tskip\tq\tr",  # a field long
        b"",  # blank
    ],
)
def test_scan_block_declines(line):
    good = b"0\t-12\tab\tx y\tq\n" * 5
    text = good + line + b"\n" + good
    outcome, _p, r, *_ = _scan(text, np.ones(11, dtype=np.int64), 4096)
    assert outcome == native.DECLINE and r == 5


def test_scan_block_accepts_the_scope_edges():
    text = b"1\t-999999999999999999\t~~~~~~~~\t\t\n0\t\t\t\t\n1\t000000000000000000\t\tz\t12345678\n"
    outcome, p, r, tables, _label, ints, locs, _, buckets, left = _scan(text, np.array([1, 1, 0], dtype=np.int64), 4096)
    assert (outcome, p, r) == (native.OK, len(text), 3)
    np.testing.assert_array_equal(ints[0], [-999999999999999999.0, np.nan, 0.0])
    np.testing.assert_array_equal(buckets, [-1, 99, 100])
    assert left == 1
    np.testing.assert_array_equal(locs, [[0, -1, -1], [-1, -1, 0]])
    assert native.decode_keys(tables.entries(1)[0]) == ["12345678"] and tables.entries(1)[1].tolist() == [0]


def _scan_with(text: bytes, delimiter: str):
    """:func:`_scan`'s layout (label, integer, categorical, skipped, categorical) with another delimiter, every row
    train, tables grown as needed."""
    kinds, slots = _layout()
    buf = np.frombuffer(text, dtype=np.uint8).copy()
    n = text.count(b"\n")
    tables = native.Tables(2, 8)
    label, locs = np.full(n, -1, dtype=np.int8), np.full((2, n), -9, dtype=np.int32)
    int_args, train = _int_args(n, False), np.ones(n, dtype=np.int64)
    p = r = 0
    while True:
        p, r, outcome = native.scan_block(buf, p, r, native.byte_classes(ord(delimiter)), kinds, slots, train,
                                          *tables.args(), label, locs, *int_args)  # fmt: skip
        if outcome != native.GROW:
            return outcome, p, r, tables, locs
        tables.grow()


@pytest.mark.parametrize("delimiter", [",", "\t", ";", "|", "-", " "])
def test_scan_block_word_reads_give_the_byte_loops_keys(delimiter):
    """Categorical values are read 8 bytes at a time where the buffer holds 9 more bytes: every printable byte (and
    tab where it is not the delimiter: a value's byte then, which the word read hands to the byte loop), every
    length 0..8, at every offset and up to the buffer's last bytes, gives the keys of a transcription."""
    rng = np.random.default_rng(7)
    alphabet = [chr(c) for c in range(32, 127) if chr(c) != delimiter] + (["\t"] if delimiter != "\t" else [])
    rows = []
    for _ in range(3000):
        a, b = ("".join(alphabet[int(j)] for j in rng.integers(len(alphabet), size=int(rng.integers(9))))
                for _ in range(2))  # fmt: skip
        rows.append([str(int(rng.integers(2))), str(int(rng.integers(1000))), a, "x" * int(rng.integers(4)), b])
    text = "".join(delimiter.join(r) + "\n" for r in rows).encode()
    outcome, p, r, tables, locs = _scan_with(text, delimiter)
    assert (outcome, p, r) == (native.OK, len(text), len(rows))
    for j, col in ((0, 2), (1, 4)):
        order = list(dict.fromkeys(row[col] for row in rows if row[col]))
        assert tables.entries(j)[0].tolist() == [_pack(v) for v in order]
        np.testing.assert_array_equal(locs[j], [order.index(row[col]) if row[col] else -1 for row in rows])


@pytest.mark.parametrize("value", [b"ab\x7fcdefg", b"\x80", b"abcdefg\xff", b"abc\rde", b"abcdefghi", b"a\x01"])
@pytest.mark.parametrize("at", [0, 1, 2, 3])
def test_scan_block_word_reads_decline_outside_the_scope(value, at):
    """A byte outside the scope at any place of the word (and a 9-byte value) declines with a comma too."""
    good = b"0,1,ab,x,q\n" * 5
    line = b"1,5," + b"y" * at + value + b",skip,q\n"
    outcome, _p, r, _tables, _locs = _scan_with(good + line + good, ",")
    assert outcome == native.DECLINE and r == 5


def _log_square(x: float, num_buckets: int, missing: str, float32: bool) -> int:
    """The local bucket of one value: 0 for missing (1 with ``as_zero``: the missing value read as 0), else
    1 + min(floor(ln(x^2 + 1)), num_buckets - 1), in float32 arithmetic when asked; non-finite -> the last."""
    if np.isnan(x):
        return 1 if missing == "as_zero" else 0
    if np.isinf(x):
        return num_buckets
    with np.errstate(over="ignore"):
        if float32:
            v = np.log(np.float32(x) * np.float32(x) + np.float32(1.0))
        else:
            v = np.log(np.float64(x) * np.float64(x) + 1.0)
    b = int(np.floor(v)) if np.isfinite(v) else num_buckets - 1
    return min(b, num_buckets - 1) + 1


@pytest.mark.parametrize(
    ("num_buckets", "missing", "float32"), [(64, "zero_row", False), (64, "as_zero", True), (12, "zero_row", True)]
)
def test_integer_buckets_equal_a_transcription(num_buckets, missing, float32):
    rng = np.random.default_rng(num_buckets)
    h = 1 << 16
    x = np.concatenate([
        rng.integers(-h - 50, h + 50, size=3000), rng.integers(-(10**18) + 1, 10**18, size=500),
        [0, 1, -1, h, -h, h + 1, -h - 1, 10**17, 999999999999999999, -999999999999999999],
    ]).astype(np.float64)  # fmt: skip
    x[rng.integers(len(x), size=40)] = np.nan
    want = np.array([_log_square(v, num_buckets, missing, float32) for v in x])
    spec = FieldSpec("f", "integer", num_buckets=num_buckets, missing=missing, float32=float32)
    np.testing.assert_array_equal(prep._integer_local_lut(spec, x), want)
    lut, miss = prep._bucket_lut(num_buckets, missing, float32)
    assert len(lut) == 2 * h + 1 and miss == (1 if missing == "as_zero" else 0)
    grid = np.arange(-h, h + 1, dtype=np.float64)
    np.testing.assert_array_equal(lut, [_log_square(v, num_buckets, missing, float32) for v in grid])
    out = np.empty(len(x), dtype=np.int32)
    left = native.lookup_buckets(x, lut, miss, out)
    inside = ~np.isnan(x) & (np.abs(x) <= h)
    assert left == int((~np.isnan(x) & ~inside).sum())
    np.testing.assert_array_equal(out[inside], want[inside])
    np.testing.assert_array_equal(out[np.isnan(x)], miss)
    assert (out[~np.isnan(x) & ~inside] == -1).all()


def _vm_flags(a: np.ndarray) -> list[str]:
    """The ``VmFlags`` of the mapping holding ``a``'s middle byte (``/proc/self/smaps``; numpy advises from the
    first 2 MiB boundary inside an allocation on, so the first byte can lie in a mapping of its own)."""
    at = a.__array_interface__["data"][0] + a.nbytes // 2
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= at < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError("no mapping holds the array")


def test_work_arrays_are_writable_and_unadvised() -> None:
    small = prep._work_array((3, 5), np.int32)
    big = prep._work_array((7, 1 << 20), np.int32)  # 28 MiB
    for a, shape in ((small, (3, 5)), (big, (7, 1 << 20))):
        assert a.shape == shape and a.dtype == np.int32 and a.flags.writeable and a.flags.c_contiguous
    big[-1, -1] = 7
    assert big.reshape(-1)[-1] == 7
    if not Path("/proc/self/smaps").is_file():
        pytest.skip("no /proc/self/smaps to read the mapping's flags from")
    # numpy advises huge pages on arrays of 4 MiB and more (where it can); the work array's mapping carries no
    # such advice ("hg" in smaps' VmFlags)
    assert "hg" not in _vm_flags(big)
    plain = np.empty((7, 1 << 20), dtype=np.int32)
    plain[:] = 1
    if "hg" not in _vm_flags(plain):
        pytest.skip("numpy gave no huge-page advice here either (kernel or numpy setting): nothing to compare")


def test_work_array_falls_back_to_numpy_when_a_mapping_is_refused(monkeypatch) -> None:
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refuse)
    a = prep._work_array((2, 1 << 20), np.float64)  # 16 MiB: would be mapped
    assert a.shape == (2, 1 << 20) and a.dtype == np.float64 and a.flags.writeable
