"""``RefT``: mmdet's ``Mask2Former`` detector with RefT references, support banks and the iFSIS teacher."""

from __future__ import annotations

import torch
from mmdet.models.detectors import Mask2Former
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from torch import Tensor, nn

from ..modules import ClassEnhancedKDLoss
from .reft_head import RefTHead
from .support_refs import SupportRefs

__all__ = ["ROLE_KEY", "RefT"]

ROLE_KEY = "reft_role"
"""``metainfo`` key marking a data sample as a support image (value ``"support"``)."""


@MODELS.register_module()
class RefT(Mask2Former):
    """Mask2Former detector with RefT references (``panoptic_head`` must be a :class:`RefTHead`).

    Extra args:
        distill: optional dict(base_class_ids=[...], cls_weight=2.0, feat_weight=1.0, temperature=1.0); the teacher
            itself is attached with :meth:`attach_teacher` (a frozen base model).
    """

    ROLE_KEY = ROLE_KEY

    def __init__(self, *args, distill: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.panoptic_head, RefTHead):
            raise TypeError(f"RefT needs panoptic_head of type RefTHead, got {type(self.panoptic_head).__name__}")
        self._bank: SupportRefs | None = None
        self._base_bank: SupportRefs | None = None  # in the teacher's (base) label space
        self._base_bank_student: SupportRefs | None = None  # the same, padded to our label space
        self._teacher: list[nn.Module] = []  # a list hides the teacher from state_dict / parameters()
        self.kd_loss = ClassEnhancedKDLoss(**distill) if distill else None

    # ------------------------------------------------------------------ references
    def set_support_bank(self, refs: SupportRefs | None) -> None:
        """References used when a batch carries no support image (test time)."""
        self._bank = None if refs is None else refs.detach()

    def set_base_bank(self, refs: SupportRefs | None) -> None:
        """Base-class references kept from base training (iFSIS), in the base model's label space: the teacher sees
        them as they are, and they are merged under every support set of this (grown) model."""
        self._base_bank = None if refs is None else refs.detach()
        self._base_bank_student = None
        if self._base_bank is not None:
            self._base_bank_student = self._base_bank.with_num_classes(self.panoptic_head.num_classes)

    def attach_teacher(self, teacher: nn.Module) -> None:
        """Frozen base model for the class-enhanced KD (iFSIS)."""
        if self.kd_loss is None:
            raise ValueError("attach_teacher needs the model to be built with distill=dict(base_class_ids=...)")
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self._teacher = [teacher]

    def split_roles(self, batch_inputs: Tensor, batch_data_samples: SampleList):
        s_idx = [i for i, d in enumerate(batch_data_samples) if d.metainfo.get(self.ROLE_KEY) == "support"]
        q_idx = [i for i in range(len(batch_data_samples)) if i not in set(s_idx)]
        return (
            batch_inputs[q_idx],
            [batch_data_samples[i] for i in q_idx],
            batch_inputs[s_idx] if s_idx else None,
            [batch_data_samples[i] for i in s_idx],
        )

    def compute_refs(self, support_inputs: Tensor, support_samples: SampleList) -> SupportRefs:
        return self.panoptic_head.forward_support(self.extract_feat(support_inputs), support_samples)

    def references(self, s_in: Tensor | None, s_samples: SampleList) -> SupportRefs | None:
        """References of a batch: its support images' (else the stored bank), over the base bank when one is set."""
        refs = self.compute_refs(s_in, s_samples) if s_in is not None else self._bank
        if self._base_bank_student is not None:
            refs = self._base_bank_student if refs is None else self._base_bank_student.merge(refs)
        return refs

    # ------------------------------------------------------------------ mmdet API
    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict[str, Tensor]:
        q_in, q_samples, s_in, s_samples = self.split_roles(batch_inputs, batch_data_samples)
        if not q_samples:
            raise ValueError("RefT.loss: the batch has no query image (every data sample is marked as support)")
        return self.loss_with_refs(q_in, q_samples, self.references(s_in, s_samples))

    def loss_with_refs(self, q_in: Tensor, q_samples: SampleList, refs: SupportRefs | None) -> dict[str, Tensor]:
        """Losses of the query images given their references (computed by the caller, e.g. without gradient); the
        iFSIS distillation term is added when a teacher is attached."""
        x = self.extract_feat(q_in)
        if self.kd_loss is None or not self._teacher:
            return self.panoptic_head.loss(x, q_samples, refs)
        head: RefTHead = self.panoptic_head
        metas = [s.metainfo for s in q_samples]
        cls_list, mask_list, feats = head.forward_with_features(x, refs)
        sems = [s.gt_sem_seg if "gt_sem_seg" in s else None for s in q_samples]
        gts = head.preprocess_gt([s.gt_instances for s in q_samples], sems)
        losses = head.loss_by_feat(cls_list, mask_list, gts, metas)
        teacher = self._teacher[0]
        with torch.no_grad():
            t_cls, _, t_feats = teacher.panoptic_head.forward_with_features(teacher.extract_feat(q_in), self._base_bank)
        losses.update(self.kd_loss(cls_list[-1], t_cls[-1], feats, t_feats))
        return losses

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList, rescale: bool = True) -> SampleList:
        q_in, q_samples, s_in, s_samples = self.split_roles(batch_inputs, batch_data_samples)
        refs = self.references(s_in, s_samples)
        feats = self.extract_feat(q_in)
        cls, masks = self.panoptic_head.predict(feats, q_samples, refs)
        results = self.panoptic_fusion_head.predict(cls, masks, q_samples, rescale=rescale)
        return self.add_pred_to_datasample(q_samples, results)

    def _forward(self, batch_inputs: Tensor, batch_data_samples: SampleList):
        q_in, q_samples, s_in, s_samples = self.split_roles(batch_inputs, batch_data_samples)
        return self.panoptic_head(self.extract_feat(q_in), q_samples, self.references(s_in, s_samples))
