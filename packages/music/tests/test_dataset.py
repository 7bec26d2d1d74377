"""Fine-tuning examples: stripping, length filter, separators, end marker, GMD preparation, torch dataset."""

from __future__ import annotations

import json

import pytest

from polyzoo.music.dataset import (
    CompletionDataset,
    PrepareSettings,
    drumroll_from_example,
    make_example,
    pad_collate,
    prepare_gmd,
    read_jsonl,
    strip_empty_beats,
)
from polyzoo.music.drumroll import NUM_LINES, midi_to_drumroll

EMPTY = "------"


def official_example(score: list[str], drop: int = 4) -> dict | None:
    """The official text_to_data.py steps restated on lines with newlines (the reference for make_example);
    ``drop`` lines go per empty leading quarter note: 4 at commit 0684006, 16 at commit 5e7a4c0."""
    score = [f"{x}\n" for x in score]
    while "".join(score[:4]).replace("\n", "") == "------" * 4:
        score = score[drop:]
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


@pytest.mark.parametrize("lead", [0, 1, 3, 4, 5, 9])
def test_measure_stripping_matches_the_later_official_version(lead):
    # a leading empty beat drops the whole first measure, notes in its later beats included
    lines = _groove(256 - 4 * lead, lead)
    ours = make_example(lines, "x", strip="measure")
    ref = official_example(lines, drop=16)
    assert ours is not None and ref is not None
    assert ours["prompt"] == ref["prompt"] and ours["completion"] == ref["completion"]
    if lead:
        assert ours["prompt"].split("\n")[0] == lines[16 * ((lead + 3) // 4)]
    with pytest.raises(ValueError, match="strip='bar'"):
        make_example(lines, "x", strip="bar")


def test_length_filter_is_more_than_128_lines():
    assert make_example(_groove(128), "x") is None
    assert make_example(_groove(129), "x") is not None
    assert make_example(_groove(120, lead_empty_beats=34), "x") is None  # 256 lines, 136 stripped → 120 left
    assert official_example(_groove(128)) is None


def test_prepare_gmd_folder(fake_gmd, tmp_path):
    out = tmp_path / "prep"
    report = prepare_gmd(fake_gmd, out, progress=False)
    # official selection: x/4 beats (the 3/4 one too), eval_session out of test, 6/8 skipped
    assert report.converted == {"train": 6, "validation": 1, "test": 2}
    assert report.examples == {"train": 5, "validation": 1, "test": 2}
    assert report.reasons() == {"time signature 6/8": 1, "too short": 1}, report.reasons()
    rows = read_jsonl(out / "train.jsonl")
    names = [r["name"] for r in rows]
    expected = [f"drummer1_session1_{i}_rock_100_beat_4-4" for i in range(4)] + [
        "drummer1_session1_9_rock_100_beat_3-4"
    ]
    assert names == sorted(expected)
    for r in rows:
        lines = (out / "text" / "train" / f"{r['name']}.txt").read_text().splitlines()
        assert len(lines) == (192 if r["name"].endswith("3-4") else NUM_LINES)
        assert r == {**official_example(lines), "name": r["name"]}
    saved = json.loads((out / "prepare_report.json").read_text())
    assert len(saved["skipped"]) == 2 and all("file" in s and "reason" in s for s in saved["skipped"])
    assert sorted(p.name for p in (out / "text" / "test").iterdir()) == [
        "drummer1_session1_5_rock_100_beat_4-4.txt",
        "drummer1_session1_6_rock_100_beat_4-4.txt",
    ]
    # fills are kept when asked (another folder: the settings differ)
    assert (
        prepare_gmd(fake_gmd, tmp_path / "all", PrepareSettings(beats_only=False), progress=False).examples["train"]
        == 6
    )


def test_prepare_gmd_options(fake_gmd, tmp_path):
    settings = PrepareSettings(time_signatures="4/4", include_eval_session=True)
    report = prepare_gmd(fake_gmd, tmp_path / "a", settings, progress=False)
    assert report.converted == {"train": 5, "validation": 1, "test": 3}
    assert report.examples == {"train": 4, "validation": 1, "test": 3}
    assert report.reasons() == {"time signature 3/4": 1, "time signature 6/8": 1, "too short": 1}
    assert (tmp_path / "a" / "text" / "test" / "drummer1_eval_session_7_rock_100_beat_4-4.txt").is_file()
    # official names: drummer number + file stem, split folders train/dev/test
    report = prepare_gmd(fake_gmd, tmp_path / "o", PrepareSettings(names="official"), progress=False)
    out = tmp_path / "o"
    assert sorted(p.name for p in (out / "text").iterdir()) == ["dev", "test", "train"]
    assert sorted(p.name for p in (out / "text" / "dev").iterdir()) == ["1_4_rock_100_beat_4-4.txt"]
    assert [r["name"] for r in read_jsonl(out / "dev.jsonl")] == ["1_4_rock_100_beat_4-4"]
    assert not (out / "validation.jsonl").exists()
    # the early merge table and the primary_notes column order change the text
    prepare_gmd(fake_gmd, tmp_path / "p", PrepareSettings(columns="primary-notes"), progress=False)
    default = prepare_gmd(fake_gmd, tmp_path / "d", progress=False)
    assert default.converted == report.converted
    name = "drummer1_session1_0_rock_100_beat_4-4.txt"
    official_lines = (tmp_path / "d" / "text" / "train" / name).read_text().splitlines()
    primary_lines = (tmp_path / "p" / "text" / "train" / name).read_text().splitlines()
    swap = [line[0] + line[1] + line[4] + line[2] + line[3] + line[5] for line in official_lines]
    assert primary_lines == swap != official_lines
    with pytest.raises(ValueError, match="names='x'"):
        PrepareSettings(names="x")


def test_prepare_gmd_records_its_settings_and_inputs(fake_gmd, tmp_path, write_midi):
    out = tmp_path / "prep"
    prepare_gmd(fake_gmd, out, progress=False)
    manifest = json.loads((out / "prepare_manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"]["merges"] == "official"
    assert manifest["settings"]["column_pitches"] == [49, 51, 38, 36, 42, 50]
    text = out / "text" / "train" / "drummer1_session1_0_rock_100_beat_4-4.txt"
    # same settings, unchanged inputs: the folder is kept as it is
    stamp = text.stat().st_mtime_ns
    again = prepare_gmd(fake_gmd, out, progress=False)
    assert again.examples == {"train": 5, "validation": 1, "test": 2} and text.stat().st_mtime_ns == stamp
    # other settings into the same folder: refused, naming the folder and the setting, nothing touched
    with pytest.raises(ValueError, match=r"prep: prepared with other settings \(.*merges: 'official' → 'early'"):
        prepare_gmd(fake_gmd, out, PrepareSettings(merges="early"), progress=False)
    assert text.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"include_eval_session: False → True"):
        prepare_gmd(fake_gmd, out, PrepareSettings(include_eval_session=True), progress=False)
    # with overwrite the folder is rebuilt for the new settings: the eval-session groove appears
    report = prepare_gmd(fake_gmd, out, PrepareSettings(include_eval_session=True), overwrite=True, progress=False)
    assert report.converted["test"] == 3 and len(list((out / "text" / "test").iterdir())) == 3
    # back to the defaults (overwrite): the eval-session file is gone, not left over
    prepare_gmd(fake_gmd, out, overwrite=True, progress=False)
    assert len(list((out / "text" / "test").iterdir())) == 2
    # a changed input file is converted again
    midi = fake_gmd / "drummer1/session1/0_rock_100_beat_4-4.mid"
    write_midi(midi, [(0, 36)])
    report = prepare_gmd(fake_gmd, out, progress=False)
    assert text.read_text().splitlines()[:2] == ["---o--", "------"]
    # one hit on line 0 then rests: nothing to strip, 256 lines > 128, kept (the official filter pads too)
    assert report.converted["train"] == 6 and report.examples["train"] == 5
    # outputs without a record (an older polyzoo, or another tool): refused
    (out / "prepare_manifest.json").unlink()
    with pytest.raises(ValueError, match="without a record of the settings"):
        prepare_gmd(fake_gmd, out, progress=False)
    prepare_gmd(fake_gmd, out, overwrite=True, progress=False)


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


# names of the shipped official data (zharry29/drums-with-llm data_text/dev and a part of data_text/test)
OFFICIAL_DEV = {
    "1_126_funk-fast_125_beat_4-4", "1_1_latin-chacarera_157_beat_3-4", "1_2_funk_80_beat_4-4",
    "1_62_punk_144_beat_4-4", "2_2_rock_130_beat_4-4", "3_5_rock_100_beat_4-4", "3_7_rock_105_beat_4-4",
    "4_2_jazz_158_beat_4-4", "4_5_latin-brazilian_184_beat_4-4", "5_11_latin-brazilian-sambareggae_96_beat_4-4",
    "5_22_latin-brazilian-frevo_133_beat_4-4", "7_100_pop_142_beat_4-4", "7_102_pop_132_beat_4-4",
    "7_113_jazz-fusion_96_beat_4-4", "7_27_rock_75_beat_4-4", "7_96_pop_142_beat_4-4", "8_16_afrobeat_90_beat_4-4",
    "8_18_afrobeat_85_beat_4-4", "8_18_funk_108_beat_4-4", "9_12_rock_100_beat_4-4",
}  # fmt: skip
OFFICIAL_TEST = {
    "1_239_funk-purdieshuffle_130_beat_4-4", "1_35_punk_128_beat_4-4", "1_4_jazz-funk_116_beat_4-4",
    "3_10_rock_100_beat_4-4", "3_11_rock_100_beat_4-4", "3_11_rock_120_beat_4-4", "3_14_rock_120_beat_4-4",
    "3_32_jazz_120_beat_4-4", "3_43_rock_120_beat_4-4", "7_112_jazz-fusion_96_beat_4-4",
    "7_114_jazz-fusion_96_beat_4-4", "7_117_rock_95_beat_4-4", "7_16_hiphop_100_beat_4-4", "7_24_hiphop_67_beat_4-4",
    "7_2_rock_120_beat_4-4", "7_53_rock_135_beat_4-4", "7_93_hiphop_75_beat_4-4", "8_16_funk_95_beat_4-4",
    "8_23_rock_96_beat_4-4", "8_40_rock-indie_104_beat_4-4", "8_41_highlife_126_beat_4-4", "9_24_rock_90_beat_4-4",
    "9_7_rock_100_beat_4-4",
}  # fmt: skip


def test_real_gmd_split_counts(gmd_root, tmp_path):
    """The official data's counts: 373 / 47 / 37 drumrolls (data_text), 372 / 47 / 37 examples (gpt3_*.jsonl)."""
    report = prepare_gmd(gmd_root, tmp_path / "gmd", PrepareSettings(names="official"), progress=False)
    assert report.converted == {"train": 373, "validation": 47, "test": 37}
    assert report.examples == {"train": 372, "validation": 47, "test": 37}
    assert report.reasons() == {"time signature 6/8": 5, "time signature 5/8": 1, "too short": 1}
    text = tmp_path / "gmd" / "text"
    dev = {p.stem for p in (text / "dev").iterdir()}
    test = {p.stem for p in (text / "test").iterdir()}
    assert len(dev) == 47 and dev >= OFFICIAL_DEV
    assert len(test) == 37 and test >= OFFICIAL_TEST
    assert len((text / "train" / "1_4_jazz_120_beat_3-4.txt").read_text().splitlines()) == 192
    # the other selection: 4/4 only, with the eval session (polyzoo's earlier default)
    other = PrepareSettings(time_signatures="4/4", include_eval_session=True)
    report = prepare_gmd(gmd_root, tmp_path / "other", other, progress=False)
    assert report.converted == {"train": 368, "validation": 46, "test": 77}
    assert report.examples == {"train": 367, "validation": 46, "test": 77}


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
    # a groove with 4 empty leading lines and notes in its first bar: the two official versions differ
    lines = midi_to_drumroll(gmd_root / "drummer1/session1/239_funk-purdieshuffle_130_beat_4-4.mid")
    beat, measure = make_example(lines, "f"), make_example(lines, "f", strip="measure")
    assert beat == {**official_example(lines), "name": "f"} and measure == {**official_example(lines, 16), "name": "f"}
    assert beat["prompt"].startswith("------\n------\n--o---\n") and measure["prompt"].startswith("---oo-\n------\n")
    # a 3/4 groove: 192 lines, SEP after every 16 lines as in 4/4
    lines = midi_to_drumroll(gmd_root / "drummer1/session2/4_jazz_120_beat_3-4.mid")
    ex = make_example(lines, "j")
    assert len(lines) == 192 and ex == {**official_example(lines), "name": "j"} and ex["completion"].count("SEP") == 9


def test_prompt_from_a_users_drumroll():
    from polyzoo.music.dataset import prompt_from_drumroll

    lines = _groove(64, lead_empty_beats=2)
    ex = prompt_from_drumroll(lines, "mine")
    assert ex["prompt"] == make_example(_groove(256), "x")["prompt"] and ex["completion"] == ""
    with pytest.raises(ValueError, match=r"mine: 28 lines after stripping"):
        prompt_from_drumroll(_groove(28), "mine")
