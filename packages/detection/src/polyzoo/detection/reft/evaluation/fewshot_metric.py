"""``FewShotCocoMetric``: the nAP/bAP numbers of :mod:`.coco_fewshot` as an mmengine metric
(``mmdet.registry.METRICS``)."""

from __future__ import annotations

from collections.abc import Sequence

from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric

__all__ = ["FewShotCocoMetric"]


@METRICS.register_module()
class FewShotCocoMetric(BaseMetric):
    """COCOeval ``segm``/``bbox`` as nAP, nAP50, nAP75, bAP, bAP50, AP, AP50 (:func:`.coco_fewshot.evaluate_fewshot`).

    Args:
        ann_file: ground-truth COCO json.
        novel_ids: novel COCO category ids (default: the 20 VOC ids of the COCO 60/20 split); every other category
            of ``ann_file`` is base.
        iou_types: ``("segm", "bbox")`` by default.
        score_thr: predictions below this score are dropped before COCOeval.
        classes: the model's class names in label order (e.g. the 60 base names for a base model); label ``j`` is
            the category of that name. Default: the categories of ``ann_file`` in id order.
    """

    default_prefix = "fewshot"

    def __init__(
        self,
        ann_file: str,
        novel_ids: Sequence[int] | None = None,
        iou_types: Sequence[str] = ("segm", "bbox"),
        score_thr: float = 0.0,
        classes: Sequence[str] | None = None,
        collect_device: str = "cpu",
        prefix: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        import json

        from ..protocols import COCO_NOVEL_IDS

        with open(ann_file, encoding="utf-8") as fh:
            self.gt = json.load(fh)
        self.cat_ids = sorted(int(c["id"]) for c in self.gt["categories"])
        by_name = {c["name"]: int(c["id"]) for c in self.gt["categories"]}
        if classes is not None:
            unknown = [n for n in classes if n not in by_name]
            if unknown:
                raise ValueError(f"{ann_file}: classes {unknown} are not categories of this file")
        self.label_to_cat = [by_name[n] for n in classes] if classes is not None else list(self.cat_ids)
        self.novel_ids = [int(c) for c in (COCO_NOVEL_IDS if novel_ids is None else novel_ids)]
        self.base_ids = [c for c in self.cat_ids if c not in set(self.novel_ids)]
        self.iou_types = tuple(iou_types)
        self.score_thr = score_thr

    def process(self, data_batch, data_samples) -> None:
        from .coco_fewshot import masks_to_coco_results

        for sample in data_samples:
            pred = sample["pred_instances"]
            keep = pred["scores"] > self.score_thr
            masks = pred["masks"][keep].cpu().numpy()
            labels = pred["labels"][keep].tolist()
            self.results.extend(
                masks_to_coco_results(
                    sample["img_id"], masks, pred["scores"][keep].tolist(), [self.label_to_cat[j] for j in labels]
                )
            )

    def compute_metrics(self, results: list) -> dict[str, float]:
        from .coco_fewshot import evaluate_fewshot

        out = evaluate_fewshot(self.gt, results, self.base_ids, self.novel_ids, self.iou_types)
        return {f"{t}_{k}": v for t, d in out.items() for k, v in d.items()}
