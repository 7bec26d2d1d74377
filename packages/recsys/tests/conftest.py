"""Fixtures for the recsys tests."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from polyzoo.recsys.prepare import read_manifest


def _same_folders(a: Path, b: Path) -> None:
    """Two prepared folders hold the same output: manifests, feature maps, every shard's frame and Parquet metadata,
    and the same files."""
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma == mb
    assert json.loads((a / "feature_map.json").read_text()) == json.loads((b / "feature_map.json").read_text())
    for shards in ma["splits"].values():
        for shard in shards:
            x, y = pl.read_parquet(a / shard["path"]), pl.read_parquet(b / shard["path"])
            assert x.schema == y.schema and x.equals(y), shard["path"]
            assert pl.read_parquet_metadata(a / shard["path"]) == pl.read_parquet_metadata(b / shard["path"])
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(p.relative_to(b) for p in b.rglob("*"))


@pytest.fixture
def same_folders():
    """:func:`_same_folders` (the prepare paths' tests compare their output folders with it)."""
    return _same_folders
