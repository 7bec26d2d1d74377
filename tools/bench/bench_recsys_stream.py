"""Streaming CTR loader: rows/s and resident memory on a generated raw-Criteo file of ≥ 5M rows.

The file is generated in the system temp folder (``generate_criteo_file``: 10 distinct 100k-row chunks repeated),
never in the repository, and deleted afterwards. Throughput contenders are timed interleaved on the first 200k
rows (anchor: reading the lines and splitting them, the floor any Python text parser pays); then one full pass
of :class:`CTRStream` (hashing, batch 4096) over the whole file samples the process RSS every 1M rows — it must
stay flat as the file grows. ``quick`` uses 1M rows.
"""

from __future__ import annotations

import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from polyzoo.recsys.data import CTRStream, build_feature_map, criteo_format
from polyzoo.recsys.features import FeatureMap
from polyzoo.recsys.synthetic import generate_criteo_file
from polyzoo.shared.timing import time_interleaved


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _split_only(path: Path, rows: int) -> None:
    with open(path, encoding="utf-8") as fh:
        for line in islice(fh, rows):
            line.rstrip("\n").split("\t")


def _stream(path: Path, fmap: FeatureMap, rows: int, workers: int = 0) -> None:
    stream = CTRStream(path, criteo_format(hash_buckets=1 << 20), fmap, batch_size=4096, max_rows=rows)
    if workers:
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
        for _ in loader:
            pass
    else:
        for _ in stream:
            pass


def run(quick: bool = False) -> str:
    rows = 1_000_000 if quick else 5_000_000
    sample = 200_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "criteo_bench.tsv"
        t0 = time.perf_counter()
        generate_criteo_file(path, rows)
        gen_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        hashed = FeatureMap(criteo_format(hash_buckets=1 << 20).fields)
        vocab, _ = build_feature_map(path, criteo_format(threshold=20), max_rows=sample)
        vocab_fmt = criteo_format()

        def stream_vocab() -> None:
            for _ in CTRStream(path, vocab_fmt, vocab, batch_size=4096, max_rows=sample):
                pass

        contenders = {
            "read + split lines (anchor)": lambda: _split_only(path, sample),
            "CTRStream, hashing": lambda: _stream(path, hashed, sample),
            "CTRStream, vocabulary (threshold 20)": stream_vocab,
        }
        times = time_interleaved(contenders, repeats=1 if quick else 3, warmup=0)
        lines = [
            f"File: {rows:,} rows, {size_mb:.0f} MiB (generated in {gen_s:.0f} s, temp folder). "
            f"Throughput over the first {sample:,} rows, one process:",
            "",
            "| contender | rows/s | time vs anchor |",
            "|---|---|---|",
        ]
        anchor = times["read + split lines (anchor)"]
        for name, t in times.items():
            lines.append(f"| {name} | {sample / t:,.0f} | {t / anchor:.2f}x |")

        # full pass: RSS every 1M rows
        stream = CTRStream(path, criteo_format(hash_buckets=1 << 20), hashed, batch_size=4096)
        marks, seen, next_mark = [], 0, 1_000_000
        start_rss = _rss_mb()
        t0 = time.perf_counter()
        for batch in stream:
            seen += batch["ids"].shape[0]
            if seen >= next_mark:
                marks.append((seen, _rss_mb(), time.perf_counter() - t0))
                next_mark += 1_000_000
        total = time.perf_counter() - t0
        lines += [
            "",
            f"Full pass (hashing, batch 4096): {seen:,} rows in {total:.1f} s = {seen / total:,.0f} rows/s; "
            f"RSS before the pass {start_rss:.0f} MiB.",
            "",
            "| rows read | RSS MiB | elapsed s |",
            "|---|---|---|",
        ]
        lines += [f"| {n:,} | {rss:.0f} | {t:.1f} |" for n, rss, t in marks]
        rss = [m[1] for m in marks]
        lines.append("")
        lines.append(f"RSS spread over the pass: {max(rss) - min(rss):.1f} MiB (flat = independent of rows read).")
    return "\n".join(lines)
