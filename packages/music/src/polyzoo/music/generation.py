"""Groove generation from a 2-bar prompt, after *Language Models are Drummers* (Zhang & Callison-Burch, arXiv
2301.01162); official code https://github.com/zharry29/drums-with-llm (``source/evaluate.py``).

Sampling at temperature 0.9 (no top-k or nucleus cut, as the OpenAI completion API) until the end marker ``END``
or the token budget runs out. The official script writes ``prompt + generation`` with the ``SEP`` lines removed
and converts it to MIDI, giving up on outputs it cannot convert. We always return a valid 16-bar drumroll
(``repair``): text after ``END`` dropped, ``SEP`` lines dropped, empty lines dropped, each line cut or padded to six
characters with anything but ``o`` read as a rest, then cut or padded with rest lines to 256 lines; the repairs are
counted. Beside it we write the output as the official script does (``official_output_text``: prompt + generation
up to ``END``, every ``"SEP\\n"`` removed, nothing else changed), the raw text the paper's metric is computed on
(``evaluation.read_groove``). Deviation: the official budget is 1,000 GPT-3 tokens; ours defaults to the token
length of the longest possible completion under the model's tokenizer (plus 10 %), which is what a character-level
model needs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyzoo.music.dataset import END, SEP, full_length_completion_text
from polyzoo.music.drumroll import COLUMN_PITCHES, HIT, NUM_COLUMNS, NUM_LINES, REST

__all__ = ["RepairStats", "generate_completion", "generate_from_jsonl", "official_output_text", "repair"]

log = logging.getLogger(__name__)

TEMPERATURE = 0.9


@dataclasses.dataclass
class RepairStats:
    """How much ``repair`` had to change: malformed lines fixed, rest lines appended, lines cut, END seen."""

    fixed_lines: int = 0
    padded_lines: int = 0
    cut_lines: int = 0
    ended: bool = False


def repair(text: str, num_lines: int = NUM_LINES) -> tuple[list[str], RepairStats]:
    """A valid drumroll of ``num_lines`` lines from prompt + generated text."""
    stats = RepairStats()
    if END in text:
        text = text[: text.index(END)]
        stats.ended = True
    lines = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line == SEP:
            continue
        fixed = "".join(HIT if c == HIT else REST for c in line[:NUM_COLUMNS]).ljust(NUM_COLUMNS, REST)
        if fixed != line:
            stats.fixed_lines += 1
        lines.append(fixed)
    if len(lines) > num_lines:
        stats.cut_lines = len(lines) - num_lines
        lines = lines[:num_lines]
    stats.padded_lines = num_lines - len(lines)
    lines += [REST * NUM_COLUMNS] * stats.padded_lines
    return lines, stats


def official_output_text(prompt: str, completion: str) -> str:
    """The official ``evaluate.py`` output file: prompt + generation (the API's text before the stop word
    ``END``) with every ``"SEP\\n"`` removed; malformed lines and a short or long text stay as they are."""
    if END in completion:
        completion = completion[: completion.index(END)]
    return (prompt + completion).replace(f"{SEP}\n", "")


def default_max_new_tokens(tokenizer) -> int:
    n = len(tokenizer(full_length_completion_text(), add_special_tokens=False)["input_ids"])
    return int(n * 1.1) + 8


def _end_criterion(tokenizer, prompt_length: int):
    import torch
    from transformers import StoppingCriteria

    class StopAtEnd(StoppingCriteria):
        """Stop a sequence once the generated text contains END (checked on the last few tokens)."""

        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
            done = []
            for row in input_ids:
                tail = tokenizer.decode(row[max(prompt_length, len(row) - 8) :], skip_special_tokens=True)
                done.append(END in tail)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopAtEnd()


def generate_completion(
    model,
    tokenizer,
    prompt: str,
    *,
    temperature: float = TEMPERATURE,
    max_new_tokens: int | None = None,
    seed: int | None = None,
) -> tuple[str, int]:
    """Sample a completion for ``prompt``; returns (text up to and including END when produced, tokens made)."""
    import torch
    from transformers import StoppingCriteriaList

    if seed is not None:
        torch.manual_seed(seed)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    budget = max_new_tokens or default_max_new_tokens(tokenizer)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is not None:
        budget = max(1, min(budget, limit - ids.shape[1]))
    model.eval()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=budget,
            stopping_criteria=StoppingCriteriaList([_end_criterion(tokenizer, ids.shape[1])]),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    new = out[0, ids.shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    if END in text:
        text = text[: text.index(END) + len(END)]
    return text, int(new.shape[0])


def generate_from_jsonl(
    model_dir: str | os.PathLike,
    examples: Sequence[dict[str, str]],
    out_dir: str | os.PathLike,
    *,
    temperature: float = TEMPERATURE,
    max_new_tokens: int | None = None,
    seed: int = 0,
    columns: Sequence[int] = COLUMN_PITCHES,
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Generate one groove per example prompt on ``device`` (``cpu``, ``cuda``, ``cuda:N``; None: where
    ``load_model`` puts the model, the CPU): ``out/text/<name>.txt`` (repaired to 256 lines),
    ``out/midi/<name>.mid`` (column *i* played on ``columns[i]``; the default is the official data order, the order
    the prompts of ``prepare`` are in) and ``out/raw/<name>.txt`` (``official_output_text``: what the official script
    writes and the paper's metric reads). Grooves already written are kept (the run resumes). Returns counts and
    repair statistics."""
    import time

    from tqdm.auto import tqdm

    from polyzoo.music.drumroll import drumroll_to_midi, write_drumroll
    from polyzoo.music.lm import load_model
    from polyzoo.shared.io import atomic_path, write_json_atomic

    out_dir = Path(out_dir)
    model, tokenizer = load_model(model_dir)
    if device is not None:
        model.to(device)
    stats: dict[str, Any] = {"generated": 0, "kept": 0, "tokens": 0, "seconds": 0.0, "ended": 0, "repairs": {}}
    for i, ex in enumerate(tqdm(examples, desc="generate", disable=not progress, unit="groove")):
        name = ex["name"]
        text_path, midi_path = out_dir / "text" / f"{name}.txt", out_dir / "midi" / f"{name}.mid"
        raw_path = out_dir / "raw" / f"{name}.txt"
        if text_path.is_file() and midi_path.is_file() and raw_path.is_file():
            stats["kept"] += 1
            continue
        t0 = time.perf_counter()
        completion, n = generate_completion(
            model, tokenizer, ex["prompt"], temperature=temperature, max_new_tokens=max_new_tokens, seed=seed + i
        )
        stats["seconds"] += time.perf_counter() - t0
        lines, rep = repair(ex["prompt"] + completion)
        drumroll_to_midi(lines, midi_path, columns=columns)
        write_drumroll(lines, text_path, columns=columns)
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(raw_path) as tmp:
            Path(tmp).write_text(official_output_text(ex["prompt"], completion), encoding="utf-8")
        stats["generated"] += 1
        stats["tokens"] += n
        stats["ended"] += int(rep.ended)
        stats["repairs"][name] = dataclasses.asdict(rep)
    stats["tokens_per_second"] = stats["tokens"] / stats["seconds"] if stats["seconds"] else None
    write_json_atomic(out_dir / "generate_report.json", stats)
    return stats
