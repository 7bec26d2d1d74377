"""Scoring any system's raw output as the paper's metric does: against an independent transcription of the official
``analysis.py`` (files read with ``open().readlines()``, 16-line blocks of the raw text, the first 16 kept, per inner
block the minimum DP edit distance to a neighbour; the mean over pooled stabilities)."""

from __future__ import annotations

import json
import random

import pytest

from polyzoo.music.evaluation import (
    UnreadableGrooveError,
    evaluate_systems,
    malformed_lines,
    read_groove,
    read_groove_folder,
    stabilities,
    summarize,
)


def _edit_distance(a: str, b: str) -> int:
    """Own textbook Wagner-Fischer table."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return table[len(a)][len(b)]


def _official_file_stabilities(path) -> list[int]:
    """Transcription of the official rule on a file: readlines (newlines kept), '\\n'.join of every 16 lines from
    line 0 (the last block partial), the first 16 blocks, min distance to the previous or next block."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    blocks = []
    start = 0
    while start < len(lines):
        blocks.append("\n".join(lines[start : start + 16]))
        start += 16
    blocks = blocks[:16]
    out = []
    for i in range(1, len(blocks) - 1):
        out.append(min(_edit_distance(blocks[i], blocks[i - 1]), _edit_distance(blocks[i], blocks[i + 1])))
    return out


def _line(rng: random.Random) -> str:
    return "".join(rng.choice("o-") for _ in range(6))


def _raw_outputs(rng: random.Random) -> dict[str, str]:
    """Hand-made LM-like outputs: malformed lines (7 and 5 characters, empty, a stray SEP, an 'x'), files that stop
    early, one without a final newline, one with CRLF line ends, one longer than 16 bars."""
    bar = [_line(rng) for _ in range(16)]
    other = [_line(rng) for _ in range(16)]
    clean = [*bar, *other] * 8  # 256 lines
    malformed = list(clean)
    malformed[40] = "-oooo--"  # 7 characters
    malformed[41] = "-ooo-"  # 5 characters
    malformed[100] = ""
    malformed[101] = "SEP"
    malformed[170] = "--x-o-"
    return {
        "clean": "".join(f"{x}\n" for x in clean),
        "malformed": "".join(f"{x}\n" for x in malformed),
        "short": "".join(f"{x}\n" for x in clean[:100]),  # 6 full blocks and a 4-line block
        "no_final_newline": "\n".join(malformed[:200]),  # last line without newline
        "crlf": "".join(f"{x}\r\n" for x in malformed[:180]),
        "long": "".join(f"{x}\n" for x in [*clean, *other, "ooooooo"]),  # 17+ blocks, malformed line past 16
        "two_bars": "".join(f"{x}\n" for x in clean[:30]),  # no inner block: no stability
    }


def _write(folder, texts: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / f"{name}.txt").write_bytes(text.encode("utf-8"))
    return folder


def test_raw_outputs_score_as_the_official_rule(tmp_path):
    texts = _raw_outputs(random.Random(5))
    folder = _write(tmp_path / "sys", texts)
    grooves = read_groove_folder(folder)
    assert sorted(grooves) == sorted(texts)
    for name in texts:
        expected = _official_file_stabilities(folder / f"{name}.txt")
        assert stabilities(grooves[name]) == expected, name
    assert len(_official_file_stabilities(folder / "short.txt")) == 5  # 7 blocks, the last partial
    assert _official_file_stabilities(folder / "two_bars.txt") == []
    # a malformed line changes distances as raw text: 7 characters cost one insertion more than 6
    assert stabilities(grooves["malformed"]) != stabilities(grooves["clean"])


