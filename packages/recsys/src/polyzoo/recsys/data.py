"""Streaming CTR datasets: raw Criteo, Avazu CSV and MovieLens (RecBole atomic files), never holding the file.

:class:`CTRStream` is a ``torch.utils.data.IterableDataset`` that reads a text file line by line and yields
**batches** ``{"ids": int64 (B, F), "label": float32 (B,), "line": int}`` (``line`` = 1-based line number of the
batch's last row, the resume position). Use it with ``DataLoader(stream, batch_size=None)``.

* **Sharding**: data row k (0-based, header excluded) belongs to shard ``k mod S`` where
  ``S = world_size · num_workers`` and shard = ``rank · num_workers + worker_id`` (``torch.distributed`` rank
  and world size when initialised, the DataLoader worker otherwise), so workers and ranks read disjoint rows
  and together read every row once.
* **Split** (official ``criteo_split.py``): row k is *train* iff ``(k mod 1000)/1000 ≤ 0.8``, else *test*.
* **Malformed rows** (wrong field count, unparsable number or label) raise :class:`ParseError` naming the file
  and line, or with ``skip_bad=True`` are counted in ``stream.stats["skipped"]`` (per process) and logged.
* Memory stays flat: one line, one batch and the feature map are all that is held.

Formats (:class:`CTRFormat`): :func:`criteo_format` (``label, I1..I13, C1..C26``; tab- or comma-separated,
header optional and detected; ``protocol="official"`` (default: I1–I12, missing integer → bucket 0, float32
binning) or ``"polyzoo"`` (I1–I13, missing integer → zero row), see :mod:`polyzoo.recsys.features`),
:func:`avazu_format` (``id, click, hour, C1, …, C21``; ``hour`` YYMMDDHH becomes
hour-of-day and weekday fields), and MovieLens via :class:`MovieLensStream` (RecBole's ``ml-100k.inter``
streamed, the small ``.user`` / ``.item`` side tables joined in memory; rating ≥ ``threshold`` is a click).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from polyzoo.recsys.features import FeatureMap, FieldSpec, ParseError, file_fingerprint

__all__ = [
    "CTRFormat",
    "CTRStream",
    "MovieLensStream",
    "avazu_format",
    "build_feature_map",
    "criteo_format",
    "format_for_map",
    "in_split",
    "movielens_format",
]

log = logging.getLogger(__name__)

CRITEO_INTEGER = [f"I{i}" for i in range(1, 14)]  # all 13 (protocol "polyzoo"; the official code drops I13)
CRITEO_PROTOCOLS = ("official", "polyzoo")
CRITEO_CATEGORICAL = [f"C{i}" for i in range(1, 27)]
AVAZU_COLUMNS = [
    "id",
    "click",
    "hour",
    "C1",
    "banner_pos",
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
    "device_type",
    "device_conn_type",
    "C14",
    "C15",
    "C16",
    "C17",
    "C18",
    "C19",
    "C20",
    "C21",
]


def in_split(k: int, split: str | None) -> bool:
    """Official split rule on data row k: train iff ``(k mod 1000)/1000 ≤ 0.8``; ``None`` keeps every row."""
    if split is None:
        return True
    train = (k % 1000) / 1000 <= 0.8
    if split == "train":
        return train
    if split == "test":
        return not train
    raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")


@dataclasses.dataclass
class CTRFormat:
    """How to read one delimited text format.

    ``num_columns`` raw columns; ``label_column`` holds 0/1; ``fields`` the specs in output order, and
    ``extract(columns) -> list[str]`` returns one raw string per field (defaults to ``feature_columns``).
    ``delimiter=None`` detects tab vs comma from the first line; ``header`` is ``True``/``False`` or ``None``
    (detected: the first line has a non-numeric label column).
    """

    name: str
    num_columns: int
    label_column: int
    fields: list[FieldSpec]
    feature_columns: list[int] = dataclasses.field(default_factory=list)
    extract: Callable[[list[str]], list[str]] | None = None
    delimiter: str | None = None
    header: bool | None = None
    protocol: str = ""

    def values(self, columns: list[str]) -> list[str]:
        if self.extract is not None:
            return self.extract(columns)
        return [columns[c] for c in self.feature_columns]


def criteo_format(
    threshold: int = 20,
    hash_buckets: int = 0,
    num_buckets: int = 64,
    delimiter: str | None = None,
    protocol: str = "official",
) -> CTRFormat:
    """Raw Criteo: ``label, I1..I13, C1..C26`` (40 columns).

    Args:
        protocol: ``"official"`` (default; the xDeepInt reader: I1–I12 only, a missing integer read as 0 → bucket
            0, float32 binning; 38 fields) or ``"polyzoo"`` (I1–I13, a missing integer → the zero row, exact
            binning; 39 fields). See :mod:`polyzoo.recsys.features`. The official behaviour is the default because
            it decides which rows exist and are trained, i.e. what the paper's numbers and GFTRL's feature
            selection mean.
    """
    if protocol not in CRITEO_PROTOCOLS:
        raise ValueError(f"criteo protocol: expected one of {CRITEO_PROTOCOLS}, got {protocol!r}")
    official = protocol == "official"
    integers = CRITEO_INTEGER[:12] if official else CRITEO_INTEGER
    missing = "as_zero" if official else "zero_row"
    fields = [FieldSpec(n, "integer", num_buckets=num_buckets, missing=missing, float32=official) for n in integers]
    fields += [FieldSpec(n, "categorical", threshold, hash_buckets) for n in CRITEO_CATEGORICAL]
    columns = list(range(1, 1 + len(integers))) + list(range(14, 40))
    return CTRFormat("criteo", 40, 0, fields, columns, delimiter=delimiter, protocol=protocol)


def format_for_map(fmt: CTRFormat, feature_map: FeatureMap) -> CTRFormat:
    """``fmt`` adjusted to the Criteo protocol a feature map was built with (recorded in its settings, or inferred
    from its field names for maps that predate the record); other formats are returned unchanged."""
    if fmt.name != "criteo":
        return fmt
    protocol = feature_map.settings.get("protocol") or ("polyzoo" if "I13" in feature_map.names else "official")
    if protocol == fmt.protocol:
        return fmt
    return criteo_format(delimiter=fmt.delimiter, protocol=protocol)


def _avazu_extract(columns: list[str]) -> list[str]:
    hour = columns[2]
    if len(hour) != 8 or not hour.isdigit():
        raise ParseError(f"field hour: expected YYMMDDHH, got {hour!r}")
    try:
        weekday = dt.date(2000 + int(hour[:2]), int(hour[2:4]), int(hour[4:6])).weekday()
    except ValueError:
        raise ParseError(f"field hour: expected YYMMDDHH, got {hour!r}") from None
    return [hour[6:], str(weekday), *columns[3:]]


def avazu_format(threshold: int = 20, hash_buckets: int = 0) -> CTRFormat:
    """Avazu CSV with header ``id, click, hour, …``: ``id`` dropped, ``hour`` → ``hour_of_day`` and ``weekday``."""
    names = ["hour_of_day", "weekday", *AVAZU_COLUMNS[3:]]
    fields = [FieldSpec(n, "categorical", threshold, hash_buckets) for n in names]
    return CTRFormat("avazu", 24, 1, fields, extract=_avazu_extract, delimiter=",")


def _detect_delimiter(line: str) -> str:
    return "\t" if "\t" in line else ","


def _parse_label(value: str, where: str) -> float:
    try:
        y = float(value)
    except ValueError:
        raise ParseError(f"{where}label: expected 0 or 1, got {value!r}") from None
    if y not in (0.0, 1.0):
        raise ParseError(f"{where}label: expected 0 or 1, got {value!r}")
    return y


def _shard(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(shard index, shard count) from the DataLoader worker and the distributed rank."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world_size = 0, 1
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    return rank * workers + worker, world_size * workers


class _RowSource:
    """Iterate ``(line_number, k, label, values)`` over a file (k = data row index, header excluded)."""

    def __init__(self, path: Path, fmt: CTRFormat, skip_bad: bool, stats: dict[str, int]) -> None:
        self.path, self.fmt, self.skip_bad, self.stats = path, fmt, skip_bad, stats

    def rows(self, keep: Callable[[int], bool], start_line: int = 0) -> Iterator[tuple[int, int, float, list[str]]]:
        fmt, path = self.fmt, self.path
        delimiter, header = fmt.delimiter, fmt.header
        k = -1
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    msg = f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                    if not self.skip_bad or lineno == 1:
                        raise ParseError(msg) from None
                    self.stats["skipped"] += 1
                    log.debug("skipping malformed row: %s", msg)
                    continue
                if lineno == 1:
                    delimiter = delimiter or _detect_delimiter(line)
                    if header is None:
                        first = line.split(delimiter, fmt.label_column + 1)
                        label = first[fmt.label_column] if len(first) > fmt.label_column else ""
                        header = not _is_number(label)
                    if header:
                        continue
                if not line:
                    continue
                k += 1
                if lineno <= start_line or not keep(k):
                    continue
                where = f"{path}:{lineno}: "
                columns = line.split(delimiter)
                try:
                    if len(columns) != fmt.num_columns:
                        raise ParseError(
                            f"{where}expected {fmt.num_columns} {delimiter!r}-separated fields, got {len(columns)}"
                        )
                    label = _parse_label(columns[fmt.label_column], where)
                    values = fmt.values(columns)
                except ParseError as err:
                    msg = str(err) if str(err).startswith(str(path)) else where + str(err)
                    if not self.skip_bad:
                        raise ParseError(msg) from None
                    self.stats["skipped"] += 1
                    log.debug("skipping malformed row: %s", msg)
                    continue
                yield lineno, k, label, values


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class CTRStream(IterableDataset):
    """Stream batches from a delimited CTR file. See the module docstring.

    Args:
        path: the text file.
        fmt: :func:`criteo_format`, :func:`avazu_format` or a custom :class:`CTRFormat`.
        feature_map: the vocabularies (``polyzoo recsys prepare``) or a hashing map.
        batch_size: rows per yielded batch (the last one may be smaller).
        split: ``"train"``, ``"test"`` or ``None`` (official 80/20 rule, :func:`in_split`).
        skip_bad: count and skip malformed rows instead of raising.
        start_line: skip lines up to this 1-based line number (resume position; single process).
        max_rows: stop after this many rows of this shard.
        rank, world_size: override the distributed shard (default: ``torch.distributed`` when initialised).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fmt: CTRFormat,
        feature_map: FeatureMap,
        batch_size: int = 4096,
        split: str | None = None,
        skip_bad: bool = False,
        start_line: int = 0,
        max_rows: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no data file at {self.path}")
        if feature_map.num_fields != len(fmt.fields) or feature_map.names != [f.name for f in fmt.fields]:
            extra = f" (protocol {fmt.protocol!r})" if fmt.protocol else ""
            raise ValueError(
                f"feature map has {feature_map.num_fields} fields, format {fmt.name}{extra} has {len(fmt.fields)}: "
                f"fields {feature_map.names[:3]}… vs {[f.name for f in fmt.fields][:3]}…"
            )
        feature_map.check_source(self.path)
        require_data_rows(self.path, fmt)
        in_split(0, split)
        self.fmt, self.feature_map = fmt, feature_map
        self.batch_size, self.split, self.skip_bad = batch_size, split, skip_bad
        self.start_line, self.max_rows = start_line, max_rows
        self.rank, self.world_size = rank, world_size
        self.stats = {"rows": 0, "skipped": 0}

    def _encoded_rows(self) -> Iterator[tuple[int, float, list[int]]]:
        shard, num_shards = _shard(self.rank, self.world_size)
        split = self.split
        source = _RowSource(self.path, self.fmt, self.skip_bad, self.stats)
        encode = self.feature_map.encode
        for lineno, _k, label, values in source.rows(
            lambda k: k % num_shards == shard and in_split(k, split), self.start_line
        ):
            try:
                ids = encode(values, f"{self.path}:{lineno}: ")
            except ParseError:
                if not self.skip_bad:
                    raise
                self.stats["skipped"] += 1
                continue
            yield lineno, label, ids

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.stats = {"rows": 0, "skipped": 0}
        yield from _batches(self._encoded_rows(), self.batch_size, self.max_rows, self.stats)
        if self.stats["skipped"]:
            log.warning("%s: skipped %d malformed rows", self.path, self.stats["skipped"])


