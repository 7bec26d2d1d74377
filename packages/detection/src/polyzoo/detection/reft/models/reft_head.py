"""``RefTHead``: mmdet's ``Mask2FormerHead`` with RefT's two references (mask dynamic weighting of the memories,
query linking after every decoder layer); see :mod:`polyzoo.detection.reft.mmdet_plugin` for the data flow."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import Mask2FormerHead
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from torch import Tensor, nn

from ..modules import (
    CosineClassifier,
    MaskDynamicWeighting,
    QueryLinking,
    class_centres,
    mask_pool,
    select_topk_support_queries,
)
from .support_refs import SupportRefs

__all__ = ["RefTHead"]


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
