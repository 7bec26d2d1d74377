"""Dataset schema files for ``polyzoo recsys prepare``: which columns a raw CTR file has and how each becomes a field.

A schema is a YAML or JSON mapping (documented with examples in the package README, "Data path"). Built-in
schemas ship as package data in ``polyzoo/recsys/schemas/`` (``criteo``, ``avazu``, ``movielens``) and are named
by their stem; any other value is a path. Keys (unknown keys are errors):

* ``name``: a label for the data set.
* ``reader``: ``csv`` (default; delimited text, also TSV), ``parquet``, or ``movielens`` (RecBole atomic files
  ``<folder>/ml-100k.inter/.user/.item``, read by :class:`polyzoo.recsys.data.MovieLensStream`).
* ``delimiter``: one character, or ``auto`` (tab when the first line holds one, else comma; default).
* ``header``: ``true``, ``false`` or ``auto`` (default: the first line is a header iff its label column is not
  a number).
* ``columns``: the raw column names in file order (required unless ``header: true``, which takes them from the
  header line). A row with another number of fields is malformed.
* ``label``: the label column (values parse as a number equal to 0 or 1); ``label_threshold`` (optional): the label
  is ``value >= label_threshold`` instead (ratings).
* ``split``: ``{rule: mod1000 | all, valid_share: float}``. ``mod1000`` is the official Criteo rule
  (``criteo_split.py``: data row k is train iff ``(k mod 1000)/1000 <= 0.8``, else test); ``all`` makes every row
  train. ``valid_share`` is the default share of train rows carved out as validation (see
  :mod:`polyzoo.recsys.prepare`).
* ``defaults``: ``{threshold, hash_buckets}`` for categorical and sequence fields that do not set them.
* ``fields``: a list, in output order, of mappings with ``name`` and ``type``:

  - ``categorical``: ``column`` (default: the name), ``threshold``, ``hash_buckets``, ``transform``
    (``hour_of_day`` or ``weekday`` of a ``YYMMDDHH`` value, Avazu);
  - ``integer`` / ``numeric``: ``binning: log_square`` (default; the official ``⌊ln(x² + 1)⌋`` identity column
    of ``num_buckets`` (64) buckets, ``missing: zero_row | as_zero``, ``float32: bool``) or ``binning: none``
    (the value, checked to be a number, is a categorical token with ``threshold`` / ``hash_buckets``);
  - ``sequence``: multi-hot, ``separator`` and ``max_len`` (required), ``threshold``, ``hash_buckets``.
* ``protocols`` / ``protocol``: named variants (Criteo: ``official`` and ``polyzoo``), each
  ``{drop: [field names], integer: {key: value, ...}}`` applied to the fields; ``protocol`` names the default.

:func:`load_schema` resolves a schema (protocol applied, defaults filled) into a :class:`Schema`; any problem is
one ``ValueError`` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from polyzoo.recsys.features import FieldSpec

__all__ = ["BUILTIN_SCHEMAS", "Schema", "SchemaField", "load_schema", "synthetic_schema"]

BUILTIN_SCHEMAS = ("criteo", "avazu", "movielens")
READERS = ("csv", "parquet", "movielens")
SPLIT_RULES = ("mod1000", "all")
TRANSFORMS = ("", "hour_of_day", "weekday")
_TOP_KEYS = {
    "name",
    "reader",
    "delimiter",
    "header",
    "columns",
    "label",
    "label_threshold",
    "split",
    "defaults",
    "fields",
    "protocols",
    "protocol",
}
_FIELD_KEYS = {
    "name",
    "type",
    "column",
    "threshold",
    "hash_buckets",
    "num_buckets",
    "missing",
    "float32",
    "binning",
    "separator",
    "max_len",
    "transform",
}


@dataclasses.dataclass
class SchemaField:
    """One output field: its :class:`FieldSpec`, the raw column it reads, an optional transform, and whether the
    raw value must parse as a number (``numeric`` with ``binning: none``)."""

    spec: FieldSpec
    column: str
    transform: str = ""
    check_number: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.spec),
            "column": self.column,
            "transform": self.transform,
            "check_number": self.check_number,
        }


@dataclasses.dataclass
class Schema:
    """A resolved schema (see the module docstring)."""

    name: str
    reader: str
    delimiter: str | None
    header: bool | None
    columns: list[str] | None
    label: str
    label_threshold: float | None
    split_rule: str
    valid_share: float
    fields: list[SchemaField]
    protocol: str = ""
    source: str = ""

    @property
    def specs(self) -> list[FieldSpec]:
        return [f.spec for f in self.fields]

    def to_dict(self) -> dict[str, Any]:
        """The resolved schema as JSON data (recorded in the manifest; decides the encoding)."""
        return {
            "name": self.name,
            "reader": self.reader,
            "delimiter": self.delimiter,
            "header": self.header,
            "columns": self.columns,
            "label": self.label,
            "label_threshold": self.label_threshold,
            "split": {"rule": self.split_rule, "valid_share": self.valid_share},
            "protocol": self.protocol,
            "fields": [f.to_dict() for f in self.fields],
        }


def _err(source: str, key: str, msg: str) -> ValueError:
    return ValueError(f"{source}: key {key!r}: {msg}")


def _read_raw(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    text_name = str(name_or_path)
    if text_name in BUILTIN_SCHEMAS:
        res = resources.files("polyzoo.recsys").joinpath("schemas", f"{text_name}.yaml")
        return yaml.safe_load(res.read_text(encoding="utf-8")), f"builtin:{text_name}"
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no schema file at {path}; expected a YAML/JSON schema file or one of {list(BUILTIN_SCHEMAS)}"
        )
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        detail = str(err).replace("\n", " ")
        raise ValueError(
            f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({detail})"
        ) from None
    return raw, str(path)


def _get(d: dict[str, Any], key: str, types: type | tuple[type, ...], default: Any, source: str, where: str) -> Any:
    if key not in d or d[key] is None:
        return default
    value = d[key]
    if isinstance(value, bool) and types in (int, float, (int, float)):
        raise _err(source, f"{where}{key}", f"expected a number, got {value!r}")
    if not isinstance(value, types):
        expected = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise _err(source, f"{where}{key}", f"expected {expected}, got {value!r}")
    return value


def _parse_field(
    raw: Any, i: int, defaults: dict[str, Any], integer_overrides: dict[str, Any], source: str
) -> SchemaField:
    where = f"fields[{i}]."
    if not isinstance(raw, dict):
        raise _err(source, f"fields[{i}]", f"expected a mapping with name and type, got {raw!r}")
    unknown = sorted(set(raw) - _FIELD_KEYS)
    if unknown:
        raise _err(source, where + unknown[0], f"unknown key; expected one of {sorted(_FIELD_KEYS)}")
    name = _get(raw, "name", str, None, source, where)
    if not name:
        raise _err(source, where + "name", "required (a non-empty string)")
    kind = _get(raw, "type", str, None, source, where)
    if kind not in ("categorical", "integer", "numeric", "sequence"):
        raise _err(source, where + "type", f"expected categorical, integer, numeric or sequence, got {kind!r}")
    column = _get(raw, "column", str, name, source, where)
    transform = _get(raw, "transform", str, "", source, where)
    if transform not in TRANSFORMS:
        raise _err(source, where + "transform", f"expected one of {[t for t in TRANSFORMS if t]}, got {transform!r}")
    threshold = _get(raw, "threshold", int, defaults["threshold"], source, where)
    hash_buckets = _get(raw, "hash_buckets", int, defaults["hash_buckets"], source, where)
    if threshold < 0:
        raise _err(source, where + "threshold", f"expected >= 0, got {threshold}")
    if hash_buckets < 0:
        raise _err(source, where + "hash_buckets", f"expected >= 0, got {hash_buckets}")
    if transform and kind != "categorical":
        raise _err(source, where + "transform", f"only categorical fields take a transform, {name!r} is {kind}")
    check_number = False
    if kind in ("integer", "numeric"):
        binning = _get(raw, "binning", str, "log_square", source, where)
        if binning not in ("log_square", "none"):
            raise _err(source, where + "binning", f"expected log_square or none, got {binning!r}")
        if binning == "none":
            spec = FieldSpec(name, "categorical", threshold, hash_buckets)
            check_number = True
        else:
            merged = {**integer_overrides, **{k: raw[k] for k in ("num_buckets", "missing", "float32") if k in raw}}
            num_buckets = _get(merged, "num_buckets", int, 64, source, where)
            missing = _get(merged, "missing", str, "zero_row", source, where)
            float32 = _get(merged, "float32", bool, False, source, where)
            if num_buckets < 1:
                raise _err(source, where + "num_buckets", f"expected >= 1, got {num_buckets}")
            if missing not in ("zero_row", "as_zero"):
                raise _err(source, where + "missing", f"expected zero_row or as_zero, got {missing!r}")
            spec = FieldSpec(name, "integer", num_buckets=num_buckets, missing=missing, float32=float32)
    elif kind == "sequence":
        separator = _get(raw, "separator", str, "", source, where)
        max_len = _get(raw, "max_len", int, 0, source, where)
        if not separator:
            raise _err(source, where + "separator", "a sequence field needs a non-empty separator")
        if max_len < 1:
            raise _err(source, where + "max_len", f"a sequence field needs max_len >= 1, got {max_len}")
        spec = FieldSpec(name, "sequence", threshold, hash_buckets, separator=separator, max_len=max_len)
    else:
        spec = FieldSpec(name, "categorical", threshold, hash_buckets)
    return SchemaField(spec, column, transform, check_number)


def load_schema(
    name_or_path: str | Path,
    protocol: str | None = None,
    threshold: int | None = None,
    hash_buckets: int | None = None,
    valid_share: float | None = None,
) -> Schema:
    """Read and resolve a schema: a built-in name (:data:`BUILTIN_SCHEMAS`) or a YAML/JSON file.

    ``protocol`` picks one of the schema's ``protocols`` (default: its ``protocol`` key; a schema without
    protocols accepts only ``None``/its own). ``threshold`` / ``hash_buckets`` replace the schema's ``defaults``
    (fields that set their own keep them); ``valid_share`` replaces ``split.valid_share``.

    Raises:
        FileNotFoundError: no such file (and not a built-in name).
        ValueError: one line naming the file and the key that is wrong.
    """
    raw, source = _read_raw(name_or_path)
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping of schema keys at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _err(source, unknown[0], f"unknown key; expected one of {sorted(_TOP_KEYS)}")
    name = _get(raw, "name", str, Path(source).stem, source, "")
    reader = _get(raw, "reader", str, "csv", source, "")
    if reader not in READERS:
        raise _err(source, "reader", f"expected one of {list(READERS)}, got {reader!r}")
    delimiter = _get(raw, "delimiter", str, "auto", source, "")
    if delimiter != "auto" and len(delimiter) != 1:
        raise _err(source, "delimiter", f"expected one character or auto, got {delimiter!r}")
    header = raw.get("header", "auto")
    if header not in (True, False, "auto"):
        raise _err(source, "header", f"expected true, false or auto, got {header!r}")
    columns = _get(raw, "columns", list, None, source, "")
    if columns is not None:
        if not columns or not all(isinstance(c, str) and c for c in columns) or len(set(columns)) != len(columns):
            raise _err(source, "columns", "expected a list of distinct non-empty column names")
    elif reader == "csv" and header is not True:
        raise _err(source, "columns", "required unless header is true (the raw column names, in file order)")
    label = _get(raw, "label", str, None, source, "") if reader != "movielens" else "rating"
    if not label:
        raise _err(source, "label", "required: the label column")
    label_threshold = _get(raw, "label_threshold", (int, float), None, source, "")
    split = _get(raw, "split", dict, {}, source, "")
    bad_split = sorted(set(split) - {"rule", "valid_share"})
    if bad_split:
        raise _err(source, f"split.{bad_split[0]}", "unknown key; expected rule or valid_share")
    split_rule = _get(split, "rule", str, "mod1000", source, "split.")
    if split_rule not in SPLIT_RULES:
        raise _err(source, "split.rule", f"expected one of {list(SPLIT_RULES)}, got {split_rule!r}")
    share = _get(split, "valid_share", (int, float), 0.0, source, "split.") if valid_share is None else valid_share
    if not 0.0 <= float(share) < 1.0:
        raise _err(source, "split.valid_share", f"expected a share in [0, 1), got {share!r}")
    defaults_raw = _get(raw, "defaults", dict, {}, source, "")
    bad_def = sorted(set(defaults_raw) - {"threshold", "hash_buckets"})
    if bad_def:
        raise _err(source, f"defaults.{bad_def[0]}", "unknown key; expected threshold or hash_buckets")
    defaults = {
        "threshold": _get(defaults_raw, "threshold", int, 20, source, "defaults."),
        "hash_buckets": _get(defaults_raw, "hash_buckets", int, 0, source, "defaults."),
    }
    if threshold is not None:
        defaults["threshold"] = threshold
    if hash_buckets is not None:
        defaults["hash_buckets"] = hash_buckets
    protocols = _get(raw, "protocols", dict, {}, source, "")
    chosen = protocol if protocol is not None else _get(raw, "protocol", str, "", source, "")
    drop: list[str] = []
    integer_overrides: dict[str, Any] = {}
    if protocols:
        if chosen not in protocols:
            raise _err(source, "protocol", f"expected one of {sorted(protocols)}, got {chosen!r}")
        variant = protocols[chosen] or {}
        if not isinstance(variant, dict) or sorted(set(variant) - {"drop", "integer"}):
            raise _err(source, f"protocols.{chosen}", "expected a mapping with drop and/or integer")
        drop = _get(variant, "drop", list, [], source, f"protocols.{chosen}.")
        integer_overrides = _get(variant, "integer", dict, {}, source, f"protocols.{chosen}.")
    elif chosen:
        raise _err(source, "protocol", f"the schema defines no protocols, got {chosen!r}")
    fields_raw = _get(raw, "fields", list, None, source, "")
    if not fields_raw:
        raise _err(source, "fields", "required: a non-empty list of fields")
    fields = [_parse_field(f, i, defaults, integer_overrides, source) for i, f in enumerate(fields_raw)]
    names = [f.spec.name for f in fields]
    for d in drop:
        if d not in names:
            raise _err(source, f"protocols.{chosen}.drop", f"no field named {d!r}")
    fields = [f for f in fields if f.spec.name not in drop]
    seen: set[str] = set()
    for i, f in enumerate(fields):
        if f.spec.name in seen:
            raise _err(source, f"fields[{i}].name", f"duplicate field name {f.spec.name!r}")
        seen.add(f.spec.name)
        if columns is not None and reader != "movielens" and f.column not in columns:
            raise _err(source, f"fields[{i}].column", f"{f.column!r} is not one of the columns")
    if columns is not None and reader != "movielens" and label not in columns:
        raise _err(source, "label", f"{label!r} is not one of the columns")
    return Schema(
        name=name,
        reader=reader,
        delimiter=None if delimiter == "auto" else delimiter,
        header=None if header == "auto" else header,
        columns=columns,
        label=label,
        label_threshold=None if label_threshold is None else float(label_threshold),
        split_rule=split_rule,
        valid_share=float(share),
        fields=fields,
        protocol=chosen or "",
        source=source,
    )


def synthetic_schema(num_fields: int = 8, threshold: int = 0, hash_buckets: int = 0) -> Schema:
    """The synthetic generator's CSV (``label,f0,…``; :func:`polyzoo.recsys.synthetic.synthetic_format`)."""
    names = [f"f{i}" for i in range(num_fields)]
    fields = [SchemaField(FieldSpec(n, "categorical", threshold, hash_buckets), n) for n in names]
    return Schema(
        "synthetic", "csv", ",", True, ["label", *names], "label", None, "mod1000", 0.0, fields, "", "synthetic"
    )
