"""The support bank: references of a whole support set, computed in chunks, for test time."""

from __future__ import annotations

import torch

from .reft import RefT
from .reft_head import RefTHead
from .support_refs import SupportRefs

__all__ = ["compute_support_bank"]


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
