"""RefT as an mmdet 3.x plugin on mmdet's Mask2Former (arXiv 2301.01156 v3; no official code exists).

Registered in ``mmdet.registry.MODELS``: ``RefTHead`` (a ``Mask2FormerHead``) and ``RefT`` (a ``Mask2Former``).
The math lives in :mod:`polyzoo.detection.reft.modules` (plain PyTorch); this file only wires it into mmdet.

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

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import Mask2FormerHead
from mmdet.models.detectors import Mask2Former
from mmdet.registry import DATASETS, HOOKS, METRICS, MODELS
from mmdet.structures import SampleList
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from torch import Tensor, nn

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
    "FewShotCocoMetric",
    "RefT",
    "RefTEpisodeDataset",
    "RefTHead",
    "RefTSupportBankHook",
    "SupportRefs",
    "compute_support_bank",
    "reft_collate",
]


@dataclass
class SupportRefs:
    """References from a support set.

    Attributes:
        centres: list over decoder feature levels of (num_classes, C) class centres.
        present: (num_classes,) bool, classes with at least one support instance.
        queries: (P, C) selected support object queries; ``query_labels`` (P,) their classes.
    """

    centres: list[Tensor]
    present: Tensor
    queries: Tensor
    query_labels: Tensor

    def detach(self) -> SupportRefs:
        return SupportRefs([c.detach() for c in self.centres], self.present, self.queries.detach(), self.query_labels)

    def merge(self, other: SupportRefs) -> SupportRefs:
        """Union of two reference sets; centres of classes present in ``other`` replace ours."""
        centres = [torch.where(other.present[:, None], o, c) for c, o in zip(self.centres, other.centres, strict=True)]
        keep = ~other.present[self.query_labels] if self.query_labels.numel() else self.query_labels.bool()
        return SupportRefs(
            centres,
            self.present | other.present,
            torch.cat([self.queries[keep], other.queries]),
            torch.cat([self.query_labels[keep], other.query_labels]),
        )

    def with_num_classes(self, num_classes: int) -> SupportRefs:
        """The same references in a label space of ``num_classes`` ≥ ours: the added classes are absent (iFSIS: a
        base model's bank used by the grown base + novel model; class ids of the base classes are unchanged)."""
        have = int(self.present.numel())
        if num_classes < have:
            raise ValueError(f"cannot shrink references from {have} to {num_classes} classes")
        extra = num_classes - have
        return SupportRefs(
            [torch.cat([c, c.new_zeros(extra, c.shape[1])]) for c in self.centres],
            torch.cat([self.present, self.present.new_zeros(extra)]),
            self.queries,
            self.query_labels,
        )

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"centres.{i}": c for i, c in enumerate(self.centres)}
        out.update(present=self.present, queries=self.queries, query_labels=self.query_labels)
        return out

    @classmethod
    def from_state_dict(cls, sd: dict[str, Tensor]) -> SupportRefs:
        n = sum(1 for k in sd if k.startswith("centres."))
        return cls([sd[f"centres.{i}"] for i in range(n)], sd["present"].bool(), sd["queries"], sd["query_labels"])


def _instance_masks(gt_instances, device: torch.device) -> Tensor:
    masks = gt_instances.masks
    if hasattr(masks, "to_tensor"):
        return masks.to_tensor(dtype=torch.float32, device=device)
    return masks.to(device=device, dtype=torch.float32)


