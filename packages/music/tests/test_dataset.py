"""Fine-tuning examples: stripping, length filter, separators, end marker, GMD preparation, torch dataset."""

from __future__ import annotations

import json

import pytest

from polyzoo.music.dataset import (
    CompletionDataset,
    drumroll_from_example,
    make_example,
    pad_collate,
    prepare_gmd,
    read_jsonl,
    strip_empty_beats,
)
from polyzoo.music.drumroll import NUM_LINES, midi_to_drumroll

EMPTY = "------"


def official_example(score: list[str]) -> dict | None:
    """The official text_to_data.py steps restated on lines with newlines (the reference for make_example)."""
    score = [f"{x}\n" for x in score]
    while "".join(score[:4]).replace("\n", "") == "------" * 4:
        score = score[4:]
    if not len(score) > 128:
        return None

    def add_separator(s):
        s = list(s)
        for j, i in enumerate(range(16, len(s) + 1, 16)):
            s = [*s[: i + j], "SEP\n", *s[i + j :]]
        return s

    return {
        "prompt": "".join(add_separator(score[:32])),
        "completion": "".join(add_separator(score[32:])).strip("SEP\n") + "\nEND",
    }


def _groove(n_lines: int, lead_empty_beats: int = 0) -> list[str]:
    body = ["o---o-" if i % 4 == 0 else ("--o---" if i % 2 == 0 else EMPTY) for i in range(n_lines)]
    return [EMPTY] * (4 * lead_empty_beats) + body


def test_strip_empty_beats_works_on_quarter_notes():
    lines = [EMPTY] * 4 + [EMPTY] * 3 + ["----o-"] + _groove(8)
    stripped, dropped = strip_empty_beats(lines)
    assert dropped == 1 and stripped == lines[4:]
    assert strip_empty_beats([EMPTY] * 8) == ([], 2)


@pytest.mark.parametrize(("lead", "total"), [(0, 256), (1, 256), (2, 256), (5, 256), (0, 200), (0, 129), (0, 140)])
def test_example_matches_official_text_to_data(lead, total):
    lines = _groove(total - 4 * lead, lead)
    ours = make_example(lines, "x")
    ref = official_example(lines)
    assert ours is not None and ref is not None
    assert ours["prompt"] == ref["prompt"] and ours["completion"] == ref["completion"]
    assert ours["prompt"].count("SEP\n") == 2 and ours["prompt"].endswith("SEP\n")
    assert ours["completion"].endswith("\nEND") and "SEP\nEND" not in ours["completion"]
    # the drumroll comes back from the example, without separators
    assert drumroll_from_example(ours) == strip_empty_beats(lines)[0]


def test_length_filter_is_more_than_128_lines():
    assert make_example(_groove(128), "x") is None
    assert make_example(_groove(129), "x") is not None
    assert make_example(_groove(120, lead_empty_beats=34), "x") is None  # 256 lines, 136 stripped → 120 left
    assert official_example(_groove(128)) is None


def test_prepare_gmd_folder(fake_gmd, tmp_path):
    out = tmp_path / "prep"
    report = prepare_gmd(fake_gmd, out, progress=False)
    assert report.examples == {"train": 4, "validation": 1, "test": 2}
    reasons = report.reasons()
    assert reasons == {"time signature 3/4": 1, "too short": 1}, reasons
    rows = read_jsonl(out / "train.jsonl")
    assert {r["name"] for r in rows} == {f"drummer1_session1_{i}_rock_100_beat_4-4" for i in range(4)}
    for r in rows:
        lines = (out / "text" / "train" / f"{r['name']}.txt").read_text().splitlines()
        assert len(lines) == NUM_LINES
        assert r == {**make_example(lines, r["name"])}
    saved = json.loads((out / "prepare_report.json").read_text())
    assert len(saved["skipped"]) == 2 and all("file" in s and "reason" in s for s in saved["skipped"])
    # a second run reads the converted text back and gives the same files
    before = (out / "train.jsonl").read_text()
    prepare_gmd(fake_gmd, out, progress=False)
    assert (out / "train.jsonl").read_text() == before
    # fills are kept when asked
    assert prepare_gmd(fake_gmd, tmp_path / "all", beats_only=False, progress=False).examples["train"] == 5


def test_prepare_gmd_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"info\.csv"):
        prepare_gmd(tmp_path, tmp_path / "o", progress=False)
    (tmp_path / "info.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected columns"):
        prepare_gmd(tmp_path, tmp_path / "o", progress=False)


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"prompt": "a", "completion": "b", "name": "n"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: missing string field\(s\) \['completion', 'name'\]"):
        read_jsonl(p)


def test_real_gmd_split_counts(gmd_root, tmp_path):
    report = prepare_gmd(gmd_root, tmp_path / "gmd", progress=False)
    # GMD beats: 378 train / 48 validation / 77 test; 4/4 only drops 10 + 2; the >128-line filter drops one
    assert report.converted == {"train": 368, "validation": 46, "test": 77}
    assert report.examples == {"train": 367, "validation": 46, "test": 77}
    assert report.reasons()["too short"] == 1


def test_completion_dataset_masks_the_prompt(tmp_path):
    from polyzoo.music.lm import char_tokenizer

    tok = char_tokenizer()
    ex = make_example(_groove(256), "g")
    ds = CompletionDataset([ex, {**ex, "completion": ex["completion"][:50]}], tok)
    item = ds[0]
    n_prompt = len(ex["prompt"])
    assert (item["labels"][:n_prompt] == -100).all()
    assert (item["labels"][n_prompt:] == item["input_ids"][n_prompt:]).all()
    assert item["input_ids"][-1].item() == tok.eos_token_id
    assert tok.decode(item["input_ids"][n_prompt:-1]) == ex["completion"]
    batch = pad_collate([ds[0], ds[1]], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(item["input_ids"]))
    short = len(ds[1]["input_ids"])
    assert (batch["labels"][1, short:] == -100).all() and (batch["attention_mask"][1, short:] == 0).all()
    cut = CompletionDataset([ex], tok, max_length=300)
    assert len(cut[0]["input_ids"]) == 300


def test_real_file_example(gmd_root):
    lines = midi_to_drumroll(gmd_root / "drummer1/eval_session/10_soul-groove10_102_beat_4-4.mid")
    ex = make_example(lines, "soul")
    assert ex is not None and ex == {**official_example(lines), "name": "soul"}


def test_prompt_from_a_users_drumroll():
    from polyzoo.music.dataset import prompt_from_drumroll

    lines = _groove(64, lead_empty_beats=2)
    ex = prompt_from_drumroll(lines, "mine")
    assert ex["prompt"] == make_example(_groove(256), "x")["prompt"] and ex["completion"] == ""
    with pytest.raises(ValueError, match=r"mine: 28 lines after stripping"):
        prompt_from_drumroll(_groove(28), "mine")
