"""Drum grooves as text: MIDI → drumroll conversion (files/s) against a straightforward mido implementation in the
style of the official ``midi_to_text.py``, and generation throughput (tokens/s) of a small character-level GPT-2
with and without the END stopping criterion.

Conversion: ours reads with symusic (C++ parser, notes as numpy arrays) and fills a boolean grid; the anchor walks
mido messages in Python, accumulates delta ticks, quantises each note-on and fills per-pitch lists, then merges
articulations. Both produce the same 256 lines (checked on every file before timing). Files: the Groove MIDI
Dataset's 4/4 files from ../shared/data (or POLYZOO_SHARED_DATA), else synthetic grooves written on the fly.
The anchor needs mido, the package's optional ``bench`` extra (``uv sync --all-packages --all-extras``).

Generation: the same tiny random-init GPT-2 (4 layers, width 128, char vocabulary) decodes a fixed number of new
tokens after a 2-bar prompt (232 characters) with ``model.generate`` sampling at temperature 0.9; "ours" adds the
END-marker stopping criterion that ``polyzoo music generate`` uses, the anchor has none.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from polyzoo.music.drumroll import COLUMN_PITCHES, MERGES_OFFICIAL, NUM_LINES, midi_to_drumroll
from polyzoo.shared.paths import shared_data_dir
from polyzoo.shared.timing import time_interleaved


def mido_to_drumroll(path: str) -> list[str]:
    """The straightforward implementation: mido messages, cumulative ticks, nearest-sixteenth quantisation,
    per-pitch lists, articulation merges."""
    import mido

    mid = mido.MidiFile(path, clip=True)
    tpb = mid.ticks_per_beat
    for track in mid.tracks:
        for msg in track:
            if msg.type == "time_signature" and (msg.numerator, msg.denominator) != (4, 4):
                raise ValueError(f"{path}: not 4/4")
    seqs = {p: ["-"] * NUM_LINES for p in MERGES_OFFICIAL}
    for track in mid.tracks:
        ticks = 0
        for msg in track:
            ticks += msg.time
            if msg.type == "note_on" and msg.velocity > 0 and msg.note in seqs:
                step = (8 * ticks + tpb) // (2 * tpb)
                if step < NUM_LINES:
                    seqs[msg.note][step] = "o"
    for src, dst in MERGES_OFFICIAL.items():
        if src != dst:
            for i, c in enumerate(seqs[src]):
                if c == "o":
                    seqs[dst][i] = "o"
    return ["".join(seqs[p][i] for p in COLUMN_PITCHES) for i in range(NUM_LINES)]


def _files(limit: int) -> list[str]:
    base = shared_data_dir(__file__)
    gmd = base / "drums" / "groove"
    if gmd.is_dir():
        files = sorted(str(p) for p in gmd.rglob("*4-4.mid"))
        return files[:: max(1, len(files) // limit)][:limit]
    import symusic

    tmp = Path(tempfile.mkdtemp(prefix="bench_music_"))
    rng = random.Random(0)
    files = []
    for i in range(limit):
        score = symusic.Score(480)
        score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
        track = symusic.Track(is_drum=True)
        for s in range(NUM_LINES):
            for pitch in (36, 38, 42, 46, 49, 51):
                if rng.random() < 0.2:
                    track.notes.append(symusic.Note(s * 120 + rng.randint(-40, 40) + 40, 60, pitch, 90))
        score.tracks.append(track)
        score.dump_midi(str(tmp / f"{i}.mid"))
        files.append(str(tmp / f"{i}.mid"))
    return files


def _conversion(quick: bool) -> list[str]:
    try:
        import mido  # noqa: F401
    except ImportError:
        return ["(conversion anchor skipped: mido is not installed; `uv sync --all-packages --all-extras`)"]
    files = _files(20 if quick else 200)
    for f in files:
        if midi_to_drumroll(f) != mido_to_drumroll(f):
            raise AssertionError(f"{f}: the two implementations disagree")
    times = time_interleaved(
        {
            "ours (symusic + numpy)": lambda: [midi_to_drumroll(f) for f in files],
            "mido, straightforward": lambda: [mido_to_drumroll(f) for f in files],
        },
        repeats=3 if quick else 7,
        warmup=1,
    )
    anchor = times["mido, straightforward"]
    lines = [
        f"MIDI → drumroll, {len(files)} files (identical output checked on each)",
        "",
        "| contender | median s | files/s | speed-up vs mido |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {t:.3f} | {len(files) / t:.0f} | {anchor / t:.1f}x |" for n, t in times.items()]
    return lines


def _generation(quick: bool) -> list[str]:
    import torch
    from transformers import StoppingCriteriaList

    from polyzoo.music.dataset import make_example
    from polyzoo.music.generation import _end_criterion
    from polyzoo.music.lm import SmallGPT2Config, char_tokenizer, new_small_gpt2

    torch.manual_seed(0)
    tok = char_tokenizer()
    model = new_small_gpt2(SmallGPT2Config(n_layer=4, n_embd=128, n_head=4, dropout=0.0), tok).eval()
    prompt = make_example(["--o-o-", "------", "--o---", "------"] * 64, "b")["prompt"]
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    n_new = 100 if quick else 400

    def run(stop: bool):
        def fn():
            kwargs = {}
            if stop:
                kwargs["stopping_criteria"] = StoppingCriteriaList([_end_criterion(tok, ids.shape[1])])
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    temperature=0.9,
                    top_k=0,
                    min_new_tokens=n_new,
                    max_new_tokens=n_new,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=None,
                    **kwargs,
                )
            assert out.shape[1] - ids.shape[1] == n_new

        return fn

    times = time_interleaved(
        {"generate + END criterion (ours)": run(True), "generate, no criterion": run(False)},
        repeats=2 if quick else 5,
        warmup=1,
    )
    anchor = times["generate, no criterion"]
    lines = [
        f"Generation, GPT-2 4×128 char-level (random init), prompt {ids.shape[1]} tokens, {n_new} new tokens, "
        f"{torch.get_num_threads()} threads",
        "",
        "| contender | median s | tokens/s | time vs no criterion |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {t:.2f} | {n_new / t:.0f} | {t / anchor:.2f}x |" for n, t in times.items()]
    return lines


def run(quick: bool = False) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return "\n".join([*_conversion(quick), "", *_generation(quick)])
