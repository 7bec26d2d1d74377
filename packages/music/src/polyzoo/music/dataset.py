"""Fine-tuning examples from drumrolls, after *Language Models are Drummers* (Zhang & Callison-Burch, arXiv
2301.01162); official code https://github.com/zharry29/drums-with-llm (``source/text_to_data.py``).

Per performance (256 drumroll lines, ``drumroll.py``):

1. strip leading empty *beats*: while the first four lines (one quarter note) are all rests, drop them (the
   official ``strip_empty_measure`` works on quarter notes despite its name);
2. length filter: keep the score only if more than 128 lines (8 bars) remain;
3. prompt = the first 32 lines (2 bars) with ``SEP`` after every 16 lines (so it ends with ``SEP\\n``);
   completion = the remaining lines with ``SEP`` lines between bars, then ``\\nEND``.

The official completion is ``''.join(add_separator(rest)).strip('SEP\\n') + '\\nEND'``: ``str.strip`` removes the
*characters* S, E, P and newline from both ends, not the token. Drumroll lines only hold ``o`` and ``-``, so that
removes exactly the trailing newline and a trailing ``SEP`` line; we build the same string without the quirk.

The Groove MIDI Dataset split comes from its ``info.csv`` (``train``/``validation``/``test``; the official code calls
validation "dev"); by default only ``beat_type == beat`` rows, as the paper. Examples are written as JSONL with
``prompt``, ``completion`` and ``name``, the official files' fields.
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
    MERGES_OFFICIAL,
    NUM_LINES,
    REST,
    DrumrollFormatError,
    MidiReadError,
    SkippedMidi,
    midi_to_drumroll,
    read_drumroll,
)

__all__ = [
    "END",
    "MIN_LINES_EXCLUSIVE",
    "PROMPT_LINES",
    "SEP",
    "CompletionDataset",
    "PrepareReport",
    "add_separators",
    "drumroll_from_example",
    "example_text",
    "full_length_completion_text",
    "make_example",
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


def strip_empty_beats(lines: Sequence[str]) -> tuple[list[str], int]:
    """Drop leading quarter notes (4 lines) that are all rests; returns (lines, number of beats dropped)."""
    lines = list(lines)
    dropped = 0
    while len(lines) >= 4 and all(set(line) <= {REST} for line in lines[:4]):
        lines = lines[4:]
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


def make_example(lines: Sequence[str], name: str) -> dict[str, str] | None:
    """The official prompt/completion pair for a drumroll, or ``None`` when the stripped score is too short."""
    stripped, _ = strip_empty_beats(lines)
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
    """What ``prepare_gmd`` did: examples per split and every skipped file with its reason."""

    examples: dict[str, int] = dataclasses.field(default_factory=dict)
    converted: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(s["reason"].split(":")[0].split(" at tick")[0] for s in self.skipped))


def _example_name(midi_filename: str) -> str:
    return midi_filename.removesuffix(".midi").removesuffix(".mid").replace("/", "_").replace("\\", "_")


def prepare_gmd(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    beats_only: bool = True,
    splits: Sequence[str] = SPLITS,
    merges: dict[int, int] | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Convert a GMD-style folder (``info.csv`` with ``midi_filename``, ``split``, ``beat_type`` columns) into
    ``out_dir/text/<split>/<name>.txt`` drumrolls, ``out_dir/<split>.jsonl`` fine-tuning examples and
    ``out_dir/prepare_report.json``. Files already converted are read back instead of converted again."""
    from tqdm.auto import tqdm

    from polyzoo.music.drumroll import write_drumroll
    from polyzoo.shared.io import write_json_atomic

    root, out_dir = Path(root), Path(out_dir)
    info = root / "info.csv"
    if not info.is_file():
        raise FileNotFoundError(f"{info}: not found; expected the Groove MIDI Dataset's info.csv in {root}")
    with open(info, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        needed = {"midi_filename", "split", "beat_type"}
        if not needed <= set(reader.fieldnames or ()):
            raise ValueError(f"{info}: expected columns {sorted(needed)}, found {reader.fieldnames}")
        rows = [(i, r) for i, r in enumerate(reader, start=2)]
    report = PrepareReport()
    examples: dict[str, list[dict[str, str]]] = {s: [] for s in splits}
    for line_no, row in tqdm(rows, desc="prepare", disable=not progress, unit="file"):
        split = row["split"]
        if split not in examples or (beats_only and row["beat_type"] != "beat"):
            continue
        midi = root / row["midi_filename"]
        name = _example_name(row["midi_filename"])
        text_path = out_dir / "text" / split / f"{name}.txt"
        try:
            if text_path.is_file():
                lines = read_drumroll(text_path)
            else:
                lines = midi_to_drumroll(midi, merges=merges or MERGES_OFFICIAL)
                write_drumroll(lines, text_path)
        except SkippedMidi as e:
            report.skipped.append({"file": str(midi), "split": split, "reason": e.reason})
            continue
        except (MidiReadError, DrumrollFormatError) as e:
            report.skipped.append(
                {"file": str(midi), "split": split, "reason": f"unreadable: {e} (info.csv:{line_no})"}
            )
            continue
        report.converted[split] = report.converted.get(split, 0) + 1
        example = make_example(lines, name)
        if example is None:
            report.skipped.append(
                {"file": str(midi), "split": split, "reason": "too short: 128 lines or fewer after stripping"}
            )
            continue
        examples[split].append(example)
    for split, rows_ in examples.items():
        report.examples[split] = write_jsonl(rows_, out_dir / f"{split}.jsonl")
    write_json_atomic(out_dir / "prepare_report.json", dataclasses.asdict(report) | {"reasons": report.reasons()})
    for s in report.skipped:
        log.info("skipped %s: %s", s["file"], s["reason"])
    return report


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
