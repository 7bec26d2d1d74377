"""MovieLens-100k as RecBole ships it (not a file our tests write): the atomic files of the recbole 1.2.1 wheel.

``.ci/run`` extracts them with ``tools/data/recsys_movielens.py`` into ``$POLYZOO_MOVIELENS_DIR`` (default
``~/.cache/polyzoo/ml-100k``). Tests never download: they skip when the files are absent, and fail instead under
``POLYZOO_REQUIRE_DATA=1`` (CI). Expected numbers are the data set's published ones (GroupLens README: 100,000
ratings by 943 users on 1,682 movies; ratings 1..5 counted 6,110 / 11,370 / 27,145 / 34,174 / 21,201), and the
header lines are RecBole's published atomic-file headers for ml-100k.
"""

import os
from pathlib import Path

import pytest

from polyzoo.recsys.data import MovieLensStream, build_movielens_feature_map
from polyzoo.shared.paths import missing_data

ROOT = Path(os.environ.get("POLYZOO_MOVIELENS_DIR", Path.home() / ".cache" / "polyzoo" / "ml-100k"))

HEADERS = {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "ml-100k.user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
}


@pytest.fixture(scope="module")
def ml100k() -> Path:
    missing = [name for name in HEADERS if not (ROOT / name).is_file()]
    if missing:
        missing_data(
            f"MovieLens-100k atomic files {missing} not in {ROOT} (fetch them with `uv run python "
            f"tools/data/recsys_movielens.py --target {ROOT}`, as .ci/run does, or set POLYZOO_MOVIELENS_DIR)"
        )
    return ROOT


def test_published_headers_and_sizes(ml100k):
    for name, header in HEADERS.items():
        with open(ml100k / name, encoding="utf-8") as fh:
            assert fh.readline().rstrip("\n") == header, name
    fmap = build_movielens_feature_map(ml100k, split=None)
    assert len(fmap.vocabularies["user_id"]) == 943
    assert len(fmap.vocabularies["item_id"]) == 1682
    assert sorted(fmap.vocabularies["gender"]) == ["F", "M"]
    assert len(fmap.vocabularies["occupation"]) == 21  # the README's occupation list


def test_stream_reads_every_rating_with_side_features(ml100k):
    fmap = build_movielens_feature_map(ml100k, split=None)
    stream = MovieLensStream(ml100k, fmap, batch_size=50_000, threshold=4.0)
    rows = positives = 0
    for batch in stream:
        rows += batch["label"].numel()
        positives += int(batch["label"].sum())
        assert (batch["ids"] > 0).all()  # every user/item has its side features joined (no out-of-vocabulary row)
    assert stream.stats == {"rows": 100_000, "skipped": 0} and rows == 100_000
    assert positives == 34_174 + 21_201  # ratings 4 and 5


def test_side_tables_join_the_published_rows(ml100k):
    stream = MovieLensStream(ml100k, build_movielens_feature_map(ml100k, split=None))
    # u.user line 1: "1|24|M|technician|85711"; u.item line 1: "1|Toy Story (1995)|...|Animation|Children's|Comedy"
    assert stream.users["1"] == ["2", "M", "technician", "857"]
    assert stream.items["1"] == ["1995", "Animation Children's Comedy"]
    assert len(stream.users) == 943 and len(stream.items) == 1682
    first = next(stream.raw_rows(lambda k: k == 0))
    assert first == (2, 0.0, ["196", "242", *stream.users["196"], *stream.items["242"]])  # u.data line 1: 196 242 3
