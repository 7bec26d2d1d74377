"""Training input from a prepared folder (``polyzoo recsys prepare``): Parquet shards read by row-group ranges per
rank and per DataLoader worker, a seeded shuffle, batches built column-wise.

**Prepared folder** (format ``polyzoo-ctr-parquet``, version 2 or 1): ``manifest.json`` (``splits`` → list of
shards ``{"path", "rows", "row_groups"}`` for ``train`` / ``valid`` / ``test``), ``feature_map.json``
(:class:`~polyzoo.recsys.features.FeatureMap`) and the shards: a ``label`` float32 column, then one column per
field in feature-map order: an int32 id, or ``list<int32>`` of ids for a multi-hot sequence field (a *bag*, at
most ``max_len`` ids, empty when missing). Version 2 stores ids local to the field (0 = missing or out of
vocabulary, k ≥ 1 the field's k-th row), which the reader turns into global embedding rows
``offsets[f] + k − 1`` (0 stays 0) in one pass over each window (~1 ms per 65,536 × 39 ids, numba); an id
beyond its field's size is a ``ValueError`` naming the shard and row. Version 1 stored global rows, read as
they are.

**Units and plan.** A unit is one row group of one shard (its row count read from the Parquet footer, no data
read). For an epoch, the units of a split are listed in manifest order, permuted with
``numpy.random.default_rng([seed, epoch])`` when shuffling, and cut into ``P = world_size · workers`` contiguous
*parts* whose row counts are as equal as unit boundaries allow (each cut at the unit boundary nearest to
``p · rows / P``). Part ``rank · workers + worker`` belongs to that process; a process reads only its part's row
groups. A part with no unit gives no batch (more parts than row groups: write smaller row groups).

**Order inside a part** (:func:`window_order`): the part's units are grouped into *windows* of consecutive units
holding at least ``shuffle_buffer`` rows (one unit per window without shuffling); each window's rows are permuted
with ``default_rng([seed, epoch, part, window])`` and the concatenation of the windows is cut into batches of
``batch_size`` (a batch may span two windows; only the part's last batch is short). The order is a pure function
of (seed, epoch, world size, workers, the shards' row groups), so the batch at any position can be found again
without replaying the epoch: resuming reads only the window holding the resume row. The shuffle mixes rows within
a window of ``shuffle_buffer`` rows and the row groups across the whole split — the shard-and-buffer shuffle of
``tf.data``/WebDataset pipelines, not a full permutation of the split.

**Workers.** With ``W`` DataLoader workers the rank's batches come round-robin from its W parts; every part is
padded with empty batches to the longest part's count, so the DataLoader's round-robin never meets an exhausted
worker and the rank's sequence is ``item j = part j mod W, batch j div W``. Resuming after ``k`` items rotates
the parts over the workers so that worker 0 continues with item ``k`` (:class:`ParquetBatches` ``start_item``).

**Batches**: ``{"ids": int32 (B, Σ widths), "label": float32 (B,)}``; a scalar field has width 1, a bag field
``max_len`` columns padded with 0 (the zero row; :class:`~polyzoo.recsys.models.FieldEmbedding` averages a bag
over its non-zero ids). Columns are converted with polars/numpy, never row by row in Python.

Reading is done with polars (``scan_parquet(...).slice(...)``: row-group pruning by the footer's row counts).
PyArrow is not a dependency: the current pyarrow (26) needs numpy ≥ 2, and the workspace pins numpy < 2 for
OpenMMLab (detection).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numba import njit
from torch.utils.data import IterableDataset, get_worker_info

from polyzoo.recsys.features import FeatureMap
from polyzoo.shared.io import read_json

__all__ = [
    "MANIFEST_FORMAT",
    "ParquetBatches",
    "PreparedData",
    "Unit",
    "global_rows",
    "is_prepared",
    "parquet_row_group_rows",
    "plan_parts",
    "rank_item_sizes",
    "read_split",
    "window_order",
]

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "polyzoo-ctr-parquet"
MANIFEST_VERSIONS = (1, 2)  # 1: the shards hold global embedding rows; 2: ids local to each field
SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------------------------------
# Parquet footer: row counts of the row groups (thrift compact protocol, only what is needed)


class _Compact:
    """Minimal reader of Thrift's compact protocol (the encoding of Parquet's ``FileMetaData``)."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def byte(self) -> int:
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, ttype: int) -> None:
        if ttype in (1, 2):  # bool inside a struct: the value is the type
            return
        if ttype == 3:
            self.pos += 1
        elif ttype in (4, 5, 6):
            self.varint()
        elif ttype == 7:
            self.pos += 8
        elif ttype == 8:
            length = self.varint()  # not `self.pos += self.varint()`: that adds to the position before the read
            self.pos += length
        elif ttype in (9, 10):
            size, etype = self.list_header()
            for _ in range(size):
                self.pos += 1 if etype in (1, 2) else 0
                if etype not in (1, 2):
                    self.skip(etype)
        elif ttype == 11:
            size = self.varint()
            if size:
                kv = self.byte()
                for _ in range(size):
                    self.skip(kv >> 4)
                    self.skip(kv & 0x0F)
        elif ttype == 12:
            for _fid, ftype in self.fields():
                self.skip(ftype)
        else:
            raise ValueError(f"unknown thrift compact type {ttype}")

    def list_header(self) -> tuple[int, int]:
        h = self.byte()
        size = h >> 4
        if size == 15:
            size = self.varint()
        return size, h & 0x0F

    def fields(self) -> Iterator[tuple[int, int]]:
        """(field id, type) of a struct's fields; the caller reads or skips each value."""
        last = 0
        while True:
            h = self.byte()
            ftype = h & 0x0F
            if ftype == 0:
                return
            delta = h >> 4
            last = last + delta if delta else self.zigzag()
            yield last, ftype


