"""RefT: Reference Twice, few-shot instance segmentation (arXiv 2301.01156 v3) as an mmdet 3.x plugin.

Plain-PyTorch modules in :mod:`.modules`; protocols (COCO 60/20 split, TFA-style K-shot files, settings, support
sampler) in :mod:`.protocols`; COCOeval nAP/bAP in :mod:`.evaluation`. The mmdet adapters follow mmdet's
``projects/`` layout: ``models/`` (``RefT``, ``RefTHead``, ``SupportRefs``, ``compute_support_bank``), ``datasets/``
(``RefTEpisodeDataset``, ``reft_collate``), ``hooks/`` (``RefTSupportBankHook``) and ``evaluation/fewshot_metric.py``
(``FewShotCocoMetric``); :mod:`.mmdet_plugin` imports them all and is what the configs name in ``custom_imports``.
Importing this package (or :mod:`.evaluation`) stays light: mmdet is only imported by those adapters.
"""

from .modules import (
    ClassEnhancedKDLoss,
    CosineClassifier,
    MaskDynamicWeighting,
    QueryLinking,
    class_centres,
    mask_pool,
    select_topk_support_queries,
)

__all__ = [
    "ClassEnhancedKDLoss",
    "CosineClassifier",
    "MaskDynamicWeighting",
    "QueryLinking",
    "class_centres",
    "mask_pool",
    "select_topk_support_queries",
]
