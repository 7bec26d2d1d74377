"""CMT's centre-distance AP against the nuScenes devkit's matching rule, on hand-made cases with duplicates.

The devkit (``nuscenes.eval.detection.algo.accumulate`` + ``calc_ap``; nuscenes-devkit is installed with mmdet3d)
matches predictions of one class in descending score order, each to the closest ground truth of its sample not yet
taken, when the BEV centre distance is below the threshold; a ground truth is matched at most once, so a duplicate
prediction on a taken ground truth is a false positive. AP: precision interpolated at 101 recall points, the bins
at or below ``min_recall`` (0.1) dropped, ``min_precision`` (0.1) subtracted and the rest rescaled.

Here: (1) a transcription of that rule, written in this file, is checked against the devkit's own functions
(called directly) on every case; (2) polyzoo's :func:`center_distance_ap` is checked to match exactly the same
predictions: its AP equals the transcription's true-positive sequence integrated with polyzoo's documented
integration (the monotone precision envelope at 101 recall points, no min-recall / min-precision clipping; see
the module docstring), written here too. Ties in score and distances equal to the threshold are avoided: the
devkit breaks score ties by the later prediction first and matches on ``<``; polyzoo on the earlier one and ``<=``.
"""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.eval.common.data_classes import EvalBoxes  # nuscenes-devkit: a locked dependency of mmdet3d
from nuscenes.eval.common.utils import center_distance
from nuscenes.eval.detection import algo
from nuscenes.eval.detection.data_classes import DetectionBox

from polyzoo.detection.cmt.evaluation import center_distance_ap

NAMES = ("car", "pedestrian")  # label 0, 1

# A case: per sample (pred centres (N, 2), scores (N,), labels (N,)) and (gt centres (G, 2), labels (G,)).


def _p(centres, scores, labels=None):
    centres = np.asarray(centres, dtype=float).reshape(-1, 2)
    labels = np.zeros(len(centres), dtype=int) if labels is None else np.asarray(labels)
    return centres, np.asarray(scores, dtype=float), labels


def _g(centres, labels=None):
    centres = np.asarray(centres, dtype=float).reshape(-1, 2)
    return centres, (np.zeros(len(centres), dtype=int) if labels is None else np.asarray(labels))


HAND_CASES = {
    # three predictions on one ground truth: one TP, two FP (a GT matched twice would give recall 3)
    "duplicates_on_one_gt": ([_p([[0.1, 0], [0.2, 0], [-0.1, 0.1]], [0.9, 0.8, 0.7])], [_g([[0, 0]])]),
    # the duplicate scores highest but is farther: it takes the GT, the closer one is the FP
    "duplicate_scored_first": ([_p([[0.4, 0], [0.05, 0]], [0.95, 0.6])], [_g([[0, 0]])]),
    # two GTs; the top prediction sits between them, a duplicate of the first follows, then one on the second
    "duplicates_two_gts": (
        [_p([[0.3, 0], [0.1, 0], [2.9, 0], [0.0, 0.2], [9, 9]], [0.9, 0.85, 0.8, 0.7, 0.6])],
        [_g([[0, 0], [3, 0]])],
    ),
    # the closest untaken GT is chosen: after the near GT is taken the duplicate falls to the far one if in range
    "second_choice_gt": ([_p([[0.45, 0], [0.45, 0]], [0.9, 0.8])], [_g([[0, 0], [1.2, 0]])]),
    # two samples: a prediction never matches a GT of another sample
    "two_samples": (
        [_p([[0, 0], [0.1, 0]], [0.9, 0.3]), _p([[0, 0], [5, 5]], [0.7, 0.5])],
        [_g([[0, 0]]), _g([[0.2, 0], [5.3, 5]])],
    ),
    # two classes: a pedestrian prediction on a car GT is a false positive of its class
    "two_classes": (
        [_p([[0, 0], [0.1, 0], [3, 3], [3.1, 3]], [0.9, 0.8, 0.7, 0.6], [0, 1, 1, 1])],
        [_g([[0, 0], [3, 3]], [0, 1])],
    ),
    # the low-score true positives come after false positives: precision is not monotone
    "late_true_positives": (
        [_p([[8, 8], [0, 0.1], [7, 7], [6, 6], [3, 0.2], [3.1, 0], [5, 5]], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])],
        [_g([[0, 0], [3, 0], [10, 0]])],
    ),
}


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(3):
        g = rng.uniform(-10, 10, (int(rng.integers(1, 5)), 2))
        gl = rng.integers(0, 2, len(g))
        dup = g[rng.integers(0, len(g), 6)] + rng.normal(0, 0.6, (6, 2))  # several predictions per GT
        far = rng.uniform(-10, 10, (2, 2))
        pc = np.concatenate([dup, far])
        pl = np.concatenate([gl[np.argmin(np.linalg.norm(g[None] - dup[:, None], axis=2), axis=1)], [0, 1]])
        preds.append((pc, rng.random(len(pc)), pl))
        gts.append((g, gl))
    return preds, gts


CASES = {**HAND_CASES, **{f"random_{s}": _random_case(s) for s in range(8)}}


