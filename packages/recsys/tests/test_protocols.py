"""Criteo protocols against an independent transcription of the official xDeepInt reader, and the feature map's
record of its input (stale maps, empty inputs).

Transcribed from ``yanyachen/xDeepInt`` (``experiment/criteo/nn1.py``, ``src/io.py``, ``src/transformation.py``):
``CsvDataset(record_defaults=int64 0 for I1..I12, na_value="")`` → missing integer = 0; ``log_square_binning_fn``
casts to float32 and takes ``floor(log(x ** 2 + 1))`` in float32; identity column of 64 buckets; vocabulary =
values with count > threshold, the empty string excluded; OOV / missing categorical → dropped (zero vector).
"""

from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
import pytest

from polyzoo.recsys.data import CTRStream, MovieLensStream, build_feature_map, criteo_format, format_for_map
from polyzoo.recsys.features import FeatureMap

# integers whose float32 bucket is one higher than the exact one (found by exhaustive search below 5e6)
FLOAT32_EDGE = [1202604, 1982759]


def _official_bucket(raw: str) -> int:
    """The official integer path: int64 parse with default 0, float32 cast, floor(log(x**2 + 1)) in float32."""
    x = np.float32(np.int64(int(raw)) if raw != "" else np.int64(0))
    return int(np.floor(np.log(x * x + np.float32(1))))


def _rows():
    """Criteo rows (label, 13 integers, 26 categoricals) with missing integers, -1/0/1, float32 edge values."""
    ints = [
        ["", "0", "-1", "1", "", "5", "1202604", "", "3", "", "7", "2", "9"],
        ["1", "", "", "1982759", "0", "", "", "4", "", "12", "", "-3", ""],
        ["2", "1", "0", "", "100", "5", "40", "", "", "1", "1", "", "13"],
        ["", "", "", "", "", "", "", "", "", "", "", "", ""],
    ]
    rows = []
    for k, iv in enumerate(ints):
        cats = [f"v{(k + j) % 2}" if j % 3 else "" for j in range(26)]
        rows.append([str(k % 2), *iv, *cats])
    return rows


@pytest.fixture
def criteo_file(tmp_path):
    path = tmp_path / "criteo.txt"
    path.write_text("".join("\t".join(r) + "\n" for r in _rows()))
    return path


def _official_ids(rows, threshold):
    """Expected global ids: row 0 = zero row, then I1..I12 (64 rows each), then C1..C26 vocabularies
    (count > threshold, '' excluded, most frequent first, ties by value)."""
    counts = [Counter(r[14 + c] for r in rows if r[14 + c] != "") for c in range(26)]
    vocabs = [sorted([v for v, n in cnt.items() if n > threshold], key=lambda v: (-cnt[v], v)) for cnt in counts]
    out = []
    for r in rows:
        ids = [1 + 64 * j + _official_bucket(r[1 + j]) for j in range(12)]  # I13 (r[13]) is never read
        start = 1 + 12 * 64
        for c in range(26):
            v = r[14 + c]
            ids.append(start + vocabs[c].index(v) if v in vocabs[c] else 0)
            start += len(vocabs[c])
        out.append(ids)
    return np.array(out)


def test_official_protocol_equals_transcription(criteo_file):
    fmt = criteo_format(threshold=1)  # the default protocol is the official one
    assert fmt.protocol == "official"
    fmap, stats = build_feature_map(criteo_file, fmt, split=None)
    assert stats["rows"] == 4 and fmap.num_fields == 38 and "I13" not in fmap.names
    ids = next(iter(CTRStream(criteo_file, fmt, fmap, batch_size=16)))["ids"].numpy()
    expected = _official_ids(_rows(), threshold=1)
    np.testing.assert_array_equal(ids, expected)
    # a missing integer shares bucket 0 with -1, 0 and 1 (a trained row, not the zero row)
    assert [ids[0, j] - (1 + 64 * j) for j in range(4)] == [0, 0, 0, 0]  # "", "0", "-1", "1"
    assert ids[3, :12].tolist() == [1 + 64 * j for j in range(12)]
    # float32 binning: one bucket above exact arithmetic for these values
    assert ids[0, 6] == 1 + 64 * 6 + math.floor(math.log(FLOAT32_EDGE[0] ** 2 + 1)) + 1
    assert ids[1, 3] == 1 + 64 * 3 + math.floor(math.log(FLOAT32_EDGE[1] ** 2 + 1)) + 1