def _batches(
    rows: Iterator[tuple[int, float, list[int]]], batch_size: int, max_rows: int | None, stats: dict[str, int]
) -> Iterator[dict[str, Any]]:
    ids_buf: list[list[int]] = []
    labels: list[float] = []
    last = 0
    for lineno, label, ids in rows:
        ids_buf.append(ids)
        labels.append(label)
        last = lineno
        stats["rows"] += 1
        if len(labels) == batch_size:
            yield {"ids": torch.tensor(ids_buf, dtype=torch.int64), "label": torch.tensor(labels), "line": last}
            ids_buf, labels = [], []
        if max_rows is not None and stats["rows"] >= max_rows:
            break
    if labels:
        yield {"ids": torch.tensor(ids_buf, dtype=torch.int64), "label": torch.tensor(labels), "line": last}


def require_data_rows(path: Path, fmt: CTRFormat) -> None:
    """Raise ``ValueError`` naming ``path`` when it holds no data row (empty, blank or header only): training on it
    would give a NaN loss."""
    header = fmt.header
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if lineno == 1 and header is None:
                delimiter = fmt.delimiter or _detect_delimiter(line)
                first = line.split(delimiter, fmt.label_column + 1)
                header = not _is_number(first[fmt.label_column] if len(first) > fmt.label_column else "")
                if header:
                    continue
            elif lineno == 1 and header:
                continue
            if line.strip():
                return
    raise ValueError(f"{path}: no data rows (the file is empty or holds only a header); expected {fmt.name} rows")