# ---------------------------------------------------------------- the devkit's rule, transcribed
def _greedy_match(preds, gts, label: int, threshold: float) -> tuple[np.ndarray, int]:
    """True-positive flags of class ``label``'s predictions in descending score order, and the GT count."""
    flat = [
        (s, float(sc), c)
        for s, (pc, ps, pl) in enumerate(preds)
        for c, sc, lab in zip(pc, ps, pl, strict=True)
        if lab == label
    ]
    flat.sort(key=lambda t: t[1], reverse=True)
    taken: set[tuple[int, int]] = set()
    flags = []
    for s, _, centre in flat:
        best, best_j = np.inf, None
        for j, (gc, lab) in enumerate(zip(*gts[s], strict=True)):
            if lab == label and (s, j) not in taken:
                d = float(np.hypot(*(gc[:2] - centre[:2])))
                if d < best:
                    best, best_j = d, j
        hit = best < threshold
        if hit:
            taken.add((s, best_j))
        flags.append(1.0 if hit else 0.0)
    return np.array(flags), sum(int((g[1] == label).sum()) for g in gts)


def _devkit_ap_from_flags(flags: np.ndarray, npos: int, min_recall: float, min_precision: float) -> float:
    if flags.sum() == 0:
        return 0.0  # the devkit's no_predictions(): precision all zero
    tp = np.cumsum(flags)
    precision = tp / np.arange(1, len(flags) + 1)
    prec = np.interp(np.linspace(0, 1, 101), tp / npos, precision, right=0)
    prec = prec[round(100 * min_recall) + 1 :] - min_precision
    return float(np.mean(np.clip(prec, 0, None))) / (1 - min_precision)


def _envelope_ap_from_flags(flags: np.ndarray, npos: int) -> float:
    """101-point interpolated AP on the monotone envelope (precision at recall ≥ r, maximised), no clipping."""
    if len(flags) == 0:
        return 0.0
    tp = np.cumsum(flags)
    recall, precision = tp / npos, tp / np.arange(1, len(flags) + 1)
    points = [
        max((p for r, p in zip(recall, precision, strict=True) if r >= level), default=0.0)
        for level in np.linspace(0, 1, 101)
    ]
    return float(np.mean(points))


# ---------------------------------------------------------------- the devkit itself
def _devkit_ap(preds, gts, label: int, threshold: float, min_recall: float, min_precision: float) -> float:
    gt_boxes, pred_boxes = EvalBoxes(), EvalBoxes()
    for s, ((pc, ps, pl), (gc, gl)) in enumerate(zip(preds, gts, strict=True)):
        common = {"size": (1.0, 1.0, 1.0), "rotation": (1.0, 0.0, 0.0, 0.0)}
        gt_boxes.add_boxes(
            f"s{s}",
            [
                DetectionBox(f"s{s}", (*c[:2], 0.0), detection_name=NAMES[int(lab)], **common)
                for c, lab in zip(gc, gl, strict=True)
            ],
        )
        pred_boxes.add_boxes(
            f"s{s}",
            [
                DetectionBox(
                    f"s{s}", (*c[:2], 0.0), detection_name=NAMES[int(lab)], detection_score=float(sc), **common
                )
                for c, sc, lab in zip(pc, ps, pl, strict=True)
            ],
        )
    md = algo.accumulate(gt_boxes, pred_boxes, NAMES[label], center_distance, threshold)
    return algo.calc_ap(md, min_recall, min_precision)


def _labels(gts) -> list[int]:
    return sorted({int(lab) for _, gl in gts for lab in gl})


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_transcribed_rule_equals_the_devkit(name, threshold):
    preds, gts = CASES[name]
    for label in _labels(gts):
        flags, npos = _greedy_match(preds, gts, label, threshold)
        for min_recall, min_precision in [(0.1, 0.1), (0.0, 0.0)]:
            ours = _devkit_ap_from_flags(flags, npos, min_recall, min_precision)
            assert ours == pytest.approx(_devkit_ap(preds, gts, label, threshold, min_recall, min_precision), abs=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_center_distance_ap_matches_like_the_devkit(name):
    preds, gts = CASES[name]
    thresholds = (0.5, 1.0, 2.0, 4.0)
    got = center_distance_ap(preds, gts, thresholds=thresholds)
    for t in thresholds:
        per_class = [_envelope_ap_from_flags(*_greedy_match(preds, gts, label, t)) for label in _labels(gts)]
        assert got[f"AP@{t:g}"] == pytest.approx(float(np.mean(per_class)), abs=1e-12), (name, t)


def test_duplicates_on_one_ground_truth_are_false_positives():
    preds, gts = HAND_CASES["duplicates_on_one_gt"]
    flags, npos = _greedy_match(preds, gts, 0, 0.5)
    assert flags.tolist() == [1.0, 0.0, 0.0] and npos == 1
    # one TP first reaches recall 1 at precision 1, so AP is 1 either way; the next case is where duplicates count
    assert center_distance_ap(preds, gts, thresholds=(0.5,))["AP@0.5"] == pytest.approx(1.0)
    preds, gts = HAND_CASES["duplicates_two_gts"]
    flags, npos = _greedy_match(preds, gts, 0, 0.5)
    assert flags.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0] and npos == 2
    expected = _envelope_ap_from_flags(flags, npos)  # precision 1 to recall 0.5, 2/3 to recall 1
    assert expected == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    assert center_distance_ap(preds, gts, thresholds=(0.5,))["AP@0.5"] == pytest.approx(expected, abs=1e-12)
    assert _devkit_ap(preds, gts, 0, 0.5, 0.1, 0.1) == pytest.approx(_devkit_ap_from_flags(flags, npos, 0.1, 0.1))
