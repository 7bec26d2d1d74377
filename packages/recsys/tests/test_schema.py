"""Schema files: the built-in Criteo/Avazu/MovieLens schemas resolve to the fields of the official reader, custom
YAML/JSON schemas parse, and every mistake is one ValueError naming the file and the key."""

from __future__ import annotations

import json

import pytest

from polyzoo.recsys.schema import BUILTIN_SCHEMAS, load_schema


def test_builtin_criteo_protocols_follow_the_official_reader():
    # official xDeepInt reader (nn1.py): I1..I12 only (range(1, 13)), int64 default 0 (missing -> bucket 0),
    # float32 log-square binning into 64 identity buckets, C1..C26 with count > 20
    off = load_schema("criteo")
    assert off.protocol == "official" and off.split_rule == "mod1000" and off.valid_share == 0.0
    names = [f.spec.name for f in off.fields]
    assert names == [f"I{i}" for i in range(1, 13)] + [f"C{i}" for i in range(1, 27)]
    for f in off.fields[:12]:
        assert (f.spec.kind, f.spec.num_buckets, f.spec.missing, f.spec.float32) == ("integer", 64, "as_zero", True)
    assert all(f.spec.kind == "categorical" and f.spec.threshold == 20 for f in off.fields[12:])
    poly = load_schema("criteo", protocol="polyzoo", threshold=3, hash_buckets=7)
    assert [f.spec.name for f in poly.fields][:13] == [f"I{i}" for i in range(1, 14)]
    assert all((f.spec.missing, f.spec.float32) == ("zero_row", False) for f in poly.fields[:13])
    assert all((f.spec.threshold, f.spec.hash_buckets) == (3, 7) for f in poly.fields[13:])
    assert off.columns[0] == "label" and len(off.columns) == 40


def test_builtin_avazu_and_movielens():
    av = load_schema("avazu")
    assert [f.spec.name for f in av.fields][:3] == ["hour_of_day", "weekday", "C1"]
    assert av.fields[0].column == "hour" and av.fields[0].transform == "hour_of_day"
    assert av.label == "click" and len(av.columns) == 24 and "id" not in [f.column for f in av.fields]
    ml = load_schema("movielens")
    assert ml.reader == "movielens" and ml.label_threshold == 4.0
    assert [f.spec.name for f in ml.fields] == [
        "user_id",
        "item_id",
        "age",
        "gender",
        "occupation",
        "zip_code",
        "release_year",
        "class",
    ]
    assert all(f.spec.threshold == 0 for f in ml.fields)
    assert set(BUILTIN_SCHEMAS) == {"criteo", "avazu", "movielens"}


CUSTOM = """
name: clicks
delimiter: ","
header: true
label: clicked
split: {rule: all, valid_share: 0.25}
defaults: {threshold: 1}
fields:
  - {name: user, type: categorical, hash_buckets: 10}
  - {name: price, type: numeric, binning: log_square, num_buckets: 8}
  - {name: age, type: numeric, binning: none}
  - {name: tags, type: sequence, separator: "|", max_len: 3}
"""


