"""Streaming data: the shared Criteo/Avazu samples, generated files, malformed rows, sharding, vocabularies."""

import math
from pathlib import Path

import pytest
import torch

from polyzoo.recsys.data import (
    CTRStream,
    MovieLensStream,
    avazu_format,
    build_feature_map,
    build_movielens_feature_map,
    criteo_format,
    in_split,
)
from polyzoo.recsys.features import FeatureMap, FieldSpec, ParseError, log_square_bin
from polyzoo.shared.paths import shared_data_dir


def _shared_ctr() -> Path:
    root = shared_data_dir(__file__)
    path = root / "ctr"
    if not (path / "criteo_sample.txt").is_file():
        pytest.skip(f"shared CTR samples not found under {path} (set POLYZOO_SHARED_DATA)")
    return path


def _criteo_line(label, ints, cats, sep="\t"):
    return sep.join([str(label), *[str(i) for i in ints], *cats]) + "\n"


@pytest.fixture
def criteo_tsv(tmp_path):
    path = tmp_path / "criteo.tsv"
    lines = []
    for k in range(12):
        ints = [k, "", -3, 1000, *[1] * 8, 7]  # I13 = 7 is used (official bug not copied)
        cats = [f"a{k % 3}", "", *[f"c{k % 2}"] * 24]
        lines.append(_criteo_line(k % 2, ints, cats))
    path.write_text("".join(lines))
    return path


def test_log_square_bin():
    assert log_square_bin(0) == 0
    assert log_square_bin(-3) == math.floor(math.log(10))
    assert log_square_bin(1e40, 64) == 63


def test_criteo_sample_shared(tmp_path):
    path = _shared_ctr() / "criteo_sample.txt"
    fmap, stats = build_feature_map(path, criteo_format(threshold=1, protocol="polyzoo"))
    assert stats == {"rows": 200, "skipped": 0}
    assert fmap.num_fields == 39 and fmap.names[12] == "I13"
    fmap.save(tmp_path / "fm.json")
    fmap2 = FeatureMap.load(tmp_path / "fm.json")
    assert fmap2.num_rows == fmap.num_rows and fmap2.vocabularies == fmap.vocabularies
    batches = list(CTRStream(path, criteo_format(protocol="polyzoo"), fmap2, batch_size=64))
    assert [b["ids"].shape[0] for b in batches] == [64, 64, 64, 8]
    ids = torch.cat([b["ids"] for b in batches])
    assert ids.max() < fmap.num_rows and ids.min() >= 0
    # first data row (line 2): I1 missing -> 0, I2 = 3 -> bucket ⌊ln 10⌋ = 2 -> local 3
    assert ids[0, 0] == 0 and ids[0, 1] == fmap.offsets[1] + 2
    labels = torch.cat([b["label"] for b in batches])
    assert set(labels.tolist()) <= {0.0, 1.0}


def test_avazu_sample_shared():
    path = _shared_ctr() / "avazu_sample.txt"
    fmap, stats = build_feature_map(path, avazu_format(threshold=0), split=None)
    assert stats["rows"] == 100 and fmap.num_fields == 23
    batch = next(iter(CTRStream(path, avazu_format(), fmap, batch_size=100)))
    assert batch["ids"].shape == (100, 23) and batch["line"] == 101
    assert (batch["ids"] > 0).all()  # every value is in the vocabulary built from the same rows


def test_tab_file_vocab_threshold_and_oov(criteo_tsv):
    fmt = criteo_format(threshold=3, protocol="polyzoo")
    fmap, _ = build_feature_map(criteo_tsv, fmt)
    assert fmap.vocabularies["C1"] == ["a0", "a1", "a2"]  # 4 each > 3
    assert fmap.vocabularies["C2"] == []  # missing everywhere
    fmap_hi, _ = build_feature_map(criteo_tsv, criteo_format(threshold=4, protocol="polyzoo"))
    assert fmap_hi.vocabularies["C1"] == []  # count 4 is not > 4: OOV -> zero row
    batch = next(iter(CTRStream(criteo_tsv, fmt, fmap_hi, batch_size=100)))
    assert (batch["ids"][:, 13] == 0).all()
    assert (batch["ids"][:, 12] == fmap_hi.offsets[12] + log_square_bin(7)).all()  # I13 used


def test_hashing_needs_no_prepare(criteo_tsv):
    fmt = criteo_format(hash_buckets=16, protocol="polyzoo")
    fmap = FeatureMap(fmt.fields)
    assert fmap.num_rows == 1 + 13 * 64 + 26 * 16
    ids = next(iter(CTRStream(criteo_tsv, fmt, fmap, batch_size=4)))["ids"]
    again = next(iter(CTRStream(criteo_tsv, fmt, fmap, batch_size=4)))["ids"]
    assert torch.equal(ids, again)
    assert ((ids[:, 13:] >= 0) & (ids[:, 13:] < fmap.num_rows)).all()


