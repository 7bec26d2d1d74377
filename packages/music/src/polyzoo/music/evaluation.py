"""Structural evaluation of grooves from *Language Models are Drummers* (Zhang & Callison-Burch, arXiv 2301.01162);
official code https://github.com/zharry29/drums-with-llm (``source/analysis.py``, ``source/duplication_analysis.py``).

Stability: split a drumroll into 16-line bars and keep the first 16; for each inner bar i = 1..14 (0-based),
``s_i = min(Lev(m_i, m_{i-1}), Lev(m_i, m_{i+1}))`` with ``Lev`` the character Levenshtein distance between the bar
strings. As the official code, a bar string is ``'\\n'.join(lines)`` of lines read with ``readlines()``, i.e. each
line keeps its own newline (``"xxxxxx\\n\\nxxxxxx\\n..."``); ``bar_string`` builds exactly that, so distances equal the
official ones (an inserted or deleted line costs 8 edits, a changed hit 1).

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
    "bar_string",
    "bars",
    "duplication_counts",
    "duplication_summary",
    "evaluate_systems",
    "groove_metrics",
    "levenshtein",
    "levenshtein_dp",
    "random_baseline",
    "read_drumroll_folder",
    "repeat_baseline",
    "stabilities",
    "summarize",
    "two_means_1d",
]

RANDOM_SEED = 29


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


def bars(lines: Sequence[str], num_bars: int = NUM_BARS) -> list[list[str]]:
    """The first ``num_bars`` 16-line bars (the last may be partial when the text is shorter)."""
    lines = [line.rstrip("\n") for line in lines]
    return [lines[i : i + LINES_PER_BAR] for i in range(0, len(lines), LINES_PER_BAR)][:num_bars]


def bar_string(bar_lines: Sequence[str]) -> str:
    """The official bar string: lines as ``readlines()`` gives them (newline kept), joined with newlines."""
    return "\n".join(f"{line}\n" for line in bar_lines)


def stabilities(lines: Sequence[str], num_bars: int = NUM_BARS) -> list[int]:
    """Per inner bar, the minimum Levenshtein distance to the previous or next bar (14 values for 16 bars)."""
    strings = [bar_string(b) for b in bars(lines, num_bars)]
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
    s = stabilities(lines)
    gap, dist = two_means_1d(s, method)
    return GrooveMetrics(s, float(np.mean(s)), gap, dist)


def summarize(grooves: Mapping[str, Sequence[str]], method: str = "exact") -> dict[str, float]:
    """Official aggregation over a set of grooves: the mean of all pooled stabilities, and the means over grooves
    of the two cluster metrics."""
    if not grooves:
        raise ValueError("summarize: no grooves")
    metrics = [groove_metrics(lines, method) for lines in grooves.values()]
    pooled = [x for m in metrics for x in m.stabilities]
    return {
        "grooves": len(metrics),
        "mean_stability": float(np.mean(pooled)),
        "inter_cluster_gap": float(np.mean([m.inter_cluster_gap for m in metrics])),
        "intra_cluster_distance": float(np.mean([m.intra_cluster_distance for m in metrics])),
    }


def random_baseline(names: Iterable[str], seed: int = RANDOM_SEED, num_lines: int = 256) -> dict[str, list[str]]:
    """Uniform random drumrolls, one per name, drawn in order from one ``random.Random(seed)``."""
    rng = random.Random(seed)
    return {
        name: ["".join(rng.choice([REST, HIT]) for _ in range(NUM_COLUMNS)) for _ in range(num_lines)] for name in names
    }


def repeat_baseline(lines: Sequence[str]) -> list[str]:
    """Bar 0, then bar 1 repeated 15 times (the official repeat baseline)."""
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


def read_drumroll_folder(folder: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``<name>.txt`` drumrolls of a folder (all, or the given names; a missing one is an error naming it)."""
    from polyzoo.music.drumroll import read_drumroll

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of drumroll .txt files")
    if names is None:
        paths = sorted(folder.glob("*.txt"))
        if not paths:
            raise FileNotFoundError(f"{folder}: no .txt drumroll files")
        return {p.stem: read_drumroll(p, num_lines=None) for p in paths}
    return {n: read_drumroll(folder / f"{n}.txt", num_lines=None) for n in names}


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
