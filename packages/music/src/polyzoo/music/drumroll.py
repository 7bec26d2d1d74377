"""The "drumroll" text format of *Language Models are Drummers: Drum Composition with Natural Language
Pre-Training* (Li Zhang and Chris Callison-Burch, AAAI 2023 Creative AI workshop, arXiv 2301.01162).
Official code: https://github.com/zharry29/drums-with-llm (``source/midi_to_text.py``, ``source/text_to_midi.py``).

A groove is 16 bars of 4/4 on a sixteenth-note grid: 256 lines, one per sixteenth, each of six characters, ``o``
for a hit and ``-`` for a rest, in the column order of the official code's ``primary_notes``::

    crash (49), ride (51), hi-hat (42), snare (38), kick (36), tom (50)

Articulations merge into those six columns (``MERGES_OFFICIAL``, the official ``merge_articulations``): rim shot 40
and side stick 37 → snare; ride bell 53 and ride 59 → ride; crash 57 → crash; open hi-hat 46 → hi-hat; toms 48,
47, 45, 43 → tom. Every other pitch (pedal hi-hat 44, splash 55, china 52, the hi-hat edge pitches 22/26, tom 58,
...) is dropped, as are velocity and microtiming. ``MERGES_EXTENDED`` adds 55 and 52 → crash, 22 and 26 → hi-hat
and 58 → tom (the Groove MIDI Dataset's own grouping of those pitches) for users who want them.

Onsets snap to the nearest sixteenth (a window of ±1/32 note around each grid line, ties to the later step), as the
official ``quantize`` does with ``int(tpb/4)``-tick steps and ``int(tpb/8)``-tick half-windows. Back to MIDI: 480
ticks per beat, 120 bpm, 120 ticks per line, velocity 100, on the drum channel (channel 10, index 9).

Deviations from the official code, each deliberate:

- **Column order.** The papers notes and the issue list the columns as crash, ride, snare, kick, hi-hat, tom; the
  official code writes ``[49, 51, 42, 38, 36, 50]`` (crash, ride, hi-hat, snare, kick, tom) in both directions
  (the order of ``note_to_drum``'s keys filtered by ``primary_notes``, and ``primary_notes`` in
  ``text_to_midi.py``). The example groove in ``text_to_midi.py`` confirms it: column 3 carries the back-beat on
  beats 2 and 4 (snare), column 5 the quarter notes (kick). We follow the code, so official text files read back
  unchanged. ``COLUMN_NAMES`` names them.
- **Merges.** The papers notes list 55 and 52 → crash, 22 and 26 → hi-hat and 58 → tom among the merges; both
  committed versions of the official ``merge_articulations`` merge only the pitches above (the others fall out
  because they are not among the six columns). ``MERGES_OFFICIAL`` is the default; ``MERGES_EXTENDED`` (CLI
  ``--merges extended``) is the notes' table.
- **Length.** The official script as committed has ``MAX_BEATS = 4 * numerator`` (a 4-bar grid) and a
  ``for ... else: continue`` that skips every file whose onsets all fit the grid; yet its length filter keeps
  scores of more than 128 lines and its analysis reads 16 bars, so the shipped text was made on a 16-bar grid
  (the papers notes: ``MAX_BEATS = 16 * numerator``, 256 lines). Its data counts (372 of 378 training beats and
  47 of 48 validation beats kept; GMD has 5 training and 1 validation beat in x/8) show that performances
  shorter than 16 bars were kept, padded with rests. We do the same: the text is always 256 lines, onsets past 16
  bars are cut; only a file without any onset is skipped as too short (``min_lines`` raises that bar). The paper's
  length filter (more than 128 lines after stripping leading empty beats) is applied where the official code
  applies it, when fine-tuning examples are built (``dataset.py``). ``pad=False`` instead stops the text at the
  last onset (rounded up to a whole beat), as the commented-out ``MAX_BEATS = int(max_ticks / tpb)`` would.
- **Time signature.** The official code reads the last time-signature event of track 0 and keeps any x/4. We keep
  only files whose every time signature is 4/4 (the format's bars are 16 sixteenths); a file without one is 4/4
  (the MIDI default). Skipped files are reported with the reason.
- **Tracks and pitches.** Onsets come from every track (GMD files are type 0: one track; the official code read
  ``tracks[1]``); pitches outside the merge table are dropped instead of raising ``KeyError``.
- **MIDI out.** The official writer emits note-ons only (and a velocity-0 ride note-on as a time filler on empty
  lines). We write proper notes of one 32nd note (60 ticks) each, so every note-on has its note-off.
- For ticks per beat not divisible by 8 the official windows leave one-tick gaps (an onset there ends the file);
  we round to the nearest sixteenth exactly. GMD uses 480 ticks per beat, where both agree.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "COLUMN_NAMES",
    "COLUMN_PITCHES",
    "HIT",
    "LINES_PER_BAR",
    "MERGES_EXTENDED",
    "MERGES_OFFICIAL",
    "NUM_BARS",
    "NUM_LINES",
    "REST",
    "DrumrollFormatError",
    "MidiReadError",
    "SkippedMidi",
    "array_to_lines",
    "drumroll_to_midi",
    "drumroll_to_score",
    "lines_to_array",
    "lines_to_text",
    "midi_to_drumroll",
    "onsets_to_lines",
    "parse_drumroll",
    "performance_lines",
    "quantize_tick",
    "read_drumroll",
    "write_drumroll",
]

log = logging.getLogger(__name__)

HIT, REST = "o", "-"
COLUMN_PITCHES: tuple[int, ...] = (49, 51, 42, 38, 36, 50)
COLUMN_NAMES: tuple[str, ...] = ("crash", "ride", "hi-hat", "snare", "kick", "tom")
NUM_COLUMNS = len(COLUMN_PITCHES)
LINES_PER_BAR = 16  # sixteenths in a 4/4 bar
NUM_BARS = 16
NUM_LINES = NUM_BARS * LINES_PER_BAR  # 256

# source pitch -> column pitch; the six column pitches map to themselves
MERGES_OFFICIAL: Mapping[int, int] = {
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
}
MERGES_EXTENDED: Mapping[int, int] = {**MERGES_OFFICIAL, 55: 49, 52: 49, 22: 42, 26: 42, 58: 50}

# MIDI out (official text_to_midi.py)
OUT_TICKS_PER_BEAT = 480
OUT_TICKS_PER_LINE = OUT_TICKS_PER_BEAT // 4  # 120
OUT_BPM = 120.0
OUT_VELOCITY = 100
OUT_NOTE_TICKS = OUT_TICKS_PER_BEAT // 8  # one 32nd note
DRUM_CHANNEL = 9


class MidiReadError(ValueError):
    """A MIDI file that cannot be read (missing, truncated, not MIDI)."""


class DrumrollFormatError(ValueError):
    """A drumroll text that does not follow the format; the message names the source and line."""


@dataclasses.dataclass
class SkippedMidi(Exception):
    """A readable MIDI file that the format does not cover (not 4/4, shorter than 16 bars)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: skipped: {self.reason}"