def test_polyzoo_protocol_differs_where_integers_are_missing(criteo_file):
    fmt = criteo_format(threshold=1, protocol="polyzoo")
    fmap, _ = build_feature_map(criteo_file, fmt, split=None)
    assert fmap.num_fields == 39 and fmap.names[12] == "I13"
    ids = next(iter(CTRStream(criteo_file, fmt, fmap, batch_size=16)))["ids"].numpy()
    rows = _rows()
    for i, r in enumerate(rows):
        for j in range(13):
            raw = r[1 + j]
            if raw == "":
                assert ids[i, j] == 0  # the zero row
            else:
                exact = min(math.floor(math.log(int(raw) ** 2 + 1)), 63)
                assert ids[i, j] == 1 + 64 * j + exact


def test_stream_format_follows_the_map_protocol(criteo_file):
    fmap, _ = build_feature_map(criteo_file, criteo_format(threshold=1), split=None)
    with pytest.raises(ValueError, match=r"38 fields.*protocol 'polyzoo'"):
        CTRStream(criteo_file, criteo_format(protocol="polyzoo"), fmap)
    fmt = format_for_map(criteo_format(protocol="polyzoo"), fmap)
    assert fmt.protocol == "official" and len(fmt.fields) == 38
    with pytest.raises(ValueError, match="criteo protocol"):
        criteo_format(protocol="tf")


def test_feature_map_records_its_input_and_refuses_a_changed_file(criteo_file, tmp_path):
    fmt = criteo_format(threshold=1)
    fmap, _ = build_feature_map(criteo_file, fmt, split=None)
    fmap.save(tmp_path / "fm.json")
    loaded = FeatureMap.load(tmp_path / "fm.json")
    st = os.stat(criteo_file)
    assert loaded.source == {"path": str(criteo_file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert loaded.settings["protocol"] == "official" and loaded.settings["split"] is None
    CTRStream(criteo_file, fmt, loaded)  # unchanged: fine
    with open(criteo_file, "a") as fh:  # one more row: size and mtime change
        fh.write("\t".join(_rows()[0]) + "\n")
    with pytest.raises(ValueError, match=r"criteo\.txt changed since the feature map was built"):
        CTRStream(criteo_file, fmt, loaded)
    other = tmp_path / "test.txt"  # another file (e.g. the test split) is read with the training vocabulary
    other.write_text("\t".join(_rows()[1]) + "\n")
    assert next(iter(CTRStream(other, fmt, loaded)))["ids"].shape == (1, 38)


def test_empty_inputs_are_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    header = tmp_path / "header.txt"
    names = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    header.write_text(",".join(names) + "\n")
    fmt = criteo_format(hash_buckets=8)
    for path in (empty, header):
        with pytest.raises(ValueError, match=f"{path.name}: no data rows"):
            build_feature_map(path, criteo_format())
        with pytest.raises(ValueError, match=f"{path.name}: no data rows"):
            CTRStream(path, fmt, FeatureMap(fmt.fields))
    (tmp_path / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    with pytest.raises(ValueError, match=r"ml-100k\.inter: no data rows"):
        MovieLensStream(tmp_path, FeatureMap(fmt.fields))


def test_library_default_protocol_equals_cli_default():
    import inspect

    from polyzoo.recsys.cli import prepare

    assert inspect.signature(criteo_format).parameters["protocol"].default == "official"
    assert next(p for p in prepare.params if p.name == "protocol").default == "official"
