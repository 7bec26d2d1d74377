"""The "drumroll" text format of *Language Models are Drummers: Drum Composition with Natural Language
Pre-Training* (Li Zhang and Chris Callison-Burch, AAAI 2023 Creative AI workshop, arXiv 2301.01162).
Official code and data: https://github.com/zharry29/drums-with-llm (``source/midi_to_text.py``,
``source/text_to_midi.py``, the shipped ``data_text/{train,dev,test}``).

One line per sixteenth note, one character per drum column, ``o`` for a hit and ``-`` for a rest. By default this
module reproduces the text the paper's models were finetuned on and generated (the shipped ``data_text`` files):

- **Columns** (``COLUMN_PITCHES``, the official data order): crash 49, ride 51, snare 38, kick 36, hi-hat 42,
  tom 50. ``midi_to_text.py`` writes the pitches of ``primary_notes`` in the insertion order of its
  ``note_to_drum`` dict, not in the order of the ``primary_notes`` list ``[49, 51, 42, 38, 36, 50]``; the shipped
  files confirm it (in ``data_text/test/1_239_funk-purdieshuffle_130_beat_4-4.txt`` the first kick of GMD's
  ``drummer1/session1/239_...`` file, tick 1767 = line 15, is ``---o--``). Every function takes the order as
  ``columns``; ``COLUMN_ORDERS`` names the two orders (``"official"``, ``"primary-notes"``).
- **Merges** (``MERGES_OFFICIAL``, the table the shipped data was made with): 40, 37 → snare 38; 53, 59 → ride 51;
  55, 57, 52 → crash 49; 46, 22, 26 → hi-hat 42; 48, 47, 45, 43, 58 → tom 50. A hit of any merged pitch is a hit of
  its column (the merges OR together). Every other pitch (pedal hi-hat 44, 39, ...) is dropped, as are velocity
  (note-ons of velocity 0 are note-offs) and microtiming. The older ``merge_articulations`` in the repository's
  history (commits 4c8d4c1/b0a0b21) merged only 40, 37, 53, 59, 57, 46, 48, 47, 45, 43: ``MERGES_EARLY``, an option;
  the shipped text has e.g. 26 merged into the hi-hat (line 16 of the file above is ``---oo-``: kick at tick 1941
  and pitch 26 at tick 1953).
- **Grid**: onsets snap to the nearest sixteenth (a window of ±1/32 note around each grid line, ties to the later
  line), as the official ``quantize`` with ``int(tpb/4)``-tick steps and ``int(tpb/8)``-tick half-windows.
- **Length**: 16 bars of the file's time signature, ``16 · numerator · 4`` lines: 256 lines for 4/4, **192 for 3/4
  and 320 for 5/4** (``MAX_BEATS = 16 * numerator``; the shipped ``train/1_4_jazz_120_beat_3-4.txt`` has 192
  lines). Shorter performances are padded with rest lines (the shipped ``train/1_37_punk_128_beat_4-4.txt`` is 16
  lines of music and 240 of rests); onsets past the window are cut (the official loop stops at the first onset
  whose ``quantize`` is -1).
- **Time signatures**: the official code reads the *last* time-signature event and keeps any x/4 (denominator 4),
  skipping the rest (``time_signatures="x/4"``, the default). The format has no bar lines: everything downstream
  (``text_to_data.py``'s ``SEP`` after every 16 lines, ``analysis.py``'s 16-line measures) cuts the text every 16
  lines, so in a 3/4 or 5/4 groove those "bars" do not fall on bar lines (a 3/4 groove is 12 sixteenths a bar: 16
  real bars = 12 sixteen-line blocks). We follow that. ``time_signatures="4/4"`` keeps only files whose every
  time signature is 4/4, where the 16-line blocks are real bars.

Back to MIDI (``drumroll_to_midi``): 480 ticks per beat, 120 bpm, 120 ticks per line, velocity 100, drum channel
(index 9), 4/4 written whatever the text's origin (as the official writer), column *i* played on ``columns[i]``.

**The official code is inconsistent between its two directions.** ``text_to_midi.py``'s own ``primary_notes``
decides which instrument each column plays. In the commit we could read that renders the GMD text
(bf5ea0a) it is ``[49, 51, 38, 36, 42, 50]``, the data order; in the earlier E-GMD-era commit (4c8d4c1) it is
``[49, 51, 42, 38, 36, 50]``, the order of ``midi_to_text.py``'s ``primary_notes`` list, and polyzoo issue 20
reports the repository's HEAD reading with that list order too (we could not read HEAD's file). Read that way,
the data's snare column plays a hi-hat, the kick column a snare and the hi-hat column a kick. We write the right
instruments by default (``columns=COLUMN_PITCHES``); ``columns=COLUMN_ORDERS["primary-notes"]`` reproduces the
mismatched rendering.

Deviations from the official code, each deliberate:

- **Tracks.** Onsets come from every track (GMD files are type 0: one track; the stored ``midi_to_text.py``
  reads ``tracks[1]``, which a type-0 file does not have).
- **Unknown pitches** are dropped instead of raising ``KeyError`` in ``note_to_seq[m.note]``.
- **No time signature**: read as 4/4, the MIDI default (the official code skips the file: its ``[0, 0]``
  placeholder is not x/4). Every GMD file has one.
- **Length skip.** The stored ``midi_to_text.py`` ends its note loop with ``for ... else: continue``, which skips
  every file whose onsets all fit the window; the shipped data keeps them (373 = every x/4 training beat of GMD, and
  padded files such as the punk groove above), so the shipped text was not made that way and neither is ours.
  Only a file without any onset is skipped (``min_lines`` raises that bar).
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
    "COLUMN_ORDERS",
    "COLUMN_PITCHES",
    "HIT",
    "LINES_PER_BAR",
    "MERGES",
    "MERGES_EARLY",
    "MERGES_EXTENDED",
    "MERGES_OFFICIAL",
    "NUM_BARS",
    "NUM_LINES",
    "PITCH_NAMES",
    "PRIMARY_NOTES_ORDER",
    "REST",
    "TIME_SIGNATURE_RULES",
    "DrumrollFormatError",
    "MidiReadError",
    "SkippedMidi",
    "array_to_lines",
    "column_names",
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
    "resolve_columns",
    "write_drumroll",
]

log = logging.getLogger(__name__)

HIT, REST = "o", "-"
PITCH_NAMES: Mapping[int, str] = {49: "crash", 51: "ride", 42: "hi-hat", 38: "snare", 36: "kick", 50: "tom"}
# the order midi_to_text.py writes (note_to_drum's insertion order filtered by primary_notes): the shipped data
COLUMN_PITCHES: tuple[int, ...] = (49, 51, 38, 36, 42, 50)
# the order of the primary_notes list itself (and of some text_to_midi.py versions)
PRIMARY_NOTES_ORDER: tuple[int, ...] = (49, 51, 42, 38, 36, 50)
COLUMN_ORDERS: Mapping[str, tuple[int, ...]] = {"official": COLUMN_PITCHES, "primary-notes": PRIMARY_NOTES_ORDER}
COLUMN_NAMES: tuple[str, ...] = tuple(PITCH_NAMES[p] for p in COLUMN_PITCHES)
NUM_COLUMNS = len(COLUMN_PITCHES)
LINES_PER_BAR = 16  # sixteenths in a 4/4 bar; the downstream code's "measure" whatever the time signature
NUM_BARS = 16
NUM_LINES = NUM_BARS * LINES_PER_BAR  # 256 for 4/4
TIME_SIGNATURE_RULES = ("x/4", "4/4")

_IDENTITY = {p: p for p in COLUMN_PITCHES}
# source pitch -> column pitch; the six column pitches map to themselves
MERGES_OFFICIAL: Mapping[int, int] = {
    **_IDENTITY,
    40: 38,
    37: 38,
    53: 51,
    59: 51,
    55: 49,
    57: 49,
    52: 49,
    46: 42,
    22: 42,
    26: 42,
    48: 50,
    47: 50,
    45: 50,
    43: 50,
    58: 50,
}
MERGES_EARLY: Mapping[int, int] = {
    **_IDENTITY,
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
MERGES_EXTENDED = MERGES_OFFICIAL  # the name this table had before it became the default
MERGES: Mapping[str, Mapping[int, int]] = {"official": MERGES_OFFICIAL, "early": MERGES_EARLY}

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
class SkippedMidi(ValueError):
    """A readable MIDI file that the format does not cover (time signature, no onsets); a user error."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: skipped: {self.reason}"


