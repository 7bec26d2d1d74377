"""Centre-distance average precision (nuScenes-style matching), plain NumPy.

nuScenes matches a prediction to the closest unmatched ground truth of its class whose BEV centre lies within a
distance threshold (0.5, 1, 2, 4 m), predictions taken in decreasing score order. AP here is the area under the
monotone precision envelope sampled at 101 recall points in [0, 1] (COCO-style), averaged over classes that have
ground truth. Deviation from the devkit: no min-recall/min-precision clipping (0.1) and no per-class range filter;
the devkit's ``NuScenesMetric`` needs the full nuScenes database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _ap_one_class(
    preds: list[tuple[int, float, np.ndarray]], gts: dict[int, np.ndarray], threshold: float
) -> float | None:
    num_gt = sum(len(g) for g in gts.values())
    if num_gt == 0:
        return None
    order = sorted(range(len(preds)), key=lambda i: -preds[i][1])
    used = {k: np.zeros(len(v), dtype=bool) for k, v in gts.items()}
    tp = np.zeros(len(order))
    for rank, i in enumerate(order):
        sample, _, centre = preds[i]
        g = gts.get(sample)
        if g is None or len(g) == 0:
            continue
        dist = np.linalg.norm(g - centre[None], axis=1)
        dist[used[sample]] = np.inf
        j = int(np.argmin(dist))
        if dist[j] <= threshold:
            used[sample][j] = True
            tp[rank] = 1
    if len(order) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / num_gt
    precision = ctp / np.arange(1, len(order) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    grid = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, grid, side="left")
    sampled = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


def center_distance_ap(
    predictions: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ground_truths: Iterable[tuple[np.ndarray, np.ndarray]],
    thresholds: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
) -> dict[str, float]:
    """mAP over classes for each threshold, and their mean.

    Args:
        predictions: per sample ``(centres (N, ≥2), scores (N,), labels (N,))``.
        ground_truths: per sample ``(centres (G, ≥2), labels (G,))``; samples align with ``predictions``.
    Returns:
        ``{"AP@0.5": ..., ..., "mAP": mean over thresholds}`` (values in [0, 1]).
    """
    preds_by_class: dict[int, list[tuple[int, float, np.ndarray]]] = {}
    gts_by_class: dict[int, dict[int, np.ndarray]] = {}
    preds, gts = list(predictions), list(ground_truths)
    if len(preds) != len(gts):
        raise ValueError(f"center_distance_ap: {len(preds)} prediction samples but {len(gts)} ground-truth samples")
    for s, ((pc, ps, pl), (gc, gl)) in enumerate(zip(preds, gts, strict=True)):
        for c, sc, lab in zip(np.asarray(pc)[:, :2], np.asarray(ps), np.asarray(pl), strict=True):
            preds_by_class.setdefault(int(lab), []).append((s, float(sc), c))
        gc, gl = np.asarray(gc).reshape(-1, np.asarray(gc).shape[-1] if np.asarray(gc).size else 2), np.asarray(gl)
        for lab in np.unique(gl):
            gts_by_class.setdefault(int(lab), {})[s] = gc[gl == lab, :2]
    out: dict[str, float] = {}
    for t in thresholds:
        aps = [_ap_one_class(preds_by_class.get(c, []), gts_by_class[c], t) for c in sorted(gts_by_class)]
        aps = [a for a in aps if a is not None]
        out[f"AP@{t:g}"] = float(np.mean(aps)) if aps else 0.0
    out["mAP"] = float(np.mean([out[f"AP@{t:g}"] for t in thresholds]))
    return out