def count_tokens(
    path: str | os.PathLike,
    fmt: CTRFormat,
    split: str | None = "train",
    skip_bad: bool = False,
    max_rows: int | None = None,
) -> tuple[dict[str, Counter], dict[str, int]]:
    """One pass over the categorical fields of ``path``: value counts per field (split rows only)."""
    stats = {"rows": 0, "skipped": 0}
    counters: dict[str, Counter] = {f.name: Counter() for f in fmt.fields if f.kind == "categorical"}
    targets = [(i, counters[f.name]) for i, f in enumerate(fmt.fields) if f.name in counters and f.hash_buckets == 0]
    numeric = [i for i, f in enumerate(fmt.fields) if f.kind == "integer"]
    source = _RowSource(Path(path), fmt, skip_bad, stats)
    for lineno, _k, _label, values in source.rows(lambda k: in_split(k, split)):
        bad = next((i for i in numeric if values[i] and not _is_number(values[i])), None)
        if bad is not None:
            msg = f"{path}:{lineno}: field {fmt.fields[bad].name}: expected a number, got {values[bad]!r}"
            if not skip_bad:
                raise ParseError(msg)
            stats["skipped"] += 1
            continue
        for i, counter in targets:
            if values[i]:
                counter[values[i]] += 1
        stats["rows"] += 1
        if max_rows is not None and stats["rows"] >= max_rows:
            break
    return counters, stats


