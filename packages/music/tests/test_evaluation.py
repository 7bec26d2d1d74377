"""Structural evaluation: Levenshtein, stabilities, two-means (label swap corrected), baselines, duplication."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from polyzoo.music.evaluation import (
    bar_string,
    duplication_counts,
    duplication_summary,
    evaluate_systems,
    groove_metrics,
    levenshtein,
    levenshtein_dp,
    random_baseline,
    repeat_baseline,
    stabilities,
    summarize,
    two_means_1d,
)

EMPTY = "------"


def _bar(hits: dict[int, str]) -> list[str]:
    return [hits.get(i, EMPTY) for i in range(16)]


def test_levenshtein_bit_parallel_equals_dp():
    rng = random.Random(1)
    assert levenshtein("kitten", "sitting") == levenshtein_dp("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "") == 3 and levenshtein("", "") == 0
    for _ in range(500):
        a = "".join(rng.choice("o-\n") for _ in range(rng.randint(0, 140)))
        b = "".join(rng.choice("o-\nx") for _ in range(rng.randint(0, 140)))
        assert levenshtein(a, b) == levenshtein_dp(a, b)


def test_bar_string_is_the_official_readlines_join():
    lines = ["o-----", "------"]
    official = "\n".join([f"{x}\n" for x in lines])
    assert bar_string(lines) == official == "o-----\n\n------\n"


def test_stabilities_known_values():
    a = _bar({0: "----o-", 4: "---o--"})
    b = _bar({0: "----o-", 4: "---o--", 8: "--o---"})  # one hit more: distance 1
    c = _bar({0: "oooooo"})
    lines = a * 1 + a + b + b + c + c + a * 10
    s = stabilities(lines)
    assert len(s) == 14
    # bar 1 (=a): neighbours a, b → 0; bar 2 (=b): neighbours a, b → 0; bar 4 (=c): neighbours b, c → 0
    assert s[0] == 0 and s[1] == 0 and s[3] == 0
    d_bc = levenshtein(bar_string(b), bar_string(c))
    assert s[2] == min(levenshtein(bar_string(b), bar_string(b)), d_bc) == 0
    alternating = [*a, *b] * 8
    assert stabilities(alternating) == [1] * 14
    assert stabilities(a * 3) == [0]  # three bars, one inner bar


def test_two_means_exact_is_the_optimal_split():
    """Against brute force over every two-cluster partition of 8 values: ours is one of the optimal partitions."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(30):
        w = rng.integers(0, 20, size=8).astype(float)
        if len(set(w)) < 2:
            continue
        results = []
        for lab in itertools.product([0, 1], repeat=8):
            lab = np.array(lab)
            if not 0 < lab.sum() < 8:
                continue
            c0, c1 = w[lab == 0].mean(), w[lab == 1].mean()
            sse = ((w[lab == 0] - c0) ** 2).sum() + ((w[lab == 1] - c1) ** 2).sum()
            results.append((sse, abs(c0 - c1), np.mean(np.abs(w - np.where(lab == 0, c0, c1)))))
        best = min(r[0] for r in results)
        optimal = {(round(g, 9), round(d, 9)) for sse, g, d in results if sse <= best + 1e-9}
        gap, dist = two_means_1d(w)
        assert (round(gap, 9), round(dist, 9)) in optimal
        checked += 1
    assert checked > 20


def test_two_means_labels_are_not_swapped():
    # two tight clusters far apart: the gap between centres is large, the spread around centres small
    gap, dist = two_means_1d([0, 0, 1, 1, 20, 20, 21, 21])
    assert gap == pytest.approx(20.0) and dist == pytest.approx(0.5)
    m = groove_metrics(_bar({0: "o-----"}) * 16)
    assert m.inter_cluster_gap == 0 and m.intra_cluster_distance == 0 and m.mean_stability == 0
    assert two_means_1d([3, 3, 3]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="no values"):
        two_means_1d([])


def test_two_means_sklearn_matches_official_call():
    pytest.importorskip("sklearn")
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(3)
    for _ in range(10):
        v = rng.integers(0, 30, size=14).astype(float)
        km = KMeans(n_clusters=2, random_state=0, n_init=10).fit(v.reshape(-1, 1))
        c = km.cluster_centers_[:, 0]
        official = (abs(c[0] - c[1]), np.mean(np.abs(v - c[km.labels_])))
        assert two_means_1d(v, "sklearn") == pytest.approx(official)
    # the GMD test groove where Lloyd's algorithm stops in a worse split than the exact optimum (module docstring)
    v = [6, 1, 1, 12] + [0] * 10
    assert two_means_1d(v, "sklearn") == pytest.approx((148 / 13, 80 / 91))  # {12} vs the rest
    assert two_means_1d(v) == pytest.approx((53 / 6, 2 / 3))  # {6, 12} vs the rest: lower within-cluster error


def test_random_and_repeat_baselines_follow_the_official_code():
    names = ["a", "b"]
    rolls = random_baseline(names)
    ref = random.Random(29)
    for name in names:
        expected = ["".join(ref.choice(["-", "o"]) for _ in range(6)) for _ in range(256)]
        assert rolls[name] == expected
    human = [f"{i:06b}".replace("0", "-").replace("1", "o") for i in range(64)] * 4
    rep = repeat_baseline(human)
    assert rep == human[:16] + human[16:32] * 15
    assert stabilities(rep) == [0] * 14
    assert summarize(rolls)["mean_stability"] > 30  # random bars are far apart


