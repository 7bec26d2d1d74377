"""The drumroll text format: grid, columns, merges, quantisation, MIDI round trips, skips and bad input."""

from __future__ import annotations

import collections
import csv

import numpy as np
import pytest

from polyzoo.music.drumroll import (
    COLUMN_NAMES,
    COLUMN_PITCHES,
    MERGES_EXTENDED,
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
    assert COLUMN_PITCHES == (49, 51, 42, 38, 36, 50)
    assert COLUMN_NAMES == ("crash", "ride", "hi-hat", "snare", "kick", "tom")
    step = 120
    # (step, pitch) -> expected column, or None when dropped
    cases = [
        (0, 49, 0),
        (1, 57, 0),  # crash, crash 2
        (2, 51, 1),
        (3, 53, 1),
        (4, 59, 1),  # ride, bell, ride 2
        (5, 42, 2),
        (6, 46, 2),  # closed and open hi-hat
        (7, 38, 3),
        (8, 40, 3),
        (9, 37, 3),  # snare, rim shot, side stick
        (10, 36, 4),  # kick
        (11, 50, 5),
        (12, 48, 5),
        (13, 47, 5),
        (14, 45, 5),
        (15, 43, 5),  # toms
        (16, 44, None),
        (17, 55, None),
        (18, 52, None),
        (19, 22, None),
        (20, 26, None),
        (21, 58, None),
        (22, 39, None),
    ]
    path = write_midi(tmp_path / "merge.mid", [(s * step, p) for s, p, _ in cases])
    lines = midi_to_drumroll(path)
    assert len(lines) == NUM_LINES
    for s, pitch, col in cases:
        expected = "------" if col is None else "-" * col + "o" + "-" * (5 - col)
        assert lines[s] == expected, (pitch, lines[s])
    # the extended table adds splash/china → crash, hi-hat edges → hi-hat, 58 → tom; pedal hi-hat stays dropped
    ext = midi_to_drumroll(path, merges=MERGES_EXTENDED)
    assert ext[17] == ext[18] == "o-----"
    assert ext[19] == ext[20] == "--o---"
    assert ext[21] == "-----o"
    assert ext[16] == ext[22] == "------"


def test_merges_are_or_and_velocity_zero_ignored(tmp_path, write_midi):
    path = write_midi(tmp_path / "or.mid", [(0, 38), (0, 40), (0, 37), (240, 36, 1)])
    lines = midi_to_drumroll(path)
    assert lines[0] == "---o--"
    assert lines[2] == "----o-"  # any positive velocity is a hit; velocity is not kept


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

    lines = ["o---o-"] + ["------"] * 15 + ["---o--"] + ["------"] * (NUM_LINES - 17)
    drumroll_to_midi(lines, tmp_path / "w.mid")
    score = symusic.Score(str(tmp_path / "w.mid"))
    assert score.ticks_per_quarter == 480
    assert [round(t.qpm) for t in score.tempos] == [120]
    assert [(ts.numerator, ts.denominator) for ts in score.time_signatures] == [(4, 4)]
    (track,) = score.tracks
    assert track.is_drum
    notes = sorted((n.time, n.pitch, n.velocity) for n in track.notes)
    assert notes == [(0, 36, 100), (0, 49, 100), (16 * 120, 38, 100)]


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
            40: 38,
            37: 38,
            53: 51,
            59: 51,
            57: 49,
            46: 42,
            48: 50,
            47: 50,
            45: 50,
            43: 50,
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
    counts = collections.Counter()
    with open(gmd_root / "info.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        try:
            midi_to_drumroll(gmd_root / row["midi_filename"])
            counts["ok"] += 1
        except SkippedMidi as e:
            counts[e.reason.split(" at tick")[0]] += 1
            assert e.path.endswith(row["midi_filename"])
    non44 = collections.Counter(r["time_signature"] for r in rows if r["time_signature"] != "4-4")
    assert counts["time signature 3/4"] == non44["3-4"] == 5
    assert counts["time signature 6/8"] == non44["6-8"] == 5
    assert counts["ok"] == sum(1 for r in rows if r["time_signature"] == "4-4")


def test_skips_non_4_4_and_empty(tmp_path, write_midi):
    with pytest.raises(SkippedMidi, match=r"3/4"):
        midi_to_drumroll(write_midi(tmp_path / "w.mid", [(0, 36)], time_signature=(3, 4)))
    with pytest.raises(SkippedMidi, match="too short"):
        midi_to_drumroll(write_midi(tmp_path / "e.mid", []))
    with pytest.raises(SkippedMidi, match="too short"):
        midi_to_drumroll(write_midi(tmp_path / "s.mid", [(0, 36), (480, 38)]), min_lines=129)
    # no time signature: the MIDI default 4/4
    assert midi_to_drumroll(write_midi(tmp_path / "n.mid", [(0, 36)], time_signature=None))[0] == "----o-"


def test_unpadded_text_stops_at_last_onset(tmp_path, write_midi):
    lines = midi_to_drumroll(write_midi(tmp_path / "p.mid", [(0, 36), (5 * 120, 38)]), pad=False)
    assert len(lines) == 8 and lines[5] == "---o--"
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
