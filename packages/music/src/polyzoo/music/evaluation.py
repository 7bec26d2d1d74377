"""Structural evaluation of grooves from *Language Models are Drummers* (Zhang & Callison-Burch, arXiv 2301.01162);
official code https://github.com/zharry29/drums-with-llm (``source/analysis.py``, ``source/duplication_analysis.py``).

Stability: split a drumroll into 16-line bars and keep the first 16; for each inner bar i = 1..14 (0-based),
``s_i = min(Lev(m_i, m_{i-1}), Lev(m_i, m_{i+1}))`` with ``Lev`` the character Levenshtein distance between the bar
strings. As the official code, a bar string is ``'\\n'.join(lines)`` of lines read with ``readlines()``, i.e. each
line keeps its own newline (``"xxxxxx\\n\\nxxxxxx\\n..."``), so distances equal the official ones (an inserted or
deleted line costs 8 edits, a changed hit 1).

**Raw text, any system's output.** The official ``analysis.py`` never parses the format: it splits the file as it is
(``readlines()`` in text mode: universal newlines, each line with its newline, the last one without if the file
does not end with one) into 16-line blocks, the last block partial when the line count is not a multiple of 16, and
measures edit distances between the raw strings. Outputs of language models contain malformed lines (``-oooo--``,
empty lines, a stray ``SEP``) and stop early; they are scored exactly that way here (``read_groove``,
``read_groove_folder`` never validate the format), and counted per system: ``malformed_lines`` (lines that are not
six ``o``/``-`` characters), ``grooves_malformed``, ``short_grooves`` (fewer than 16 full bars, i.e. under 256 lines)
and ``unscored_grooves`` (fewer than 3 bars: no inner bar, no stability). Only unreadable files are errors
(``UnreadableGrooveError``: missing, empty, binary, not UTF-8), one line naming the file. The metric functions take
lines either as ``readlines()`` gives them (ending in newlines) or clean (none does: each then gets its newline, as
the file form); ``as_read`` says which.

- **Short grooves (official crash, handled):** with fewer than 2 stabilities (fewer than 4 blocks) the official
  ``KMeans(n_clusters=2)`` raises; such grooves keep their stabilities in the pooled mean (as officially) and enter
  the cluster means only when they have at least one value (one value: gap 0, distance 0); a groove without any
  stability (fewer than 3 blocks) is left out of the cluster means. A system without any stability has NaN metrics.

Metrics per groove: the mean stability, and a 1-D two-means clustering of the stabilities returning the distance
between the two centres and the mean distance of each value to its own centre.

- **Label swap (official bug, corrected):** ``analysis.py`` prints index 0 (the gap between centres) under the name
  ``intra`` and index 1 (mean distance to own centre) under ``inter``. Here ``inter_cluster_gap`` is ``|c0 - c1|``
  and ``intra_cluster_distance`` the mean distance to the own centre. The official "intra" column is our
  ``inter_cluster_gap``.
- **Two-means.** The official code calls ``sklearn.cluster.KMeans(n_clusters=2, random_state=0)`` (Lloyd's algorithm
  from k-means++ seeds). In one dimension the optimal two-means partition is a split of the sorted values; we take
  the exact optimum over all splits (ties: the first split), deterministically and without scikit-learn. Lloyd's
  algorithm can stop in a worse local optimum: on the 77 GMD test beats one groove differs (stabilities 12, 6,
  1, 1 and ten 0: KMeans splits off {12}, the optimum {6, 12}). ``method="sklearn"`` runs the official call.
  With a single distinct value both centres coincide (gap 0, distance 0), as KMeans returns when it finds one
  distinct cluster.
- Baselines as the official ones: *random* lines of uniform ``o``/``-`` from ``random.Random(29)`` (one generator
  shared over the grooves, drawn in order, 6 characters × 256 lines each), *repeat* = bar 0 then bar 1 fifteen
  times.
- **Duplication.** ``duplication_analysis.py`` counts how often each non-empty generated bar occurs verbatim among
  the bars of a reference set; the official code used the test texts while labelling the plot "occurrences in
  training". ``duplication_counts`` takes the reference explicitly; our commands pass the training set.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polyzoo.music.drumroll import HIT, LINES_PER_BAR, NUM_BARS, NUM_COLUMNS, REST

__all__ = [
    "GrooveMetrics",
    "UnreadableGrooveError",
    "as_read",
    "bar_string",
    "bars",
    "duplication_counts",
    "duplication_summary",
    "evaluate_systems",
    "groove_metrics",
    "levenshtein",
    "levenshtein_dp",
    "malformed_lines",
    "random_baseline",
    "read_drumroll_folder",
    "read_groove",
    "read_groove_folder",
    "repeat_baseline",
    "stabilities",
    "summarize",
    "two_means_1d",
]

RANDOM_SEED = 29
NUM_LINES = NUM_BARS * LINES_PER_BAR  # 256: 16 full bars


class UnreadableGrooveError(ValueError):
    """A groove file that cannot be read as text (missing, empty, binary, not UTF-8); the message names it."""


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insertions, deletions, substitutions of cost 1).

    Bit-parallel (Myers 1999, in Hyyrö's formulation for edit distance) with Python integers as bit vectors: one
    pass over ``b`` with a handful of integer operations per character; equal to ``levenshtein_dp``.
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(a)
    if m == 0 or not b:
        return m or len(b)
    peq: dict[str, int] = {}
    for i, c in enumerate(a):
        peq[c] = peq.get(c, 0) | (1 << i)
    full, top = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = full, 0, m
    for c in b:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & full
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def levenshtein_dp(a: str, b: str) -> int:
    """Textbook dynamic-programming edit distance (the official ``levenshtein_distance``): reference for tests."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for j, cb in enumerate(b, start=1):
        current = [j]
        for i, ca in enumerate(a, start=1):
            current.append(previous[i - 1] if ca == cb else 1 + min(previous[i - 1], previous[i], current[i - 1]))
        previous = current
    return previous[-1]


