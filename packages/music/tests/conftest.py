"""Fixtures for the music tests: MIDI files written on the fly, a tiny GMD-style folder, the real GMD folder."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

from polyzoo.shared.paths import shared_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _write_midi(path, notes, tpq=480, time_signature=(4, 4), drum=True):
    """notes: iterable of (tick, pitch) or (tick, pitch, velocity)."""
    import symusic

    score = symusic.Score(tpq)
    if time_signature is not None:
        score.time_signatures.append(symusic.TimeSignature(0, *time_signature))
    score.tempos.append(symusic.Tempo(0, qpm=100.0))
    track = symusic.Track(name="drums", program=0, is_drum=drum)
    for n in notes:
        tick, pitch, velocity = (*n, 90) if len(n) == 2 else n
        track.notes.append(symusic.Note(int(tick), max(1, tpq // 8), int(pitch), int(velocity)))
    score.tracks.append(track)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))
    return path


@pytest.fixture
def write_midi():
    return _write_midi


def _random_groove(seed: int, bars: int = 16, tpq: int = 480, start_bar: int = 0) -> list[tuple[int, int]]:
    """A groove with structure: a 1-bar core pattern repeated, a varied bar every 4th bar, a crash on bar starts
    of each 4-bar phrase; onsets jittered within ±1/64 note (well inside the ±1/32 window)."""
    rng = random.Random(seed)
    step = tpq // 4
    core = {36: [0, 8, *rng.sample(range(1, 16), 1)], 38: [4, 12], 42: list(range(0, 16, 2))}
    notes = []
    for bar in range(bars):
        pattern = {p: list(s) for p, s in core.items()}
        if bar % 4 == 3:
            pattern[50] = rng.sample(range(8, 16), 3)
        if bar % 4 == 0:
            pattern[49] = [0]
        for pitch, steps in pattern.items():
            for s in steps:
                jitter = rng.randint(-(tpq // 16), tpq // 16)
                notes.append((max(0, ((start_bar + bar) * 16 + s) * step + jitter), pitch))
    return sorted(notes)


@pytest.fixture
def random_groove():
    return _random_groove


@pytest.fixture
def fake_gmd(tmp_path):
    """A GMD-style folder: info.csv and MIDI files of grooves (4/4 beats: train 4, validation 1, test 2), plus a
    test beat in drummer1's eval_session, a train fill, a 3/4 and a 6/8 train beat, and a train beat that starts
    after 9 silent bars (7 bars of music: the >128-line filter drops it)."""
    root = tmp_path / "gmd"
    rows = []
    specs = [("train", "beat", (4, 4), 0, "session1")] * 4 + [("validation", "beat", (4, 4), 0, "session1")]
    specs += [("test", "beat", (4, 4), 0, "session1")] * 2 + [("test", "beat", (4, 4), 0, "eval_session")]
    specs += [("train", "fill", (4, 4), 0, "session1"), ("train", "beat", (3, 4), 0, "session1")]
    specs += [("train", "beat", (6, 8), 0, "session1"), ("train", "beat", (4, 4), 9, "session1")]
    for i, (split, beat_type, ts, start, session) in enumerate(specs):
        rel = f"drummer1/{session}/{i}_rock_100_{beat_type}_{ts[0]}-{ts[1]}.mid"
        _write_midi(root / rel, _random_groove(i, 16 - start, start_bar=start), time_signature=ts)
        rows.append(
            {
                "drummer": "drummer1",
                "session": f"drummer1/{session}",
                "midi_filename": rel,
                "beat_type": beat_type,
                "split": split,
                "time_signature": f"{ts[0]}-{ts[1]}",
            }
        )
    with open(root / "info.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture
def gmd_root() -> Path:
    base = shared_data_dir(__file__)
    root = base / "drums" / "groove"
    if not (root / "info.csv").is_file():
        pytest.skip(f"Groove MIDI Dataset not found at {root} (set POLYZOO_SHARED_DATA)")
    return root