def test_malformed_rows_error_or_skip(tmp_path):
    path = tmp_path / "bad.txt"
    good = _criteo_line(1, [1] * 13, ["x"] * 26, ",")
    path.write_text(good + "0,1,2\n" + good + _criteo_line(0, ["abc", *[1] * 12], ["x"] * 26, ",") + good)
    fmt = criteo_format(threshold=0)
    with pytest.raises(ParseError, match=r"bad.txt:2: expected 40 ','-separated fields, got 3"):
        build_feature_map(path, fmt)
    fmap, stats = build_feature_map(path, fmt, skip_bad=True)
    assert stats == {"rows": 3, "skipped": 2}  # wrong field count and unparsable number
    with pytest.raises(ParseError, match=r"bad.txt:4: field I1: expected a number, got 'abc'"):
        list(CTRStream(path, fmt, fmap, batch_size=8, skip_bad=False, start_line=2))
    stream = CTRStream(path, fmt, fmap, batch_size=8, skip_bad=True)
    rows = sum(b["ids"].shape[0] for b in stream)
    assert rows == 3 and stream.stats == {"rows": 3, "skipped": 2}
    other = tmp_path / "bad_label.txt"
    other.write_text(_criteo_line(2, [1] * 13, ["x"] * 26, ","))
    with pytest.raises(ParseError, match="label: expected 0 or 1"):
        list(CTRStream(other, fmt, fmap, batch_size=8, skip_bad=False))


def test_sharding_across_ranks_is_a_partition(criteo_tsv):
    fmt = criteo_format(threshold=0)
    fmap, _ = build_feature_map(criteo_tsv, fmt)
    full = torch.cat([b["ids"] for b in CTRStream(criteo_tsv, fmt, fmap, batch_size=5)])
    parts = [torch.cat([b["ids"] for b in CTRStream(criteo_tsv, fmt, fmap, 5, rank=r, world_size=3)]) for r in range(3)]
    assert sum(p.shape[0] for p in parts) == full.shape[0]
    torch.testing.assert_close(parts[1], full[1::3])


def test_sharding_across_workers(criteo_tsv):
    fmt = criteo_format(threshold=0)
    fmap, _ = build_feature_map(criteo_tsv, fmt)
    loader = torch.utils.data.DataLoader(CTRStream(criteo_tsv, fmt, fmap, batch_size=2), batch_size=None, num_workers=2)
    seen = sorted(int(b["line"]) for b in loader)
    assert len(seen) == 6 and len(set(seen)) == 6  # 12 rows, 2 per batch, no duplicates


def test_split_rule_and_resume_position(criteo_tsv):
    assert in_split(800, "train") and not in_split(801, "train") and in_split(1801, "test")
    fmt = criteo_format(threshold=0)
    fmap, _ = build_feature_map(criteo_tsv, fmt)
    first = list(CTRStream(criteo_tsv, fmt, fmap, batch_size=4))
    resumed = list(CTRStream(criteo_tsv, fmt, fmap, batch_size=4, start_line=first[0]["line"]))
    torch.testing.assert_close(resumed[0]["ids"], first[1]["ids"])


def test_feature_map_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="polyzoo recsys prepare"):
        FeatureMap.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="needs a vocabulary"):
        FeatureMap([FieldSpec("c")])
    (tmp_path / "bad.json").write_text('{"format_version": 99}')
    with pytest.raises(ValueError, match=r"bad\.json: format_version"):
        FeatureMap.load(tmp_path / "bad.json")


def test_movielens_atomic_files(tmp_path):
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t5\t1\n2\t10\t3\t2\n1\t11\t4\t3\n"
    )
    (tmp_path / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttech\t85711\n2\t53\tF\tother\t94043\n"
    )
    (tmp_path / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tA\t1995\tComedy\n11\tB\t1994\tDrama War\n"
    )
    fmap = build_movielens_feature_map(tmp_path)
    assert fmap.vocabularies["age"] == ["2", "5"]  # decades, equal counts ordered by value
    assert fmap.vocabularies["class"] == ["Comedy", "Drama War"] and fmap.vocabularies["zip_code"] == ["857", "940"]
    batch = next(iter(MovieLensStream(tmp_path, fmap, batch_size=8)))
    assert batch["label"].tolist() == [1.0, 0.0, 1.0]
    assert batch["ids"].shape == (3, 8) and (batch["ids"] > 0).all()


def test_generated_criteo_file_streams(tmp_path):
    from polyzoo.recsys.synthetic import generate_criteo_file

    path = generate_criteo_file(tmp_path / "gen.tsv", rows=250, chunk=100, distinct_chunks=2, cardinality=50)
    assert len(path.read_text().splitlines()) == 250
    fmt = criteo_format(hash_buckets=64)
    stream = CTRStream(path, fmt, FeatureMap(fmt.fields), batch_size=100)
    assert [b["ids"].shape[0] for b in stream] == [100, 100, 50] and stream.stats["skipped"] == 0