def test_custom_yaml_and_json(tmp_path):
    path = tmp_path / "clicks.yaml"
    path.write_text(CUSTOM)
    s = load_schema(path)
    assert s.columns is None and s.header is True and s.delimiter == ","
    assert (s.split_rule, s.valid_share) == ("all", 0.25)
    user, price, age, tags = s.fields
    assert (user.spec.kind, user.spec.hash_buckets, user.spec.threshold) == ("categorical", 10, 1)
    assert (price.spec.kind, price.spec.num_buckets, price.spec.missing) == ("integer", 8, "zero_row")
    assert age.spec.kind == "categorical" and age.check_number
    assert (tags.spec.kind, tags.spec.separator, tags.spec.max_len) == ("sequence", "|", 3)
    import yaml

    jpath = tmp_path / "clicks.json"
    jpath.write_text(json.dumps(yaml.safe_load(CUSTOM)))
    assert load_schema(jpath).to_dict() == {**s.to_dict(), "name": "clicks"}
    assert load_schema(path, valid_share=0.0).valid_share == 0.0


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        ("label: y\ncolumns: [y, a]\nfields: [{name: a, type: text}]", "fields[0].type", "expected categorical"),
        ("label: y\ncolumns: [y, a]\nfields: [{name: a, type: sequence}]", "fields[0].separator", "separator"),
        (
            "label: y\ncolumns: [y, a]\nfields: [{name: a, type: sequence, separator: '|', max_len: 0}]",
            "fields[0].max_len",
            "max_len",
        ),
        ("label: y\ncolumns: [y, a]\nfields: [{name: b, type: categorical}]", "fields[0].column", "not one of"),
        ("label: z\ncolumns: [y, a]\nfields: [{name: a, type: categorical}]", "label", "not one of"),
        ("label: y\nfields: [{name: a, type: categorical}]", "columns", "required unless header"),
        ("label: y\ncolumns: [y, a]\nfields: []", "fields", "non-empty"),
        ("label: y\ncolumns: [y, a]\ncolour: red\nfields: [{name: a, type: categorical}]", "colour", "unknown key"),
        ("label: y\ncolumns: [y, a]\nfields: [{name: a, type: categorical, tresh: 3}]", "fields[0].tresh", "unknown"),
        (
            "label: y\ncolumns: [y, a]\nfields: [{name: a, type: categorical, threshold: -1}]",
            "fields[0].threshold",
            ">=",
        ),
        (
            "label: y\ncolumns: [y, a]\nfields: [{name: a, type: categorical, threshold: x}]",
            "fields[0].threshold",
            "int",
        ),
        ("label: y\ncolumns: [y, a]\nsplit: {rule: random}\nfields: [{name: a, type: categorical}]", "split.rule", ""),
        (
            "label: y\ncolumns: [y, a]\nsplit: {valid_share: 1.5}\nfields: [{name: a, type: categorical}]",
            "split.valid_share",
            "share",
        ),
        ("label: y\ncolumns: [y, a]\ndelimiter: '::'\nfields: [{name: a, type: categorical}]", "delimiter", "one"),
        (
            "label: y\ncolumns: [y, a]\nfields: [{name: a, type: categorical}, {name: a, type: categorical}]",
            "fields[1].name",
            "duplicate",
        ),
        ("label: y\ncolumns: [y, a]\nprotocol: x\nfields: [{name: a, type: categorical}]", "protocol", "no protocols"),
        (
            "label: y\ncolumns: [y, a]\nfields: [{name: a, type: integer, missing: drop}]",
            "fields[0].missing",
            "zero_row",
        ),
    ],
)
def test_bad_schema_is_one_line_naming_file_and_key(tmp_path, text, key, what):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.yaml: key '" + key.replace("[", r"\[").replace("]", r"\]") + "'") as e:
        load_schema(path)
    assert what in str(e.value) and "\n" not in str(e.value)


def test_unreadable_schema_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no schema file at .*nope\.yaml"):
        load_schema(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("fields: [\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML") as e:
        load_schema(bad)
    assert "\n" not in str(e.value)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        load_schema(bad_json)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ValueError, match=r"list\.yaml: expected a mapping"):
        load_schema(top)
    with pytest.raises(ValueError, match=r"builtin:criteo: key 'protocol'"):
        load_schema("criteo", protocol="tf")


def test_readme_schema_example_parses(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(name: clicks.*?)```", readme, re.S)
    assert block, "the README's schema example is missing"
    path = tmp_path / "readme.yaml"
    path.write_text(block.group(1))
    s = load_schema(path)
    kinds = [(f.spec.name, f.spec.kind, f.column) for f in s.fields]
    assert kinds == [
        ("user", "categorical", "user"),
        ("user_h", "categorical", "user"),
        ("price", "integer", "price"),
        ("price_tok", "categorical", "price"),
        ("tags", "sequence", "tags"),
        ("hour_of_day", "categorical", "hour"),
    ]
    assert s.fields[1].spec.hash_buckets == 100000 and s.fields[3].check_number and s.valid_share == 0.1
