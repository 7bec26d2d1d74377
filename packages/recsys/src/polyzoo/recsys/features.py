"""Feature specifications, vocabularies and the encoding of raw CTR rows into embedding-row ids.

Preprocessing follows the official xDeepInt code (``xdeepint/src/transformation.py``, ``src/io.py``,
``experiment/criteo/nn1.py``):

* **Categorical fields**: a vocabulary from training counts, keeping values seen more than ``threshold`` times
  (official: count > 20, the empty string excluded), ids ordered by count (ties by value) so the vocabulary is
  deterministic; or, for one-pass streaming without a ``prepare`` step, hashing into ``hash_buckets`` buckets
  (stable CRC32, not Python's salted ``hash``). A missing or out-of-vocabulary value maps to row 0, the shared zero
  row of :class:`~polyzoo.recsys.models.FieldEmbedding`: the official vocabulary lookup gives −1 (no OOV buckets),
  the id is dropped and the ``mean`` combiner of an empty bag is 0 — the same vector.
* **Integer fields**: ``bucket = ⌊ln(x² + 1)⌋`` (``log_square_binning_fn``) in an identity column of 64 buckets.
  Buckets beyond the last are clipped to it (x ≥ e^32 ≈ 7.9e13; TF's identity column would fail there).
  Two behaviours, chosen per field (``FieldSpec.missing`` / ``FieldSpec.float32``) and set together by the Criteo
  ``protocol`` (:func:`polyzoo.recsys.data.criteo_format`):

  - ``protocol="official"`` (default): what the official reader does. ``CsvDataset`` reads an integer column
    with ``record_defaults`` int64 ``0`` and ``na_value=""``, so a **missing integer becomes 0** — bucket 0,
    shared with −1, 0 and 1, a trained embedding row (``missing="as_zero"``); the NaN branch of
    ``log_square_binning_fn`` never fires on an int64 column. Binning is done in **float32** (``tf.cast`` to
    float32, then ``floor(log(x² + 1))`` in float32; ``float32=True``), which puts some integers above about
    1.2 M one bucket higher than exact arithmetic; ``x²`` is a float32 product here (TF: ``x ** 2``) and numpy's
    float32 ``log`` stands for TF's, so a value within an ulp of a bucket edge could still differ. Only
    **I1–I12** are used (``range(1, 13)`` in ``nn1.py``: I13 is dropped).
  - ``protocol="polyzoo"``: a missing integer maps to the zero row (``missing="zero_row"``: no embedding, like a
    missing categorical value), exact float64 binning, and all 13 integer fields.

* **Sequence fields** (multi-hot, ``kind="sequence"``; written by ``polyzoo recsys prepare`` only): the raw value
  is split on ``separator``, empty tokens dropped, the first ``max_len`` tokens kept; every token is counted in the
  vocabulary (per occurrence) and looked up like a categorical value (out-of-vocabulary token → row 0). Not part of
  the official code (Criteo has none); :meth:`FeatureMap.encode` (one id per field) refuses them.

Global layout of the embedding table: row 0 is the zero row, then each field's values in field order
(``offsets[f] + local_id − 1`` for ``local_id ≥ 1``), so one row is one feature value.

A saved feature map records the input file it was counted from (path, size, mtime) and its settings (format,
protocol, threshold, split…) so that a stream over a changed file is refused (:meth:`FeatureMap.check_source`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polyzoo.shared.io import read_json, write_json_atomic

__all__ = ["FeatureMap", "FieldSpec", "ParseError", "file_fingerprint", "log_square_bin", "log_square_bin_float32"]

FORMAT_VERSION = 3
# version 1: no source/settings record; fields default to the polyzoo protocol; version 2: no sequence fields
READABLE_VERSIONS = (1, 2, 3)


KINDS = ("categorical", "integer", "sequence")


class ParseError(ValueError):
    """A malformed input row; the message names the file, the line number and what was expected."""


@dataclasses.dataclass
class FieldSpec:
    """One input field.

    Args:
        name: field name (``I1``, ``C3``, ``user_id``...).
        kind: ``"categorical"`` (string tokens), ``"integer"`` (log-square binned numbers) or ``"sequence"``
            (multi-hot: ``separator``-separated tokens, at most ``max_len`` kept).
        threshold: keep categorical values seen more than this many times in training (vocabulary mode).
        hash_buckets: > 0 to hash categorical values into that many buckets instead of a vocabulary.
        num_buckets: identity buckets of an integer field (official 64).
        missing: integer fields: ``"zero_row"`` (a missing value maps to the zero row) or ``"as_zero"`` (read as 0,
            i.e. bucket 0 shared with −1, 0, 1: the official reader).
        float32: integer fields: bin in float32 as the official TF code does (else exact float64).
        separator: sequence fields: the token separator.
        max_len: sequence fields: tokens kept per row (the first ``max_len`` non-empty ones).
    """

    name: str
    kind: str = "categorical"
    threshold: int = 20
    hash_buckets: int = 0
    num_buckets: int = 64
    missing: str = "zero_row"
    float32: bool = False
    separator: str = ""
    max_len: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "sequence" and (not self.separator or self.max_len < 1):
            raise ValueError(f"field {self.name!r}: a sequence field needs a separator and max_len >= 1")
        if self.missing not in ("zero_row", "as_zero"):
            raise ValueError(f"field {self.name!r}: missing must be 'zero_row' or 'as_zero', got {self.missing!r}")
        if self.hash_buckets < 0 or self.num_buckets < 1 or self.threshold < 0:
            raise ValueError(f"field {self.name!r}: hash_buckets/threshold must be >= 0 and num_buckets >= 1")


def log_square_bin(x: float, num_buckets: int = 64) -> int:
    """``⌊ln(x² + 1)⌋`` clipped to ``[0, num_buckets − 1]`` (official ``log_square_binning_fn``); ``x²``
    overflowing to inf lands in the last bucket."""
    v = math.log(x * x + 1.0)
    return num_buckets - 1 if math.isinf(v) else min(math.floor(v), num_buckets - 1)


@functools.lru_cache(maxsize=1 << 18)
def log_square_bin_float32(x: float, num_buckets: int = 64) -> int:
    """The official binning in float32: ``floor(log(float32(x)² + 1))`` with float32 arithmetic, clipped to
    ``[0, num_buckets − 1]`` (an overflow to inf lands in the last bucket). Cached: the numpy scalar arithmetic
    and its error-state switch cost ~50 µs a call, and CTR integer features repeat few values (the cache made
    ``CTRStream`` over Criteo rows ~5× faster)."""
    xf = np.float32(x)
    with np.errstate(over="ignore"):
        v = np.log(xf * xf + np.float32(1.0))
    if not np.isfinite(v):
        return num_buckets - 1
    return min(int(np.floor(v)), num_buckets - 1)


def _stable_hash(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


class FeatureMap:
    """Field specs plus their vocabularies; turns a row of raw strings into global embedding-row ids.

    Build with :meth:`from_counts` (vocabulary mode; see :func:`polyzoo.recsys.data.build_feature_map`) or
    directly when every categorical field hashes. Save/load with :meth:`save` (atomic JSON) / :meth:`load`.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec],
        vocabularies: dict[str, list[str]] | None = None,
        source: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.source = dict(source) if source else None  # {"path", "size", "mtime_ns"} of the counted input file
        self.settings = dict(settings or {})  # format, protocol, threshold, split, … it was built with
        self.fields = [dataclasses.replace(f) for f in fields]
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in {names}")
        vocabularies = vocabularies or {}
        self.vocabularies: dict[str, list[str]] = {}
        self._lookup: list[dict[str, int] | None] = []
        sizes = []
        for f in self.fields:
            if f.kind == "integer":
                sizes.append(f.num_buckets)
                self._lookup.append(None)
            elif f.hash_buckets > 0:
                sizes.append(f.hash_buckets)
                self._lookup.append(None)
            else:
                if f.name not in vocabularies:
                    raise ValueError(f"categorical field {f.name!r} needs a vocabulary (or hash_buckets > 0)")
                vocab = list(vocabularies[f.name])
                self.vocabularies[f.name] = vocab
                self._lookup.append({tok: i + 1 for i, tok in enumerate(vocab)})
                sizes.append(len(vocab))
        self.sizes = sizes
        self.offsets = []
        start = 1  # row 0: the zero row for missing / out-of-vocabulary values
        for size in sizes:
            self.offsets.append(start)
            start += size
        self.num_rows = start

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @classmethod
    def from_counts(
        cls,
        fields: Sequence[FieldSpec],
        counts: dict[str, Counter],
        source: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> FeatureMap:
        """Vocabularies of the fields that need one: values with count > ``threshold``, most frequent first."""
        vocabularies = {}
        for f in fields:
            if f.kind in ("categorical", "sequence") and f.hash_buckets == 0:
                kept = [(tok, c) for tok, c in counts.get(f.name, Counter()).items() if c > f.threshold]
                kept.sort(key=lambda item: (-item[1], item[0]))
                vocabularies[f.name] = [tok for tok, _ in kept]
        return cls(fields, vocabularies, source, settings)

    def local_id(self, field_index: int, value: str, where: str = "") -> int:
        """Raw string of field ``field_index`` -> local id (0 = missing / OOV). Raises :class:`ParseError` for an
        unparsable integer."""
        spec = self.fields[field_index]
        if spec.kind == "sequence":
            raise ValueError(f"field {spec.name!r} is a sequence field: read it from `polyzoo recsys prepare` output")
        if value == "":
            if spec.kind == "integer" and spec.missing == "as_zero":
                return 1  # read as 0: bucket 0 (official CsvDataset default)
            return 0
        if spec.kind == "integer":
            try:
                x = float(value)
            except ValueError:
                raise ParseError(f"{where}field {spec.name}: expected a number, got {value!r}") from None
            if math.isnan(x):
                return 1 if spec.missing == "as_zero" else 0
            if math.isinf(x):
                return spec.num_buckets
            if spec.float32:
                return log_square_bin_float32(x, spec.num_buckets) + 1
            return log_square_bin(x, spec.num_buckets) + 1
        lookup = self._lookup[field_index]
        if lookup is None:
            return _stable_hash(value) % spec.hash_buckets + 1
        return lookup.get(value, 0)

    def encode(self, values: Sequence[str], where: str = "") -> list[int]:
        """Raw field strings (one per field, in field order) -> global row ids ``[num_fields]``."""
        ids = []
        for i, value in enumerate(values):
            local = self.local_id(i, value, where)
            ids.append(self.offsets[i] + local - 1 if local else 0)
        return ids

    def field_of_row(self, row: int) -> int:
        """Index of the field owning global row ``row`` (``-1`` for the zero row)."""
        if row <= 0:
            return -1
        for i in range(len(self.offsets) - 1, -1, -1):
            if row >= self.offsets[i]:
                return i
        return -1

    def check_source(self, path: str | os.PathLike, where: str = "") -> None:
        """Refuse to read ``path`` with this map when the map was counted from that same file and the file has
        changed since (size or mtime). Another file (e.g. a test file) is allowed: its values are looked up in
        the training vocabulary, as in the official code.

        Raises:
            ValueError: one line naming the file, what was recorded and what is there now.
        """
        if not self.source:
            return
        path = Path(path)
        try:
            same = path.resolve() == Path(self.source["path"]).resolve()
        except (OSError, KeyError):
            return
        if not same:
            return
        now = file_fingerprint(path)
        if (now["size"], now["mtime_ns"]) != (self.source.get("size"), self.source.get("mtime_ns")):
            raise ValueError(
                f"{where}{path} changed since the feature map was built from it (size {self.source.get('size')} → "
                f"{now['size']}, mtime changed: {now['mtime_ns'] != self.source.get('mtime_ns')}); "
                "rerun `polyzoo recsys prepare` on it"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "fields": [dataclasses.asdict(f) for f in self.fields],
            "vocabularies": self.vocabularies,
            "num_rows": self.num_rows,
            "source": self.source,
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any], source: str = "<dict>") -> FeatureMap:
        if obj.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(f"{source}: format_version {obj.get('format_version')!r}, expected {FORMAT_VERSION}")
        try:
            fields = [FieldSpec(**f) for f in obj["fields"]]
            fmap = cls(fields, obj.get("vocabularies", {}), obj.get("source"), obj.get("settings"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source}: not a feature map ({err})") from err
        if fmap.num_rows != obj.get("num_rows", fmap.num_rows):
            raise ValueError(f"{source}: num_rows {obj['num_rows']} does not match the vocabularies ({fmap.num_rows})")
        return fmap

    def save(self, path: str | Path) -> None:
        """Write the specs and vocabularies as JSON, atomically."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no feature map at {path}; run `polyzoo recsys prepare` first")
        return cls.from_dict(read_json(path), str(path))


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of a file (what a feature map records about its input)."""
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
