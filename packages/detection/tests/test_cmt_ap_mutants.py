"""Centre-distance AP with duplicate predictions: one ground truth may be matched once only.

The reference below is written independently from the nuScenes devkit's matching rule (``accumulate``):
predictions of a class in decreasing score order, each takes the closest ground truth of its class in its sample
that no earlier prediction took, and is a true positive when that distance is within the threshold (the devkit
requires ``< threshold``, ``center_distance_ap`` ``<=``; no case here sits exactly on it). The AP is then the area
under the monotone precision envelope at 101 recall points, as ``center_distance_ap`` documents.
"""

from __future__ import annotations

import numpy as np
import pytest

from polyzoo.detection.cmt.evaluation import center_distance_ap


def _reference_ap(preds, gts, threshold):
    classes = sorted({int(c) for _, labels in gts for c in labels})
    aps = []
    for cls in classes:
        num_gt = sum(int((labels == cls).sum()) for _, labels in gts)
        flat = [
            (float(score), s, np.asarray(centre[:2], dtype=float))
            for s, (centres, scores, labels) in enumerate(preds)
            for centre, score, label in zip(centres, scores, labels, strict=True)
            if int(label) == cls
        ]
        flat.sort(key=lambda t: -t[0])
        taken: set[tuple[int, int]] = set()
        tps = []
        for _, s, centre in flat:
            g_centres, g_labels = gts[s]
            best, best_j = np.inf, None
            for j, (gc, gl) in enumerate(zip(g_centres, g_labels, strict=True)):
                if int(gl) != cls or (s, j) in taken:
                    continue
                d = float(np.hypot(*(np.asarray(gc[:2], dtype=float) - centre)))
                if d < best:
                    best, best_j = d, j
            ok = best_j is not None and best <= threshold
            if ok:
                taken.add((s, best_j))
            tps.append(1.0 if ok else 0.0)
        if not tps:
            aps.append(0.0)
            continue
        ctp = np.cumsum(tps)
        recall = ctp / num_gt
        precision = ctp / np.arange(1, len(tps) + 1)
        total = 0.0
        for r in np.linspace(0, 1, 101):
            # recall never decreases: the ranks that reach r are a suffix, the envelope is their best precision
            reached = [p for rc, p in zip(recall, precision, strict=True) if rc >= r]
            total += max(reached) if reached else 0.0
        aps.append(total / 101)
    return float(np.mean(aps))


def test_a_duplicate_prediction_is_a_false_positive():
    gt = (np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]), np.array([0, 0]))
    # two predictions on the first ground truth, then one on the second
    pred = (
        np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [10.0, 0.2, 0.0]]),
        np.array([0.9, 0.8, 0.7]),
        np.array([0, 0, 0]),
    )
    ap = center_distance_ap([pred], [gt], thresholds=(0.5,))["AP@0.5"]
    # TP, FP, TP: recall .5 .5 1, envelope 1 2/3 2/3 -> (51 * 1 + 50 * 2/3) / 101
    assert ap == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert ap == pytest.approx(_reference_ap([pred], [gt], 0.5), abs=1e-12)


def test_duplicates_match_the_reference_on_random_scenes():
    rng = np.random.default_rng(7)
    preds, gts = [], []
    for _ in range(6):
        g = rng.uniform(-20, 20, size=(int(rng.integers(1, 5)), 3))
        gl = rng.integers(0, 2, size=len(g))
        # every ground truth gets 1-3 noisy copies (duplicates), plus a few random false positives
        copies, labels = [], []
        for c, lab in zip(g, gl, strict=True):
            for _ in range(int(rng.integers(1, 4))):
                copies.append(c + rng.normal(0, 0.6, size=3))
                labels.append(int(lab))
        for _ in range(int(rng.integers(0, 3))):
            copies.append(rng.uniform(-20, 20, size=3))
            labels.append(int(rng.integers(0, 2)))
        preds.append((np.array(copies), rng.uniform(0, 1, size=len(copies)), np.array(labels)))
        gts.append((g, gl))
    out = center_distance_ap(preds, gts)
    for t in (0.5, 1.0, 2.0, 4.0):
        assert out[f"AP@{t:g}"] == pytest.approx(_reference_ap(preds, gts, t), abs=1e-12), t
    assert out["AP@4"] < 1.0  # duplicates cost precision even at the widest threshold


def test_a_class_without_predictions_scores_zero():
    # class 0 found perfectly, class 1 has ground truth but no prediction at all: mAP = (1 + 0) / 2
    gt = (np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0]]), np.array([0, 1]))
    pred = (np.array([[0.0, 0.0, 0.0]]), np.array([0.9]), np.array([0]))
    out = center_distance_ap([pred], [gt], thresholds=(1.0,))
    assert out["AP@1"] == pytest.approx(0.5, abs=1e-12)
    assert out["AP@1"] == pytest.approx(_reference_ap([pred], [gt], 1.0), abs=1e-12)
