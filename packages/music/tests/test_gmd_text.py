"""Conversions of real Groove MIDI Dataset performances against text derived by hand from their MIDI events.

Each expected line below was worked out from the listed note onsets (480 ticks per beat, so a sixteenth is 120
ticks and an onset at tick t falls on line floor((t + 60) / 120)), the official merge table and the official column
order crash, ride, snare, kick, hi-hat, tom. The events are quoted in the comments as (tick, pitch).
"""

from __future__ import annotations

import pytest
import symusic

from polyzoo.music.drumroll import MERGES_EARLY, SkippedMidi, midi_to_drumroll

E = "------"


def _onsets(path, lo, hi):
    return sorted((n.time, n.pitch) for t in symusic.Score(str(path)).tracks for n in t.notes if lo <= n.time < hi)


def test_funk_purdie_shuffle(gmd_root):
    """drummer1/session1/239 (a test groove): rim shots merged into the snare, pitch 26 into the hi-hat, pedal
    hi-hat 44 dropped, the kick in column 4."""
    path = gmd_root / "drummer1/session1/239_funk-purdieshuffle_130_beat_4-4.mid"
    assert _onsets(path, 0, 1980) == [
        (470, 44),  # line 4, dropped
        (762, 38),  # line 6
        (845, 38),  # line 7
        (938, 44),  # line 8, dropped
        (949, 40),  # line 8, rim shot -> snare
        (1286, 40),  # line 11
        (1413, 44),  # line 12, dropped
        (1453, 40),  # line 12
        (1767, 36),  # line 15, kick
        (1941, 36),  # line 16, kick
        (1953, 26),  # line 16, hi-hat edge -> hi-hat
    ]
    expected = [E] * 6 + ["--o---"] * 3 + [E] * 2 + ["--o---"] * 2 + [E] * 2 + ["---o--", "---oo-"]
    lines = midi_to_drumroll(path)
    assert len(lines) == 256 and lines[:17] == expected


def test_dance_disco_merges_and_window_end(gmd_root):
    """drummer1/session1/101: splash 55 -> crash, 26 and 22 -> hi-hat, 40 -> snare; the last line of the 16-bar
    window takes onsets up to tick 30659, later ones are cut."""
    path = gmd_root / "drummer1/session1/101_dance-disco_120_beat_4-4.mid"
    assert _onsets(path, 0, 1860) == [
        (0, 55), (4, 44), (20, 36),  # line 0: crash (splash), pedal dropped, kick
        (238, 26), (275, 36),  # line 2: hi-hat (26), kick
        (452, 44), (475, 40), (475, 42), (487, 36),  # line 4: pedal dropped, snare (rim), hi-hat, kick
        (604, 38),  # line 5
        (705, 22),  # line 6: hi-hat (22)
        (835, 38),  # line 7
        (944, 36), (947, 42),  # line 8
        (1171, 38), (1187, 22),  # line 10: snare, hi-hat (22)
        (1442, 36), (1444, 38), (1450, 42),  # line 12
        (1693, 42),  # line 14
        (1812, 38),  # line 15
    ]  # fmt: skip
    expected = [
        "o--o--", E, "---oo-", E, "--ooo-", "--o---", "----o-", "--o---",
        "---oo-", E, "--o-o-", E, "--ooo-", E, "----o-", "--o---",
    ]  # fmt: skip
    lines = midi_to_drumroll(path)
    assert lines[:16] == expected
    # the early merge table drops 55, 26 and 22
    early = midi_to_drumroll(path, merges=MERGES_EARLY)
    assert [early[i] for i in (0, 2, 6, 10)] == ["---o--", "---o--", E, "--o---"]
    assert _onsets(path, 30420, 30800) == [
        (30434, 42),  # line 254
        (30552, 38), (30593, 38), (30617, 38),  # line 255 (window [30540, 30660))
        (30670, 36), (30678, 42),  # line 256: past the window, cut
    ]  # fmt: skip
    assert len(lines) == 256 and lines[254:] == ["----o-", "--o---"]


def test_rock_window_edges_and_padding(gmd_root):
    """drummer3/session1/20: an onset at tick 299 (one tick before line 3's window) is on line 2; the performance
    ends on line 80 and is padded with rests to 256 lines."""
    path = gmd_root / "drummer3/session1/20_rock_120_beat_4-4.mid"
    assert _onsets(path, 0, 1860) == [
        (29, 55), (37, 36),  # line 0
        (299, 38),  # line 2: 299 + 60 = 359 < 360
        (448, 55), (457, 36),  # line 4
        (802, 38),  # line 7
        (951, 36), (970, 55),  # line 8
        (1286, 38),  # line 11
        (1442, 36), (1446, 55),  # line 12
        (1761, 38),  # line 15
    ]  # fmt: skip
    bar = ["o--o--", E, "--o---", E, "o--o--", E, E, "--o---", "o--o--", E, E, "--o---", "o--o--", E, E, "--o---"]
    lines = midi_to_drumroll(path)
    assert lines[:16] == bar
    assert _onsets(path, 9400, 10**9) == [(9451, 36), (9589, 55), (9595, 36)]  # lines 79, 80, 80
    assert lines[79:81] == ["---o--", "o--o--"] and lines[81:] == [E] * 175


def test_jazz_three_four(gmd_root):
    """drummer1/session2/4 in 3/4: 16 bars of 12 sixteenths = 192 lines; an onset at tick 780 (exactly between
    lines 6 and 7) goes to the later line; tom 48 and 43 merge into the tom; the 4/4-only option skips the file."""
    path = gmd_root / "drummer1/session2/4_jazz_120_beat_3-4.mid"
    assert _onsets(path, 0, 1980) == [
        (464, 44),  # line 4, dropped
        (622, 38),  # line 5
        (780, 48),  # line 7 (tie goes to the later line)
        (938, 43), (938, 44),  # line 8: tom, pedal dropped
        (1082, 43),  # line 9
        (1271, 36),  # line 11
        (1399, 36), (1404, 55), (1423, 51),  # line 12: kick, crash (splash), ride
        (1897, 44), (1919, 51),  # line 16
    ]  # fmt: skip
    lines = midi_to_drumroll(path)
    assert len(lines) == 192
    assert lines[:17] == [E] * 5 + ["--o---", E, "-----o", "-----o", "-----o", E, "---o--", "oo-o--", E, E, E] + [
        "-o----"
    ]
    # lines 189..191 cover ticks [22620, 22980); the window ends there
    assert _onsets(path, 22620, 23100) == [(22705, 48), (22843, 36), (22995, 44), (23025, 43)]
    assert lines[189:] == ["-----o", "---o--", E]  # 23025 would be line 192: cut
    with pytest.raises(SkippedMidi, match="3/4"):
        midi_to_drumroll(path, time_signatures="4/4")
