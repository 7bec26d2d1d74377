"""The drumroll text format: grid, columns, merges, quantisation, MIDI round trips, skips and bad input."""

from __future__ import annotations

import collections
import csv

import numpy as np
import pytest

from polyzoo.music.drumroll import (
    COLUMN_NAMES,
    COLUMN_ORDERS,
    COLUMN_PITCHES,
    MERGES_EARLY,
    MERGES_EXTENDED,
    MERGES_OFFICIAL,
    NUM_LINES,
    DrumrollFormatError,
    MidiReadError,
    SkippedMidi,
    array_to_lines,
    drumroll_to_midi,
    midi_to_drumroll,
    parse_drumroll,
    quantize_tick,
    read_drumroll,
)


def official_quantize(tpb: int, ticks: int, max_16ths: int) -> int:
    """The official ``quantize`` (midi_to_text.py) restated: explicit windows, -1 outside."""
    q, e = int(tpb / 4), int(tpb / 8)
    windows = [range(0, e)] + [range(q - e + k * q, q + e + k * q) for k in range(max_16ths - 1)]
    for i, r in enumerate(windows):
        if ticks in r:
            return i
    return -1


@pytest.mark.parametrize("tpb", [480, 96, 384])
def test_quantize_matches_official_windows(tpb):
    for tick in range(0, 39 * tpb // 4):
        ref = official_quantize(tpb, tick, 40)
        assert ref != -1
        assert quantize_tick(tick, tpb) == ref


def test_quantize_is_nearest_step_for_any_resolution():
    # 220 ticks per beat: the official windows leave one-tick gaps; ours round to the nearest sixteenth
    for tick in range(0, 3000):
        step = quantize_tick(tick, 220)
        assert abs(tick - step * 55) <= 27.5


def test_quantisation_window_is_plus_minus_a_32nd():
    # 480 tpq: a sixteenth is 120 ticks, a 32nd 60; the window around step 5 (tick 600) is [540, 660)
    assert quantize_tick(540, 480) == 5
    assert quantize_tick(659, 480) == 5
    assert quantize_tick(539, 480) == 4
    assert quantize_tick(660, 480) == 6
    assert quantize_tick(0, 480) == 0 and quantize_tick(59, 480) == 0


def test_column_order_and_merges(tmp_path, write_midi):
    # the shipped data's order (midi_to_text.py writes note_to_drum's insertion order filtered by primary_notes)
    assert COLUMN_PITCHES == (49, 51, 38, 36, 42, 50)
    assert COLUMN_NAMES == ("crash", "ride", "snare", "kick", "hi-hat", "tom")
    step = 120
    # (step, pitch, expected column with the official table, expected column with the early table); None: dropped
    cases = [
        (0, 49, 0, 0),
        (1, 57, 0, 0),  # crash, crash 2
        (2, 55, 0, None),
        (3, 52, 0, None),  # splash, china
        (4, 51, 1, 1),
        (5, 53, 1, 1),
        (6, 59, 1, 1),  # ride, bell, ride 2
        (7, 38, 2, 2),
        (8, 40, 2, 2),
        (9, 37, 2, 2),  # snare, rim shot, side stick
        (10, 36, 3, 3),  # kick
        (11, 42, 4, 4),
        (12, 46, 4, 4),
        (13, 22, 4, None),
        (14, 26, 4, None),  # closed, open, and the two edge hi-hat pitches
        (15, 50, 5, 5),
        (16, 48, 5, 5),
        (17, 47, 5, 5),
        (18, 45, 5, 5),
        (19, 43, 5, 5),
        (20, 58, 5, None),  # toms
        (21, 44, None, None),  # pedal hi-hat
        (22, 39, None, None),
    ]
    path = write_midi(tmp_path / "merge.mid", [(s * step, p) for s, p, _, _ in cases])
    official = midi_to_drumroll(path)
    early = midi_to_drumroll(path, merges=MERGES_EARLY)
    assert len(official) == len(early) == NUM_LINES
    for s, pitch, col, col_early in cases:
        for lines, c in ((official, col), (early, col_early)):
            expected = "------" if c is None else "-" * c + "o" + "-" * (5 - c)
            assert lines[s] == expected, (pitch, lines[s])
    assert MERGES_EXTENDED == MERGES_OFFICIAL  # the old name of the official table


def test_column_order_is_a_parameter(tmp_path, write_midi):
    path = write_midi(tmp_path / "c.mid", [(0, 42), (120, 38), (240, 36)])
    assert midi_to_drumroll(path)[:3] == ["----o-", "--o---", "---o--"]
    # the primary_notes list order: crash, ride, hi-hat, snare, kick, tom
    assert COLUMN_ORDERS["primary-notes"] == (49, 51, 42, 38, 36, 50)
    assert midi_to_drumroll(path, columns="primary-notes")[:3] == ["--o---", "---o--", "----o-"]
    # any order of distinct pitches; three columns give three characters
    assert midi_to_drumroll(path, columns=(36, 38, 42))[:3] == ["--o", "-o-", "o--"]
    with pytest.raises(ValueError, match="unknown column order"):
        midi_to_drumroll(path, columns="nope")


def test_merges_are_or_and_velocity_zero_ignored(tmp_path, write_midi):
    path = write_midi(tmp_path / "or.mid", [(0, 38), (0, 40), (0, 37), (240, 36, 1)])
    lines = midi_to_drumroll(path)
    assert lines[0] == "--o---"
    assert lines[2] == "---o--"  # any positive velocity is a hit; velocity is not kept


def test_round_trip_generated_grooves(tmp_path, random_groove, write_midi):
    rng = np.random.default_rng(0)
    for seed in range(5):
        tpq = 480 if seed % 2 else 96
        src = write_midi(tmp_path / f"g{seed}.mid", random_groove(seed, tpq=tpq), tpq=tpq)
        lines = midi_to_drumroll(src)
        assert len(lines) == NUM_LINES and sum(line.count("o") for line in lines) > 100
        out = tmp_path / f"g{seed}_back.mid"
        drumroll_to_midi(lines, out)
        assert midi_to_drumroll(out) == lines
    # random grids (dense, every column) survive text → MIDI → text
    grid = rng.random((NUM_LINES, 6)) < 0.3
    lines = array_to_lines(grid)
    drumroll_to_midi(lines, tmp_path / "rand.mid")
    assert midi_to_drumroll(tmp_path / "rand.mid") == lines


def test_written_midi_follows_the_official_writer(tmp_path):
    import symusic

    # official-order text: crash + kick on line 0, snare on line 16, hi-hat on line 17
    lines = ["o--o--"] + ["------"] * 15 + ["--o---", "----o-"] + ["------"] * (NUM_LINES - 18)
    drumroll_to_midi(lines, tmp_path / "w.mid")
    score = symusic.Score(str(tmp_path / "w.mid"))
    assert score.ticks_per_quarter == 480
    assert [round(t.qpm) for t in score.tempos] == [120]
    assert [(ts.numerator, ts.denominator) for ts in score.time_signatures] == [(4, 4)]
    (track,) = score.tracks
    assert track.is_drum
    notes = sorted((n.time, n.pitch, n.velocity) for n in track.notes)
    assert notes == [(0, 36, 100), (0, 49, 100), (16 * 120, 38, 100), (17 * 120, 42, 100)]
    # the primary_notes reading (some official text_to_midi.py versions): kick column → snare, snare → hi-hat
    drumroll_to_midi(lines, tmp_path / "p.mid", columns="primary-notes")
    (track,) = symusic.Score(str(tmp_path / "p.mid")).tracks
    assert sorted((n.time, n.pitch) for n in track.notes) == [(0, 38), (0, 49), (16 * 120, 42), (17 * 120, 36)]


def test_round_trip_real_gmd(gmd_root):
    files = sorted(gmd_root.rglob("*.mid"))[::40]
    checked = 0
    for path in files:
        try:
            lines = midi_to_drumroll(path)
        except SkippedMidi:
            continue
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            drumroll_to_midi(lines, Path(d) / "x.mid")
            assert midi_to_drumroll(Path(d) / "x.mid") == lines, path
        checked += 1
    assert checked >= 20


def test_real_gmd_hits_match_a_direct_count(gmd_root):
    """Each hit of the text is a (step, column) that some merged onset of the file quantises to, and vice versa."""
    import symusic

    path = gmd_root / "drummer1/eval_session/10_soul-groove10_102_beat_4-4.mid"
    lines = midi_to_drumroll(path)
    score = symusic.Score(str(path))
    tpq = score.ticks_per_quarter
    col = {
        p: COLUMN_PITCHES.index(c)
        for p, c in {
            **{p: p for p in COLUMN_PITCHES},
            **dict.fromkeys([40, 37], 38),
            **dict.fromkeys([53, 59], 51),
            **dict.fromkeys([55, 57, 52], 49),
            **dict.fromkeys([46, 22, 26], 42),
            **dict.fromkeys([48, 47, 45, 43, 58], 50),
        }.items()
    }
    expected = set()
    for n in score.tracks[0].notes:
        s = int(np.floor(n.time / (tpq / 4) + 0.5))  # nearest sixteenth, ties up
        if n.pitch in col and s < NUM_LINES:
            expected.add((s, col[n.pitch]))
    got = {(i, j) for i, line in enumerate(lines) for j, c in enumerate(line) if c == "o"}
    assert got == expected and len(got) > 200


def test_gmd_skips_are_counted_with_reasons(gmd_root):
    counts, counts44 = collections.Counter(), collections.Counter()
    lengths = collections.Counter()
    with open(gmd_root / "info.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        path = gmd_root / row["midi_filename"]
        try:
            lengths[(row["time_signature"], len(midi_to_drumroll(path)))] += 1
            counts["ok"] += 1
        except SkippedMidi as e:
            counts[e.reason.split(" at tick")[0]] += 1
            assert e.path.endswith(row["midi_filename"])
        try:
            midi_to_drumroll(path, time_signatures="4/4")
            counts44["ok"] += 1
        except SkippedMidi as e:
            counts44[e.reason.split(" at tick")[0]] += 1
    by_ts = collections.Counter(r["time_signature"] for r in rows)
    assert by_ts == {"4-4": 1138, "3-4": 5, "6-8": 5, "5-8": 1, "5-4": 1}
    # x/4 (official): 3/4 and 5/4 kept, 16 bars of their own length; x/8 skipped
    assert counts == {"ok": 1144, "time signature 6/8": 5, "time signature 5/8": 1}
    assert lengths == {("4-4", 256): 1138, ("3-4", 192): 5, ("5-4", 320): 1}
    # 4/4 only
    assert counts44 == {
        "ok": 1138,
        "time signature 3/4": 5,
        "time signature 6/8": 5,
        "time signature 5/8": 1,
        "time signature 5/4": 1,
    }


def test_skips_by_time_signature_and_empty(tmp_path, write_midi):
    three = write_midi(tmp_path / "w.mid", [(0, 36), (191 * 120, 38), (192 * 120, 38)], time_signature=(3, 4))
    lines = midi_to_drumroll(three)
    assert len(lines) == 192 and lines[0] == "---o--" and lines[191] == "--o---"  # line 192 is past the window
    with pytest.raises(SkippedMidi, match=r"3/4 at tick 0 \(only 4/4\)"):
        midi_to_drumroll(three, time_signatures="4/4")
    with pytest.raises(SkippedMidi, match=r"6/8 at tick 0 \(only x/4\)"):
        midi_to_drumroll(write_midi(tmp_path / "s.mid", [(0, 36)], time_signature=(6, 8)))
    with pytest.raises(SkippedMidi, match="too short"):
        midi_to_drumroll(write_midi(tmp_path / "e.mid", []))
    with pytest.raises(SkippedMidi, match="too short"):
        midi_to_drumroll(write_midi(tmp_path / "s.mid", [(0, 36), (480, 38)]), min_lines=129)
    # no time signature: the MIDI default 4/4
    assert midi_to_drumroll(write_midi(tmp_path / "n.mid", [(0, 36)], time_signature=None))[0] == "---o--"


def test_unpadded_text_stops_at_last_onset(tmp_path, write_midi):
    lines = midi_to_drumroll(write_midi(tmp_path / "p.mid", [(0, 36), (5 * 120, 38)]), pad=False)
    assert len(lines) == 8 and lines[0] == "---o--" and lines[5] == "--o---"
    long = write_midi(tmp_path / "l.mid", [(0, 36), (300 * 120, 38)])
    assert len(midi_to_drumroll(long, pad=False)) == NUM_LINES  # cut at 16 bars


def test_bad_midi_names_the_file(tmp_path, gmd_root):
    src = gmd_root / "drummer1/eval_session/10_soul-groove10_102_beat_4-4.mid"
    truncated = tmp_path / "truncated.mid"
    truncated.write_bytes(src.read_bytes()[:300])
    with pytest.raises(MidiReadError, match=r"truncated\.mid"):
        midi_to_drumroll(truncated)
    garbage = tmp_path / "garbage.mid"
    garbage.write_bytes(b"this is not a MIDI file at all")
    with pytest.raises(MidiReadError, match=r"garbage\.mid"):
        midi_to_drumroll(garbage)
    with pytest.raises(MidiReadError, match=r"missing\.mid"):
        midi_to_drumroll(tmp_path / "missing.mid")


def test_bad_drumroll_lines_name_file_and_line(tmp_path):
    good = ["------"] * NUM_LINES
    p = tmp_path / "bad.txt"
    p.write_text("\n".join([*good[:9], "--o--", *good[10:]]) + "\n")
    with pytest.raises(DrumrollFormatError, match=r"bad.txt:10: expected 6 characters.*'--o--' \(5 characters\)"):
        read_drumroll(p)
    p.write_text("\n".join([*good[:2], "--x---", *good[3:]]) + "\n")
    with pytest.raises(DrumrollFormatError, match=r"bad.txt:3:"):
        read_drumroll(p)
    with pytest.raises(DrumrollFormatError, match="expected 256 lines"):
        parse_drumroll("------\n" * 10, "short.txt")
    assert parse_drumroll("------\n" * 10, num_lines=None) == ["------"] * 10
    with pytest.raises(DrumrollFormatError, match=r"out.mid:1:"):
        drumroll_to_midi(["ooooooo"], tmp_path / "out.mid")
    # an empty file is an error, not an empty groove
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DrumrollFormatError, match=r"empty.txt: empty"):
        read_drumroll(tmp_path / "empty.txt", num_lines=None)
    with pytest.raises(DrumrollFormatError, match=r"e.mid: no drumroll lines"):
        drumroll_to_midi([], tmp_path / "e.mid")
    (tmp_path / "empty.mid").write_bytes(b"")
    with pytest.raises(MidiReadError, match=r"empty.mid: empty file"):
        midi_to_drumroll(tmp_path / "empty.mid")