def quantize_tick(tick: int | np.ndarray, ticks_per_beat: int) -> int | np.ndarray:
    """Index of the nearest sixteenth-note grid line for an onset at ``tick`` (ties go to the later line).

    Equals the official ``quantize``: step 0 covers [0, tpb/8), step i ≥ 1 covers [i·tpb/4 − tpb/8, i·tpb/4 + tpb/8).
    """
    return (8 * tick + ticks_per_beat) // (2 * ticks_per_beat)


def _read_score(path: str | os.PathLike):
    import symusic

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MidiReadError(f"{path}: no such MIDI file")
    try:
        return symusic.Score(path, ttype="tick")
    except Exception as e:  # symusic raises RuntimeError with a parser message for truncated or foreign files
        raise MidiReadError(f"{path}: not a readable MIDI file (truncated or corrupt?): {e}") from e


def onsets_to_lines(
    ticks: np.ndarray,
    pitches: np.ndarray,
    ticks_per_beat: int,
    *,
    merges: Mapping[int, int] = MERGES_OFFICIAL,
    num_lines: int = NUM_LINES,
) -> list[str]:
    """Drumroll lines from note onsets: ``ticks`` (N,) and ``pitches`` (N,) integer arrays.

    Onsets past the last line are ignored; pitches not in ``merges`` are dropped. Returns ``num_lines`` strings of
    six characters.
    """
    grid = np.zeros((num_lines, NUM_COLUMNS), dtype=bool)
    column_of = {p: COLUMN_PITCHES.index(c) for p, c in merges.items()}
    steps = quantize_tick(np.asarray(ticks, dtype=np.int64), ticks_per_beat)
    for step, pitch in zip(steps.tolist(), np.asarray(pitches).tolist(), strict=True):
        col = column_of.get(pitch)
        if col is not None and 0 <= step < num_lines:
            grid[step, col] = True
    return array_to_lines(grid)