def test_duplication_counts_non_empty_bars_in_the_reference():
    a, b, e = _bar({0: "o-----"}), _bar({3: "-o----"}), _bar({})
    reference = {"r1": a + a + b, "r2": a + e}
    generated = {"g": a + b + e + _bar({5: "oo----"})}
    counts = duplication_counts(generated, reference)
    assert counts == [3, 1, 0]  # the empty bar is not counted; the new bar occurs nowhere
    assert duplication_summary(counts) == {"bars": 3, "share_copied": pytest.approx(2 / 3), "mean_occurrences": 4 / 3}


def test_evaluate_systems_rows(gmd_root, tmp_path):
    from polyzoo.music.dataset import PrepareSettings, prepare_gmd
    from polyzoo.music.evaluation import read_drumroll_folder

    out = tmp_path / "p"
    prepare_gmd(gmd_root, out, PrepareSettings(splits=("test",)), progress=False)
    human = read_drumroll_folder(out / "text" / "test")
    assert len(human) == 37  # the official test set
    rows = {r["system"]: r for r in evaluate_systems(human, {"copy": human}, reference=human)}
    assert list(rows) == ["human", "random", "repeat", "copy"]
    assert rows["repeat"]["mean_stability"] == 0
    assert rows["random"]["mean_stability"] > 5 * rows["human"]["mean_stability"] > 0
    assert rows["copy"]["mean_stability"] == rows["human"]["mean_stability"]
    assert rows["human"]["dup_share_copied"] == 1.0


def _official_stabilities(lines: list[str]) -> list[int]:
    """Own transcription of the official analysis: 16-line bars, the first 16 kept, each bar string the
    ``readlines()`` lines joined with newlines, per inner bar the min DP distance to its neighbours."""
    raw = [line.rstrip("\n") + "\n" for line in lines]
    bar_list = [raw[i * 16 : (i + 1) * 16] for i in range(16) if raw[i * 16 : (i + 1) * 16]]
    strings = ["\n".join(b) for b in bar_list]
    return [
        min(levenshtein_dp(strings[i], strings[i - 1]), levenshtein_dp(strings[i], strings[i + 1]))
        for i in range(1, len(strings) - 1)
    ]


def test_stabilities_keep_exactly_the_first_16_bars():
    """A groove longer than 16 bars: bars 17 and 18 must not count (the 17-bar mutant changes the last value and
    the count)."""
    a = _bar({0: "----o-", 4: "---o--"})
    b = _bar({0: "----o-", 4: "---o--", 8: "--o---"})
    c = _bar({0: "oooooo", 2: "oooooo", 12: "oo-ooo"})
    lines = a * 13 + b + a + b + c + c  # 18 bars; bar 15 (b) is the last kept one, bars 16 and 17 (c) are cut
    s = stabilities(lines)
    assert s == _official_stabilities(lines)
    assert s == [0] * 12 + [1, 1]  # bar 13 (b) between a and a: 1; bar 14 (a) between b and b: 1
    longer = a * 16 + c * 4  # the 17th bar differs a lot from the 16th
    assert stabilities(longer) == [0] * 14


def _first_optimal_split(values: list[float]) -> tuple[float, float]:
    """Own transcription: every prefix/suffix split of the sorted values, the FIRST of the minimal-SSE ones."""
    v = sorted(values)
    best_sse, best = None, None
    for k in range(1, len(v)):
        left, right = v[:k], v[k:]
        c0, c1 = sum(left) / len(left), sum(right) / len(right)
        sse = sum((x - c0) ** 2 for x in left) + sum((x - c1) ** 2 for x in right)
        if best_sse is None or sse < best_sse - 1e-9:
            dist = (sum(abs(x - c0) for x in left) + sum(abs(x - c1) for x in right)) / len(v)
            best_sse, best = sse, (abs(c0 - c1), dist)
    return best


def test_two_means_takes_the_first_of_tied_splits():
    # sorted 0 0 2 3 5: the splits {0 0}|{2 3 5} and {0 0 2}|{3 5} both have SSE 14/3 and gap 10/3, but mean
    # distances 2/3 (first) and 14/15 (last)
    gap, dist = two_means_1d([5, 0, 3, 0, 2])
    assert gap == pytest.approx(10 / 3, abs=1e-12) and dist == pytest.approx(2 / 3, abs=1e-12)
    rng = random.Random(3)
    ties = 0
    for _ in range(300):
        w = [rng.randint(0, 8) for _ in range(rng.randint(3, 7))]
        if len(set(w)) < 2:
            continue
        ref = _first_optimal_split(w)
        got = two_means_1d(w)
        assert got == pytest.approx(ref, abs=1e-9), w
        ties += got != pytest.approx(_last_optimal_split(w), abs=1e-9)
    assert ties > 0  # the sample contains tied splits that the tie rule decides


def _last_optimal_split(values: list[float]) -> tuple[float, float]:
    v = sorted(values)
    cands = []
    for k in range(1, len(v)):
        left, right = v[:k], v[k:]
        c0, c1 = sum(left) / len(left), sum(right) / len(right)
        sse = sum((x - c0) ** 2 for x in left) + sum((x - c1) ** 2 for x in right)
        dist = (sum(abs(x - c0) for x in left) + sum(abs(x - c1) for x in right)) / len(v)
        cands.append((sse, (abs(c0 - c1), dist)))
    best = min(s for s, _ in cands)
    return [r for s, r in cands if s <= best + 1e-9][-1]


def test_duplication_summary_of_no_bars_is_zero():
    assert duplication_summary([]) == {"bars": 0, "share_copied": 0.0, "mean_occurrences": 0.0}
    assert duplication_summary([0, 2, 1, 0]) == {"bars": 4, "share_copied": 0.5, "mean_occurrences": 0.75}
