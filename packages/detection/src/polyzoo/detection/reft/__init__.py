"""RefT: Reference Twice, few-shot instance segmentation (arXiv 2301.01156 v3) as an mmdet 3.x plugin.

Plain-PyTorch modules in :mod:`.modules`; protocols (COCO 60/20 split, TFA-style K-shot files, settings, support
sampler) in :mod:`.protocols`; COCOeval nAP/bAP in :mod:`.evaluation`; the mmdet registry adapters (``RefT``,
``RefTHead``, ``RefTEpisodeDataset``, ``reft_collate``) in :mod:`.mmdet_plugin`, imported by the configs through
``custom_imports``. Importing this package stays light: mmdet is only imported by :mod:`.mmdet_plugin`.
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