@MODELS.register_module()
class RefTHead(Mask2FormerHead):
    """Mask2Former head with RefT's two references.

    Extra args:
        reft_num_heads: heads of the two reference cross-attentions (default: the decoder's).
        topk: support object queries kept per class.
        use_mdw, use_linking: switch each reference (both on = RefT; both off = plain Mask2Former).
        cosine_cls_scale: if set, the class head is a :class:`CosineClassifier` with this scale (iFSIS "w/ Cos").
    """

    def __init__(
        self,
        *args,
        reft_num_heads: int | None = None,
        topk: int = 5,
        use_mdw: bool = True,
        use_linking: bool = True,
        cosine_cls_scale: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        dims = self.decoder_embed_dims
        heads = reft_num_heads or self.num_heads
        self.topk = topk
        self.use_mdw = use_mdw
        self.use_linking = use_linking
        self.mdw = nn.ModuleList([MaskDynamicWeighting(dims, heads) for _ in range(self.num_transformer_feat_level)])
        self.linking = QueryLinking(dims, heads)
        if cosine_cls_scale is not None:
            self.cls_embed = CosineClassifier(self.cls_embed.in_features, self.num_classes + 1, cosine_cls_scale)

    def init_weights(self) -> None:
        super().init_weights()
        # super() re-initialises every decoder parameter; the reference modules keep their identity start
        for m in [*self.mdw, self.linking]:
            nn.init.zeros_(m.attn.out_proj.weight)
            nn.init.zeros_(m.attn.out_proj.bias)

    # ------------------------------------------------------------------ shared parts
    def _memories(self, x: Sequence[Tensor]) -> tuple[Tensor, list[Tensor], list[tuple[int, int]]]:
        """Pixel decoder + input projections: mask features, per level (B, HW, C) projected memories and sizes."""
        mask_features, multi_scale_memorys = self.pixel_decoder(x)
        projected, sizes = [], []
        for i in range(self.num_transformer_feat_level):
            mem = self.decoder_input_projs[i](multi_scale_memorys[i])
            sizes.append(tuple(mem.shape[-2:]))
            projected.append(mem.flatten(2).permute(0, 2, 1))
        return mask_features, projected, sizes

    def _decode(
        self, mask_features: Tensor, inputs: list[Tensor], sizes: list[tuple[int, int]], refs: SupportRefs | None
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        batch_size = mask_features.shape[0]
        keys, poss = [], []
        for i, (inp, hw) in enumerate(zip(inputs, sizes, strict=True)):
            if refs is not None and self.use_mdw:
                inp = self.mdw[i](inp, refs.centres[i], refs.present)
            keys.append(inp + self.level_embed.weight[i].view(1, 1, -1))
            pad = inp.new_zeros((batch_size, *hw), dtype=torch.bool)
            poss.append(self.decoder_positional_encoding(pad).flatten(2).permute(0, 2, 1))
        link = refs is not None and self.use_linking and refs.queries.shape[0] > 0

        def head(q: Tensor, level: int) -> tuple[Tensor, Tensor, Tensor]:
            if link:
                q = self.linking(q, refs.queries)  # type: ignore[union-attr]
            return self._forward_head(q, mask_features, sizes[level])

        query_feat = self.query_feat.weight.unsqueeze(0).repeat((batch_size, 1, 1))
        query_embed = self.query_embed.weight.unsqueeze(0).repeat((batch_size, 1, 1))
        cls_pred, mask_pred, attn_mask = head(query_feat, 0)
        cls_list, mask_list = [cls_pred], [mask_pred]
        for i in range(self.num_transformer_decoder_layers):
            level = i % self.num_transformer_feat_level
            mask_sum = (attn_mask.sum(-1) != attn_mask.shape[-1]).unsqueeze(-1)
            attn_mask = attn_mask & mask_sum
            query_feat = self.transformer_decoder.layers[i](
                query=query_feat,
                key=keys[level],
                value=keys[level],
                query_pos=query_embed,
                key_pos=poss[level],
                cross_attn_mask=attn_mask,
                query_key_padding_mask=None,
                key_padding_mask=None,
            )
            cls_pred, mask_pred, attn_mask = head(query_feat, (i + 1) % self.num_transformer_feat_level)
            cls_list.append(cls_pred)
            mask_list.append(mask_pred)
        return cls_list, mask_list, query_feat

    # ------------------------------------------------------------------ support / query passes
    def forward_support(self, x: Sequence[Tensor], batch_data_samples: SampleList) -> SupportRefs:
        """Class centres and top-K object queries of a support batch (images with ``gt_instances``)."""
        mask_features, inputs, sizes = self._memories(x)
        device = mask_features.device
        masks = [_instance_masks(s.gt_instances, device) for s in batch_data_samples]
        labels = [s.gt_instances.labels.to(device) for s in batch_data_samples]
        all_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
        centres, present = [], None
        for inp, hw in zip(inputs, sizes, strict=True):
            feat = inp.permute(0, 2, 1).reshape(inp.shape[0], -1, *hw)
            pooled, valid = [], []
            for b, m in enumerate(masks):
                if m.shape[0] == 0:
                    continue
                p = mask_pool(feat[b : b + 1], m[None])[0]
                area = F.interpolate(m[None], size=hw, mode="bilinear", align_corners=False)[0].flatten(1).sum(-1)
                pooled.append(p)
                valid.append(area > 1e-6)
            if pooled:
                c, pr = class_centres(torch.cat(pooled), all_labels, self.num_classes, torch.cat(valid))
            else:
                c = inp.new_zeros(self.num_classes, inp.shape[-1])
                pr = torch.zeros(self.num_classes, dtype=torch.bool, device=device)
            centres.append(c)
            present = pr if present is None else present | pr
        cls_list, _, query_feat = self._decode(mask_features, inputs, sizes, None)
        max_n = max((len(lab) for lab in labels), default=0)
        padded = torch.full((len(labels), max(max_n, 1)), -1, dtype=torch.long, device=device)
        for b, lab in enumerate(labels):
            padded[b, : len(lab)] = lab
        queries, qlabels = select_topk_support_queries(query_feat, cls_list[-1], padded, self.topk)
        assert present is not None
        return SupportRefs(centres, present, queries, qlabels)

    def forward(  # type: ignore[override]
        self, x: Sequence[Tensor], batch_data_samples: SampleList, refs: SupportRefs | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per-layer class logits (B, Q, num_classes + 1) and mask logits (B, Q, h, w), with references."""
        mask_features, inputs, sizes = self._memories(x)
        cls_list, mask_list, _ = self._decode(mask_features, inputs, sizes, refs)
        return cls_list, mask_list

    def forward_with_features(
        self, x: Sequence[Tensor], refs: SupportRefs | None = None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """As :meth:`forward`, also returning the input-projected memories (for the KD feature term)."""
        mask_features, inputs, sizes = self._memories(x)
        cls_list, mask_list, _ = self._decode(mask_features, inputs, sizes, refs)
        return cls_list, mask_list, inputs

    def loss(  # type: ignore[override]
        self, x: Sequence[Tensor], batch_data_samples: SampleList, refs: SupportRefs | None = None
    ) -> dict[str, Tensor]:
        metas = [s.metainfo for s in batch_data_samples]
        gts = [s.gt_instances for s in batch_data_samples]
        sems = [s.gt_sem_seg if "gt_sem_seg" in s else None for s in batch_data_samples]
        cls_list, mask_list = self(x, batch_data_samples, refs)
        return self.loss_by_feat(cls_list, mask_list, self.preprocess_gt(gts, sems), metas)

    def predict(  # type: ignore[override]
        self, x: Sequence[Tensor], batch_data_samples: SampleList, refs: SupportRefs | None = None
    ) -> tuple[Tensor, Tensor]:
        cls_list, mask_list = self(x, batch_data_samples, refs)
        shape = batch_data_samples[0].metainfo["batch_input_shape"]
        masks = F.interpolate(mask_list[-1], size=tuple(shape), mode="bilinear", align_corners=False)
        return cls_list[-1], masks


@MODELS.register_module()
class RefT(Mask2Former):
    """Mask2Former detector with RefT references (``panoptic_head`` must be a :class:`RefTHead`).

    Extra args:
        distill: optional dict(base_class_ids=[...], cls_weight=2.0, feat_weight=1.0, temperature=1.0); the teacher
            itself is attached with :meth:`attach_teacher` (a frozen base model).
    """

    ROLE_KEY = "reft_role"

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


@torch.no_grad()
def compute_support_bank(model: RefT, batches) -> SupportRefs:
    """References of a whole support set (e.g. every image of the K-shot set), computed in chunks.

    ``batches`` yields mmengine data dicts (``inputs``, ``data_samples``) as a dataloader does; centres are the mean
    over every support instance of a class (instance-count weighted across chunks), and the top-K queries of a class
    are re-ranked over all chunks. Returns references ready for :meth:`RefT.set_support_bank`.
    """
    was_training = model.training
    model.eval()
    sums, counts, q_all, l_all, s_all = None, None, [], [], []
    head: RefTHead = model.panoptic_head
    for data in batches:
        data = model.data_preprocessor(data, False)
        inputs, samples = data["inputs"], data["data_samples"]
        refs = head.forward_support(model.extract_feat(inputs), samples)
        labels = torch.cat([s.gt_instances.labels for s in samples]).to(inputs.device)
        n = torch.bincount(labels, minlength=head.num_classes).float() if labels.numel() else None
        if n is None:
            continue
        if sums is None:
            sums = [c * n[:, None] for c in refs.centres]
            counts = n
        else:
            sums = [s + c * n[:, None] for s, c in zip(sums, refs.centres, strict=True)]
            counts = counts + n
        q_all.append(refs.queries)
        l_all.append(refs.query_labels)
        # score the kept queries for re-ranking across chunks
        s_all.append(head.cls_embed(head.transformer_decoder.post_norm(refs.queries)).softmax(-1))
    model.train(was_training)
    if sums is None:
        raise ValueError("compute_support_bank: the support set has no instance")
    present = counts > 0
    centres = [s / counts.clamp_min(1)[:, None] for s in sums]
    queries, labels, scores = torch.cat(q_all), torch.cat(l_all), torch.cat(s_all)
    keep_q, keep_l = [], []
    for cls in torch.unique(labels).tolist():
        idx = (labels == cls).nonzero().flatten()
        top = idx[scores[idx, cls].topk(min(head.topk, idx.numel())).indices]
        keep_q.append(queries[top])
        keep_l.append(labels[top])
    return SupportRefs(centres, present, torch.cat(keep_q), torch.cat(keep_l))


@DATASETS.register_module()
class RefTEpisodeDataset:
    """Wraps a detection dataset so that every item is a query image plus a support episode.

    Args:
        dataset: config or instance of the query dataset.
        support_dataset: config or instance of the support pool (default: the query dataset itself).
        shots_per_class: support images per class and episode.
        classes_per_episode: cover only this many classes per episode, drawn at random independently of the query
            image (default: every class). Memory bound for 60/80-class COCO at 1024 px (*ours*).
        episode_every: attach an episode to one item in this many (set it to the batch size: one episode per
            batch; mmengine's workers build whole batches, so a per-worker counter keeps that alignment).
        seed: sampler seed.

    ``__getitem__`` returns a list ``[query_item, support_item, ...]``; :func:`reft_collate` flattens the lists so
    that one batch holds the queries and their support images; support items carry ``metainfo['reft_role'] =
    'support'``. The support image for a class is drawn among the support pool's images containing that class; the
    episode covers every class with an instance in the pool, so the presence of a class centre says nothing about
    the query image (*ours*).
    """

    def __init__(
        self,
        dataset,
        support_dataset=None,
        shots_per_class: int = 1,
        episode_every: int = 1,
        seed: int = 0,
        classes_per_episode: int | None = None,
    ) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        sup = support_dataset if support_dataset is not None else self.dataset
        self.support = DATASETS.build(sup) if isinstance(sup, dict) else sup
        self.metainfo = copy.deepcopy(self.dataset.metainfo)
        self.shots_per_class = shots_per_class
        self.classes_per_episode = classes_per_episode
        self.episode_every = max(int(episode_every), 1)
        self._count = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.by_class: dict[int, list[int]] = {}
        for idx in range(len(self.support)):
            info = self.support.get_data_info(idx)
            for lab in {int(inst["bbox_label"]) for inst in info.get("instances", []) if not inst.get("ignore_flag")}:
                self.by_class.setdefault(lab, []).append(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> list[dict]:
        items = [self.dataset[idx]]
        self._count += 1
        if (self._count - 1) % self.episode_every:
            return items
        classes = sorted(self.by_class)
        if self.classes_per_episode is not None and self.classes_per_episode < len(classes):
            pick = torch.randperm(len(classes), generator=self.generator)[: self.classes_per_episode]
            classes = sorted(classes[int(i)] for i in pick)
        for lab in classes:
            pool = self.by_class[lab]
            for _ in range(self.shots_per_class):
                j = pool[int(torch.randint(len(pool), (1,), generator=self.generator))]
                item = self.support[j]
                item["data_samples"].set_metainfo({RefT.ROLE_KEY: "support"})
                items.append(item)
        return items


def reft_collate(batch: Sequence) -> dict:
    """Flatten lists of items (from :class:`RefTEpisodeDataset`) then collate as mmengine's ``pseudo_collate``."""
    from mmengine.dataset import pseudo_collate

    flat = []
    for item in batch:
        flat.extend(item if isinstance(item, list) else [item])
    return pseudo_collate(flat)


@HOOKS.register_module()
class RefTSupportBankHook(Hook):
    """Before every validation/test epoch, compute the support bank of a support set and give it to the model.

    Args:
        support_dataset: config (or instance) of the support set, with a pipeline that loads the GT masks (e.g. the
            K-shot fine-tuning set). Default: the support pool of the training :class:`RefTEpisodeDataset`.
        batch_size: support images per forward.
    """

    priority = "NORMAL"

    def __init__(self, support_dataset=None, batch_size: int = 8) -> None:
        self.support_dataset = support_dataset
        self.batch_size = batch_size

    def _dataset(self, runner):
        if self.support_dataset is not None:
            if isinstance(self.support_dataset, dict):
                self.support_dataset = DATASETS.build(self.support_dataset)
            return self.support_dataset
        ds = runner.train_dataloader.dataset
        if not isinstance(ds, RefTEpisodeDataset):
            raise ValueError("RefTSupportBankHook: set support_dataset (the training set is not a RefTEpisodeDataset)")
        return ds.support

    def _update(self, runner) -> None:
        from mmengine.dataset import pseudo_collate

        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        ds = self._dataset(runner)
        batches = (
            pseudo_collate([ds[i] for i in range(s, min(s + self.batch_size, len(ds)))])
            for s in range(0, len(ds), self.batch_size)
        )
        model.set_support_bank(compute_support_bank(model, batches))

    def before_val_epoch(self, runner) -> None:
        self._update(runner)

    def before_test_epoch(self, runner) -> None:
        self._update(runner)


@METRICS.register_module()
class FewShotCocoMetric(BaseMetric):
    """COCOeval ``segm``/``bbox`` as nAP, nAP50, nAP75, bAP, bAP50, AP, AP50 (:func:`.evaluation.evaluate_fewshot`).

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

        from .protocols import COCO_NOVEL_IDS

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
        from .evaluation import masks_to_coco_results

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
        from .evaluation import evaluate_fewshot

        out = evaluate_fewshot(self.gt, results, self.base_ids, self.novel_ids, self.iou_types)
        return {f"{t}_{k}": v for t, d in out.items() for k, v in d.items()}


try:  # register the collate function for configs: collate_fn=dict(type='reft_collate')
    from mmengine.registry import FUNCTIONS

    if "reft_collate" not in FUNCTIONS.module_dict:
        FUNCTIONS.register_module(name="reft_collate", module=reft_collate)
except ImportError:  # pragma: no cover - mmengine is a dependency
    pass