def parquet_row_group_rows(path: str | os.PathLike) -> list[int]:
    """Row counts of a Parquet file's row groups, from its footer (``FileMetaData.row_groups[i].num_rows``).

    Raises:
        ValueError: the file is not Parquet (no ``PAR1`` magic) or its footer cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < 12:
            raise ValueError(f"{path}: not a Parquet file ({size} bytes)")
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] != b"PAR1":
            raise ValueError(f"{path}: not a Parquet file (no PAR1 magic at the end)")
        (length,) = struct.unpack("<i", tail[:4])
        if not 0 < length <= size - 12:
            raise ValueError(f"{path}: corrupt Parquet footer (length {length})")
        fh.seek(size - 8 - length)
        meta = fh.read(length)
    r = _Compact(meta)
    rows: list[int] = []
    try:
        for fid, ftype in r.fields():
            if fid == 4 and ftype == 9:  # row_groups: list<RowGroup>
                count, _etype = r.list_header()
                for _ in range(count):
                    num = None
                    for gid, gtype in r.fields():
                        if gid == 3 and gtype == 6:  # RowGroup.num_rows: i64
                            num = r.zigzag()
                        else:
                            r.skip(gtype)
                    if num is None:
                        raise ValueError("row group without num_rows")
                    rows.append(num)
            else:
                r.skip(ftype)
    except (IndexError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the Parquet footer ({err})") from None
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The prepared folder


@dataclasses.dataclass(frozen=True)
class Unit:
    """One row group of one shard: the smallest piece a process reads."""

    path: str
    row_group: int
    start: int  # first row of the row group in its file
    rows: int


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a prepared folder (holds ``manifest.json``)."""
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