def test_raw_summary_counts_and_pooled_mean(tmp_path):
    texts = _raw_outputs(random.Random(6))
    folder = _write(tmp_path / "sys", texts)
    grooves = read_groove_folder(folder)
    row = summarize(grooves)
    pooled = [s for name in texts for s in _official_file_stabilities(folder / f"{name}.txt")]
    assert row["mean_stability"] == pytest.approx(sum(pooled) / len(pooled))
    assert row["grooves"] == 7
    # malformed: 5 in "malformed" (lines 40, 41, 100, 101, 170); "no_final_newline" (lines 0..199 of it) and
    # "crlf" (0..179) hold the same 5; "long" one 7-character line at its end
    assert row["malformed_lines"] == 5 + 5 + 5 + 1
    assert row["grooves_malformed"] == 4
    # fewer than 256 lines: short (100), no_final_newline (200), crlf (180), two_bars (30)
    assert row["short_grooves"] == 4
    assert row["unscored_grooves"] == 1
    assert malformed_lines(["-oooo--\n", "------\n", "\n", "oooooo"]) == 2


def test_read_groove_is_readlines(tmp_path):
    path = tmp_path / "g.txt"
    path.write_bytes(b"------\r\n-oooo--\r\n\r\n--o---")
    with open(path, encoding="utf-8") as f:
        official = f.readlines()
    assert read_groove(path) == official == ["------\n", "-oooo--\n", "\n", "--o---"]


def test_missing_final_newline_counts_as_the_official_rule(tmp_path):
    """The last block ends without a newline: one edit from an equal block that has it (officially 1, not 0)."""
    rng = random.Random(11)
    first, core = [_line(rng) for _ in range(16)], [_line(rng) for _ in range(16)]
    path = tmp_path / "g.txt"
    path.write_text("".join(f"{x}\n" for x in first + core) + "\n".join(core), encoding="utf-8")
    assert _official_file_stabilities(path) == [1]
    assert stabilities(read_groove(path)) == [1]


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "no such"), (b"", "empty"), (b"------\n\x00\x01\n", "binary"), (b"------\n\xff\xfe--\n", "not UTF-8")],
)
def test_unreadable_files_are_errors_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnreadableGrooveError, match=reason) as info:
        read_groove(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_evaluate_systems_reports_counts_per_system(tmp_path):
    texts = _raw_outputs(random.Random(7))
    human = {n: read_groove(_write(tmp_path / "h", {n: texts["clean"]}) / f"{n}.txt") for n in ("a", "b")}
    system = {"a": texts["malformed"].splitlines(keepends=True), "b": texts["short"].splitlines(keepends=True)}
    rows = {r["system"]: r for r in evaluate_systems(human, {"lm": system})}
    assert rows["human"]["malformed_lines"] == 0 and rows["human"]["short_grooves"] == 0
    assert rows["random"]["malformed_lines"] == 0 and rows["repeat"]["short_grooves"] == 0
    assert rows["lm"]["malformed_lines"] == 5 and rows["lm"]["short_grooves"] == 1
    assert rows["lm"]["grooves_malformed"] == 1


def _run_eval(args):
    from click.testing import CliRunner

    from polyzoo.music.cli import music

    return CliRunner().invoke(music, ["eval", *args])


def test_cli_eval_accepts_malformed_outputs(tmp_path):
    texts = _raw_outputs(random.Random(8))
    human = _write(tmp_path / "human", {n: texts["clean"] for n in texts})
    lm = _write(tmp_path / "lm", texts)
    out = tmp_path / "rows.json"
    res = _run_eval(["--human", str(human), "--generated", f"lm={lm}", "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["system"]: r for r in json.loads(out.read_text())}
    pooled = [s for n in texts for s in _official_file_stabilities(lm / f"{n}.txt")]
    assert rows["lm"]["mean_stability"] == pytest.approx(sum(pooled) / len(pooled))
    assert rows["lm"]["malformed_lines"] == 16 and rows["lm"]["short_grooves"] == 4
    assert rows["lm"]["unscored_grooves"] == 1
    assert "malformed_lines" in res.output


def test_cli_eval_unreadable_file_is_one_error_line(tmp_path):
    texts = _raw_outputs(random.Random(9))
    human = _write(tmp_path / "human", {"a": texts["clean"], "b": texts["clean"]})
    lm = _write(tmp_path / "lm", {"a": texts["malformed"]})
    (lm / "b.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    res = _run_eval(["--human", str(human), "--generated", f"lm={lm}"])
    assert res.exit_code == 1
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and str(lm / "b.txt") in lines[0]
    assert "Traceback" not in res.output
