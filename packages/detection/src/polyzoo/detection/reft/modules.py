"""RefT building blocks in plain PyTorch (no mmcv/mmdet import).

Paper: Y. Han, J. Zhang, Y. Wang, C. Wang, Y. Liu, L. Qi, X. Li, M.-H. Yang, "Reference Twice: A Simple and
Unified Baseline for Few-Shot Instance Segmentation", arXiv 2301.01156 (v3).
Official code: none. ``hanyue1648/RefT`` holds only a README and figures; this is a from-the-paper implementation.

The paper's two references and its v3 distillation loss:

1. **Mask-based dynamic weighting (feature level).** Support features are pooled under the support GT masks
   (:func:`mask_pool`) and averaged per class into *dynamic class centres* (:func:`class_centres`), all classes in
   one pass. The query image's flattened features cross-attend to the centres (:class:`MaskDynamicWeighting`), which
   re-weights every query-image position by its affinity to each class.
2. **Linking object queries (instance level).** The support image's decoder outputs are reduced to the top-K object
   queries per class (:func:`select_topk_support_queries`); the query image's object queries cross-attend to them
   (:class:`QueryLinking`) before the prediction heads. Only the query-side tokens change.
3. **Class-enhanced base knowledge distillation (iFSIS, v3).** :class:`ClassEnhancedKDLoss`: a frozen copy of the
   base-trained model teaches the fine-tuned model on the base classes, so novel classes are added without base data.

Choices made where the paper text available to us is silent (we could read the abstract and README figures, not the
method section, so every size and weight below is ours and configurable):

- Mask pooling uses the GT mask resized *bilinearly* to the feature map (soft weights, no binarisation) and the
  weighted mean ``sum(m * f) / max(sum(m), eps)``; an instance whose mask vanishes at that resolution yields a zero
  vector and is dropped from the class mean.
- A class centre is the mean over *all* pooled instances of that class in the support set (not the mean of per-image
  means), which makes it invariant to the order of the support images and of the instances.
- Dynamic weighting is a single multi-head cross-attention (query image positions -> class centres, keys = values =
  centres projected by the attention's own in-projections) added residually, without a norm. With the output
  projection initialised at zero the module is the identity at initialisation, so adding RefT to a base-trained
  Mask2Former does not disturb it before fine-tuning. Classes absent from the support set are
  masked out of the attention; with no centre at all the features pass through unchanged.
- Linking uses the same form: query object queries attend to the concatenation of the selected support queries,
  zero-initialised output projection, residual. It is applied to the decoder output that feeds the
  prediction heads after every decoder layer (so deep supervision covers it); the decoder's own running query is not
  replaced, so the next decoder layer sees the un-linked query (the paper only says "before the prediction heads").
- Top-K per class: for every class present in the support set, the K support object queries with the highest
  softmax probability for that class (background column excluded from the ranking). K = 5 by default.
- The KD loss is ``w_cls * KL(teacher || student)`` on the softmax over the base classes + no-object column, per
  object query, weighted per query by the teacher's base-class confidence ("class-enhanced": queries the base model
  believes are base objects count more, background queries count less), plus ``w_feat * MSE`` between teacher and
  student decoder *input-projection* features (the abstract names the input projection layer as the reason DETR-like
  models forget in incremental settings). Defaults ``w_cls = 2.0`` (the Mask2Former class-loss weight),
  ``w_feat = 1.0``, temperature 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ClassEnhancedKDLoss",
    "CosineClassifier",
    "MaskDynamicWeighting",
    "QueryLinking",
    "class_centres",
    "mask_pool",
    "select_topk_support_queries",
]


def mask_pool(features: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """Masked mean of ``features`` under each mask.

    Args:
        features: (B, C, H, W) feature maps.
        masks: (B, N, h, w) soft or binary instance masks (resized bilinearly to (H, W) when the sizes differ).
        eps: floor of the mask area.

    Returns:
        (B, N, C): ``sum_hw m * f / max(sum_hw m, eps)``.
    """
    if features.dim() != 4 or masks.dim() != 4 or masks.shape[0] != features.shape[0]:
        raise ValueError(
            f"mask_pool expects features (B,C,H,W) and masks (B,N,h,w) with the same B, got "
            f"{tuple(features.shape)} and {tuple(masks.shape)}"
        )
    masks = masks.to(features.dtype)
    if masks.shape[-2:] != features.shape[-2:]:
        masks = F.interpolate(masks, size=features.shape[-2:], mode="bilinear", align_corners=False)
    area = masks.flatten(2).sum(-1, keepdim=True).clamp_min(eps)  # (B, N, 1)
    pooled = torch.einsum("bnhw,bchw->bnc", masks, features)
    return pooled / area


def class_centres(
    pooled: Tensor, labels: Tensor, num_classes: int, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Average pooled instance embeddings per class.

    Args:
        pooled: (M, C) instance embeddings (from :func:`mask_pool`, instances of all support images stacked).
        labels: (M,) class index of each instance, in ``[0, num_classes)``.
        num_classes: number of classes.
        valid: optional (M,) bool, instances to use (e.g. masks with non-zero area).

    Returns:
        centres (num_classes, C) (zeros for absent classes) and present (num_classes,) bool.
    """
    if pooled.dim() != 2 or labels.shape != pooled.shape[:1]:
        raise ValueError(f"class_centres expects pooled (M,C) and labels (M,), got {pooled.shape} and {labels.shape}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    if valid is None:
        valid = torch.ones_like(labels, dtype=torch.bool)
    weights = valid.to(pooled.dtype)
    sums = pooled.new_zeros(num_classes, pooled.shape[1]).index_add(0, labels, pooled * weights[:, None])
    counts = pooled.new_zeros(num_classes).index_add(0, labels, weights)
    present = counts > 0
    centres = sums / counts.clamp_min(1.0)[:, None]
    return centres, present


def select_topk_support_queries(
    query_feats: Tensor, cls_logits: Tensor, support_labels: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Top-K support object queries for every class present in the support set.

    Args:
        query_feats: (S, Q, C) decoder outputs of the S support images.
        cls_logits: (S, Q, num_classes + 1) their class logits (last column = no object).
        support_labels: (S, N) or list-like of per-image GT labels; ``-1`` entries are padding.
        k: queries kept per class (fewer when the support set has fewer than k queries).

    Returns:
        queries (P * k', C) and their class ids (P * k',) for the P present classes, ordered by class id.
    """
    s, q, c = query_feats.shape
    probs = cls_logits.softmax(-1)[..., :-1].reshape(s * q, -1)  # (S*Q, num_classes)
    feats = query_feats.reshape(s * q, c)
    classes = torch.unique(support_labels[support_labels >= 0])
    out_q, out_c = [], []
    kk = min(k, s * q)
    for cls in classes.tolist():
        idx = probs[:, cls].topk(kk).indices
        out_q.append(feats[idx])
        out_c.append(torch.full((kk,), cls, dtype=torch.long, device=feats.device))
    if not out_q:
        return feats.new_zeros(0, c), torch.zeros(0, dtype=torch.long, device=feats.device)
    return torch.cat(out_q), torch.cat(out_c)


class _ResidualCrossAttention(nn.Module):
    """x + CrossAttn(x, refs); zero-initialised output projection (identity at initialisation)."""

    def __init__(self, embed_dims: int, num_heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, x: Tensor, refs: Tensor, ref_mask: Tensor | None = None) -> Tensor:
        """x (B, L, C); refs (B, R, C) or (R, C); ref_mask (R,) or (B, R) bool, True = usable reference."""
        if refs.dim() == 2:
            refs = refs.unsqueeze(0).expand(x.shape[0], -1, -1)
        if refs.shape[1] == 0:
            return x
        key_padding = None
        if ref_mask is not None:
            if ref_mask.dim() == 1:
                ref_mask = ref_mask.unsqueeze(0).expand(x.shape[0], -1)
            if not bool(ref_mask.any()):
                return x
            key_padding = ~ref_mask
        out, _ = self.attn(x, refs, refs, key_padding_mask=key_padding, need_weights=False)
        return x + out


class MaskDynamicWeighting(_ResidualCrossAttention):
    """Feature-level reference: query-image positions attend to the dynamic class centres.

    ``forward(features (B, L, C), centres (num_classes, C), present (num_classes,) bool) -> (B, L, C)``.
    """

    def forward(self, features: Tensor, centres: Tensor, present: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(features, centres, present)


class QueryLinking(_ResidualCrossAttention):
    """Instance-level reference: query object queries attend to the selected support object queries.

    ``forward(query_queries (B, Q, C), support_queries (P, C)) -> (B, Q, C)``; the support tokens are keys/values
    only and are never modified (see :meth:`link`).
    """

    def link(self, query_queries: Tensor, support_queries: Tensor) -> tuple[Tensor, Tensor]:
        """Return (updated query tokens, the support tokens untouched)."""
        return self.forward(query_queries, support_queries), support_queries


class ClassEnhancedKDLoss(nn.Module):
    """Class-enhanced base knowledge distillation (iFSIS).

    Args:
        base_class_ids: indices (in the student's label space) of the base classes; the teacher (the base model)
            has ``len(base_class_ids)`` classes, its column j is base class ``base_class_ids[j]`` and its last
            column is no-object.
        cls_weight, feat_weight, temperature: see the module docstring.
    """

    def __init__(
        self,
        base_class_ids: list[int],
        cls_weight: float = 2.0,
        feat_weight: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_buffer("base_ids", torch.as_tensor(list(base_class_ids), dtype=torch.long), persistent=False)
        self.cls_weight = cls_weight
        self.feat_weight = feat_weight
        self.temperature = temperature

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_feats: list[Tensor] | None = None,
        teacher_feats: list[Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """student_logits (B, Q, num_classes + 1); teacher_logits (B, Q, num_base + 1); feats: lists of (B, L, C)."""
        nb = self.base_ids.numel()
        if teacher_logits.shape[-1] != nb + 1:
            raise ValueError(f"teacher logits have {teacher_logits.shape[-1]} columns, expected {nb} base + 1")
        t = self.temperature
        cols = torch.cat([self.base_ids.to(student_logits.device), student_logits.new_tensor([-1]).long()])
        cols[-1] = student_logits.shape[-1] - 1
        s_sub = student_logits.index_select(-1, cols) / t
        t_prob = (teacher_logits.detach() / t).softmax(-1)
        kl = (t_prob * (t_prob.clamp_min(1e-8).log() - s_sub.log_softmax(-1))).sum(-1)  # (B, Q)
        weight = t_prob[..., :-1].max(-1).values  # teacher's base-class confidence
        loss_cls = (weight * kl).sum() / weight.sum().clamp_min(1e-6) * (t * t)
        out = {"loss_kd_cls": self.cls_weight * loss_cls}
        if student_feats is not None and teacher_feats is not None and self.feat_weight > 0:
            feat = sum(F.mse_loss(s, tf.detach()) for s, tf in zip(student_feats, teacher_feats, strict=True))
            out["loss_kd_feat"] = self.feat_weight * feat / max(len(student_feats), 1)
        return out


class CosineClassifier(nn.Module):
    """Cosine-similarity classifier (the iFSIS "w/ Cos" variant): ``scale * cos(x, w_j)`` per class.

    The scale (20.0) is the value iMTFA/TFA use; the RefT text available to us does not give one.
    ``forward(x (..., C)) -> (..., num_outputs)``.
    """

    def __init__(self, in_features: int, num_outputs: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_outputs, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))