def as_read(lines: Sequence[str]) -> list[str]:
    """Lines as the official ``readlines()`` gives them: lines that already end in newlines (read from a file; the
    last may lack one) are kept as they are; clean lines (none ends in a newline) each get one, as in the file form.
    """
    lines = list(lines)
    if any(line.endswith("\n") for line in lines):
        return lines
    return [f"{line}\n" for line in lines]


def bars(lines: Sequence[str], num_bars: int = NUM_BARS) -> list[list[str]]:
    """The first ``num_bars`` 16-line blocks of the lines as read (``as_read``); the last one is partial when the line
    count is not a multiple of 16, as in the official split."""
    lines = as_read(lines)
    return [lines[i : i + LINES_PER_BAR] for i in range(0, len(lines), LINES_PER_BAR)][:num_bars]


def bar_string(bar_lines: Sequence[str]) -> str:
    """The official bar string: lines as ``readlines()`` gives them (newline kept), joined with newlines. Clean lines
    each get their newline; lines that end in one are kept (see ``as_read``)."""
    return "\n".join(as_read(bar_lines))


def stabilities(lines: Sequence[str], num_bars: int = NUM_BARS) -> list[int]:
    """Per inner bar, the minimum Levenshtein distance to the previous or next bar (14 values for 16 bars or more,
    none for fewer than 3). ``lines``: as read from a file or clean (``as_read``); never validated."""
    strings = ["\n".join(b) for b in bars(lines, num_bars)]
    return [
        min(levenshtein(strings[i], strings[i - 1]), levenshtein(strings[i], strings[i + 1]))
        for i in range(1, len(strings) - 1)
    ]


