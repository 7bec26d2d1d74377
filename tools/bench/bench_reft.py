"""RefT's cost over Mask2Former: head forward (inference) of the tiny config with both references on vs off.

Contenders, timed interleaved in one process on the same features (batch of 4 query images, 64x64 and 128x128):
- ``Mask2Former`` (anchor): the RefT head with both references switched off (exactly mmdet's Mask2Former head);
- ``RefT (bank)``: both references from a precomputed support bank of 8 classes (test-time cost);
- ``RefT (episode)``: support pass of 8 support images + the query pass (training-time forward cost, no backward);
- the plain-PyTorch references alone: ``MaskDynamicWeighting`` over 3 levels and ``QueryLinking``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from polyzoo.shared.timing import time_interleaved

CONFIG = Path(__file__).resolve().parents[2] / "packages" / "detection" / "configs" / "reft" / "reft_tiny_shapes.py"


def _inputs(model, batch: int, size: int, n_cls: int, seed: int):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(batch, 3, size, size, generator=g)
    samples = []
    for b in range(batch):
        s = DetDataSample(metainfo=dict(batch_input_shape=(size, size), img_shape=(size, size), ori_shape=(size, size)))
        masks = torch.zeros(1, size, size)
        masks[0, size // 4 : size // 2, size // 4 : size // 2] = 1
        s.gt_instances = InstanceData(labels=torch.tensor([b % n_cls]), masks=masks)
        samples.append(s)
    return imgs, samples


def _contenders(model, head, feats, q_img, q_samples, s_img, s_samples, bank, tokens, queries) -> dict:
    from polyzoo.detection.reft.modules import MaskDynamicWeighting, QueryLinking

    mdw = [MaskDynamicWeighting(32, 4) for _ in range(3)]
    link = QueryLinking(32, 4)

    @torch.no_grad()
    def plain():
        head(feats, q_samples, None)

    @torch.no_grad()
    def with_bank():
        head(feats, q_samples, bank)

    @torch.no_grad()
    def episode():
        refs = model.compute_refs(s_img, s_samples)
        head(model.extract_feat(q_img), q_samples, refs)

    @torch.no_grad()
    def refs_only():
        for m, t, c in zip(mdw, tokens, bank.centres, strict=True):
            m(t, c, bank.present)
        link(queries, bank.queries)

    return {"Mask2Former": plain, "RefT (bank)": with_bank, "RefT (episode)": episode, "references only": refs_only}


def run(quick: bool = False) -> str:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from polyzoo.detection.reft import mmdet_plugin  # noqa: F401

    init_default_scope("mmdet")
    logging.getLogger("mmengine").setLevel(logging.WARNING)  # init_weights logs every parameter otherwise
    from mmdet.registry import MODELS

    cfg = Config.fromfile(str(CONFIG))
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    for m in [*model.panoptic_head.mdw, model.panoptic_head.linking]:
        torch.nn.init.normal_(m.attn.out_proj.weight, std=0.02)  # leave the identity start: real attention work
    model.eval()
    head = model.panoptic_head
    repeats = 3 if quick else 10
    lines = [
        "| image | contender | median ms | ratio vs Mask2Former |",
        "|---|---|---|---|",
    ]
    for size in (64, 128):
        q_img, q_samples = _inputs(model, 4, size, 8, 0)
        s_img, s_samples = _inputs(model, 8, size, 8, 1)
        with torch.no_grad():
            bank = model.compute_refs(s_img, s_samples)
            feats = model.extract_feat(q_img)
        tokens = [torch.randn(4, (size // s) ** 2, 32) for s in (32, 16, 8)]
        queries = torch.randn(4, 20, 32)

        contenders = _contenders(model, head, feats, q_img, q_samples, s_img, s_samples, bank, tokens, queries)
        times = time_interleaved(contenders, repeats=repeats, warmup=1)
        for name, t in times.items():
            lines.append(f"| {size}x{size} | {name} | {t * 1e3:.1f} | {t / times['Mask2Former']:.2f} |")
    return "\n".join(lines)