class PreparedData:
    """A prepared folder: its manifest, feature map, field layout and the row-group units of each split.

    Attributes:
        fields: column names of the fields, in feature-map order.
        widths: columns each field takes in a batch's ``ids`` (1, or ``max_len`` for a bag field).
        bags: names of the multi-hot (``list<int32>``) fields.
        row_base, sizes: per batch column, what turns a version-2 field id k into its global row (``row_base + k``)
            and the field's row count (the largest valid k); ``None`` for a version-1 folder (global rows stored).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        import polars as pl

        self.root = Path(root)
        mpath = self.root / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath}: not found; expected a folder written by `polyzoo recsys prepare`")
        self.manifest = read_json(mpath)
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{mpath}: format {self.manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        if self.manifest.get("version") not in MANIFEST_VERSIONS:
            raise ValueError(f"{mpath}: version {self.manifest.get('version')!r}, expected one of {MANIFEST_VERSIONS}")
        self.feature_map = FeatureMap.load(self.root / "feature_map.json")
        self.fields = self.feature_map.names
        splits = self.manifest.get("splits") or {}
        self.units: dict[str, list[Unit]] = {}
        first: Path | None = None
        for split in SPLITS:
            units: list[Unit] = []
            for shard in splits.get(split) or []:
                path = self.root / shard["path"]
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: shard listed in {mpath} ({split}) is missing")
                counts = parquet_row_group_rows(path)
                if sum(counts) != int(shard["rows"]):
                    raise ValueError(f"{path}: {sum(counts)} rows in the file, {shard['rows']} in {mpath}")
                start = 0
                for g, n in enumerate(counts):
                    if n:
                        units.append(Unit(str(path), g, start, n))
                    start += n
                first = first or path
            self.units[split] = units
        if first is None:
            raise ValueError(f"{mpath}: no shard in any split")
        schema = pl.read_parquet_schema(first)
        missing = [c for c in ["label", *self.fields] if c not in schema]
        if missing:
            raise ValueError(f"{first}: columns {missing} missing; expected label and the feature map's fields")
        self.bags = [f for f in self.fields if isinstance(schema[f], pl.List | pl.Array)]
        self.widths = [self._max_len(f) if f in self.bags else 1 for f in self.fields]
        self.row_base: np.ndarray | None = None
        self.sizes: np.ndarray | None = None
        if self.manifest["version"] >= 2:  # per batch column: global row = base + field id (id >= 1)
            fm = self.feature_map
            self.row_base = np.repeat(np.asarray(fm.offsets, dtype=np.int32) - 1, self.widths)
            self.sizes = np.repeat(np.asarray(fm.sizes, dtype=np.int32), self.widths)

    def _max_len(self, name: str) -> int:
        spec = next(f for f in self.feature_map.fields if f.name == name)
        value = spec.max_len if spec.kind == "sequence" else None  # a sequence field of the feature map (v3)
        if value is None:
            value = _find_max_len(self.manifest.get("schema"), name)
        if value is None:
            raise ValueError(
                f"{self.root}: field {name!r} is a list column but neither the feature map nor manifest.json's "
                "schema gives its max_len"
            )
        return int(value)

    def rows(self, split: str) -> int:
        return sum(u.rows for u in self.units.get(split, []))

    @property
    def num_rows(self) -> int:
        """Embedding-table rows (``FeatureMap.num_rows``)."""
        return self.feature_map.num_rows

    def spec(self) -> dict[str, Any]:
        """What identifies the data of a run (for the run config): a re-prepared folder (another manifest or feature
        map) is another run."""
        import hashlib

        digest = hashlib.sha256()
        for name in ("manifest.json", "feature_map.json"):
            digest.update((self.root / name).read_bytes())
        return {
            "prepared": str(self.root.resolve()),
            "sha256": digest.hexdigest(),
            "rows": {s: self.rows(s) for s in SPLITS},
            "widths": self.widths,
            "settings": self.manifest.get("settings", {}),
        }


def _find_max_len(schema: Any, name: str) -> int | None:
    """``max_len`` of field ``name`` anywhere in the manifest's schema (a dict or list of field entries)."""
    if isinstance(schema, dict):
        if schema.get("name") == name and "max_len" in schema:
            return int(schema["max_len"])
        entry = schema.get(name)
        if isinstance(entry, dict) and "max_len" in entry:
            return int(entry["max_len"])
        values = list(schema.values())
    elif isinstance(schema, list):
        values = schema
    else:
        return None
    for v in values:
        found = _find_max_len(v, name)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------------------------
# The plan


def plan_parts(units: Sequence[Unit], num_parts: int, seed: int = 0, epoch: int = 0, shuffle: bool = False):
    """Cut ``units`` (permuted by ``default_rng([seed, epoch])`` when ``shuffle``) into ``num_parts`` contiguous
    parts balanced by rows: cut p sits at the unit boundary nearest to ``p · total / num_parts``."""
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    order = list(units)
    if shuffle and order:
        perm = np.random.default_rng([seed, epoch]).permutation(len(order))
        order = [order[i] for i in perm]
    cum = np.concatenate([[0], np.cumsum([u.rows for u in order], dtype=np.int64)])
    total = int(cum[-1])
    cuts = [0]
    for p in range(1, num_parts):
        target = p * total / num_parts
        k = int(np.searchsorted(cum, target))
        if k > 0 and (k >= len(cum) or target - cum[k - 1] <= cum[k] - target):
            k -= 1
        cuts.append(max(k, cuts[-1]))
    cuts.append(len(order))
    return [order[cuts[p] : cuts[p + 1]] for p in range(num_parts)]