def two_means_1d(values: Sequence[float], method: str = "exact") -> tuple[float, float]:
    """1-D two-means: returns (|c0 - c1|, mean |v - own centre|).

    ``exact``: the optimal partition of sorted values is a prefix/suffix split; every split is scored by the
    within-cluster sum of squares and the first minimum kept. ``sklearn``: the official call,
    ``KMeans(n_clusters=2, random_state=0, n_init=10)`` (n_init=10 was the default then), a local optimum that can
    differ from the exact one (needs scikit-learn, not a dependency of this package).
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        raise ValueError("two_means_1d: no values (a groove needs at least 3 bars for one stability)")
    if v[0] == v[-1]:
        return 0.0, 0.0
    if method == "sklearn":
        try:
            from sklearn.cluster import KMeans
        except ImportError as e:
            raise ImportError("two_means_1d(method='sklearn') needs scikit-learn: pip install scikit-learn") from e
        x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        km = KMeans(n_clusters=2, random_state=0, n_init=10).fit(x)
        centres = km.cluster_centers_[:, 0]
        return float(abs(centres[0] - centres[1])), float(np.mean(np.abs(x[:, 0] - centres[km.labels_])))
    if method != "exact":
        raise ValueError(f"two_means_1d: method must be 'exact' or 'sklearn', got {method!r}")
    best = None
    for k in range(1, v.size):
        left, right = v[:k], v[k:]
        sse = float(((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum())
        if best is None or sse < best[0] - 1e-12:
            best = (sse, k)
    assert best is not None
    k = best[1]
    c0, c1 = v[:k].mean(), v[k:].mean()
    distance = np.concatenate([np.abs(v[:k] - c0), np.abs(v[k:] - c1)]).mean()
    return float(abs(c0 - c1)), float(distance)


@dataclasses.dataclass
class GrooveMetrics:
    """Structure metrics of one groove."""

    stabilities: list[int]
    mean_stability: float
    inter_cluster_gap: float  # |c0 - c1| (printed as "intra" by the official analysis.py)
    intra_cluster_distance: float  # mean |s - own centre| (printed as "inter" officially)


def groove_metrics(lines: Sequence[str], method: str = "exact") -> GrooveMetrics:
    """Stabilities and cluster metrics of one groove (NaN metrics when it has fewer than 3 bars)."""
    s = stabilities(lines)
    if not s:
        return GrooveMetrics(s, math.nan, math.nan, math.nan)
    gap, dist = two_means_1d(s, method)
    return GrooveMetrics(s, float(np.mean(s)), gap, dist)


def _is_wellformed(line: str, num_columns: int = NUM_COLUMNS) -> bool:
    body = line[:-1] if line.endswith("\n") else line
    return len(body) == num_columns and all(c in (HIT, REST) for c in body)


def malformed_lines(lines: Sequence[str], num_columns: int = NUM_COLUMNS) -> int:
    """Lines (of the whole text, newline aside) that are not ``num_columns`` characters of ``o``/``-``."""
    return sum(not _is_wellformed(line, num_columns) for line in lines)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def summarize(grooves: Mapping[str, Sequence[str]], method: str = "exact") -> dict[str, Any]:
    """Official aggregation over a set of grooves: the mean of all pooled stabilities, and the means over grooves
    of the two cluster metrics (over the grooves with at least one stability); plus the counts of malformed lines,
    grooves with any, grooves shorter than 16 full bars and grooves without a stability (fewer than 3 bars)."""
    if not grooves:
        raise ValueError("summarize: no grooves")
    metrics = [groove_metrics(lines, method) for lines in grooves.values()]
    scored = [m for m in metrics if m.stabilities]
    pooled = [x for m in metrics for x in m.stabilities]
    malformed = [malformed_lines(lines) for lines in grooves.values()]
    return {
        "grooves": len(metrics),
        "mean_stability": _mean(pooled),
        "inter_cluster_gap": _mean([m.inter_cluster_gap for m in scored]),
        "intra_cluster_distance": _mean([m.intra_cluster_distance for m in scored]),
        "malformed_lines": int(sum(malformed)),
        "grooves_malformed": int(sum(n > 0 for n in malformed)),
        "short_grooves": int(sum(len(lines) < NUM_LINES for lines in grooves.values())),
        "unscored_grooves": len(metrics) - len(scored),
    }


def random_baseline(names: Iterable[str], seed: int = RANDOM_SEED, num_lines: int = NUM_LINES) -> dict[str, list[str]]:
    """Uniform random drumrolls, one per name, drawn in order from one ``random.Random(seed)``."""
    rng = random.Random(seed)
    return {
        name: ["".join(rng.choice([REST, HIT]) for _ in range(NUM_COLUMNS)) for _ in range(num_lines)] for name in names
    }


def repeat_baseline(lines: Sequence[str]) -> list[str]:
    """Bar 0, then bar 1 repeated 15 times (the official repeat baseline), of the lines as given."""
    lines = list(lines)
    return lines[:LINES_PER_BAR] + lines[LINES_PER_BAR : 2 * LINES_PER_BAR] * (NUM_BARS - 1)


def _bar_keys(lines: Sequence[str]) -> list[str]:
    lines = [line.rstrip("\n") for line in lines]
    return ["".join(f"{x}\n" for x in lines[i : i + LINES_PER_BAR]) for i in range(0, len(lines), LINES_PER_BAR)]


def duplication_counts(generated: Mapping[str, Sequence[str]], reference: Mapping[str, Sequence[str]]) -> list[int]:
    """For every non-empty bar of every generated groove, how many times it occurs verbatim among the bars of
    ``reference`` (all bars, including empty ones, as the official count)."""
    occurrences = Counter(key for lines in reference.values() for key in _bar_keys(lines))
    return [
        occurrences.get(key, 0)
        for lines in generated.values()
        for key in _bar_keys(lines)
        if key.replace(REST, "").replace("\n", "")
    ]


def duplication_summary(counts: Sequence[int]) -> dict[str, float]:
    """Share of non-empty generated bars found in the reference, and the mean number of occurrences."""
    n = len(counts)
    return {
        "bars": n,
        "share_copied": float(np.mean([c > 0 for c in counts])) if n else 0.0,
        "mean_occurrences": float(np.mean(counts)) if n else 0.0,
    }


def read_groove(path: str | os.PathLike) -> list[str]:
    """The lines of a groove file as the official ``open(path).readlines()`` gives them (UTF-8, universal newlines,
    each line with its newline), whatever they contain: the format is not validated. Raises
    ``UnreadableGrooveError`` (one line naming the file) when it is missing, empty, binary or not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableGrooveError(f"{path}: no such groove file") from None
    except OSError as e:
        raise UnreadableGrooveError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not raw:
        raise UnreadableGrooveError(f"{path}: empty file (0 bytes); expected drumroll text")
    if b"\0" in raw:
        raise UnreadableGrooveError(f"{path}: binary file (NUL byte at offset {raw.index(0)}); expected drumroll text")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableGrooveError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); expected drumroll text"
        ) from None
    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", newline=None).readlines()