def build_feature_map(
    path: str | os.PathLike,
    fmt: CTRFormat,
    split: str | None = "train",
    skip_bad: bool = False,
    max_rows: int | None = None,
) -> tuple[FeatureMap, dict[str, int]]:
    """Vocabularies from the training rows of ``path`` (count > each field's threshold). Returns (map, stats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    source = file_fingerprint(path)
    require_data_rows(path, fmt)
    counters, stats = count_tokens(path, fmt, split, skip_bad, max_rows)
    if stats["rows"] == 0:
        raise ValueError(f"{path}: no usable data rows in split {split!r} ({stats['skipped']} skipped)")
    settings = {
        "format": fmt.name,
        "protocol": fmt.protocol,
        "split": split,
        "skip_bad": skip_bad,
        "max_rows": max_rows,
        "thresholds": sorted({f.threshold for f in fmt.fields if f.kind == "categorical"}),
        "hash_buckets": sorted({f.hash_buckets for f in fmt.fields if f.kind == "categorical"}),
    }
    return FeatureMap.from_counts(fmt.fields, counters, source, settings), stats


# ---------------------------------------------------------------------------------------------------------------
# MovieLens (RecBole atomic files: ml-100k.inter / .user / .item, tab-separated, typed header "name:type")

ML_USER_FIELDS = ["age", "gender", "occupation", "zip_code"]
ML_ITEM_FIELDS = ["release_year", "class"]


def movielens_format(threshold: int = 0, hash_buckets: int = 0) -> CTRFormat:
    """Fields of :class:`MovieLensStream`: user_id, item_id, user age (decade), gender, occupation, zip-code
    prefix (first 3 characters), release year, genres (the whole genre set as one token)."""
    names = ["user_id", "item_id", *ML_USER_FIELDS, *ML_ITEM_FIELDS]
    fields = [FieldSpec(n, "categorical", threshold, hash_buckets) for n in names]
    return CTRFormat("movielens", 4, -1, fields)


def _read_atomic_table(path: Path, key: str, columns: Sequence[str]) -> dict[str, list[str]]:
    """Small RecBole side table -> {key: [column values]} (missing columns give "")."""
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens side table missing: {path}")
    table: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = [h.split(":")[0] for h in fh.readline().rstrip("\n").split("\t")]
        if key not in header:
            raise ParseError(f"{path}:1: expected a {key!r} column in the header, got {header}")
        index = {h: i for i, h in enumerate(header)}
        for lineno, line in enumerate(fh, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(header):
                raise ParseError(f"{path}:{lineno}: expected {len(header)} tab-separated fields, got {len(parts)}")
            table[parts[index[key]]] = [parts[index[c]] if c in index else "" for c in columns]
    return table


def _ml_user_values(raw: list[str]) -> list[str]:
    age, gender, occupation, zip_code = raw
    decade = str(int(float(age)) // 10) if _is_number(age) else ""
    return [decade, gender, occupation, zip_code[:3]]


class MovieLensStream(IterableDataset):
    """MovieLens as CTR: stream ``<root>/ml-100k.inter`` (``user_id item_id rating timestamp``), label 1 iff
    rating ≥ ``threshold`` (default 4), user/item side features joined from ``.user`` / ``.item``.

    Same batch format, split rule, sharding and ``skip_bad`` behaviour as :class:`CTRStream`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        feature_map: FeatureMap,
        batch_size: int = 4096,
        split: str | None = None,
        threshold: float = 4.0,
        skip_bad: bool = False,
        start_line: int = 0,
        max_rows: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        name: str = "ml-100k",
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.inter = self.root / f"{name}.inter"
        if not self.inter.is_file():
            raise FileNotFoundError(
                f"no {self.inter}; fetch it with `uv run python tools/data/recsys_movielens.py --target {self.root}`"
            )
        with open(self.inter, "rb") as fh:
            fh.readline()  # the typed header
            if not any(line.strip() for line in fh):
                raise ValueError(f"{self.inter}: no data rows (the file is empty or holds only a header)")
        self.users = {
            k: _ml_user_values(v)
            for k, v in _read_atomic_table(self.root / f"{name}.user", "user_id", ML_USER_FIELDS).items()
        }
        self.items = _read_atomic_table(self.root / f"{name}.item", "item_id", ["release_year", "class"])
        self.feature_map = feature_map
        self.batch_size, self.split, self.threshold, self.skip_bad = batch_size, split, threshold, skip_bad
        self.start_line, self.max_rows, self.rank, self.world_size = start_line, max_rows, rank, world_size
        self.stats = {"rows": 0, "skipped": 0}

    def raw_rows(self, keep: Callable[[int], bool], start_line: int = 0) -> Iterator[tuple[int, float, list[str]]]:
        """``(line_number, label, field values)`` of the kept rows."""
        with open(self.inter, encoding="utf-8") as fh:
            header = [h.split(":")[0] for h in fh.readline().rstrip("\n").split("\t")]
            try:
                iu, ii, ir = header.index("user_id"), header.index("item_id"), header.index("rating")
            except ValueError:
                raise ParseError(
                    f"{self.inter}:1: expected user_id, item_id and rating columns, got {header}"
                ) from None
            for k, (lineno, line) in enumerate(enumerate(fh, start=2)):
                if lineno <= start_line or not keep(k):
                    continue
                parts = line.rstrip("\n").split("\t")
                where = f"{self.inter}:{lineno}: "
                try:
                    if len(parts) != len(header):
                        raise ParseError(f"{where}expected {len(header)} tab-separated fields, got {len(parts)}")
                    try:
                        rating = float(parts[ir])
                    except ValueError:
                        raise ParseError(f"{where}rating: expected a number, got {parts[ir]!r}") from None
                    if math.isnan(rating):
                        raise ParseError(f"{where}rating: expected a number, got {parts[ir]!r}")
                except ParseError:
                    if not self.skip_bad:
                        raise
                    self.stats["skipped"] += 1
                    continue
                user, item = parts[iu], parts[ii]
                user_side = self.users.get(user, ["", "", "", ""])
                item_side = self.items.get(item, ["", ""])
                yield lineno, float(rating >= self.threshold), [user, item, *user_side, *item_side]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.stats = {"rows": 0, "skipped": 0}
        shard, num_shards = _shard(self.rank, self.world_size)
        split, encode = self.split, self.feature_map.encode

        def encoded() -> Iterator[tuple[int, float, list[int]]]:
            for lineno, label, values in self.raw_rows(
                lambda k: k % num_shards == shard and in_split(k, split), self.start_line
            ):
                yield lineno, label, encode(values)

        yield from _batches(encoded(), self.batch_size, self.max_rows, self.stats)


def build_movielens_feature_map(
    root: str | os.PathLike, threshold: int = 0, split: str | None = "train", name: str = "ml-100k"
) -> FeatureMap:
    """Vocabularies of every MovieLens field from the training interactions (values seen > ``threshold``)."""
    fmt = movielens_format(threshold)
    counters: dict[str, Counter] = {f.name: Counter() for f in fmt.fields}
    names = [f.name for f in fmt.fields]
    stream = MovieLensStream(root, FeatureMap([FieldSpec(n, "categorical", hash_buckets=1) for n in names]), name=name)
    for _lineno, _label, values in stream.raw_rows(lambda k: in_split(k, split)):
        for n, v in zip(names, values, strict=True):
            if v:
                counters[n][v] += 1
    return FeatureMap.from_counts(fmt.fields, counters)
