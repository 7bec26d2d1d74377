"""``polyzoo recsys prepare``: raw CTR data (Criteo, Avazu, MovieLens, or any CSV/TSV/Parquet described by a
schema) → vocabularies and encoded Parquet shards, streamed block by block with bounded memory.

Output format (``polyzoo-ctr-parquet`` version 2; the training input reads exactly this, and version 1)::

    OUT/manifest.json      written last, atomically (the whole folder is staged beside OUT and renamed into place)
    OUT/feature_map.json   polyzoo.recsys.features.FeatureMap JSON (format_version 3)
    OUT/train/part-00000.parquet, part-00001.parquet, ...   (a split may have zero shards)
    OUT/valid/...  OUT/test/...

* ``manifest.json``: ``{"format": "polyzoo-ctr-parquet", "version": 2, "schema": <resolved schema dict>,
  "splits": {"train": [{"path": "train/part-00000.parquet", "rows": N, "row_groups": G}, ...], "valid": [...],
  "test": [...]}, "sources": [{"path", "size", "mtime_ns"} of each raw input], "settings": {...everything that
  decided the output: schema, protocol, thresholds, hash buckets, split rule, valid share, seed, skip_bad,
  row_group_rows, shard_rows, compression}, "skipped": {"bad_rows": n}}``.
* Parquet columns: ``label`` float32; then one column per field in feature-map order, named as the field:
  int32 id **local to the field** for categorical and integer fields (0 = missing or out of vocabulary, the
  shared zero row; k ≥ 1 = the field's k-th value: vocabulary rank, hash bucket + 1 or log-square bucket + 1),
  ``list<int32>`` of such ids for sequence fields (length ≤ ``max_len``, empty when missing). The training input
  turns them into global embedding rows with the feature map (``offsets[f] + k − 1``, 0 stays 0;
  :mod:`polyzoo.recsys.parquet`). Version 1 stored global rows; per-field ids keep every column's range within
  its field, where Polars' Parquet writer takes its fast dictionary path (a range ≤ 65,535) instead of hashing:
  a 10 M-row Criteo prepare wrote its shards 0.3–0.4 s faster (6.1–6.3 s against 6.5–6.7 s in all), and the
  shards are independent of the global layout, as per-feature tables (FuxiCTR, torchrec) expect.
* Row groups hold ``row_group_rows`` rows (default 65,536; the last one of a shard fewer),
  shards ``shard_rows`` rows (default 1,048,576 = 16 row groups; the last one fewer), ``compression`` lz4
  (default). Rows within a split keep file order. Chosen by measurement on this machine (2 shared cores, 2²⁰ rows ×
  38 int32 ids, Polars 2.1): one 65,536-row group read with ``scan_parquet().slice()`` was the fastest of 16k /
  64k / 256k for every codec (lz4 10.7 M rows/s vs zstd 5.7); zstd wrote and read 1.5-3× slower than lz4 for
  ~25 % less disk, uncompressed was fastest but largest; 65,536 rows also keeps ranges fine-grained enough to
  split a split across workers and ranks (10 M rows = 153 groups).
* Splits: data row k (0-based, header, blank and undecodable lines excluded, malformed rows included — the row
  index of :class:`polyzoo.recsys.data.CTRStream`) is *train* or *test* by the schema's rule (``mod1000``: the
  official ``criteo_split.py`` rule, train iff ``(k mod 1000)/1000 ≤ 0.8``; ``all``: every row train), or by file
  when separate ``valid`` / ``test`` inputs are given. **Validation** is carved from train rows: row k is valid
  iff ``splitmix64(k + seed · 0x9E3779B97F4A7C15) / 2⁶⁴ < valid_share`` (deterministic, independent of block
  sizes and of the other rows; default share 0 = the official protocol, all train rows trained on). Vocabularies
  count **train rows only** (valid and test excluded).
* Vocabularies and ids are those of :meth:`FeatureMap.from_counts` / :meth:`FeatureMap.encode` on the same rows
  (count > threshold, most frequent first, ties by value; CRC32 hashing; the Criteo ``protocol``), so with
  ``valid_share=0`` the ids equal :class:`~polyzoo.recsys.data.CTRStream`'s for the same input (tested).
* Malformed rows (wrong field count, not UTF-8, label not 0/1, unparsable number, bad ``YYMMDDHH``): the same
  one-line :class:`~polyzoo.recsys.features.ParseError` as ``CTRStream`` (``file:line: ...``; Parquet inputs give
  the 1-based row), the first in file order; or with ``skip_bad`` they are dropped and counted
  (``skipped.bad_rows``). Blank lines are skipped.

**Three readers (chosen by measurement, see the README table); the output is the same.** Each one either
produces the whole output or declines without leaving anything behind, and the next one runs: native, then
streaming, then the block path. The summary's ``reader`` says which ran.

*Native path* — CSV/TSV inputs of a schema the streaming path takes (below) whose bytes are all printable ASCII
or tab and whose categorical values have at most 8 bytes (Criteo, Avazu). Numba kernels
(:mod:`polyzoo.recsys.native`, compiled on first use and cached by numba) parse blocks of ``block_bytes`` in
several threads (one per available core, at most 4). Pass 1, per block: every line is checked (exactly the
schema's fields, a ``0``/``1`` label, integer-field values ``-?[0-9]{1,18}`` or empty), integer fields parsed
(their log-square buckets read from a table that :func:`_integer_local` itself computed for every integer in
±2¹⁶, the rest computed by it), and each categorical value packed into its **key** (its bytes as a little-endian
uint64: exact, the value is read back from the key) and counted over train rows in the thread's table of that
column; the block's labels, split codes, buckets and entry numbers go to a raw intermediate file in the staged
folder. Then vocabularies, CRC32 hashing and transforms are computed on the distinct values with the functions
the other paths use, and pass 2 maps each block's entry numbers to ids and groups rows by split in one kernel
call (in threads; it reads the intermediate's narrow columns where they lie), the shards written in block
order. Anything else (a longer or non-ASCII value, a float, a blank or malformed line, a CR, an empty hour, a
non-number under ``binning: none``) declines. A table holds at
most 2²⁸ distinct values per column and thread.

*Streaming path* — every CSV/TSV input of a schema without sequence fields and without ``label_threshold``, when
the inputs are clean (below). One parse of the raw text, by Polars' streaming engine (``scan_csv`` over blocks of
``block_bytes`` cut at a line end — one block at a time bounds memory, as Polars' batch iterators run ahead of a
slower consumer; integer-field columns parsed as Float64, the others as strings, no quoting). Each parsed block
is written as one Arrow IPC file of a compact intermediate in the staged output folder (label, integer-field
values — float32 where the field bins in float32 —, and per categorical column a 64-bit *id hash*
``hash(seed=_SEED_ID)``) and grouped, per categorical column, by its id hash (train rows, the first value, min and
max of a second, independently seeded 64-bit *check hash*; the per-block tables are merged as they come).
Vocabularies, transforms and CRC32 hashing ids are then computed on those distinct values with the block path's
own functions; the encoding pass reads the intermediate back file by file (no second text parse), maps id hash →
field id (``replace_strict`` over the hashes of the values whose id is not 0; it builds its table per file, so a
hashing field with millions of distinct values costs O(distinct) per block), bins integers with the same numpy
code and writes the shards as the block path does. Each intermediate file is deleted once read.

* *Hash collisions*: a group whose check hashes differ holds two different values (an empty and a non-empty one
  included) under one id hash; then the whole prepare runs the block path (exact strings). Guaranteed: the ids
  equal the block path's unless two different values of one field agree in **both** 64-bit hashes (two seeds of
  Polars' hash; about n²/2¹²⁹ for n distinct values). Tested by forcing collisions with a weak id hash.
* *Clean* means: no UTF-8 byte-order mark, no carriage return, Polars raises nothing (too many fields, invalid
  UTF-8, an integer-field value its float parser refuses — it accepts a subset of Python's ``float``: not ``1_0``,
  ``'7 '`` or non-ASCII digits, tested to give equal values on the rest), every label ``0``/``1``, every
  ``binning: none`` value a number, every transform value a valid ``YYMMDDHH``, and the delimiter bytes after the
  header number exactly rows × (columns − 1) (Polars turns a short or blank line into a row of nulls; this count
  proves every line has exactly the schema's fields). Otherwise the block path runs for the whole prepare, with
  its messages (``file:line``) and ``--skip-bad`` counts.

*Block path* — the reference, and the path of Parquet and MovieLens inputs, sequence fields and unclean files. Raw
text is read in blocks of ``block_bytes`` cut at a line end and parsed by Polars' CSV reader (all columns as
strings); label, numbers and vocabulary lookups are vectorised Polars/numpy operations. A block whose delimiter
count is not exactly ``lines × (columns − 1)``, that Polars refuses (invalid UTF-8, too many fields) or that holds
blank lines or stray carriage returns is re-read line by line in Python with ``CTRStream``'s rules to find, report
or drop the malformed rows. Two passes over the raw input when a field needs a vocabulary (count, then encode);
one when every categorical field hashes. PyArrow's CSV reader was measured equally fast but cannot be imported
with the workspace's locked numpy 1.26 (pyarrow 26 needs numpy ≥ 2), so the data path does not use pyarrow.

Memory: block path: one block, one shard buffer per split and the vocabulary counts; streaming path: Polars'
one parsed block, the per-field tables of distinct values (value, count and 24 bytes) and one shard buffer per
split; native path: threads + 2 blocks of raw bytes, each thread's work arrays (8 bytes per integer column and
4 per intermediate column per row of a block: ~270 B for Criteo) and tables (16 bytes per slot, 2–4 slots per
distinct value and column, in each thread); then each block's output arrays (4 bytes per field and row), reused
once its shard is written, so about a shard's worth per split plus the blocks encoded ahead. Disk: the
streaming intermediate is about 1 + 4·(integer fields) + 8·(categorical columns) bytes per row (~250 B for
Criteo, about the raw text's size), the native one 1–4 bytes per column and row, each column in the narrowest
integer type its range needs (67 B per row for the benchmark's Criteo file; each column padded to 8 bytes), in
the staged folder until its block is encoded.
The summary's ``reader`` says which path ran and ``stage_seconds`` times the streaming path's stages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
import mmap
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polyzoo.recsys.features import FeatureMap, FieldSpec, ParseError, file_fingerprint
from polyzoo.recsys.schema import Schema, SchemaField
from polyzoo.shared.io import atomic_dir, read_json, write_json_atomic

__all__ = ["MANIFEST_FORMAT", "MANIFEST_VERSION", "PrepareError", "prepare", "read_manifest", "valid_mask"]

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "polyzoo-ctr-parquet"
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: the shards hold global embedding rows (read by the training input as they are)
SPLITS = ("train", "valid", "test")
TRAIN, VALID, TEST = 0, 1, 2
DEFAULT_BLOCK_BYTES = 32 << 20
DEFAULT_ROW_GROUP_ROWS = 1 << 16
DEFAULT_SHARD_ROWS = 1 << 20
DEFAULT_COMPRESSION = "lz4"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class PrepareError(ValueError):
    """``prepare`` refused to run (an output folder from other settings or sources, without ``overwrite``)."""


# ------------------------------------------------------------------------------------------------------------
# split rules


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def valid_mask(ks: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Rows (by data-row index k) carved into validation: ``splitmix64(k + seed·φ64) / 2⁶⁴ < share``."""
    if share <= 0:
        return np.zeros(len(ks), dtype=bool)
    with np.errstate(over="ignore"):
        keyed = ks.astype(np.uint64) + np.uint64(seed % (1 << 64)) * _GOLDEN
        u = (_splitmix64(keyed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return u < share


def _split_codes(ks: np.ndarray, rule: str, share: float, seed: int, fixed: int | None) -> np.ndarray:
    if fixed is not None:  # a separate file per split
        codes = np.full(len(ks), fixed, dtype=np.int8)
        if fixed != TRAIN:
            return codes
    elif rule == "all":
        codes = np.full(len(ks), TRAIN, dtype=np.int8)
    else:  # official criteo_split.py: (k mod 1000)/1000 <= 0.8  <=>  k mod 1000 <= 800
        codes = np.where(ks % 1000 <= 800, TRAIN, TEST).astype(np.int8)
    codes[(codes == TRAIN) & valid_mask(ks, share, seed)] = VALID
    return codes


# ------------------------------------------------------------------------------------------------------------
# reading blocks


@dataclasses.dataclass
class _Block:
    df: pl.DataFrame  # raw columns as strings (null = empty)
    lines: np.ndarray  # 1-based line (or row) number of each row
    ks: np.ndarray  # data-row index of each row
    nbytes: int = 0
    struct_bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line, message), file order
    labels: np.ndarray | None = None  # precomputed labels (MovieLens)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class _CsvReader:
    """Blocks of a delimited text file (see the module docstring)."""

    def __init__(self, path: Path, schema: Schema, block_bytes: int) -> None:
        self.path, self.schema, self.block_bytes = path, schema, block_bytes
        with open(path, "rb") as fh:
            first_raw = fh.readline()
        try:
            first = first_raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise ParseError(
                f"{path}:1: not UTF-8 text (byte 0x{first_raw[e.start]:02x} at column {e.start + 1})"
            ) from None
        self.delimiter = schema.delimiter or ("\t" if "\t" in first else ",")
        columns = schema.columns
        header = schema.header
        if header is None:
            if columns is None:
                header = True
            else:
                parts = first.split(self.delimiter)
                li = columns.index(schema.label)
                header = not _is_number(parts[li] if len(parts) > li else "")
        if columns is None:
            columns = first.split(self.delimiter)
            if len(set(columns)) != len(columns):
                raise ParseError(f"{path}:1: duplicate column names in the header {columns}")
            missing = [c for c in [schema.label, *(f.column for f in schema.fields)] if c not in columns]
            if missing:
                raise ParseError(f"{path}:1: the header has no column(s) {missing}; it has {columns}")
        self.columns = list(columns)
        self.header = header
        self.data_offset = len(first_raw) if header else 0
        self.first_line = 2 if header else 1
        self._pl_schema = {f"c{i}": pl.String for i in range(len(self.columns))}
        self._project: list[int] | None = None

    def project(self, columns: set[str]) -> None:
        """Materialise only these columns (Polars then no longer refuses lines with too many fields: used only by
        the counting pass without ``skip_bad``, whose output the full encoding pass re-checks)."""
        self._project = sorted(self.columns.index(c) for c in columns)

    def _parse(self, data: bytes) -> pl.DataFrame:
        project = self._project
        df = pl.read_csv(
            data, has_header=False, separator=self.delimiter, quote_char=None, schema=self._pl_schema, columns=project
        )
        names = [self.columns[i] for i in project] if project is not None else self.columns
        return df.rename(dict(zip(df.columns, names, strict=True)))

    def _empty(self) -> pl.DataFrame:
        return pl.DataFrame({c: pl.Series([], dtype=pl.String) for c in self.columns})

    def blocks(self) -> Iterator[_Block]:
        line_next, k_next = self.first_line, 0
        ncols = len(self.columns)
        dbyte = self.delimiter.encode("utf-8")
        with open(self.path, "rb") as fh:
            fh.seek(self.data_offset)
            carry = b""
            while True:
                chunk = fh.read(self.block_bytes)
                if chunk:
                    data = carry + chunk
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        carry = data
                        continue
                    carry, data = data[cut + 1 :], data[: cut + 1]
                else:
                    data, carry = carry, b""
                    if not data:
                        return
                    data += b"\n"
                n_lines = data.count(b"\n")
                block = None
                clean = data.count(dbyte) == n_lines * (ncols - 1) and (
                    b"\r" not in data or data.count(b"\r") == data.count(b"\r\n")
                )
                if clean:
                    try:
                        df = self._parse(data)
                    except Exception:
                        df = None
                    if df is not None and df.height == n_lines:
                        block = _Block(
                            df,
                            np.arange(line_next, line_next + n_lines, dtype=np.int64),
                            np.arange(k_next, k_next + n_lines, dtype=np.int64),
                            len(data),
                        )
                        k_next += n_lines
                if block is None:
                    block, k_next = self._slow_block(data, line_next, k_next)
                line_next += n_lines
                yield block

    def _slow_block(self, data: bytes, line_next: int, k_next: int) -> tuple[_Block, int]:
        """``CTRStream``'s line rules, one line at a time: blank lines skipped (no row index), undecodable lines
        and lines with another field count malformed (the latter keep their row index)."""
        ncols, delim, path = len(self.columns), self.delimiter, self.path
        good: list[str] = []
        lines: list[int] = []
        ks: list[int] = []
        bad: list[tuple[int, str]] = []
        for off, raw in enumerate(data.split(b"\n")[:-1]):
            lineno = line_next + off
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                bad.append(
                    (lineno, f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
                )
                continue
            if not line:
                continue
            k = k_next
            k_next += 1
            n = len(line.split(delim))
            if n != ncols:
                bad.append((lineno, f"{path}:{lineno}: expected {ncols} {delim!r}-separated fields, got {n}"))
                continue
            good.append(line)
            lines.append(lineno)
            ks.append(k)
        df = self._parse(("\n".join(good) + "\n").encode("utf-8")) if good else self._empty()
        block = _Block(df, np.array(lines, dtype=np.int64), np.array(ks, dtype=np.int64), len(data), bad)
        return block, k_next


class _ParquetReader:
    """Row slices of a Parquet file; every used column cast to string (null = missing); ``line`` = 1-based row."""

    def __init__(self, path: Path, schema: Schema, block_rows: int) -> None:
        self.path, self.schema, self.block_rows = path, schema, block_rows
        names = pl.read_parquet_schema(path)
        self.columns = list(schema.columns or names)
        need = [schema.label, *(f.column for f in schema.fields)]
        missing = [c for c in need if c not in names]
        if missing:
            raise ParseError(f"{path}: no column(s) {missing} in the Parquet file; it has {list(names)}")
        self.need = list(dict.fromkeys(need))
        self.rows = pl.scan_parquet(path).select(pl.len()).collect().item()

    def blocks(self) -> Iterator[_Block]:
        lf = pl.scan_parquet(self.path).select([pl.col(c).cast(pl.String) for c in self.need])
        for start in range(0, self.rows, self.block_rows):
            df = lf.slice(start, self.block_rows).collect()
            ks = np.arange(start, start + df.height, dtype=np.int64)
            yield _Block(df, ks + 1, ks, int(df.estimated_size()))


class _MovieLensReader:
    """RecBole atomic files through :class:`~polyzoo.recsys.data.MovieLensStream` (small: joined in Python)."""

    def __init__(self, root: Path, schema: Schema, skip_bad: bool, block_rows: int = 200_000) -> None:
        from polyzoo.recsys.data import MovieLensStream
        from polyzoo.recsys.features import FieldSpec

        names = [f.spec.name for f in schema.fields]
        dummy = FeatureMap([FieldSpec(n, "categorical", hash_buckets=1) for n in names])
        threshold = schema.label_threshold if schema.label_threshold is not None else 4.0
        self.stream = MovieLensStream(root, dummy, threshold=threshold, skip_bad=skip_bad)
        self.columns = names
        self.block_rows = block_rows
        self.path = self.stream.inter

    def blocks(self) -> Iterator[_Block]:
        buf: list[tuple[int, float, list[str]]] = []

        def flush() -> _Block:
            lines = np.array([r[0] for r in buf], dtype=np.int64)
            cols = list(zip(*(r[2] for r in buf), strict=True))
            df = pl.DataFrame({c: pl.Series(cols[i], dtype=pl.String) for i, c in enumerate(self.columns)})
            labels = np.array([r[1] for r in buf], dtype=np.float32)
            return _Block(df, lines, lines - 2, 0, labels=labels)

        for row in self.stream.raw_rows(lambda k: True):
            buf.append(row)
            if len(buf) == self.block_rows:
                yield flush()
                buf = []
        if buf:
            yield flush()

    @property
    def skipped(self) -> int:
        return self.stream.stats["skipped"]


# ------------------------------------------------------------------------------------------------------------
# vectorised parsing and encoding


def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()


def crc32_series(s: pl.Series) -> np.ndarray:
    """``zlib.crc32(value.encode("utf-8"))`` of every string of ``s``, vectorised over byte positions."""
    b = s.fill_null("").cast(pl.Binary)
    lens = b.bin.size().to_numpy()
    crc = np.full(len(s), 0xFFFFFFFF, dtype=np.uint32)
    for j in range(int(lens.max()) if len(lens) else 0):
        byte = b.bin.get(j, null_on_oob=True).fill_null(0).to_numpy().astype(np.uint32)
        upd = _CRC_TABLE[(crc ^ byte) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
        crc = np.where(j < lens, upd, crc)
    return crc ^ np.uint32(0xFFFFFFFF)


def _hour_transform(kind: str):
    def fn(hour: str) -> str | None:
        if len(hour) != 8 or not hour.isdigit():
            return None
        if kind == "hour_of_day":
            return hour[6:]
        try:
            return str(dt.date(2000 + int(hour[:2]), int(hour[2:4]), int(hour[4:6])).weekday())
        except ValueError:
            return None

    return fn


class _Encoder:
    """Label, numbers, transforms and lookups of one block (vectorised), with ``CTRStream``'s error messages."""

    def __init__(self, schema: Schema, fmap: FeatureMap | None) -> None:
        self.schema, self.fmap = schema, fmap
        self.lookups: dict[str, tuple[pl.Series, pl.Series]] = {}
        if fmap is not None:
            for f in fmap.fields:
                if f.name in fmap.vocabularies:
                    vocab = fmap.vocabularies[f.name]
                    keys = pl.Series(vocab, dtype=pl.String)
                    ids = pl.Series(np.arange(1, 1 + len(vocab), dtype=np.int32))
                    self.lookups[f.name] = (keys, ids)

    # -- checks: each returns (values, bad mask, message for row r)

    def label(self, block: _Block, path: Path) -> tuple[np.ndarray, np.ndarray, Any]:
        n = block.df.height
        if block.labels is not None:
            return block.labels, np.zeros(n, dtype=bool), None
        s = block.df[self.schema.label].fill_null("")
        if self.schema.label_threshold is not None:
            x, bad = _to_float(s)
            bad |= np.isnan(x)
            with np.errstate(invalid="ignore"):
                y = (x >= self.schema.label_threshold).astype(np.float32)
            return y, bad, lambda r: f"label: expected a number, got {s[r]!r}"
        one = (s == "1").to_numpy()
        ok = one | (s == "0").to_numpy()
        if ok.all():
            return one.astype(np.float32), np.zeros(n, dtype=bool), None
        mapping: dict[str, float | None] = {}
        for v in s.filter(pl.Series(~ok)).unique().to_list():
            try:
                y = float(v)
            except ValueError:
                y = None
            mapping[v] = y if y in (0.0, 1.0) else None
        y = one.astype(np.float32)
        bad = np.zeros(n, dtype=bool)
        idx = np.flatnonzero(~ok)
        for i, v in zip(idx, s.gather(idx).to_list(), strict=True):
            if mapping[v] is None:
                bad[i] = True
            else:
                y[i] = mapping[v]
        return y, bad, lambda r: f"label: expected 0 or 1, got {s[r]!r}"

    def raw_values(self, block: _Block, field_index: int) -> tuple[pl.Series, np.ndarray | None, Any]:
        """The field's raw strings after its transform ('' = missing), the bad mask and the message."""
        sf = self.schema.fields[field_index]
        s = block.df[sf.column].fill_null("")
        if not sf.transform:
            return s, None, None
        fn = _hour_transform(sf.transform)
        uniq = s.unique().to_list()
        mapped = {v: fn(v) for v in uniq}
        bad_vals = [v for v, m in mapped.items() if m is None]
        out = s.replace_strict(uniq, [m if m is not None else "" for m in mapped.values()], return_dtype=pl.String)
        bad = s.is_in(bad_vals).to_numpy() if bad_vals else None
        return out, bad, lambda r: f"field {sf.column}: expected YYMMDDHH, got {s[r]!r}"

    def number_check(self, s: pl.Series, name: str) -> tuple[np.ndarray, np.ndarray, Any]:
        x, bad = _to_float(s)
        return x, bad, lambda r: f"field {name}: expected a number, got {s[r]!r}"

    # -- encodings: the shards' ids, local to the field (0 = the zero row, k >= 1 = the field's k-th row)

    def encode_integer(self, fi: int, x: np.ndarray) -> np.ndarray:
        return _integer_local(self.fmap.fields[fi], x).astype(np.int32)

    def encode_categorical(self, fi: int, s: pl.Series) -> np.ndarray:
        spec = self.fmap.fields[fi]
        if spec.name in self.lookups:
            keys, ids = self.lookups[spec.name]
            return s.replace_strict(keys, ids, default=0, return_dtype=pl.Int32).to_numpy()
        crc = crc32_series(s)
        local = (1 + (crc % np.uint32(spec.hash_buckets))).astype(np.int32)
        return np.where((s != "").to_numpy(), local, 0).astype(np.int32)

    def tokens(self, fi: int, s: pl.Series) -> pl.Series:
        spec = self.schema.fields[fi].spec
        return s.str.split(spec.separator).list.eval(pl.element().filter(pl.element() != "")).list.head(spec.max_len)

    def encode_sequence(self, fi: int, s: pl.Series) -> pl.Series:
        spec = self.fmap.fields[fi]
        lists = self.tokens(fi, s)
        if spec.name in self.lookups:
            keys, ids = self.lookups[spec.name]
            return lists.list.eval(pl.element().replace_strict(keys, ids, default=0, return_dtype=pl.Int32))
        lens = lists.list.len().to_numpy()
        flat = lists.explode().drop_nulls()
        local = (1 + (crc32_series(flat) % np.uint32(spec.hash_buckets))).astype(np.int32)
        parts = np.split(local, np.cumsum(lens)[:-1]) if len(lens) else []
        return pl.Series([p.tolist() for p in parts], dtype=pl.List(pl.Int32))


def _integer_local(spec, x: np.ndarray) -> np.ndarray:
    """An integer field's local bucket (0 = the shared zero row, else 1 + the log-square bin) of each float value
    (NaN = missing), as :meth:`FeatureMap.encode` computes it."""
    nb = spec.num_buckets
    miss = np.isnan(x)
    inf = np.isinf(x)
    fin = ~(miss | inf)
    xf = x[fin]
    with np.errstate(over="ignore", invalid="ignore"):
        if spec.float32:
            x32 = xf.astype(np.float32)
            v = np.log(x32 * x32 + np.float32(1.0))
        else:
            v = np.log(xf * xf + 1.0)
        b = np.where(np.isfinite(v), np.floor(v), nb - 1)
    local = np.zeros(len(x), dtype=np.int64)
    local[fin] = np.minimum(b, nb - 1).astype(np.int64) + 1
    local[inf] = nb
    local[miss] = 1 if spec.missing == "as_zero" else 0
    return local


def _to_float(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Python ``float`` semantics, vectorised: (values with NaN for '' / 'nan', bad mask of unparsable strings).
    Strings Polars refuses (e.g. ``' 5'``, ``'1_0'``) are retried with Python's ``float``."""
    empty = (s == "").to_numpy()
    xs = s.cast(pl.Float64, strict=False)
    x = xs.to_numpy().astype(np.float64, copy=True)
    failed = xs.is_null().to_numpy() & ~empty
    bad = np.zeros(len(s), dtype=bool)
    x[empty] = np.nan
    if failed.any():
        idx = np.flatnonzero(failed)
        for i, v in zip(idx, s.gather(idx).to_list(), strict=True):
            try:
                x[i] = float(v)
            except ValueError:
                bad[i] = True
                x[i] = np.nan
    return x, bad


# ------------------------------------------------------------------------------------------------------------
# the passes


class _Problems:
    """Collects bad rows of a block; raises the first in file order unless skipping."""

    def __init__(self, block: _Block, path: Path, skip_bad: bool) -> None:
        self.block, self.path, self.skip_bad = block, path, skip_bad
        self.bad = np.zeros(block.df.height, dtype=bool)
        self.first: tuple[int, str] | None = None  # (row, message) of the earliest problem checked so far

    def add(self, mask: np.ndarray | None, message) -> None:
        if mask is None or not mask.any():
            return
        new = mask & ~self.bad
        if new.any():
            r = int(np.flatnonzero(new)[0])
            if self.first is None or r < self.first[0]:
                self.first = (r, message(r))
        self.bad |= mask

    def finish(self) -> int:
        """Raise the earliest problem (rows and structural errors in line order) unless skipping; return the
        number of bad rows of the block (structural ones included)."""
        block = self.block
        if not self.skip_bad:
            candidates = []
            if self.first is not None:
                r, msg = self.first
                line = int(block.lines[r])
                candidates.append((line, f"{self.path}:{line}: {msg}"))
            if block.struct_bad:
                candidates.append(block.struct_bad[0])
            if candidates:
                raise ParseError(min(candidates)[1])
        return int(self.bad.sum()) + len(block.struct_bad)


@dataclasses.dataclass
class _Input:
    path: Path
    fixed_split: int | None  # None: the schema's rule; else every row of this input goes to that split


def _reader(inp: _Input, schema: Schema, skip_bad: bool, block_bytes: int):
    if schema.reader == "movielens":
        return _MovieLensReader(inp.path, schema, skip_bad)
    if schema.reader == "parquet":
        return _ParquetReader(inp.path, schema, max(1, block_bytes // 256))
    return _CsvReader(inp.path, schema, block_bytes)


def _check_block(
    block: _Block, enc: _Encoder, path: Path, skip_bad: bool, validate: bool = True, only: set[int] | None = None
):
    """Validate a block; returns (labels, bad mask, per-field values, bad-row count). Each field's value is its
    raw string Series after the transform, or the parsed float array of a log-square integer field.

    ``validate=False`` (the counting pass without ``skip_bad``) skips the label, transform and number checks:
    the encoding pass makes them, in file order, before anything is published."""
    probs = _Problems(block, path, skip_bad)
    y = None
    if validate:
        y, bad, msg = enc.label(block, path)
        probs.add(bad, msg)
    values: list[Any] = []
    for fi in range(len(enc.schema.fields)):
        if only is not None and fi not in only:
            values.append(None)
            continue
        s, bad, msg = enc.raw_values(block, fi)
        if validate:
            probs.add(bad, msg)
        values.append(s)
    if validate:
        for fi, sf in enumerate(enc.schema.fields):
            if sf.spec.kind == "integer" or sf.check_number:
                x, bad, msg = enc.number_check(values[fi], sf.spec.name)
                probs.add(bad, msg)
                if sf.spec.kind == "integer":
                    values[fi] = x
    nbad = probs.finish()
    return y, probs.bad, values, nbad


def _count_pass(inputs, schema, skip_bad, block_bytes, seed, bar) -> tuple[dict[str, Any], int, int]:
    """Value counts of the vocabulary fields over train rows (valid and test excluded)."""
    enc = _Encoder(schema, None)
    vocab_fields = [
        (fi, sf) for fi, sf in enumerate(schema.fields) if sf.spec.kind != "integer" and sf.spec.hash_buckets == 0
    ]
    pending: dict[str, list[pl.DataFrame]] = {sf.spec.name: [] for _, sf in vocab_fields}
    pending_rows = dict.fromkeys(pending, 0)
    train_rows = bad_rows = 0
    for inp in inputs:
        if inp.fixed_split is not None and inp.fixed_split != TRAIN:
            continue
        reader = _reader(inp, schema, skip_bad, block_bytes)
        if isinstance(reader, _CsvReader) and not skip_bad:
            reader.project({sf.column for _, sf in vocab_fields})
        only = None if skip_bad else {fi for fi, _ in vocab_fields}
        for block in reader.blocks():
            if block.struct_bad and not skip_bad:
                # a malformed line: stop counting; the encoding pass checks every row in file order and raises the
                # first problem (this one or an earlier unparsable value) before anything is published
                return {name: _merge_counts([]) for name in pending}, -1, bad_rows
            _, bad, values, nbad = _check_block(block, enc, reader.path, skip_bad, skip_bad, only)
            bad_rows += nbad
            codes = _split_codes(block.ks, schema.split_rule, schema.valid_share, seed, inp.fixed_split)
            keep = pl.Series((codes == TRAIN) & ~bad)
            train_rows += int(keep.sum())
            for fi, sf in vocab_fields:
                s = values[fi].filter(keep)
                if sf.spec.kind == "sequence":
                    s = enc.tokens(fi, s).explode().drop_nulls()
                vc = s.filter(s != "").value_counts(name="count").with_columns(pl.col("count").cast(pl.Int64))
                name = sf.spec.name
                pending[name].append(vc)
                pending_rows[name] += vc.height
                if len(pending[name]) >= 16:
                    pending[name] = [_merge_counts(pending[name])]
            bar.update(block.nbytes)
        if isinstance(reader, _MovieLensReader):
            bad_rows += reader.skipped
    counts = {name: _merge_counts(frames) for name, frames in pending.items()}
    return counts, train_rows, bad_rows


def _merge_counts(frames: list[pl.DataFrame]) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame({"value": pl.Series([], dtype=pl.String), "count": pl.Series([], dtype=pl.Int64)})
    df = pl.concat([f.rename({f.columns[0]: "value"}) for f in frames])
    return df.group_by("value").agg(pl.col("count").sum())


def _vocabulary(counts: pl.DataFrame, threshold: int) -> list[str]:
    """Values with count > threshold, most frequent first, ties by value (``FeatureMap.from_counts``'s order;
    Polars orders strings by UTF-8 bytes, which is Python's code-point order)."""
    kept = counts.filter(pl.col("count") > threshold).sort(["count", "value"], descending=[True, False])
    return kept["value"].to_list()


class _ShardWriter:
    """Frames of one split in, Parquet shards of ``shard_rows`` rows out (the last one fewer), in order."""

    def __init__(
        self, root: Path, split: str, schema: pl.Schema, row_group_rows: int, shard_rows: int, compression: str
    ) -> None:
        self.root, self.split, self.schema, self.compression = root, split, schema, compression
        self.row_group_rows, self.shard_rows = row_group_rows, shard_rows
        self.frames: list[tuple[pl.DataFrame, Callable[[], None] | None]] = []
        self.pending = 0
        self.shards: list[dict[str, Any]] = []
        self.seconds = 0.0  # spent writing Parquet
        (root / split).mkdir(parents=True, exist_ok=True)

    def add(self, df: pl.DataFrame, written: Callable[[], None] | None = None) -> None:
        """Queue ``df``'s rows; ``written`` is called once all of them are in a written shard (the caller may then
        reuse the memory the frame was built over)."""
        if df.height == 0:
            if written is not None:
                written()
            return
        self.frames.append((df, written))
        self.pending += df.height
        while self.pending >= self.shard_rows:
            self._write(self.shard_rows)

    def _write(self, rows: int) -> None:
        t0 = time.perf_counter()
        df = pl.concat([f for f, _ in self.frames], rechunk=False)  # (the writer cuts row groups all the same)
        part = df.slice(0, rows)
        rel = f"{self.split}/part-{len(self.shards):05d}.parquet"
        part.write_parquet(
            self.root / rel, compression=self.compression, row_group_size=self.row_group_rows, statistics=False
        )
        self.shards.append(
            {"path": rel, "rows": part.height, "row_groups": math.ceil(part.height / self.row_group_rows)}
        )
        del df, part
        left, at = [], 0
        for f, written in self.frames:
            if at + f.height <= rows:
                if written is not None:
                    written()
            else:
                left.append((f.slice(max(0, rows - at)), written))
            at += f.height
        self.frames = left
        self.pending -= rows
        self.seconds += time.perf_counter() - t0

    def close(self) -> list[dict[str, Any]]:
        if self.pending:
            self._write(self.pending)
        return self.shards


def _out_schema(schema: Schema) -> pl.Schema:
    return pl.Schema(
        {"label": pl.Float32}
        | {sf.spec.name: (pl.List(pl.Int32) if sf.spec.kind == "sequence" else pl.Int32) for sf in schema.fields}
    )


def _encode_pass(inputs, schema, fmap, skip_bad, block_bytes, seed, root, row_group_rows, shard_rows, compression, bar):
    enc = _Encoder(schema, fmap)
    out_schema = _out_schema(schema)
    writers = [_ShardWriter(root, name, out_schema, row_group_rows, shard_rows, compression) for name in SPLITS]
    bad_rows = 0
    for inp in inputs:
        reader = _reader(inp, schema, skip_bad, block_bytes)
        for block in reader.blocks():
            y, bad, values, nbad = _check_block(block, enc, reader.path, skip_bad, True)
            bad_rows += nbad
            codes = _split_codes(block.ks, schema.split_rule, schema.valid_share, seed, inp.fixed_split)
            cols: dict[str, Any] = {"label": pl.Series("label", y, dtype=pl.Float32)}
            for fi, sf in enumerate(schema.fields):
                name = sf.spec.name
                if sf.spec.kind == "integer":
                    cols[name] = pl.Series(name, enc.encode_integer(fi, values[fi]), dtype=pl.Int32)
                elif sf.spec.kind == "sequence":
                    cols[name] = enc.encode_sequence(fi, values[fi]).alias(name)
                else:
                    cols[name] = pl.Series(name, enc.encode_categorical(fi, values[fi]), dtype=pl.Int32)
            df = pl.DataFrame(cols)
            if bad.any():
                df, codes = df.filter(pl.Series(~bad)), codes[~bad]
            for code, writer in enumerate(writers):
                writer.add(df.filter(pl.Series(codes == code)) if (codes != code).any() else df)
            bar.update(block.nbytes)
        if isinstance(reader, _MovieLensReader):
            bad_rows += reader.skipped
    splits = {name: w.close() for name, w in zip(SPLITS, writers, strict=True)}
    return splits, bad_rows


# ------------------------------------------------------------------------------------------------------------
# the streaming path: one parse of the raw text (see "Fast path" in the module docstring)

STREAMING = True  # False: always the block path (tests compare the two)
_SEED_ID, _SEED_CHECK = 0x243F6A8885A308D3, 0x13198A2E03707344  # two independent seeds of Polars' 64-bit hash
_INTERMEDIATE = ".prepare-intermediate.arrow"


def _row_hash(column: str, seed: int) -> pl.Expr:
    """The 64-bit hash of a raw string column (``null`` = empty hashes to a fixed value); tests replace it with a
    weak hash to force collisions."""
    return pl.col(column).hash(seed)


def _u64(v: int) -> pl.Expr:
    return pl.lit(v % (1 << 64), dtype=pl.UInt64)


def _splitmix64_expr(z: pl.Expr) -> pl.Expr:
    """:func:`_splitmix64` in Polars (UInt64 arithmetic wraps; ``// 2**s`` is ``>> s``)."""
    z = z + _u64(int(_GOLDEN))
    z = (z ^ (z // _u64(1 << 30))) * _u64(0xBF58476D1CE4E5B9)
    z = (z ^ (z // _u64(1 << 27))) * _u64(0x94D049BB133111EB)
    return z ^ (z // _u64(1 << 31))


def _train_expr(k: pl.Expr, rule: str, share: float, seed: int, fixed: int | None) -> pl.Expr:
    """Whether data row ``k`` is a train row: :func:`_split_codes` ``== TRAIN`` as a Polars expression."""
    if fixed is not None and fixed != TRAIN:
        return pl.lit(False)
    train = pl.lit(True) if fixed is not None or rule == "all" else (k % 1000) <= 800
    if share > 0:
        keyed = k.cast(pl.UInt64) + _u64((seed % (1 << 64)) * int(_GOLDEN))
        u = (_splitmix64_expr(keyed) // _u64(1 << 11)).cast(pl.Float64) / float(1 << 53)
        train = train & ~(u < share)
    return train


def _streamable(schema: Schema, inputs: list[_Input]) -> bool:
    """Schemas the streaming path handles: CSV text, no sequence fields, a 0/1 label, no column read both as an
    integer field and otherwise."""
    if not STREAMING or schema.reader != "csv" or schema.label_threshold is not None:
        return False
    if any(sf.spec.kind == "sequence" for sf in schema.fields):
        return False
    int_cols = {sf.column for sf in schema.fields if sf.spec.kind == "integer"}
    other = {sf.column for sf in schema.fields if sf.spec.kind != "integer"} | {schema.label}
    return not (int_cols & other)


def _plain_text(reader: _CsvReader) -> bool:
    """A one-byte delimiter and no UTF-8 byte-order mark (Polars would drop it; the block path keeps it)."""
    with open(reader.path, "rb") as fh:
        bom = fh.read(3) == b"\xef\xbb\xbf"
    return len(reader.delimiter.encode("utf-8")) == 1 and not bom


@dataclasses.dataclass
class _Scanned:
    """Pass 1 of one input: the intermediate files, its row count, and per categorical field a table of its
    distinct raw values: ``h`` (the id hash), ``v`` (the value; null = empty), ``n`` (train rows), ``a``/``b``
    (min/max of the check hash over the value's rows)."""

    parts: list[Path]  # the intermediate, one Arrow IPC file per batch
    rows: int
    train_rows: int
    tables: dict[str, pl.DataFrame]  # by Polars column name c<i>
    columns: dict[str, int]  # raw column name -> index


def _text_blocks(reader: _CsvReader, block_bytes: int) -> Iterator[bytes]:
    """The data bytes of a text file (header excluded) in blocks of about ``block_bytes`` cut after a line end
    (parsing one block at a time bounds memory: Polars' batch iterators run ahead of a slower consumer)."""
    pool = _BlockPool(block_bytes, 2)
    for buf, size in pool.blocks(reader.path, reader.data_offset):
        data = buf[:size].tobytes()
        pool.give_back(buf)
        yield data


def _scan_input(inp: _Input, schema: Schema, seed: int, block_bytes: int, work: Path) -> _Scanned | None:
    """Pass 1 of the streaming path over one text input, or ``None`` when the input is not provably clean (then
    the block path reads everything, with today's messages and ``--skip-bad`` counts)."""
    reader = _CsvReader(inp.path, schema, block_bytes)
    if not _plain_text(reader):
        return None
    dbyte, delimiters = ord(reader.delimiter), 0
    ncols = len(reader.columns)
    idx = {c: i for i, c in enumerate(reader.columns)}
    int_cols = {idx[sf.column] for sf in schema.fields if sf.spec.kind == "integer"}
    pl_schema = {f"c{i}": (pl.Float64 if i in int_cols else pl.String) for i in range(ncols)}
    train = _train_expr(pl.col("__k"), schema.split_rule, schema.valid_share, seed, inp.fixed_split)
    label = pl.col(f"c{idx[schema.label]}")
    bad = ~label.fill_null("").is_in(["0", "1"])
    inter = ["y"]
    cols: dict[str, pl.Expr] = {"__train": train, "y": label == "1"}
    tcols: list[str] = []  # raw columns read by a categorical field (one table each)
    for fi, sf in enumerate(schema.fields):
        col = f"c{idx[sf.column]}"
        if sf.spec.kind == "integer":
            cols[f"x{fi}"] = pl.col(col).cast(pl.Float32 if sf.spec.float32 else pl.Float64)
            inter.append(f"x{fi}")
            continue
        if sf.check_number:
            bad = bad | (pl.col(col).is_not_null() & pl.col(col).cast(pl.Float64, strict=False).is_null())
        if col not in tcols:
            tcols.append(col)
            cols[f"h{col}"], cols[f"g{col}"], cols[f"v{col}"] = (
                _row_hash(col, _SEED_ID),
                _row_hash(col, _SEED_CHECK),
                pl.col(col),
            )
            inter.append(f"h{col}")
    cols["__bad"] = bad
    aggs = {
        c: [
            pl.col("__train").sum().cast(pl.Int64).alias("n"),
            pl.col(f"v{c}").first().alias("v"),
            pl.col(f"g{c}").min().alias("a"),
            pl.col(f"g{c}").max().alias("b"),
        ]
        for c in tcols
    }
    pending: dict[str, list[pl.DataFrame]] = {c: [] for c in tcols}
    parts: list[Path] = []
    rows = train_rows = 0
    tag = len(list(work.glob(_INTERMEDIATE + "*")))

    def give_up() -> None:
        for p in parts:
            p.unlink(missing_ok=True)

    try:
        for data in _text_blocks(reader, max(block_bytes, 1 << 16)):
            # with Polars refusing a line with too many fields and turning a short or blank line into a row of
            # nulls, ``delimiters == rows · (columns − 1)`` at the end proves that every line has all its fields
            if b"\r" in data:
                give_up()
                return None
            delimiters += int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == dbyte))
            batch = (
                pl.scan_csv(
                    data,
                    has_header=False,
                    separator=reader.delimiter,
                    quote_char=None,
                    schema=pl_schema,
                    row_index_name="__k",
                    row_index_offset=rows,
                )
                .select(**cols)
                .collect(engine="streaming")
            )
            if batch["__bad"].any():
                give_up()
                return None
            rows += batch.height
            train_rows += int(batch["__train"].sum())
            parts.append(work / f"{_INTERMEDIATE}.{tag}.{len(parts):06d}")
            batch.select(inter).write_ipc(parts[-1], compression="uncompressed")
            grouped = pl.collect_all([batch.lazy().group_by(pl.col(f"h{c}").alias("h")).agg(aggs[c]) for c in tcols])
            for c, g in zip(tcols, grouped, strict=True):
                pending[c].append(g)
                if len(pending[c]) >= 4:
                    pending[c] = [_merge_tables(pending[c])]
    except pl.exceptions.PolarsError:  # too many fields, not UTF-8, an unparsable number: the block path reports it
        give_up()
        return None
    if delimiters != rows * (ncols - 1):
        give_up()
        return None
    return _Scanned(parts, rows, train_rows, {c: _merge_tables(pending[c]) for c in tcols}, idx)


def _merge_tables(frames: list[pl.DataFrame]) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(
            {
                "h": pl.Series([], dtype=pl.UInt64),
                "n": pl.Series([], dtype=pl.Int64),
                "v": pl.Series([], dtype=pl.String),
                "a": pl.Series([], dtype=pl.UInt64),
                "b": pl.Series([], dtype=pl.UInt64),
            }
        )
    df = frames[0] if len(frames) == 1 else pl.concat(frames)
    return df.group_by("h").agg(pl.col("n").sum(), pl.col("v").first(), pl.col("a").min(), pl.col("b").max())


def _merged_tables(scans: list[_Scanned], schema: Schema) -> dict[int, pl.DataFrame] | None:
    """Per categorical field, its distinct raw values over all inputs (``h``, ``v`` with '' for empty, train count
    ``n``), or ``None`` when two distinct values share an id hash (detected unless they also share the check
    hash, see the module docstring)."""
    out: dict[int, pl.DataFrame] = {}
    for fi, sf in enumerate(schema.fields):
        if sf.spec.kind == "integer":
            continue
        frames = [s.tables[f"c{s.columns[sf.column]}"] for s in scans]
        t = frames[0] if len(frames) == 1 else _merge_tables(frames)
        if (t["a"] != t["b"]).any():  # (across inputs too: the merged group spans both check hashes)
            return None
        out[fi] = t.with_columns(pl.col("v").fill_null(""))
    return out


def _transformed(sf: SchemaField, t: pl.DataFrame) -> pl.Series | None:
    """The table's values after the field's transform ('' stays missing), or ``None`` when one is malformed."""
    if not sf.transform:
        return t["v"]
    fn = _hour_transform(sf.transform)
    mapped = [fn(v) for v in t["v"].to_list()]
    if any(m is None for m in mapped):
        return None
    return pl.Series("v", mapped, dtype=pl.String)


def _streaming_prepare(inputs, schema, sources, settings, seed, block_bytes, staged, rgr, shard_rows, compression):
    """The streaming path (module docstring); ``None`` (nothing left behind in ``staged``) when an input is not
    provably clean or a hash collision is detected: the caller then runs the block path."""
    scans: list[_Scanned] = []
    t0 = time.perf_counter()

    def give_up() -> None:
        for s in scans:
            for p in s.parts:
                p.unlink(missing_ok=True)

    for inp in inputs:
        s = _scan_input(inp, schema, seed, block_bytes, staged)
        if s is None:
            give_up()
            return None
        scans.append(s)
    t1 = time.perf_counter()
    tables = _merged_tables(scans, schema)
    values: dict[int, pl.Series] = {}
    for fi, t in (tables or {}).items():
        v = _transformed(schema.fields[fi], t)
        if v is None:
            tables = None
            break
        values[fi] = v
    if tables is None:
        give_up()
        return None
    vocabularies: dict[str, list[str]] = {}
    for fi, sf in enumerate(schema.fields):
        if sf.spec.kind != "integer" and sf.spec.hash_buckets == 0:
            counts = pl.DataFrame({"value": values[fi], "count": tables[fi]["n"]}).filter(pl.col("value") != "")
            counts = counts.group_by("value").agg(pl.col("count").sum())
            vocabularies[sf.spec.name] = _vocabulary(counts, sf.spec.threshold)
    needs_vocab = bool(vocabularies)
    if needs_vocab and sum(s.train_rows for s in scans) == 0:
        give_up()
        raise ValueError(f"{inputs[0].path}: no usable train rows to build vocabularies from")
    fmap = FeatureMap(schema.specs, vocabularies, sources[0], {"prepare": settings})
    enc = _Encoder(schema, fmap)
    lookups: dict[int, tuple[pl.Series, pl.Series]] = {}
    for fi, t in tables.items():
        ids = enc.encode_categorical(fi, values[fi])  # the vocabulary lookup or CRC32 of each distinct value
        keep = ids != 0  # out-of-vocabulary and empty values are the replacement's default, 0
        lookups[fi] = (t["h"].filter(pl.Series(keep)), pl.Series(ids[keep], dtype=pl.Int32))
    out_schema = _out_schema(schema)
    writers = [_ShardWriter(staged, name, out_schema, rgr, shard_rows, compression) for name in SPLITS]
    t2 = time.perf_counter()
    for inp, s in zip(inputs, scans, strict=True):
        # replace_strict builds its table in every batch: O(ids of the field) per batch (see the docstring)
        ids_of = [
            pl.col(f"hc{s.columns[sf.column]}")
            .replace_strict(*lookups[fi], default=0, return_dtype=pl.Int32)
            .alias(sf.spec.name)
            for fi, sf in enumerate(schema.fields)
            if fi in lookups
        ]
        k0 = 0
        for part in s.parts:
            batch = pl.read_ipc(part.read_bytes())  # (bytes: no memory map that would grow the resident set)
            part.unlink()
            n = batch.height
            codes = _split_codes(
                np.arange(k0, k0 + n, dtype=np.int64), schema.split_rule, schema.valid_share, seed, inp.fixed_split
            )
            k0 += n
            cat = batch.select(ids_of)
            cols: dict[str, Any] = {"label": batch["y"].cast(pl.Float32)}
            for fi, sf in enumerate(schema.fields):
                name = sf.spec.name
                if sf.spec.kind == "integer":
                    x = batch[f"x{fi}"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
                    cols[name] = pl.Series(name, enc.encode_integer(fi, x), dtype=pl.Int32)
                else:
                    cols[name] = cat[name]
            df = pl.DataFrame(cols)
            for code, writer in enumerate(writers):
                writer.add(df.filter(pl.Series(codes == code)) if (codes != code).any() else df)
    splits = {name: w.close() for name, w in zip(SPLITS, writers, strict=True)}
    t3 = time.perf_counter()
    stages = {"parse": t1 - t0, "vocabulary": t2 - t1, "encode": t3 - t2, "write": sum(w.seconds for w in writers)}
    return fmap, splits, {k: round(v, 3) for k, v in stages.items()}


# ------------------------------------------------------------------------------------------------------------
# the native path: numba kernels over the raw bytes (see polyzoo.recsys.native and the module docstring)

NATIVE = True  # False: skip the native path (tests compare the paths)
NATIVE_THREADS: int | None = None  # threads of the native path (None: one per available core, at most 4)
_NATIVE_PART = ".prepare-native"


@dataclasses.dataclass
class _NativePart:
    path: Path  # raw columns of `rows` values each: label, split code, integer buckets, entry numbers
    table: int  # the counting tables (thread) whose entry numbers it holds
    rows: int
    nbytes: int  # of raw text (progress)
    dtypes: tuple[str, ...]  # each column's stored integer type (the narrowest that holds its range)

    def layout(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Each column's byte offset in the file and its width; the file's size (columns padded to 8 bytes)."""
        widths = np.array([np.dtype(d).itemsize for d in self.dtypes], dtype=np.int64)
        sizes = (widths * self.rows + 7) // 8 * 8
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64), widths, int(sizes.sum())


def _work_array(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array, as ``numpy.empty``, for data that is written before it is read, in order (a block's
    bytes, an intermediate, an output column); from 4 MiB on in a private anonymous mapping of its own (unmapped
    when the array is freed).

    numpy asks the kernel to back every array of 4 MiB or more with huge pages (``MADV_HUGEPAGE``). For memory used
    in order that saves little, and where the kernel must compact memory to find a huge page (``defrag`` set to
    ``madvise``, as on the 2-core VM of the benchmarks) the first touch costs far more: there, filling 640 MiB of
    fresh numpy arrays took 2.2–4.3 CPU s against 0.34 s without the advice, and a 10 M-row prepare in a fresh
    process took 6.6–6.9 s instead of 7.3–7.9 (system CPU 1.6–1.8 s instead of 2.5–3.8). The counting tables
    (~20 MiB per thread here, hundreds of MiB on the real Criteo set) keep numpy's default: probed at random, they are
    where huge pages can spare TLB misses. Here neither choice measured better for them: the kernel ran at 1.81–1.95
    vs 1.85–2.0 ns/B, and a fresh-process prepare at 6.54–6.67 vs 6.61–6.73 s with the tables in such mappings."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size < (4 << 20) or os.name != "posix":  # (numpy gives no advice below 4 MiB)
        return np.empty(shape, dtype=dtype)
    try:
        pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:  # (a mapping refused, e.g. under strict overcommit: numpy's allocator answers, MemoryError or not)
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(pages, dtype=dtype).reshape(shape)


class _Scratch:
    """A thread's work arrays, reused from block to block (fresh large arrays would each cost page faults):
    ``ints`` (integer columns × rows: the parsed values the kernel leaves to Python, sparse) and ``cols`` (the
    intermediate's columns × rows, which the kernels write into directly)."""

    def __init__(self) -> None:
        self.rows = -1

    def ensure(self, rows: int, n_int: int, n_out: int) -> _Scratch:
        if rows > self.rows:
            self.rows = max(rows, int(self.rows * 1.25))
            self.ints = _work_array((n_int, self.rows), np.float64)
            self.cols = _work_array((n_out, self.rows), np.int32)
        return self


def _native_layout(schema: Schema, columns: list[str], cat_columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per raw column its kind for :func:`polyzoo.recsys.native.scan_block` and its slot (the integer column of
    ``ints`` or the table number)."""
    from polyzoo.recsys import native

    kinds = np.full(len(columns), native.SKIP, dtype=np.int8)
    slots = np.zeros(len(columns), dtype=np.int64)
    int_columns = list(dict.fromkeys(sf.column for sf in schema.fields if sf.spec.kind == "integer"))
    for i, c in enumerate(columns):
        if c == schema.label:
            kinds[i] = native.LABEL
        elif c in int_columns:
            kinds[i], slots[i] = native.INT, int_columns.index(c)
        elif c in cat_columns:
            kinds[i], slots[i] = native.CAT, cat_columns.index(c)
    return kinds, slots


class _BlockPool:
    """Reusable byte buffers for reading text in blocks (the native and the streaming path): a file is read into
    them (one copy, from the page cache), each block cut after its last line end, the rest carried to the next
    buffer; a block's buffer comes back to the pool when its reader is done with it (at most ``size`` blocks in
    memory; a line longer than a block gets a bigger buffer)."""

    def __init__(self, block_bytes: int, size: int) -> None:
        import queue

        self.free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        for _ in range(size):
            self.free.put(_work_array(block_bytes + 1, np.uint8))

    def blocks(self, path: Path, offset: int) -> Iterator[tuple[np.ndarray, int]]:
        """``(buffer, length)``: whole lines (the last one given a ``\\n`` when the file lacks it)."""
        from polyzoo.recsys import native

        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            buf, filled, eof = self.free.get(), 0, False
            while True:
                while not eof and filled < len(buf) - 1:
                    got = fh.readinto(memoryview(buf)[filled : len(buf) - 1])
                    eof = not got
                    filled += got or 0
                if eof:
                    if filled and buf[filled - 1] != 10:
                        buf[filled] = 10
                        filled += 1
                    if filled:
                        yield buf, filled
                    else:
                        self.free.put(buf)
                    return
                cut = native.last_line_end(buf, filled) + 1
                if cut == 0:  # a line longer than the buffer: a bigger one (it stays in the pool)
                    bigger = _work_array(2 * len(buf) - 1, np.uint8)
                    bigger[:filled] = buf[:filled]
                    buf = bigger
                    continue
                nxt = self.free.get()
                if len(nxt) < filled - cut + 1:
                    nxt = _work_array(len(buf), np.uint8)
                nxt[: filled - cut] = buf[cut:filled]
                yield buf, cut
                buf, filled = nxt, filled - cut

    def give_back(self, buf: np.ndarray) -> None:
        self.free.put(buf)


def _native_scan(inp, input_index, schema, seed, block_bytes, work, tables, scratch, threads, cat_columns, parts, step):
    """Pass 1 over one text input: every block parsed and counted by the kernel (``threads`` blocks at a time,
    each with its own tables), its labels, split codes, integer buckets and entry numbers written to one
    intermediate file. Returns the input's train rows, or ``None`` when the kernel declined a block."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    from polyzoo.recsys import native

    reader = _CsvReader(inp.path, schema, block_bytes)
    if not _plain_text(reader) or schema.label in cat_columns:
        return None
    kinds, slots = _native_layout(schema, reader.columns, cat_columns)
    classes = native.byte_classes(ord(reader.delimiter))
    int_fields = [(fi, sf) for fi, sf in enumerate(schema.fields) if sf.spec.kind == "integer"]
    int_columns = list(dict.fromkeys(sf.column for _, sf in int_fields))
    # each integer column's first field gets its buckets from the kernel, straight into its intermediate column;
    # a column's further fields (other bucket counts) take the parsed values (`keep`)
    primary = {c: next(i for i, (_, sf) in enumerate(int_fields) if sf.column == c) for c in int_columns}
    luts, lut_of = _bucket_luts([int_fields[primary[c]][1].spec for c in int_columns])
    brow = np.array([2 + primary[c] for c in int_columns], dtype=np.int64)
    keep = np.array([sum(sf.column == c for _, sf in int_fields) > 1 for c in int_columns], dtype=np.uint8)
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for t in range(len(tables)):
        free.put(t)
    n_out = 2 + len(int_fields) + len(cat_columns)

    def work_on(block: np.ndarray, size: int, k0: int, n: int, path: Path) -> tuple[_NativePart, int] | None:
        try:
            return scan(block[:size], k0, n, path)
        finally:
            pool.give_back(block)
            step(size)

    def scan(buf: np.ndarray, k0: int, n: int, path: Path) -> tuple[_NativePart, int] | None:
        codes = _split_codes(np.arange(k0, k0 + n, dtype=np.int64), schema.split_rule, schema.valid_share, seed,
                             inp.fixed_split)  # fmt: skip
        train = (codes == TRAIN).astype(np.int64)
        t = free.get()
        try:
            w = scratch[t].ensure(n, len(int_columns), n_out)
            ints, out = w.ints[:, :n], w.cols[:, :n]
            label, locs = out[0], out[2 + len(int_fields) :]  # (the kernel writes the intermediate's columns)
            left = np.zeros(len(int_columns), dtype=np.int64)
            p = r = 0
            while True:
                p, r, outcome = native.scan_block(buf, p, r, classes, kinds, slots, train, *tables[t].args(), label,
                                                  locs, luts, lut_of, brow, out, keep, ints, left)  # fmt: skip
                if outcome != native.GROW:
                    break
                tables[t].grow()
            if outcome != native.OK or r != n:
                return None
            out[1] = codes
            for i, (_, sf) in enumerate(int_fields):
                col = int_columns.index(sf.column)
                if i != primary[sf.column]:
                    _integer_local_lut(sf.spec, ints[col], out[2 + i])
                elif left[col]:  # integers beyond the kernel's table
                    rest = out[2 + i] < 0
                    out[2 + i][rest] = _integer_local(sf.spec, ints[col][rest])
            # stored narrow (less to write and read back): labels and codes < 3, buckets <= num_buckets, entry
            # numbers < the table's entries so far (-1 = empty)
            highs = [2, 2, *(sf.spec.num_buckets for _, sf in int_fields), *tables[t].nent]
            part = _NativePart(path, t, n, len(buf), tuple(_narrowest(h) for h in highs))
            offsets, _, size = part.layout()
            ends = [*offsets[1:].tolist(), size]
            with open(path, "wb") as fh:  # the columns one after another, as `layout` places them (padded)
                for column, dtype, end in zip(out, part.dtypes, ends, strict=True):
                    fh.write(column if dtype == "int32" else column.astype(dtype))
                    fh.write(bytes(end - fh.tell()))
        finally:
            free.put(t)
        return part, int(train.sum())

    train_rows, k0 = 0, 0
    pool = _BlockPool(max(block_bytes, 1 << 16), threads + 2)
    with ThreadPoolExecutor(max_workers=threads) as workers:
        pending = []
        ok = True
        for block, size in pool.blocks(inp.path, reader.data_offset):
            n = native.count_lines(block[:size])
            path = work / f"{_NATIVE_PART}.{input_index}.{len(parts) + len(pending):06d}"
            pending.append(workers.submit(work_on, block, size, k0, n, path))
            k0 += n
            while len(pending) > threads or (pending and pending[0].done()):
                done = pending.pop(0).result()
                if done is None:
                    ok = False
                    break
                parts.append(done[0])
                train_rows += done[1]
            if not ok:
                break
        for f in pending:
            done = f.result()
            if done is None:
                ok = False
            elif ok:
                parts.append(done[0])
                train_rows += done[1]
            else:
                done[0].path.unlink(missing_ok=True)
    return train_rows if ok else None


_LUT_HALF = 1 << 16


@functools.lru_cache(maxsize=32)
def _bucket_lut(num_buckets: int, missing: str, float32: bool) -> tuple[np.ndarray, int]:
    """:func:`_integer_local` of every integer in ``[−2¹⁶, 2¹⁶]`` and of NaN, computed by that function itself."""
    spec = FieldSpec("lut", "integer", num_buckets=num_buckets, missing=missing, float32=float32)
    lut = _integer_local(spec, np.arange(-_LUT_HALF, _LUT_HALF + 1, dtype=np.float64)).astype(np.int32)
    return lut, int(_integer_local(spec, np.array([np.nan]))[0])


def _bucket_luts(specs: list) -> tuple[np.ndarray, np.ndarray]:
    """For :func:`polyzoo.recsys.native.scan_block`: the distinct :func:`_bucket_lut` tables of ``specs``, each
    with its missing value's bucket appended (one row each), and per spec its row."""
    rows: dict[tuple, int] = {}
    lut_of = np.array([rows.setdefault((s.num_buckets, s.missing, s.float32), len(rows)) for s in specs], np.int64)
    luts = np.zeros((len(rows), 2 * _LUT_HALF + 2), dtype=np.int32)
    for (num_buckets, missing, float32), k in rows.items():
        lut, miss = _bucket_lut(num_buckets, missing, float32)
        luts[k, :-1], luts[k, -1] = lut, miss
    return luts, lut_of


def _integer_local_lut(spec, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`_integer_local` of integer-valued ``x`` (NaN = missing), read from :func:`_bucket_lut` where it
    covers the value (the same numbers, by construction) and computed for the rest; into ``out`` if given."""
    from polyzoo.recsys import native

    lut, missing = _bucket_lut(spec.num_buckets, spec.missing, spec.float32)
    out = np.empty(len(x), dtype=np.int32) if out is None else out
    if native.lookup_buckets(x, lut, missing, out):
        rest = out < 0
        out[rest] = _integer_local(spec, x[rest])
    return out


def _narrowest(high: int) -> str:
    """The narrowest signed integer type holding ``-1 .. high``."""
    return "int8" if high < 1 << 7 else "int16" if high < 1 << 15 else "int32"


def _truncated(path: Path) -> int:
    raise OSError(f"{path}: the intermediate file ended early (was the staged output folder changed?)")


def _native_values(tables, j: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Categorical column j over all tables: ``entries`` (key, table, entry number) and its distinct values
    ``distinct`` (key, value, train count n)."""
    from polyzoo.recsys import native

    frames = []
    for t, tab in enumerate(tables):
        keys, counts = tab.entries(j)
        frames.append(
            pl.DataFrame({"key": keys, "n": counts, "t": np.full(len(keys), t, dtype=np.int32)}).with_row_index("e")
        )
    entries = pl.concat(frames)
    distinct = entries.group_by("key").agg(pl.col("n").sum())
    values = native.key_strings(distinct["key"].to_numpy())
    return entries, distinct.with_columns(values)


def _native_prepare(inputs, schema, sources, settings, seed, block_bytes, staged, rgr, shard_rows, compression, bar):
    """The native path (module docstring); ``None`` (nothing left behind, ``bar`` reset) when the kernel declined
    an input or a value fails a check the other paths make (a transform, ``binning: none``), so that the caller
    tries the next path. ``bar`` advances by each pass's share of the raw bytes."""
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from polyzoo.recsys import native

    threads = NATIVE_THREADS or max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    cat_columns = list(dict.fromkeys(sf.column for sf in schema.fields if sf.spec.kind != "integer"))
    tables = [native.Tables(len(cat_columns)) for _ in range(threads)]
    scratch = [_Scratch() for _ in range(threads)]
    parts: list[list[_NativePart]] = []
    t0 = time.perf_counter()

    def give_up() -> None:
        for ps in parts:
            for part in ps:
                part.path.unlink(missing_ok=True)
        bar.reset()

    scale = bar.total / max(1, 2 * sum(p.stat().st_size for p in (i.path for i in inputs)))
    lock = threading.Lock()

    def step(nbytes: int) -> None:
        with lock:
            bar.update(nbytes * scale)

    train_rows = 0
    for i, inp in enumerate(inputs):
        parts.append([])
        n = _native_scan(inp, i, schema, seed, block_bytes, staged, tables, scratch, threads, cat_columns, parts[-1],
                         step)  # fmt: skip
        if n is None:
            give_up()
            return None
        train_rows += n
    t1 = time.perf_counter()
    columns = {c: _native_values(tables, j) for j, c in enumerate(cat_columns)}
    values: dict[int, pl.Series] = {}
    for fi, sf in enumerate(schema.fields):
        if sf.spec.kind == "integer":
            continue
        j = cat_columns.index(sf.column)
        distinct = columns[sf.column][1]
        if sf.transform and sum(int(t.empty[j]) for t in tables):  # (an empty hour is malformed)
            give_up()
            return None
        v = _transformed(sf, distinct)
        if v is None or (sf.check_number and not all(_is_number(x) for x in distinct["v"].to_list())):
            give_up()
            return None
        values[fi] = v
    vocabularies: dict[str, list[str]] = {}
    for fi, sf in enumerate(schema.fields):
        if sf.spec.kind != "integer" and sf.spec.hash_buckets == 0:
            n = columns[sf.column][1]["n"]
            counts = pl.DataFrame({"value": values[fi], "count": n}).group_by("value").agg(pl.col("count").sum())
            vocabularies[sf.spec.name] = _vocabulary(counts, sf.spec.threshold)
    if vocabularies and train_rows == 0:
        give_up()
        raise ValueError(f"{inputs[0].path}: no usable train rows to build vocabularies from")
    fmap = FeatureMap(schema.specs, vocabularies, sources[0], {"prepare": settings})
    enc = _Encoder(schema, fmap)
    # for native.encode_block: output field fi reads intermediate column src[fi]; an integer field's buckets are
    # its ids; a categorical field maps its entry numbers with table t's ids, maps[t][moffs[t][fi] + e]
    n_int = sum(sf.spec.kind == "integer" for sf in schema.fields)
    nf = len(schema.fields)
    src = np.zeros(nf, dtype=np.int64)
    pieces: list[list[np.ndarray]] = [[] for _ in tables]
    moffs = [np.full(nf, -1, dtype=np.int64) for _ in tables]
    ii = 0
    for fi, sf in enumerate(schema.fields):
        if sf.spec.kind == "integer":
            src[fi] = 2 + ii
            ii += 1
            continue
        src[fi] = 2 + n_int + cat_columns.index(sf.column)
        entries, distinct = columns[sf.column]
        ids = distinct.select("key", pl.Series("id", enc.encode_categorical(fi, values[fi]), dtype=pl.Int32))
        joined = entries.join(ids, on="key", how="left").sort("t", "e")
        per_table = joined.partition_by("t", as_dict=True, maintain_order=True)
        for t in range(len(tables)):
            moffs[t][fi] = sum(len(p) for p in pieces[t])
            ids_t = per_table[(t,)]["id"].to_numpy() if (t,) in per_table else np.zeros(0, dtype=np.int32)
            pieces[t].append(ids_t.astype(np.int32))
    maps = [np.concatenate(p) if p else np.zeros(0, dtype=np.int32) for p in pieces]
    out_schema = _out_schema(schema)
    writers = [_ShardWriter(staged, name, out_schema, rgr, shard_rows, compression) for name in SPLITS]
    t2 = time.perf_counter()

    buffers: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()  # reused: an intermediate file's bytes
    outputs: queue.SimpleQueue[tuple[np.ndarray, np.ndarray]] = queue.SimpleQueue()  # reused: label, fields
    names = [sf.spec.name for sf in schema.fields]

    def encode(part: _NativePart) -> tuple[list[pl.DataFrame | None], int, Callable[[], None]]:
        try:
            raw = buffers.get_nowait()
        except queue.Empty:
            raw = np.empty(0, dtype=np.uint8)
        try:
            label, out = outputs.get_nowait()
        except queue.Empty:
            label, out = np.empty(0, dtype=np.float32), np.empty((nf, 0), dtype=np.int32)
        if len(label) < part.rows:
            rows = int(part.rows * 1.25)
            label, out = _work_array(rows, np.float32), _work_array((nf, rows), np.int32)
        offsets, widths, size = part.layout()
        if len(raw) < size:
            raw = _work_array(int(size * 1.25), np.uint8)
        try:
            with open(part.path, "rb", buffering=0) as fh:
                view, got = memoryview(raw)[:size], 0
                while got < view.nbytes:
                    got += fh.readinto(view[got:]) or _truncated(part.path)
            part.path.unlink()
            codes = raw[offsets[1] : offsets[1] + part.rows]  # (int8: 0, 1, 2)
            counts = np.bincount(codes, minlength=len(SPLITS))
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            native.encode_block(raw, offsets, widths, part.rows, src, moffs[part.table], maps[part.table],
                                starts, label, out)  # fmt: skip
        finally:
            buffers.put(raw)
        # Polars keeps numpy columns without a copy, so a frame holds its block's arrays until its shard is written:
        # the block's largest split is a frame over them (they go back to `outputs` once it is written: fresh arrays
        # for every block paid their page faults again and again), the others get their own copies (else the test
        # split, whose 1 M-row shard takes ~5 M input rows to fill, would hold ~40 whole blocks)
        largest = int(np.argmax(counts))
        frames: list[pl.DataFrame | None] = []
        for split, (a, c) in enumerate(zip(starts, counts, strict=True)):
            if c == 0:
                frames.append(None)
                continue
            take = (lambda x: x) if split == largest else np.copy
            cols = {"label": take(label[a : a + c]), **{name: take(out[f, a : a + c]) for f, name in enumerate(names)}}
            frames.append(pl.DataFrame(cols, schema=out_schema))
        return frames, largest, lambda: outputs.put((label, out))

    # blocks encoded by the threads, shards written in block order by this one; the threads work ahead (up to
    # `ahead` blocks) while a shard is written
    queued = [part for ps in parts for part in ps]
    ahead = 2 * threads + 2
    with ThreadPoolExecutor(max_workers=threads) as workers:
        pending = [workers.submit(encode, part) for part in queued[:ahead]]
        for i in range(len(queued)):
            frames, largest, written = pending.pop(0).result()
            if i + ahead < len(queued):
                pending.append(workers.submit(encode, queued[i + ahead]))
            for k, (df, writer) in enumerate(zip(frames, writers, strict=True)):
                if df is not None:
                    writer.add(df, written if k == largest else None)
            if frames[largest] is None:  # (a block without rows)
                written()
            step(queued[i].nbytes)
    splits = {name: w.close() for name, w in zip(SPLITS, writers, strict=True)}
    t3 = time.perf_counter()
    stages = {"parse": t1 - t0, "vocabulary": t2 - t1, "encode": t3 - t2, "write": sum(w.seconds for w in writers)}
    return fmap, splits, {k: round(v, 3) for k, v in stages.items()}


# ------------------------------------------------------------------------------------------------------------
# entry point


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a prepared folder (``FileNotFoundError`` when the folder is missing or incomplete)."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: not a (complete) `polyzoo recsys prepare` output folder")
    manifest = read_json(path)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"expected {MANIFEST_FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))}"
        )
    return manifest


def _source_paths(inputs: list[_Input], schema: Schema) -> list[Path]:
    if schema.reader == "movielens":
        root = inputs[0].path
        return [root / f"ml-100k.{ext}" for ext in ("inter", "user", "item")]
    return [i.path for i in inputs]


def _block_prepare(
    inputs, schema, sources, settings, seed, skip_bad, block_bytes, staged, rgr, shard_rows, compression, bar
):
    """The block path: a counting pass (when a field needs a vocabulary), then the encoding pass."""
    vocabularies: dict[str, list[str]] = {}
    if any(sf.spec.kind != "integer" and sf.spec.hash_buckets == 0 for sf in schema.fields):
        counts, train_rows, _ = _count_pass(inputs, schema, skip_bad, block_bytes, seed, bar)
        if train_rows == 0:  # (-1: stopped at a malformed line, which the encoding pass reports)
            raise ValueError(f"{inputs[0].path}: no usable train rows to build vocabularies from")
        for sf in schema.fields:
            if sf.spec.name in counts:
                vocabularies[sf.spec.name] = _vocabulary(counts[sf.spec.name], sf.spec.threshold)
    fmap = FeatureMap(schema.specs, vocabularies, sources[0], {"prepare": settings})
    splits, bad_rows = _encode_pass(
        inputs, schema, fmap, skip_bad, block_bytes, seed, staged, rgr, shard_rows, compression, bar
    )
    return fmap, splits, bad_rows


def prepare(
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    schema: Schema,
    *,
    valid_input: str | os.PathLike | None = None,
    test_input: str | os.PathLike | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    overwrite: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    compression: str = DEFAULT_COMPRESSION,
    progress: bool = False,
) -> dict[str, Any]:
    """Prepare ``input_path`` into the folder ``out`` (see the module docstring). Returns a summary dict
    (``status`` ``"prepared"`` or ``"up to date"``, rows per split, bad rows, embedding rows, seconds, ``reader``:
    ``"native"``, ``"streaming"`` or ``"blocks"`` — the path that ran —, ``stage_seconds`` of the native or
    streaming path).

    ``valid_input`` / ``test_input``: separate files whose rows all go to that split (then ``input_path`` is all
    train, the schema's split rule unused; ``valid_share`` still carves validation from it when no
    ``valid_input`` is given).

    ``progress``: a progress bar (tqdm, on stderr) over the raw bytes, counted once per pass over them: twice,
    ``prepare (2 passes)``, when a field builds a vocabulary (counting, then encoding), once otherwise.

    Raises:
        FileNotFoundError: an input is missing.
        ParseError: a malformed row (unless ``skip_bad``), ``file:line: ...``.
        PrepareError: ``out`` holds another preparation (other settings or changed sources) and not ``overwrite``.
    """
    from tqdm.auto import tqdm

    from polyzoo.shared.run import config_diff

    t0 = time.perf_counter()
    out = Path(out)
    if row_group_rows < 1 or shard_rows < row_group_rows:
        raise ValueError(
            f"row_group_rows must be >= 1 and shard_rows >= row_group_rows, got {row_group_rows}, {shard_rows}"
        )
    inputs = [_Input(Path(input_path), TRAIN if (valid_input or test_input) else None)]
    if valid_input is not None:
        inputs.append(_Input(Path(valid_input), VALID))
    if test_input is not None:
        inputs.append(_Input(Path(test_input), TEST))
    if (valid_input or test_input) and schema.reader == "movielens":
        raise ValueError("separate valid/test inputs are not supported for the movielens reader")
    if valid_input is not None and schema.valid_share > 0:
        raise ValueError(f"give either a valid input ({valid_input}) or a valid share ({schema.valid_share}), not both")
    paths = _source_paths(inputs, schema)
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"no input file at {p}")
    sources = [file_fingerprint(p) for p in paths]
    settings = {
        "schema": schema.to_dict(),
        "protocol": schema.protocol,
        "thresholds": sorted({f.spec.threshold for f in schema.fields if f.spec.kind != "integer"}),
        "hash_buckets": sorted({f.spec.hash_buckets for f in schema.fields if f.spec.kind != "integer"}),
        "split": {
            "rule": "files" if (valid_input or test_input) else schema.split_rule,
            "valid_share": schema.valid_share,
            "seed": seed,
            "valid_rule": "splitmix64(k + seed * 0x9E3779B97F4A7C15) / 2**64 < valid_share",
        },
        "skip_bad": skip_bad,
        "row_group_rows": row_group_rows,
        "shard_rows": shard_rows,
        "compression": compression,
    }
    if out.exists() and not out.is_dir():
        raise PrepareError(f"{out}: the output is a file; expected a folder")
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and not overwrite:
        old = read_manifest(out)
        if old["version"] == MANIFEST_VERSION and old.get("settings") == settings and old.get("sources") == sources:
            rows = {s: sum(p["rows"] for p in old["splits"][s]) for s in SPLITS}
            return {"status": "up to date", "out": str(out), "rows": rows, "bad_rows": old["skipped"]["bad_rows"]}
        diff = config_diff(old.get("settings"), settings)
        if old["version"] != MANIFEST_VERSION:
            diff.insert(0, f"format version {old['version']}, now {MANIFEST_VERSION}")
        if old.get("sources") != sources:
            diff.append("sources (an input file changed: size or mtime)")
        raise PrepareError(
            f"{out} was prepared with other settings or sources ({'; '.join(diff[:4])}); "
            "use --overwrite to replace it or choose another --out"
        )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PrepareError(f"{out} exists without a manifest (incomplete or not a prepare output); use --overwrite")

    needs_vocab = any(sf.spec.kind != "integer" and sf.spec.hash_buckets == 0 for sf in schema.fields)
    total = sum(s["size"] for s in sources if schema.reader != "movielens")
    passes = 2 if needs_vocab else 1
    desc = f"prepare ({passes} passes)" if passes > 1 else "prepare"
    bar = tqdm(total=total * passes, unit="B", unit_scale=True, desc=desc, disable=not progress)
    try:
        with atomic_dir(out) as staged:
            done, reader_path = None, "streaming"
            if _streamable(schema, inputs) and NATIVE:
                done = _native_prepare(
                    inputs, schema, sources, settings, seed, block_bytes, staged, row_group_rows, shard_rows,
                    compression, bar,
                )  # fmt: skip
                reader_path = "native"
            if done is None and _streamable(schema, inputs):
                reader_path = "streaming"
                done = _streaming_prepare(
                    inputs,
                    schema,
                    sources,
                    settings,
                    seed,
                    block_bytes,
                    staged,
                    row_group_rows,
                    shard_rows,
                    compression,
                )
            if done is not None:
                fmap, splits, stages = done
                bad_rows = 0
                bar.update(bar.total - bar.n)
            else:
                fmap, splits, bad_rows = _block_prepare(
                    inputs,
                    schema,
                    sources,
                    settings,
                    seed,
                    skip_bad,
                    block_bytes,
                    staged,
                    row_group_rows,
                    shard_rows,
                    compression,
                    bar,
                )
                reader_path, stages = "blocks", {}
            if not splits["train"]:
                raise ValueError(f"{inputs[0].path}: no train rows (the file is empty, header only or all malformed)")
            fmap.save(staged / "feature_map.json")
            manifest = {
                "format": MANIFEST_FORMAT,
                "version": MANIFEST_VERSION,
                "schema": schema.to_dict(),
                "splits": splits,
                "sources": sources,
                "settings": settings,
                "skipped": {"bad_rows": bad_rows},
            }
            write_json_atomic(staged / "manifest.json", manifest)  # last
    finally:
        bar.close()
    if bad_rows:
        log.warning("%s: skipped %d malformed rows", inputs[0].path, bad_rows)
    rows = {s: sum(p["rows"] for p in splits[s]) for s in SPLITS}
    return {
        "status": "prepared",
        "out": str(out),
        "rows": rows,
        "bad_rows": bad_rows,
        "embedding_rows": fmap.num_rows,
        "fields": fmap.num_fields,
        "reader": reader_path,
        "stage_seconds": stages,
        "seconds": round(time.perf_counter() - t0, 3),
    }