def resolve_columns(columns: str | Sequence[int] = COLUMN_PITCHES) -> tuple[int, ...]:
    """A column order: a name of ``COLUMN_ORDERS`` or a sequence of distinct MIDI pitches."""
    if isinstance(columns, str):
        if columns not in COLUMN_ORDERS:
            raise ValueError(f"unknown column order {columns!r}; expected one of {sorted(COLUMN_ORDERS)}")
        return COLUMN_ORDERS[columns]
    cols = tuple(int(p) for p in columns)
    if not cols or len(set(cols)) != len(cols) or not all(0 <= p < 128 for p in cols):
        raise ValueError(f"column order {cols}: expected distinct MIDI pitches 0..127")
    return cols


def column_names(columns: Sequence[int] = COLUMN_PITCHES) -> tuple[str, ...]:
    return tuple(PITCH_NAMES.get(p, str(p)) for p in columns)


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
    if os.path.getsize(path) == 0:
        raise MidiReadError(f"{path}: empty file (0 bytes); expected a MIDI file")
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
    columns: Sequence[int] = COLUMN_PITCHES,
) -> list[str]:
    """Drumroll lines from note onsets: ``ticks`` (N,) and ``pitches`` (N,) integer arrays.

    Onsets past the last line are ignored; pitches whose merge target is not a column are dropped. Returns
    ``num_lines`` strings of ``len(columns)`` characters, column *i* for pitch ``columns[i]``.
    """
    columns = resolve_columns(columns)
    grid = np.zeros((num_lines, len(columns)), dtype=bool)
    column_of = {p: columns.index(c) for p, c in merges.items() if c in columns}
    steps = quantize_tick(np.asarray(ticks, dtype=np.int64), ticks_per_beat)
    for step, pitch in zip(np.asarray(steps).tolist(), np.asarray(pitches).tolist(), strict=True):
        col = column_of.get(pitch)
        if col is not None and 0 <= step < num_lines:
            grid[step, col] = True
    return array_to_lines(grid, len(columns))


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
    columns: str | Sequence[int] = COLUMN_PITCHES,
    time_signatures: str = "x/4",
    num_bars: int = NUM_BARS,
    pad: bool = True,
    min_lines: int = 1,
) -> list[str]:
    """Read a MIDI file into drumroll lines, one per sixteenth, ``num_bars`` bars of the file's time signature.

    ``time_signatures="x/4"`` (official): the last time-signature event decides; any numerator over 4 is kept and
    the text is ``num_bars · numerator · 4`` lines (256 for 4/4, 192 for 3/4); other denominators are skipped.
    ``"4/4"``: only files whose every time signature is 4/4. A file without one is 4/4.

    With ``pad`` (default) the text has exactly that many lines (rests after the performance, onsets past the
    window cut); without, it stops at the last onset of any pitch, rounded up to a whole beat. Raises
    ``MidiReadError`` when the file cannot be read, ``SkippedMidi`` (with the reason) when the time signature is
    not covered or the performance is shorter than ``min_lines`` lines.
    """
    if time_signatures not in TIME_SIGNATURE_RULES:
        raise ValueError(f"time_signatures={time_signatures!r}; expected one of {TIME_SIGNATURE_RULES}")
    score = _read_score(path)
    name = os.fspath(path)
    signatures = sorted((ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures)
    if time_signatures == "4/4":
        for time, num, den in signatures:
            if (num, den) != (4, 4):
                raise SkippedMidi(name, f"time signature {num}/{den} at tick {time} (only 4/4)")
        numerator = 4
    else:
        time, numerator, den = signatures[-1] if signatures else (0, 4, 4)
        if den != 4 or numerator <= 0:
            raise SkippedMidi(name, f"time signature {numerator}/{den} at tick {time} (only x/4)")
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
    max_lines = num_bars * numerator * 4
    length = performance_lines(ticks, tpb, max_lines)
    if length < min_lines:
        raise SkippedMidi(name, f"too short: {length} sixteenth lines of music, at least {min_lines} needed")
    return onsets_to_lines(
        ticks, pitches, tpb, merges=merges, num_lines=max_lines if pad else length, columns=resolve_columns(columns)
    )


def array_to_lines(grid: np.ndarray, num_columns: int = NUM_COLUMNS) -> list[str]:
    """(L, C) boolean array → L lines of ``o``/``-``."""
    grid = np.asarray(grid, dtype=bool)
    if grid.ndim != 2 or grid.shape[1] != num_columns:
        raise ValueError(f"expected a (lines, {num_columns}) array, got shape {grid.shape}")
    chars = np.where(grid, HIT, REST)
    return ["".join(row) for row in chars.tolist()]


def lines_to_array(
    lines: Sequence[str], source: str = "<drumroll>", columns: Sequence[int] = COLUMN_PITCHES
) -> np.ndarray:
    """Validated lines → (L, C) boolean array."""
    _validate_lines(lines, source, columns)
    n = len(columns)
    return np.array([[c == HIT for c in line] for line in lines], dtype=bool).reshape(len(lines), n)


def lines_to_text(lines: Iterable[str]) -> str:
    """The file form: one line per sixteenth, each ending with a newline (as the official files)."""
    return "".join(f"{line}\n" for line in lines)


def _validate_lines(lines: Sequence[str], source: str, columns: Sequence[int] = COLUMN_PITCHES) -> None:
    n = len(columns)
    for i, line in enumerate(lines):
        if len(line) != n or any(c not in (HIT, REST) for c in line):
            raise DrumrollFormatError(
                f"{source}:{i + 1}: expected {n} characters of '{HIT}' (hit) or '{REST}' (rest) "
                f"for {', '.join(column_names(columns))}; got {line!r} ({len(line)} characters)"
            )


def parse_drumroll(
    text: str,
    source: str = "<drumroll>",
    *,
    num_lines: int | None = NUM_LINES,
    columns: Sequence[int] = COLUMN_PITCHES,
) -> list[str]:
    """Parse drumroll text (lines of ``len(columns)`` ``o``/``-``; a trailing newline is optional).

    ``num_lines`` (default 256) is the required line count, ``None`` accepts any positive count; text without any
    line is an error. Errors name ``source`` and the 1-based line number.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    lines = [line.removesuffix("\r") for line in lines]
    if not lines:
        raise DrumrollFormatError(f"{source}: empty; expected drumroll lines (one per sixteenth)")
    _validate_lines(lines, source, columns)
    if num_lines is not None and len(lines) != num_lines:
        raise DrumrollFormatError(
            f"{source}: expected {num_lines} lines ({num_lines // LINES_PER_BAR} bars of {LINES_PER_BAR} sixteenths), "
            f"got {len(lines)}"
        )
    return lines


def read_drumroll(
    path: str | os.PathLike, *, num_lines: int | None = NUM_LINES, columns: Sequence[int] = COLUMN_PITCHES
) -> list[str]:
    """Read and validate a drumroll text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such drumroll file") from None
    except UnicodeDecodeError as e:
        raise DrumrollFormatError(f"{path}: not UTF-8 text ({e})") from e
    return parse_drumroll(text, str(path), num_lines=num_lines, columns=columns)


def write_drumroll(lines: Sequence[str], path: str | os.PathLike, *, columns: Sequence[int] = COLUMN_PITCHES) -> None:
    """Validate and write drumroll lines atomically."""
    from polyzoo.shared.io import atomic_path

    _validate_lines(lines, str(path), columns)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(lines_to_text(lines), encoding="utf-8")


def drumroll_to_score(
    lines: Sequence[str], source: str = "<drumroll>", *, columns: str | Sequence[int] = COLUMN_PITCHES
):
    """A ``symusic.Score``: 480 ticks per beat, 120 bpm, 4/4, one drum track, velocity 100, each line 120 ticks;
    column *i* plays ``columns[i]`` (default the official data order, so official text plays the right drums)."""
    import symusic

    columns = resolve_columns(columns)
    if not lines:
        raise DrumrollFormatError(f"{source}: no drumroll lines to write")
    grid = lines_to_array(lines, source, columns)
    score = symusic.Score(OUT_TICKS_PER_BEAT)
    score.tempos.append(symusic.Tempo(0, qpm=OUT_BPM))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(name="drums", program=0, is_drum=True)
    steps, cols = np.nonzero(grid)
    for step, col in zip(steps.tolist(), cols.tolist(), strict=True):
        track.notes.append(symusic.Note(step * OUT_TICKS_PER_LINE, OUT_NOTE_TICKS, columns[col], OUT_VELOCITY))
    score.tracks.append(track)
    return score


def drumroll_to_midi(
    lines: Sequence[str], path: str | os.PathLike, *, columns: str | Sequence[int] = COLUMN_PITCHES
) -> None:
    """Write drumroll lines as a MIDI file (atomically); column *i* plays ``columns[i]``."""
    from polyzoo.shared.io import atomic_path

    score = drumroll_to_score(lines, str(path), columns=columns)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        score.dump_midi(str(tmp))