def read_groove_folder(folder: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``<name>.txt`` grooves of a folder (all, or the given names), each as ``read_groove`` reads it: raw lines,
    malformed ones included. A missing folder, a folder without .txt files, or a missing/unreadable file is an error
    naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of drumroll .txt files")
    if names is None:
        paths = sorted(folder.glob("*.txt"))
        if not paths:
            raise FileNotFoundError(f"{folder}: no .txt drumroll files")
        return {p.stem: read_groove(p) for p in paths}
    return {n: read_groove(folder / f"{n}.txt") for n in names}


read_drumroll_folder = read_groove_folder  # the former name


def evaluate_systems(
    human: Mapping[str, Sequence[str]],
    systems: Mapping[str, Mapping[str, Sequence[str]]],
    reference: Mapping[str, Sequence[str]] | None = None,
    method: str = "exact",
) -> list[dict[str, Any]]:
    """One row per system: human, random, repeat, then each of ``systems`` (name → {groove → lines}), with the
    structure metrics and, given a ``reference`` (the training set), the duplication of non-empty bars."""
    rows_in: dict[str, Mapping[str, Sequence[str]]] = {
        "human": human,
        "random": random_baseline(human),
        "repeat": {k: repeat_baseline(v) for k, v in human.items()},
        **systems,
    }
    rows = []
    for name, grooves in rows_in.items():
        row: dict[str, Any] = {"system": name, **summarize(grooves, method)}
        if reference is not None:
            row.update({f"dup_{k}": v for k, v in duplication_summary(duplication_counts(grooves, reference)).items()})
        rows.append(row)
    return rows