def performance_lines(ticks: np.ndarray, ticks_per_beat: int, max_lines: int = NUM_LINES) -> int:
    """Length of a performance on the grid: up to the quantised last onset, rounded up to a whole beat (4 lines),
    at most ``max_lines``. 0 without onsets."""
    if not np.size(ticks):
        return 0
    last = int(quantize_tick(int(np.max(ticks)), ticks_per_beat))
    return min(max_lines, (last // 4 + 1) * 4)


def midi_to_drumroll(
    path: str | os.PathLike,
    *,
    merges: Mapping[int, int] = MERGES_OFFICIAL,
    num_bars: int = NUM_BARS,
    pad: bool = True,
    min_lines: int = 1,
) -> list[str]:
    """Read a MIDI file into drumroll lines: at most ``16 * num_bars`` (256), one per sixteenth.

    With ``pad`` (default) the text is exactly ``16 * num_bars`` lines (rests after the performance, onsets past
    the window cut); without, it stops at the last onset of any pitch, rounded up to a whole beat. Raises
    ``MidiReadError`` when the file cannot be read, ``SkippedMidi`` (with the reason) when it is not 4/4 or the
    performance is shorter than ``min_lines`` lines.
    """
    score = _read_score(path)
    name = os.fspath(path)
    for ts in score.time_signatures:
        if (ts.numerator, ts.denominator) != (4, 4):
            raise SkippedMidi(name, f"time signature {ts.numerator}/{ts.denominator} at tick {ts.time} (only 4/4)")
    tpb = int(score.ticks_per_quarter)
    if tpb <= 0:
        raise MidiReadError(f"{name}: ticks per quarter note is {tpb}; expected a positive metrical division")
    arrays = [t.notes.numpy() for t in score.tracks if len(t.notes)]
    if arrays:
        ticks = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
        pitches = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)
        velocities = np.concatenate([a["velocity"] for a in arrays])
        keep = velocities > 0
        ticks, pitches = ticks[keep], pitches[keep]
    else:
        ticks = pitches = np.zeros(0, dtype=np.int64)
    max_lines = num_bars * LINES_PER_BAR
    length = performance_lines(ticks, tpb, max_lines)
    if length < min_lines:
        raise SkippedMidi(name, f"too short: {length} sixteenth lines of music, at least {min_lines} needed")
    lines = onsets_to_lines(ticks, pitches, tpb, merges=merges, num_lines=max_lines if pad else length)
    return lines


def array_to_lines(grid: np.ndarray) -> list[str]:
    """(L, 6) boolean array → L lines of ``o``/``-``."""
    grid = np.asarray(grid, dtype=bool)
    if grid.ndim != 2 or grid.shape[1] != NUM_COLUMNS:
        raise ValueError(f"expected a (lines, {NUM_COLUMNS}) array, got shape {grid.shape}")
    chars = np.where(grid, HIT, REST)
    return ["".join(row) for row in chars.tolist()]


def lines_to_array(lines: Sequence[str], source: str = "<drumroll>") -> np.ndarray:
    """Validated lines → (L, 6) boolean array."""
    _validate_lines(lines, source)
    return np.array([[c == HIT for c in line] for line in lines], dtype=bool).reshape(len(lines), NUM_COLUMNS)


def lines_to_text(lines: Iterable[str]) -> str:
    """The file form: one line per sixteenth, each ending with a newline (as the official files)."""
    return "".join(f"{line}\n" for line in lines)


def _validate_lines(lines: Sequence[str], source: str, first_line: int = 1) -> None:
    for i, line in enumerate(lines):
        if len(line) != NUM_COLUMNS or any(c not in (HIT, REST) for c in line):
            raise DrumrollFormatError(
                f"{source}:{i + first_line}: expected {NUM_COLUMNS} characters of '{HIT}' (hit) or '{REST}' (rest) "
                f"for {', '.join(COLUMN_NAMES)}; got {line!r} ({len(line)} characters)"
            )


def parse_drumroll(text: str, source: str = "<drumroll>", *, num_lines: int | None = NUM_LINES) -> list[str]:
    """Parse drumroll text (lines of six ``o``/``-``; a trailing newline is optional).

    ``num_lines`` (default 256) is the required line count, ``None`` accepts any. Errors name ``source`` and the
    1-based line number.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    lines = [line.removesuffix("\r") for line in lines]
    _validate_lines(lines, source)
    if num_lines is not None and len(lines) != num_lines:
        raise DrumrollFormatError(
            f"{source}: expected {num_lines} lines ({num_lines // LINES_PER_BAR} bars of {LINES_PER_BAR} sixteenths), "
            f"got {len(lines)}"
        )
    return lines


def read_drumroll(path: str | os.PathLike, *, num_lines: int | None = NUM_LINES) -> list[str]:
    """Read and validate a drumroll text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such drumroll file") from None
    except UnicodeDecodeError as e:
        raise DrumrollFormatError(f"{path}: not UTF-8 text ({e})") from e
    return parse_drumroll(text, str(path), num_lines=num_lines)


def write_drumroll(lines: Sequence[str], path: str | os.PathLike) -> None:
    """Validate and write drumroll lines atomically."""
    from polyzoo.shared.io import atomic_path

    _validate_lines(lines, str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(lines_to_text(lines), encoding="utf-8")


def drumroll_to_score(lines: Sequence[str], source: str = "<drumroll>"):
    """A ``symusic.Score``: 480 ticks per beat, 120 bpm, 4/4, one drum track, velocity 100, each line 120 ticks."""
    import symusic

    grid = lines_to_array(lines, source)
    score = symusic.Score(OUT_TICKS_PER_BEAT)
    score.tempos.append(symusic.Tempo(0, qpm=OUT_BPM))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(name="drums", program=0, is_drum=True)
    steps, cols = np.nonzero(grid)
    for step, col in zip(steps.tolist(), cols.tolist(), strict=True):
        track.notes.append(symusic.Note(step * OUT_TICKS_PER_LINE, OUT_NOTE_TICKS, COLUMN_PITCHES[col], OUT_VELOCITY))
    score.tracks.append(track)
    return score


def drumroll_to_midi(lines: Sequence[str], path: str | os.PathLike) -> None:
    """Write drumroll lines as a MIDI file (atomically)."""
    from polyzoo.shared.io import atomic_path

    score = drumroll_to_score(lines, str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        score.dump_midi(str(tmp))
