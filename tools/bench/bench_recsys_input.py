"""recsys training input: rows/s from a prepared Parquet folder to torch batches, and resident memory as rows grow.

A prepared folder in the format of ``polyzoo recsys prepare`` (version 2: manifest.json, feature_map.json,
``train/`` shards of 1M rows in row groups of 64k rows: a float32 ``label`` and 39 int32 Criteo-shaped fields with
per-field cardinalities from 4 to 1M, Zipf-like ids local to each field, which the reader makes global rows) is
written in the system temp folder with polars, so this runs standalone, and deleted afterwards. Contenders, each
one full pass over the split, batch 4096:

* ``polars read (floor)``: ``pl.read_parquet`` of every row group, no batches (the decoder's own speed);
* ``ParquetBatches`` in the main process without and with the shuffle (window 65,536 rows, the default);
* a ``DataLoader`` with 1 and 2 spawned workers (rows/s per worker = total / workers), timed from the first
  batch on (the workers' start-up, importing torch, is reported apart).

RSS of the main process is sampled every eighth of the rows of the no-shuffle pass: it must stay flat as rows grow.
Target (issue 18): ≥ 2M rows/s per process. ``--quick``: 1M rows; full: 10M rows; ``--rows N``: N rows. The
DataLoader rates exclude the workers' start-up (shown apart).

    uv run python tools/bench/bench_recsys_input.py [--quick | --rows N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from polyzoo.recsys.features import FeatureMap, FieldSpec
from polyzoo.recsys.parquet import ParquetBatches, PreparedData

FIELDS = 39
SHARD_ROWS = 1_000_000
ROW_GROUP = 65_536


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_folder(root: Path, rows: int, seed: int = 0) -> PreparedData:
    """A prepared folder of ``rows`` Criteo-shaped training rows (written shard by shard: bounded memory)."""
    cards = np.geomspace(4, 1_000_000, FIELDS).astype(np.int64)
    fmap = FeatureMap([FieldSpec(f"f{i}", hash_buckets=int(c)) for i, c in enumerate(cards)])
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    shards = []
    for k, lo in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - lo)
        local = np.minimum(rng.zipf(1.3, (n, FIELDS)) - 1, cards - 1)  # heavy-tailed ids, as real categories
        ids = (local + 1).astype(np.int32)  # version 2: ids local to the field (the reader makes them global)
        cols = {"label": pl.Series((rng.random(n) < 0.25).astype(np.float32))}
        cols.update({f"f{i}": pl.Series(ids[:, i]) for i in range(FIELDS)})
        rel = f"train/part-{k:05d}.parquet"
        pl.DataFrame(cols).write_parquet(root / rel, row_group_size=ROW_GROUP)
        shards.append({"path": rel, "rows": n, "row_groups": -(-n // ROW_GROUP)})
    fmap.save(root / "feature_map.json")
    manifest = {"format": "polyzoo-ctr-parquet", "version": 2, "schema": {}, "splits": {"train": shards}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return PreparedData(root)


def _floor(data: PreparedData) -> int:
    rows = 0
    for u in data.units["train"]:
        rows += pl.scan_parquet(u.path).slice(u.start, u.rows).collect().height
    return rows


def _batches(data: PreparedData, shuffle: bool, rss: list | None = None, every: int = 1_000_000) -> int:
    rows, mark = 0, every
    for batch in ParquetBatches(data, "train", 4096, shuffle=shuffle, seed=0):
        rows += len(batch["label"])
        if rss is not None and rows >= mark:
            rss.append((rows, _rss_mb()))
            mark += every
    return rows


def _loader(data: PreparedData, workers: int) -> tuple[int, float, float]:
    """(rows, seconds to the first batch = workers' start-up, seconds after it)."""
    ds = ParquetBatches(data, "train", 4096, shuffle=True, workers=workers)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context="spawn")
    t0 = time.perf_counter()
    it = iter(loader)
    rows = len(next(it)["label"])
    t1 = time.perf_counter()
    rows += sum(len(b["label"]) for b in it)
    return rows, t1 - t0, time.perf_counter() - t1


def run(quick: bool = False, rows: int | None = None) -> str:
    rows = rows or (1_000_000 if quick else 10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = write_folder(Path(tmp) / "prepared", rows)
        gen_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "prepared" / "train").iterdir()) / 2**20
        contenders = [
            ("polars read (floor)", lambda: _floor(data), 1),
            ("ParquetBatches, no shuffle", None, 1),
            ("ParquetBatches, shuffle", lambda: _batches(data, True), 1),
            ("DataLoader, 1 worker", lambda: _loader(data, 1), 1),
            ("DataLoader, 2 workers", lambda: _loader(data, 2), 2),
        ]
        rss: list = []
        lines = [
            f"rows: {rows:,} ({size_mb:.0f} MiB of Parquet, {len(data.units['train'])} row groups; written in "
            f"{gen_s:.1f} s), batch 4096, {FIELDS} int32 fields",
            "",
            "| contender | rows/s | rows/s per process | time s |",
            "|---|---|---|---|",
        ]
        for name, fn, procs in contenders:
            t = time.perf_counter()
            n = _batches(data, False, rss, rows // 8) if fn is None else fn()
            s = time.perf_counter() - t
            note = ""
            if isinstance(n, tuple):  # DataLoader: steady rate after the first batch, start-up apart
                n, startup, s = n
                note = f" (+ {startup:.1f} s start-up)"
            assert n == rows, (name, n, rows)
            lines.append(f"| {name} | {n / s / 1e6:.2f} M | {n / s / procs / 1e6:.2f} M | {s:.2f}{note} |")
        lines += [
            "",
            "RSS of the main process (no-shuffle pass): "
            + ", ".join(f"{r / 1e6:.2f}M rows {m:.0f} MiB" for r, m in rss),
        ]
        if len(rss) > 1:
            lines.append(f"RSS growth from the first to the last sample: {rss[-1][1] - rss[0][1]:+.0f} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1M rows instead of 10M")
    parser.add_argument("--rows", type=int, default=None, help="rows to generate (overrides --quick)")
    args = parser.parse_args()
    print(run(args.quick, args.rows))
