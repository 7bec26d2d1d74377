"""Few-shot COCOeval (nAP/bAP) in :mod:`.coco_fewshot` (pycocotools only, light to import) and its mmengine
metric ``FewShotCocoMetric`` in :mod:`.fewshot_metric` (imports mmdet; registered by
:mod:`polyzoo.detection.reft.mmdet_plugin`)."""

from .coco_fewshot import coco_from_dict, evaluate_fewshot, masks_to_coco_results

__all__ = ["coco_from_dict", "evaluate_fewshot", "masks_to_coco_results"]
