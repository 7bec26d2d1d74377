"""Few-shot instance segmentation evaluation with pycocotools COCOeval (RefT, arXiv 2301.01156 v3).

Reported numbers (percent, as in the paper's tables), for ``segm`` and ``bbox``:

- ``nAP`` / ``nAP50`` / ``nAP75``: COCO AP@[.5:.95] / AP50 / AP75 with ``params.catIds`` restricted to the novel ids;
- ``bAP`` / ``bAP50``: the same over the base ids;
- ``AP`` / ``AP50``: over all categories (the gFSIS overall number).

Restricting ``catIds`` is how TFA/iMTFA compute nAP/bAP: AP is averaged over the selected categories only, and
detections of other categories are ignored. Boxes are computed from the predicted masks (Mask2Former predicts masks
only; mmdet's Mask2Former does the same). An empty prediction list gives 0.0 (pycocotools cannot load one).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["coco_from_dict", "evaluate_fewshot", "masks_to_coco_results"]


def masks_to_coco_results(
    image_id: int, masks: np.ndarray, scores: Sequence[float], category_ids: Sequence[int]
) -> list[dict]:
    """COCO result dicts (RLE segmentation + mask-derived xywh box) for one image.

    Args:
        image_id: COCO image id.
        masks: (N, H, W) binary masks in the original image resolution.
        scores: (N,) confidences.
        category_ids: (N,) COCO category ids.
    """
    out = []
    masks = np.asarray(masks, dtype=np.uint8)
    for m, s, c in zip(masks, scores, category_ids, strict=True):
        rle = mask_utils.encode(np.asfortranarray(m))
        bbox = mask_utils.toBbox(rle).tolist()
        rle["counts"] = rle["counts"].decode("ascii")
        out.append(
            {"image_id": int(image_id), "category_id": int(c), "score": float(s), "segmentation": rle, "bbox": bbox}
        )
    return out


def coco_from_dict(data: dict) -> COCO:
    """Build a pycocotools ``COCO`` from an in-memory dict (quietly)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(data)
    coco.dataset.setdefault("info", {})
    coco.dataset.setdefault("licenses", [])
    for ann in coco.dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _coco_ap(gt: COCO, results: list[dict], iou_type: str, cat_ids: Sequence[int]) -> tuple[float, float, float]:
    if not results or not cat_ids:
        return 0.0, 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, iou_type)
        ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 when no GT exists for the selection
    return tuple(max(float(x), 0.0) * 100.0 for x in ev.stats[:3])  # type: ignore[return-value]


def evaluate_fewshot(
    gt: dict | COCO,
    results: list[dict],
    base_ids: Sequence[int],
    novel_ids: Sequence[int],
    iou_types: Sequence[str] = ("segm", "bbox"),
) -> dict[str, dict[str, float]]:
    """nAP, nAP50, nAP75, bAP, bAP50, AP, AP50 per IoU type (percent).

    Args:
        gt: ground-truth COCO dict or ``COCO`` object.
        results: COCO result dicts (:func:`masks_to_coco_results`).
        base_ids, novel_ids: category id groups.
        iou_types: subset of ``("segm", "bbox")``.
    """
    coco = gt if isinstance(gt, COCO) else coco_from_dict(gt)
    present = set(coco.getCatIds())
    base = [c for c in base_ids if c in present]
    novel = [c for c in novel_ids if c in present]
    out: dict[str, dict[str, float]] = {}
    for t in iou_types:
        if t not in ("segm", "bbox"):
            raise ValueError(f"iou type must be 'segm' or 'bbox', got {t!r}")
        n = _coco_ap(coco, results, t, novel)
        b = _coco_ap(coco, results, t, base)
        a = _coco_ap(coco, results, t, sorted(base + novel))
        out[t] = {
            "nAP": n[0],
            "nAP50": n[1],
            "nAP75": n[2],
            "bAP": b[0],
            "bAP50": b[1],
            "AP": a[0],
            "AP50": a[1],
        }
    return out
