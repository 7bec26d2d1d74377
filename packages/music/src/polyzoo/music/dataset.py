"""Fine-tuning examples from drumrolls, after *Language Models are Drummers* (Zhang & Callison-Burch, arXiv
2301.01162); official code https://github.com/zharry29/drums-with-llm (``source/text_to_data.py``).

Per performance (a drumroll of ``drumroll.py``: 256 lines for 4/4, 192 for 3/4, 320 for 5/4), on text in the
official column order:

1. strip leading empty *beats*: while the first four lines (one quarter note) are all rests, drop them (the
   official ``strip_empty_measure`` of commit 0684006 works on quarter notes despite its name). The repository
   holds two versions: at commit 5e7a4c0 the same test drops a whole *measure* (16 lines, even when its later beats
   hold notes), and its ``gpt3_*.jsonl`` follow that. We default to the beat version because the shipped GPT-3
   outputs were generated from its prompts (``output_text_davinci/test/1_239_funk-purdieshuffle_130_beat_4-4.txt``
   starts with lines 4.. of the groove, not 16..); ``strip="measure"`` (``PrepareSettings.strip``) gives the
   other;
2. length filter: keep the score only if more than 128 lines (8 bars) remain;
3. prompt = the first 32 lines (2 bars) with ``SEP`` after every 16 lines (so it ends with ``SEP\\n``);
   completion = the remaining lines with ``SEP`` lines between bars, then ``\\nEND``.

The official completion is ``''.join(add_separator(rest)).strip('SEP\\n') + '\\nEND'``: ``str.strip`` removes the
*characters* S, E, P and newline from both ends, not the token. Drumroll lines only hold ``o`` and ``-``, so that
removes exactly the trailing newline and a trailing ``SEP`` line; we build the same string without the quirk.

``SEP`` goes after every 16 lines whatever the time signature (a 3/4 groove's 16-line blocks are not its bars), as
the official code.

GMD preparation (``prepare_gmd``, ``PrepareSettings``) reproduces the official ``data_text`` selection by default:
the split of GMD's ``info.csv`` (``validation`` is the official "dev"), ``beat_type == beat`` rows, every x/4 time
signature (3/4 and 5/4 beats are in the official train and dev sets), and drummer1's ``eval_session`` left out of
the test split (40 beats that GMD's authors re-recorded for their listening tests; the official test set has the
other 37). On GMD v1.0.0 that gives 373 / 47 / 37 drumrolls, the shipped counts; 372 / 47 / 37 examples after the
length filter (the official ``gpt3_*.jsonl`` counts). Options: only 4/4, with the eval session, fills too, the
official file names (``1_239_funk-purdieshuffle_130_beat_4-4``, split folders train/dev/test) to compare with the
shipped files. Examples are written as JSONL with ``prompt``, ``completion`` and ``name`` (the official fields),
sorted by name (the official order is ``os.listdir``'s).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from polyzoo.music.drumroll import (
    LINES_PER_BAR,
    NUM_BARS,
    NUM_LINES,
    REST,
    MidiReadError,
    SkippedMidi,
    midi_to_drumroll,
)

__all__ = [
    "END",
    "MIN_LINES_EXCLUSIVE",
    "PROMPT_LINES",
    "SEP",
    "CompletionDataset",
    "PrepareReport",
    "PrepareSettings",
    "add_separators",
    "drumroll_from_example",
    "example_text",
    "full_length_completion_text",
    "is_eval_session",
    "make_example",
    "official_name",
    "pad_collate",
    "prepare_gmd",
    "prompt_from_drumroll",
    "read_jsonl",
    "strip_empty_beats",
    "write_jsonl",
]

log = logging.getLogger(__name__)

SEP = "SEP"
END = "END"
PROMPT_LINES = 2 * LINES_PER_BAR  # 32
MIN_LINES_EXCLUSIVE = 128  # official is_enough_length: len(score) > 128
SPLITS = ("train", "validation", "test")


STRIP_UNITS = {"beat": 4, "measure": LINES_PER_BAR}


def strip_empty_beats(lines: Sequence[str], strip: str = "beat") -> tuple[list[str], int]:
    """While the first quarter note (4 lines) is all rests, drop a beat (``strip="beat"``, 4 lines: the official
    ``text_to_data.py`` of commit 0684006, whose prompts the shipped GPT-3 outputs start with) or a whole measure
    (``"measure"``, 16 lines, rests or not: the version of commit 5e7a4c0 and its ``gpt3_*.jsonl``). Returns
    (lines, number of drops)."""
    if strip not in STRIP_UNITS:
        raise ValueError(f"strip={strip!r}; expected one of {list(STRIP_UNITS)}")
    unit = STRIP_UNITS[strip]
    lines = list(lines)
    dropped = 0
    while len(lines) >= 4 and all(set(line) <= {REST} for line in lines[:4]):
        lines = lines[unit:]
        dropped += 1
    return lines, dropped


def add_separators(lines: Sequence[str]) -> str:
    """Lines joined with newlines, with a ``SEP`` line after every complete 16-line bar (each line ends with a
    newline, as the official ``add_separator`` output joined)."""
    out = []
    for i, line in enumerate(lines, start=1):
        out.append(f"{line}\n")
        if i % LINES_PER_BAR == 0:
            out.append(f"{SEP}\n")
    return "".join(out)


def make_example(lines: Sequence[str], name: str, strip: str = "beat") -> dict[str, str] | None:
    """The official prompt/completion pair for a drumroll, or ``None`` when the stripped score is too short."""
    stripped, _ = strip_empty_beats(lines, strip)
    if len(stripped) <= MIN_LINES_EXCLUSIVE:
        return None
    prompt = add_separators(stripped[:PROMPT_LINES])
    body = add_separators(stripped[PROMPT_LINES:])
    body = body.removesuffix(f"{SEP}\n").removesuffix("\n")
    return {"prompt": prompt, "completion": f"{body}\n{END}", "name": name}


def prompt_from_drumroll(lines: Sequence[str], name: str) -> dict[str, str]:
    """A generation prompt (the first 2 bars after stripping leading empty beats, with separators) from any
    drumroll, e.g. a user's own MIDI file; ``completion`` is empty."""
    stripped, _ = strip_empty_beats(lines)
    if len(stripped) < PROMPT_LINES:
        raise ValueError(f"{name}: {len(stripped)} lines after stripping leading empty beats; a prompt needs 32")
    return {"prompt": add_separators(stripped[:PROMPT_LINES]), "completion": "", "name": name}


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> int:
    """Write rows as JSON lines atomically; returns the count."""
    from polyzoo.shared.io import atomic_path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ("prompt", "completion", "name")) -> list[dict]:
    """Read JSON lines, checking each row has the ``required`` string fields (errors name file and line)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e})") from e
            missing = [k for k in required if not isinstance(row.get(k), str)]
            if missing:
                raise ValueError(f"{path}:{i}: missing string field(s) {missing}; expected {list(required)}")
            rows.append(row)
    return rows


@dataclasses.dataclass
class PrepareReport:
    """What ``prepare_gmd`` did: drumrolls written and examples per split, every skipped file with its reason."""

    examples: dict[str, int] = dataclasses.field(default_factory=dict)
    converted: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(s["reason"].split(":")[0].split(" at tick")[0] for s in self.skipped))


NAME_STYLES = ("polyzoo", "official")
OFFICIAL_SPLIT_NAMES = {"train": "train", "validation": "dev", "test": "test"}
MANIFEST = "prepare_manifest.json"
REPORT = "prepare_report.json"
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PrepareSettings:
    """Everything that decides ``prepare_gmd``'s output; the defaults reproduce the official ``data_text``.

    - ``merges``: ``"official"`` (the table the shipped text was made with) or ``"early"`` (``drumroll.MERGES``);
    - ``columns``: the column order, ``"official"`` (crash, ride, snare, kick, hi-hat, tom) or ``"primary-notes"``;
    - ``time_signatures``: ``"x/4"`` (official: 3/4 and 5/4 beats too, 16 bars of their own length) or ``"4/4"``;
    - ``include_eval_session``: keep drummer1's ``eval_session`` re-recordings in the test split (official: no;
      they are 40 test beats recorded again for GMD's own listening tests);
    - ``beats_only``: ``beat_type == beat`` rows only (official), else fills too;
    - ``names``: ``"polyzoo"`` (``drummer1_session1_239_funk-..._4-4``, splits train/validation/test) or
      ``"official"`` (the shipped names ``1_239_funk-..._4-4`` and split folders train/dev/test);
    - ``splits``: GMD splits to write (``info.csv``'s names);
    - ``num_bars``: bars per drumroll (16);
    - ``strip``: leading silence dropped from the examples a beat at a time (``"beat"``, the version the shipped
      GPT-3 outputs were prompted with) or a measure at a time (``"measure"``, the later ``gpt3_*.jsonl``).
    """

    merges: str = "official"
    columns: str = "official"
    time_signatures: str = "x/4"
    include_eval_session: bool = False
    beats_only: bool = True
    names: str = "polyzoo"
    splits: tuple[str, ...] = SPLITS
    num_bars: int = NUM_BARS
    strip: str = "beat"

    def __post_init__(self) -> None:
        from polyzoo.music.drumroll import COLUMN_ORDERS, MERGES, TIME_SIGNATURE_RULES

        for key, allowed in (
            ("merges", tuple(MERGES)),
            ("columns", tuple(COLUMN_ORDERS)),
            ("time_signatures", TIME_SIGNATURE_RULES),
            ("names", NAME_STYLES),
            ("strip", tuple(STRIP_UNITS)),
        ):
            if getattr(self, key) not in allowed:
                raise ValueError(f"prepare: {key}={getattr(self, key)!r}; expected one of {list(allowed)}")
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"prepare: unknown split(s) {sorted(unknown)}; expected some of {list(SPLITS)}")
        if self.num_bars < 1:
            raise ValueError(f"prepare: num_bars={self.num_bars}; expected at least 1")

    def split_name(self, split: str) -> str:
        return OFFICIAL_SPLIT_NAMES[split] if self.names == "official" else split

    def record(self) -> dict[str, Any]:
        """The settings as JSON values, with the tables they name spelled out (so a changed table is seen)."""
        from polyzoo.music.drumroll import COLUMN_ORDERS, MERGES

        out = dataclasses.asdict(self)
        out["splits"] = list(self.splits)
        out["merge_table"] = {str(k): v for k, v in sorted(MERGES[self.merges].items())}
        out["column_pitches"] = list(COLUMN_ORDERS[self.columns])
        out["version"] = MANIFEST_VERSION
        return out


def _example_name(midi_filename: str) -> str:
    return midi_filename.removesuffix(".midi").removesuffix(".mid").replace("/", "_").replace("\\", "_")


def official_name(row: dict[str, str]) -> str:
    """The official file name of a GMD row: the drummer's number, ``_``, the MIDI file's stem
    (``drummer1/session1/239_funk-purdieshuffle_130_beat_4-4.mid`` → ``1_239_funk-purdieshuffle_130_beat_4-4``)."""
    midi = row["midi_filename"].replace("\\", "/")
    drummer = row.get("drummer") or midi.split("/")[0]
    stem = midi.rsplit("/", 1)[-1].removesuffix(".midi").removesuffix(".mid")
    return f"{drummer.removeprefix('drummer')}_{stem}"


def is_eval_session(row: dict[str, str]) -> bool:
    """Whether a GMD row is one of drummer1's ``eval_session`` re-recordings."""
    session = row.get("session") or row["midi_filename"].replace("\\", "/").rsplit("/", 1)[0]
    return session.replace("\\", "/").rstrip("/").endswith("eval_session")


def _fingerprint(paths: Sequence[Path]) -> str:
    """A hash of the inputs' names, sizes and modification times (a missing file counts as missing)."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\tmissing\n".encode())
    return h.hexdigest()


def _our_outputs(out_dir: Path) -> list[Path]:
    names = [*SPLITS, "dev"]
    found = [out_dir / "text"] if (out_dir / "text").is_dir() else []
    found += [p for p in (out_dir / f"{s}.jsonl" for s in names) if p.exists()]
    found += [p for p in (out_dir / REPORT, out_dir / MANIFEST) if p.exists()]
    return found


def _check_out_dir(out_dir: Path, settings: dict[str, Any], inputs: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``out_dir`` already holds a complete build of these settings and inputs. Raises ``ValueError`` when
    it holds a build of other settings, or outputs of unknown provenance, unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: is a file; expected an output folder")
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
            old_settings, old_inputs = dict(old["settings"]), dict(old["inputs"])
        except (ValueError, KeyError, TypeError) as e:
            if not overwrite:
                raise ValueError(f"{manifest}: unreadable record of a previous prepare ({e}); pass --overwrite") from e
            return False
        differing = sorted(k for k in set(settings) | set(old_settings) if settings.get(k) != old_settings.get(k))
        if differing and not overwrite:
            shown = ", ".join(
                f"{k}: {old_settings.get(k)!r} → {settings.get(k)!r}" if k != "merge_table" else "merge_table"
                for k in differing
            )
            raise ValueError(
                f"{out_dir}: prepared with other settings ({shown}); pass --overwrite to rebuild it, or use another "
                "--out"
            )
        if not differing and old_inputs == inputs and old.get("complete"):
            return True
        if old_inputs != inputs:
            log.info("%s: inputs changed since the last prepare; rebuilding", out_dir)
        return False
    if _our_outputs(out_dir) and not overwrite:
        raise ValueError(
            f"{out_dir}: holds drumroll text or JSONL without a record of the settings they were made with; pass "
            "--overwrite to rebuild it, or use another --out"
        )
    return False


def _remove_outputs(out_dir: Path) -> None:
    import shutil

    for p in _our_outputs(out_dir):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def prepare_gmd(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: PrepareSettings | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareReport:
    """Convert a GMD-style folder (``info.csv`` with ``midi_filename``, ``split``, ``beat_type`` columns) into
    ``out_dir/text/<split>/<name>.txt`` drumrolls, ``out_dir/<split>.jsonl`` fine-tuning examples and
    ``out_dir/prepare_report.json``.

    By default (``PrepareSettings()``) this is the official ``data_text``: GMD's beats in x/4, its split, drummer1's
    ``eval_session`` left out of the test split, official columns and merges; on GMD v1.0.0 that is 373 / 47 / 37
    drumrolls, as the shipped ``data_text/{train,dev,test}``.

    ``out_dir/prepare_manifest.json`` records the settings and a hash of the inputs (``info.csv`` and every selected
    MIDI file: name, size, modification time). A folder already prepared with the same settings from unchanged
    inputs is kept as it is; changed inputs are rebuilt; other settings, or outputs without a record, raise
    ``ValueError`` naming the folder and the differing settings unless ``overwrite`` (rebuild).
    """
    from tqdm.auto import tqdm

    from polyzoo.music.drumroll import COLUMN_ORDERS, MERGES, write_drumroll
    from polyzoo.shared.io import write_json_atomic

    settings = settings or PrepareSettings()
    root, out_dir = Path(root), Path(out_dir)
    info = root / "info.csv"
    if not info.is_file():
        raise FileNotFoundError(f"{info}: not found; expected the Groove MIDI Dataset's info.csv in {root}")
    try:
        with open(info, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            needed = {"midi_filename", "split", "beat_type"}
            if not needed <= set(reader.fieldnames or ()):
                raise ValueError(f"{info}: expected columns {sorted(needed)}, found {reader.fieldnames}")
            rows = [(i, r) for i, r in enumerate(reader, start=2)]
    except UnicodeDecodeError as e:
        raise ValueError(f"{info}: not UTF-8 text ({e})") from e
    for line_no, row in rows:
        if None in row.values() or None in row:
            raise ValueError(f"{info}:{line_no}: expected {len(reader.fieldnames or ())} fields")

    selected = []  # (info.csv line, split, row)
    for line_no, row in rows:
        split = row["split"]
        if split not in settings.splits or (settings.beats_only and row["beat_type"] != "beat"):
            continue
        if split == "test" and not settings.include_eval_session and is_eval_session(row):
            continue
        selected.append((line_no, split, row))
    names: dict[tuple[str, str], str] = {}
    for line_no, split, row in selected:
        name = official_name(row) if settings.names == "official" else _example_name(row["midi_filename"])
        key = (split, name)
        if key in names:
            raise ValueError(
                f"{info}:{line_no}: {row['midi_filename']} has the same {settings.names} name {name!r} as "
                f"{names[key]} in split {split}"
            )
        names[key] = row["midi_filename"]

    record = settings.record()
    inputs = {
        "root": str(root.resolve()),
        "files": 1 + len(selected),
        "fingerprint": _fingerprint([info, *(root / r["midi_filename"] for _, _, r in selected)]),
    }
    if _check_out_dir(out_dir, record, inputs, overwrite) and (out_dir / REPORT).is_file():
        saved = json.loads((out_dir / REPORT).read_text(encoding="utf-8"))
        log.info("%s: up to date (same settings, unchanged inputs)", out_dir)
        return PrepareReport(saved["examples"], saved["converted"], saved["skipped"])
    _probe_writable(out_dir)
    _remove_outputs(out_dir)
    write_json_atomic(out_dir / MANIFEST, {"settings": record, "inputs": inputs, "complete": False})

    merges, columns = MERGES[settings.merges], COLUMN_ORDERS[settings.columns]
    report = PrepareReport()
    examples: dict[str, list[dict[str, str]]] = {s: [] for s in settings.splits}
    for line_no, split, row in tqdm(selected, desc="prepare", disable=not progress, unit="file"):
        midi = root / row["midi_filename"]
        name = official_name(row) if settings.names == "official" else _example_name(row["midi_filename"])
        folder = settings.split_name(split)
        try:
            lines = midi_to_drumroll(
                midi,
                merges=merges,
                columns=columns,
                time_signatures=settings.time_signatures,
                num_bars=settings.num_bars,
            )
        except SkippedMidi as e:
            report.skipped.append({"file": str(midi), "split": split, "reason": e.reason})
            continue
        except MidiReadError as e:
            reason = f"unreadable: {e} (info.csv:{line_no})"
            report.skipped.append({"file": str(midi), "split": split, "reason": reason})
            continue
        write_drumroll(lines, out_dir / "text" / folder / f"{name}.txt", columns=columns)
        report.converted[split] = report.converted.get(split, 0) + 1
        example = make_example(lines, name, settings.strip)
        if example is None:
            report.skipped.append(
                {"file": str(midi), "split": split, "reason": "too short: 128 lines or fewer after stripping"}
            )
            continue
        examples[split].append(example)
    for split, rows_ in examples.items():
        rows_.sort(key=lambda r: r["name"])
        report.examples[split] = write_jsonl(rows_, out_dir / f"{settings.split_name(split)}.jsonl")
    write_json_atomic(out_dir / REPORT, dataclasses.asdict(report) | {"reasons": report.reasons()})
    write_json_atomic(out_dir / MANIFEST, {"settings": record, "inputs": inputs, "complete": True})
    for s in report.skipped:
        log.info("skipped %s: %s", s["file"], s["reason"])
    return report


def _probe_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{out_dir}: cannot write there ({e.strerror or e}); expected a writable output folder") from e


def drumroll_from_example(example: dict[str, str]) -> list[str]:
    """The drumroll lines of a (prompt, completion) example: separators and end marker removed."""
    text = example["prompt"] + example["completion"]
    return [line for line in text.split("\n") if line and line not in (SEP, END)]


class CompletionDataset:
    """A map-style torch dataset of tokenized prompt+completion pairs; the loss covers only the completion.

    Item: ``{"input_ids": (T,) long, "attention_mask": (T,) long, "labels": (T,) long}`` with labels ``-100`` on
    the prompt tokens. The end-of-sequence token closes each example when the tokenizer has one. Sequences longer
    than ``max_length`` are cut at the end (logged).
    """

    def __init__(self, examples: Sequence[dict[str, str]], tokenizer, max_length: int | None = None) -> None:
        import torch

        self.items = []
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for ex in examples:
            p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
            c = tokenizer(ex["completion"], add_special_tokens=False)["input_ids"] + eos
            ids, labels = p + c, [-100] * len(p) + c
            if max_length is not None and len(ids) > max_length:
                log.warning("%s: %d tokens, cut to %d", ex.get("name", "?"), len(ids), max_length)
                ids, labels = ids[:max_length], labels[:max_length]
            self.items.append(
                {
                    "input_ids": torch.tensor(ids, dtype=torch.long),
                    "attention_mask": torch.ones(len(ids), dtype=torch.long),
                    "labels": torch.tensor(labels, dtype=torch.long),
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def pad_collate(batch: Sequence[dict], pad_token_id: int) -> dict:
    """Right-pad a batch of ``CompletionDataset`` items: (B, T) tensors, labels padded with -100."""
    import torch

    length = max(len(b["input_ids"]) for b in batch)
    out = {}
    for key, fill in (("input_ids", pad_token_id), ("attention_mask", 0), ("labels", -100)):
        t = torch.full((len(batch), length), fill, dtype=torch.long)
        for i, b in enumerate(batch):
            t[i, : len(b[key])] = b[key]
        out[key] = t
    return out


def full_length_completion_text() -> str:
    """The longest completion the format allows (256 − 32 lines of rests): sizes generation budgets."""
    example = make_example(["o" * 6] * NUM_LINES, "longest")
    assert example is not None
    return example["completion"]


def example_text(example: dict[str, str]) -> str:
    """Prompt + completion as one string (what a model sees)."""
    return example["prompt"] + example["completion"]