def _windows(units: Sequence[Unit], shuffle_buffer: int) -> list[list[Unit]]:
    windows: list[list[Unit]] = []
    cur: list[Unit] = []
    rows = 0
    for u in units:
        cur.append(u)
        rows += u.rows
        if rows >= max(shuffle_buffer, 1):
            windows.append(cur)
            cur, rows = [], 0
    if cur:
        windows.append(cur)
    return windows


def window_order(rows: int, seed: int, epoch: int, part: int, window: int, shuffle: bool) -> np.ndarray:
    """Row order inside window ``window`` of part ``part``: ``default_rng([seed, epoch, part, window])``'s
    permutation, the identity without shuffling. Drawn when the window is read (never all windows at once)."""
    if shuffle:
        return np.random.default_rng([seed, epoch, part, window]).permutation(rows)
    return np.arange(rows)


def _batch_count(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def rank_item_sizes(
    units: Sequence[Unit],
    batch_size: int,
    world_size: int,
    workers: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = False,
) -> list[list[int]]:
    """Rows of every item each rank's DataLoader yields in an epoch (0 for the empty padding items), computed
    from the plan alone: ``sizes[rank][j]``."""
    w = max(workers, 1)
    parts = plan_parts(units, world_size * w, seed, epoch, shuffle)
    out = []
    for r in range(world_size):
        sizes = []
        for p in parts[r * w : (r + 1) * w]:
            n = sum(u.rows for u in p)
            sizes.append([batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []))
        longest = max(len(s) for s in sizes)
        out.append([sizes[j % w][j // w] if j // w < len(sizes[j % w]) else 0 for j in range(w * longest)])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Reading


@njit(nogil=True, cache=True)
def _global_rows(ids, base, sizes):
    """In place: a field id k in batch column j (1 <= k <= ``sizes[j]``) becomes the global embedding row
    ``base[j] + k``; 0 (missing, out of vocabulary, a bag's padding) stays 0. Stops at the first id outside
    ``0..sizes[j]`` and returns its flat index ``i · m + j`` (that id left as it is), else −1."""
    n, m = ids.shape
    for i in range(n):
        for j in range(m):
            k = ids[i, j]
            if k > 0 and k <= sizes[j]:
                ids[i, j] = base[j] + k
            elif k != 0:
                return i * m + j
    return -1


def global_rows(df: Any, fmap: FeatureMap) -> Any:
    """A version-2 shard's polars frame with its field ids made global embedding rows, as the batches carry them
    (``offsets[f] + k − 1`` for an id k ≥ 1 of field f, 0 stays 0; inside the lists of a bag field too): for
    reading shards outside :class:`ParquetBatches`. Columns that are not fields are left as they are."""
    import polars as pl

    def rows(e: pl.Expr, base: int) -> pl.Expr:
        return pl.when(e > 0).then(e + base).otherwise(0).cast(pl.Int32)

    exprs = []
    for name, base in zip(fmap.names, np.asarray(fmap.offsets) - 1, strict=True):
        if name not in df.columns:
            continue
        col = pl.col(name)
        bag = isinstance(df.schema[name], pl.List)
        exprs.append((col.list.eval(rows(pl.element(), int(base))) if bag else rows(col, int(base))).alias(name))
    return df.with_columns(exprs)


def read_split(root: str | os.PathLike, split: str) -> Any:
    """All rows of one split of a prepared folder as one polars frame (shards in manifest order), its ids global
    embedding rows (:func:`global_rows`; a version-1 folder's as stored). For inspection and tests: it holds the
    whole split in memory."""
    import polars as pl

    root = Path(root)
    manifest = read_json(root / "manifest.json")
    frames = [pl.read_parquet(root / s["path"]) for s in manifest["splits"][split]]
    if not frames:
        return pl.DataFrame()
    df = pl.concat(frames)
    if manifest["version"] >= 2:
        df = global_rows(df, FeatureMap.load(root / "feature_map.json"))
    return df


def _read_window(
    units: Sequence[Unit],
    fields: Sequence[str],
    widths: Sequence[int],
    base: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``units`` -> (ids int32 (n, Σ widths) C-order, labels float32 (n,)), column-wise. A null id
    (not written by ``prepare``) reads as 0, the zero row. With ``base`` (a version-2 folder), the shards' field
    ids become global rows (:func:`_global_rows`); an id outside its field is a ``ValueError`` naming the shard."""
    ids, label = _read_columns(units, fields, widths)
    if base is not None and len(label):
        bad = _global_rows(ids, base, sizes)
        if bad >= 0:
            i, j = divmod(bad, ids.shape[1])
            ends = np.cumsum([u.rows for u in units])
            k = int(np.searchsorted(ends, i, side="right"))
            row = units[k].start + i - int(ends[k] - units[k].rows)
            field = np.repeat(np.asarray(fields), widths)[j]
            raise ValueError(
                f"{units[k].path}: row {row}, field {field!r}: id {ids[i, j]}, expected 0..{sizes[j]} "
                "(a shard of another feature map?)"
            )
    return ids, label


def _read_columns(units: Sequence[Unit], fields: Sequence[str], widths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    import polars as pl

    frames = [pl.scan_parquet(u.path).slice(u.start, u.rows).select(["label", *fields]).collect() for u in units]
    if all(w == 1 for w in widths):  # row-major per unit, then one concatenation (faster than polars' rechunk)
        ids = [f.select(pl.col(fields).cast(pl.Int32).fill_null(0)).to_numpy(order="c") for f in frames]
        labels = [f["label"].cast(pl.Float32).to_numpy() for f in frames]
        if len(frames) == 1:
            return _writable(np.ascontiguousarray(ids[0], dtype=np.int32)), _writable(labels[0])
        return np.concatenate(ids).astype(np.int32, copy=False), np.concatenate(labels)
    df = frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=True)
    n = df.height
    label = df["label"].cast(pl.Float32).to_numpy()
    ids = np.zeros((n, sum(widths)), dtype=np.int32)
    scalars = [(i, f) for i, (f, w) in enumerate(zip(fields, widths, strict=True)) if w == 1]
    offsets = np.cumsum([0, *widths])
    for i, f in scalars:
        ids[:, offsets[i]] = df[f].cast(pl.Int32).fill_null(0).to_numpy()
    for i, (f, w) in enumerate(zip(fields, widths, strict=True)):
        if w == 1:
            continue
        col = offsets[i]
        s = df[f]
        lengths = s.list.len().fill_null(0).to_numpy().astype(np.int64)
        if lengths.max(initial=0) > w:
            raise ValueError(f"{units[0].path}: field {f!r} holds a list of {lengths.max()} ids, max_len is {w}")
        values = s.explode().drop_nulls().cast(pl.Int32).to_numpy()
        rows = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        pos = np.arange(len(values)) - np.repeat(starts, lengths)
        ids[rows, col + pos] = values
    return ids, _writable(np.ascontiguousarray(label))


def _empty(width: int) -> dict[str, torch.Tensor]:
    return {"ids": torch.zeros((0, width), dtype=torch.int32), "label": torch.zeros(0)}


class ParquetBatches(IterableDataset):
    """Batches of one split of a :class:`PreparedData` for this process (see the module docstring).

    Use with ``DataLoader(ds, batch_size=None, num_workers=workers)``; ``workers`` must equal the DataLoader's
    ``num_workers`` (the plan depends on it). ``rank`` / ``world_size`` default to ``torch.distributed``'s.

    Args:
        start_item: items of this rank's sequence already consumed in this epoch (resume position).
        pad: yield the empty padding items (needed for exact round-robin with workers; the loop skips them).
    """

    def __init__(
        self,
        data: PreparedData,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        shuffle_buffer: int = 65_536,
        workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        start_item: int = 0,
        pad: bool = True,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.units = list(data.units.get(split, []))
        self.fields, self.widths = list(data.fields), list(data.widths)
        self.row_base, self.sizes = data.row_base, data.sizes
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.workers = workers
        if rank is None or world_size is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank, world_size = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
        self.rank, self.world_size = rank, world_size
        self.start_item, self.pad = start_item, pad

    def item_sizes(self) -> list[list[int]]:
        """``sizes[rank][j]``: rows of item j of every rank in this epoch (:func:`rank_item_sizes`)."""
        return rank_item_sizes(
            self.units, self.batch_size, self.world_size, self.workers, self.seed, self.epoch, self.shuffle
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers = max(self.workers, 1)
        if (info.num_workers if info is not None else 1) != workers:
            raise ValueError(
                f"ParquetBatches(workers={self.workers}) iterated by {info.num_workers if info else 0} workers"
            )
        worker = info.id if info is not None else 0
        k = self.start_item
        slot = (worker + k) % workers  # rotated so that worker 0 continues with item k
        skip = k // workers + (1 if slot < k % workers else 0)
        parts = plan_parts(self.units, self.world_size * workers, self.seed, self.epoch, self.shuffle)
        index = self.rank * workers + slot
        mine = parts[index]
        counts = [_batch_count(sum(u.rows for u in p), self.batch_size) for p in parts[index - slot :][:workers]]
        yield from self._part_batches(mine, index, skip)
        if self.pad:  # empty items up to the rank's longest part: every worker yields the same count
            width = sum(self.widths)
            for _ in range(max(counts) - max(counts[slot], skip)):
                yield _empty(width)

    def _part_batches(self, units: list[Unit], part: int, skip_batches: int) -> Iterator[dict[str, torch.Tensor]]:
        bs = self.batch_size
        windows = _windows(units, self.shuffle_buffer)
        sizes = [sum(u.rows for u in w) for w in windows]
        skip_rows = skip_batches * bs
        starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        if skip_rows >= starts[-1]:
            return
        first = int(np.searchsorted(starts, skip_rows, side="right")) - 1
        carry_ids: np.ndarray | None = None
        carry_label: np.ndarray | None = None
        for w in range(max(first, 0), len(windows)):
            ids, label = _read_window(windows[w], self.fields, self.widths, self.row_base, self.sizes)
            n = len(label)
            if self.shuffle:  # gathered batch by batch: no second window-sized array (page faults, memory)
                order = window_order(n, self.seed, self.epoch, part, w, True)
                rows = _row_items(ids)

                def piece(lo: int, hi: int, order=order, rows=rows, label=label, width=ids.shape[1]):
                    idx = order[lo:hi]
                    return np.take(rows, idx).view(np.int32).reshape(len(idx), width), label[idx]
            else:

                def piece(lo: int, hi: int, ids=ids, label=label):
                    return ids[lo:hi], label[lo:hi]

            at = max(skip_rows - int(starts[w]), 0)
            if carry_ids is not None:
                take = min(bs - len(carry_label), n)
                more_ids, more_label = piece(0, take)
                carry_ids = np.concatenate([carry_ids, more_ids])
                carry_label = np.concatenate([carry_label, more_label])
                at = take
                if len(carry_label) == bs:
                    yield _to_batch(carry_ids, carry_label)
                    carry_ids = carry_label = None
                else:
                    continue
            while n - at >= bs:
                yield _to_batch(*piece(at, at + bs))
                at += bs
            if at < n:
                carry_ids, carry_label = (a.copy() for a in piece(at, n))
        if carry_label is not None and len(carry_label):
            yield _to_batch(carry_ids, carry_label)


def _row_items(ids: np.ndarray) -> np.ndarray:
    """A C-ordered 2-D array viewed as a 1-D array of opaque row items, so that ``np.take`` copies whole rows (one
    memcpy per row: about twice as fast as numpy's element-wise fancy indexing)."""
    ids = np.ascontiguousarray(ids)
    return ids.view(np.dtype((np.void, ids.shape[1] * ids.itemsize))).ravel()


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()  # polars hands out read-only zero-copy views


def _to_batch(ids: np.ndarray, label: np.ndarray) -> dict[str, torch.Tensor]:
    return {"ids": torch.from_numpy(ids), "label": torch.from_numpy(label)}
