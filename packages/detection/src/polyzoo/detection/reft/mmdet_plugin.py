"""RefT as an mmdet 3.x plugin on mmdet's Mask2Former (arXiv 2301.01156 v3; no official code exists).

The entry point of the configs' ``custom_imports``: importing it registers every RefT piece with mmdet/mmengine. The
pieces follow mmdet's ``projects/`` layout:

- ``models/``: ``RefTHead`` (a ``Mask2FormerHead``, ``reft_head.py``) and ``RefT`` (a ``Mask2Former``, ``reft.py``) in
  ``MODELS``; :class:`SupportRefs` (``support_refs.py``) and :func:`compute_support_bank` (``support_bank.py``);
- ``datasets/``: ``RefTEpisodeDataset`` in ``DATASETS`` and ``reft_collate`` in mmengine's ``FUNCTIONS``;
- ``hooks/``: ``RefTSupportBankHook`` in ``HOOKS``;
- ``evaluation/``: ``FewShotCocoMetric`` in ``METRICS`` (COCOeval nAP/bAP in ``evaluation/coco_fewshot.py``).

The math lives in :mod:`polyzoo.detection.reft.modules` (plain PyTorch); these modules only wire it into mmdet.

Data flow (choices where the paper is silent are marked *ours*):

- Support and query images share the backbone, pixel decoder and transformer decoder. A batch may mix both: a data
  sample whose ``metainfo['reft_role'] == 'support'`` is a support image (see :class:`RefTEpisodeDataset`), all others
  are query images. Losses are computed on query images only (*ours*).
- Support pass (:meth:`RefTHead.forward_support`): the support GT masks pool the *input-projected* multi-scale
  memories of the pixel decoder (the same tensors the transformer decoder attends to) into per-level class centres;
  the support images then run through the decoder without references and the top-K object queries per support class
  are kept (:class:`SupportRefs`).
- Query pass (:meth:`RefTHead.forward`): per level, the query image's projected memory is re-weighted by
  :class:`MaskDynamicWeighting` against that level's centres (one module per level, *ours*) before the level embedding
  is added; after every decoder layer the object queries are linked to the support queries by
  :class:`QueryLinking` before the class/mask heads.
- At test time the references come from a stored support bank (:meth:`RefT.set_support_bank`, computed from the
  K-shot set once by :func:`compute_support_bank`) or from support images in the batch.
- iFSIS: :meth:`RefT.attach_teacher` gives a frozen base model; the student's loss adds
  :class:`ClassEnhancedKDLoss` between teacher and student class logits (base columns) and input-projection features.
  Base references for the student and teacher come from a support bank saved at the end of base training
  (features, not annotations), so fine-tuning reads no base annotation (*ours*).
- With no references at all (empty support) RefT reduces exactly to Mask2Former: the reference modules are residual
  and skipped.

Runner integration (``tools/train.py`` / ``tools/test.py``): :class:`RefTEpisodeDataset` + :func:`reft_collate` put
one support episode (every class of the support pool, ``shots_per_class`` images each) into each training batch;
:class:`RefTSupportBankHook` recomputes the support bank before every validation/test epoch; :class:`FewShotCocoMetric`
reports nAP / nAP50 / bAP / AP through pycocotools COCOeval (``fewshot/segm_nAP`` ...).
"""

from __future__ import annotations

from .datasets import RefTEpisodeDataset, reft_collate
from .evaluation.fewshot_metric import FewShotCocoMetric
from .hooks import RefTSupportBankHook
from .models import RefT, RefTHead, SupportRefs, compute_support_bank

__all__ = [
    "FewShotCocoMetric",
    "RefT",
    "RefTEpisodeDataset",
    "RefTHead",
    "RefTSupportBankHook",
    "SupportRefs",
    "compute_support_bank",
    "reft_collate",
]
