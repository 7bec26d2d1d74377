"""CMT against the official computation (junjie18/CMT), transcribed independently here from the official code's
structure (``cmt_head.py``: ``pos2embed``, ``GroupLayerNorm1d``, ``SeparateTaskHead``, ``_bev_query_embed``,
``_rv_query_embed``, ``query_embed``; ``multi_task_bbox_coder.py`` + ``core/bbox/util.py``: decoding;
``petr_transformer.py`` / mmcv 1.x ``BaseTransformerLayer``: one decoder layer), on small inputs.

The official-layout state dicts below are written from the official model's module structure (mmcv 1.x names:
``attentions`` / ``ffns`` / ``norms``, ``ConvModule`` ``conv`` / ``bn``, VoVNet ``stem_1/conv``, ``OSA2_1``, ...), not
from polyzoo's names; they go through the checkpoint filter and load strictly.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polyzoo.detection.cmt.head import CmtHeadConfig, CmtHeadCore
from polyzoo.detection.cmt.official_checkpoint import (
    OFFICIAL_CLASSES,
    convert_official_key,
    convert_official_state_dict,
)
from polyzoo.detection.cmt.positional import pos2embed
from polyzoo.detection.cmt.transformer import DecoderLayer

PC_RANGE = (-20.0, -20.0, -3.0, 20.0, 20.0, 3.0)
BRANCHES = {"center": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}


# ------------------------------------------------------------------ official-layout state dicts (from structure)
def official_head_state_dict(
    *, in_ch: int, h: int, depth: int, queries: int, layers: int, ffn: int, head_conv: int, classes: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``pts_bbox_head.*`` of the official ``CmtHead`` (fusion config: one task, ``SeparateTaskHead`` with
    ``final_kernel=1``, ``PETRTransformerDecoder`` of ``PETRTransformerDecoderLayer``s)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    p = "pts_bbox_head."
    sd = {
        p + "shared_conv.conv.weight": r(h, in_ch, 3, 3),
        p + "shared_conv.bn.weight": 1 + r(h),
        p + "shared_conv.bn.bias": r(h),
        p + "shared_conv.bn.running_mean": r(h),
        p + "shared_conv.bn.running_var": 1 + r(h).abs(),
        p + "shared_conv.bn.num_batches_tracked": torch.tensor(7),
        p + "reference_points.weight": torch.rand(queries, 3, generator=g),
        p + "bev_embedding.0.weight": r(h, 2 * h),
        p + "bev_embedding.0.bias": r(h),
        p + "bev_embedding.2.weight": r(h, h),
        p + "bev_embedding.2.bias": r(h),
        p + "rv_embedding.0.weight": r(4 * h, 3 * depth),
        p + "rv_embedding.0.bias": r(4 * h),
        p + "rv_embedding.2.weight": r(h, 4 * h),
        p + "rv_embedding.2.bias": r(h),
        p + "transformer.decoder.post_norm.weight": 1 + r(h),
        p + "transformer.decoder.post_norm.bias": r(h),
    }
    for layer in range(layers):
        lp = f"{p}transformer.decoder.layers.{layer}."
        for a in (0, 1):  # 0: mmcv MultiheadAttention (self), 1: PETRMultiheadFlashAttention (cross)
            sd[f"{lp}attentions.{a}.attn.in_proj_weight"] = r(3 * h, h)
            sd[f"{lp}attentions.{a}.attn.in_proj_bias"] = r(3 * h)
            sd[f"{lp}attentions.{a}.attn.out_proj.weight"] = r(h, h)
            sd[f"{lp}attentions.{a}.attn.out_proj.bias"] = r(h)
        sd[f"{lp}ffns.0.layers.0.0.weight"] = r(ffn, h)
        sd[f"{lp}ffns.0.layers.0.0.bias"] = r(ffn)
        sd[f"{lp}ffns.0.layers.1.weight"] = r(h, ffn)
        sd[f"{lp}ffns.0.layers.1.bias"] = r(h)
        for n in range(3):
            sd[f"{lp}norms.{n}.weight"] = 1 + r(h)
            sd[f"{lp}norms.{n}.bias"] = r(h)
    for name, out in {**BRANCHES, "cls_logits": classes}.items():
        tp = f"{p}task_heads.0.{name}."
        sd[tp + "0.weight"] = r(head_conv * layers, h, 1)  # grouped Conv1d, no bias
        sd[tp + "1.weight"] = 1 + r(head_conv * layers)  # GroupLayerNorm1d
        sd[tp + "1.bias"] = r(head_conv * layers)
        sd[tp + "3.weight"] = r(out * layers, head_conv, 1)  # index 2 is the ReLU
        sd[tp + "3.bias"] = r(out * layers)
    return sd


def _bn(sd: dict, key: str, c: int, g: torch.Generator) -> None:
    sd[key + ".weight"] = 1 + 0.1 * torch.randn(c, generator=g)
    sd[key + ".bias"] = 0.1 * torch.randn(c, generator=g)
    sd[key + ".running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[key + ".running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
    sd[key + ".num_batches_tracked"] = torch.tensor(3)


def official_vovnet19_slim_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """``img_backbone.*`` of the official ``VoVNet(spec_name='V-19-slim-eSE')``: stem [64, 64, 128], stage conv
    channels [64, 80, 96, 112], stage outputs [112, 256, 384, 512], 3 layers per block, one block per stage."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    stem = [(3, 64), (64, 64), (64, 128)]
    for i, (ci, co) in enumerate(stem, start=1):
        sd[f"img_backbone.stem.stem_{i}/conv.weight"] = 0.1 * torch.randn(co, ci, 3, 3, generator=g)
        _bn(sd, f"img_backbone.stem.stem_{i}/norm", co, g)
    c_in = 128
    for s, (conv_ch, out_ch) in zip(range(2, 6), [(64, 112), (80, 256), (96, 384), (112, 512)], strict=True):
        m = f"OSA{s}_1"
        bp = f"img_backbone.stage{s}.{m}."
        ci = c_in
        for i in range(3):
            sd[f"{bp}layers.{i}.{m}_{i}/conv.weight"] = 0.1 * torch.randn(conv_ch, ci, 3, 3, generator=g)
            _bn(sd, f"{bp}layers.{i}.{m}_{i}/norm", conv_ch, g)
            ci = conv_ch
        sd[f"{bp}concat.{m}_concat/conv.weight"] = 0.1 * torch.randn(out_ch, c_in + 3 * conv_ch, 1, 1, generator=g)
        _bn(sd, f"{bp}concat.{m}_concat/norm", out_ch, g)
        sd[f"{bp}ese.fc.weight"] = 0.1 * torch.randn(out_ch, out_ch, 1, 1, generator=g)
        sd[f"{bp}ese.fc.bias"] = 0.1 * torch.randn(out_ch, generator=g)
        c_in = out_ch
    return sd


def official_cpfpn_state_dict(in_channels: list[int], out: int, seed: int = 2) -> dict[str, torch.Tensor]:
    """``img_neck.*`` of the official ``CPFPN``: 1×1 ``ConvModule`` laterals (with bias, no norm) for every input and
    one 3×3 ``ConvModule`` output conv, for level 0 only."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, c in enumerate(in_channels):
        sd[f"img_neck.lateral_convs.{i}.conv.weight"] = 0.1 * torch.randn(out, c, 1, 1, generator=g)
        sd[f"img_neck.lateral_convs.{i}.conv.bias"] = 0.1 * torch.randn(out, generator=g)
    sd["img_neck.fpn_convs.0.conv.weight"] = 0.1 * torch.randn(out, out, 3, 3, generator=g)
    sd["img_neck.fpn_convs.0.conv.bias"] = 0.1 * torch.randn(out, generator=g)
    return sd


SIZES = dict(in_ch=12, h=16, depth=4, queries=10, layers=2, ffn=24, head_conv=8, classes=10)


def _head_from_official(**overrides) -> tuple[CmtHeadCore, dict[str, torch.Tensor]]:
    cfg = CmtHeadConfig(
        in_channels=SIZES["in_ch"],
        hidden_dim=SIZES["h"],
        num_query=SIZES["queries"],
        depth_num=SIZES["depth"],
        num_classes=SIZES["classes"],
        pc_range=PC_RANGE,
        num_layers=SIZES["layers"],
        num_heads=2,
        ffn_dim=SIZES["ffn"],
        head_conv=SIZES["head_conv"],
        post_center_range=(-25.0, -25.0, -5.0, 25.0, 25.0, 5.0),
        max_num=7,
        **overrides,
    )
    head = CmtHeadCore(cfg)
    official = official_head_state_dict(**SIZES)
    converted = convert_official_state_dict(official)
    core = {k[len("pts_bbox_head.core.") :]: v for k, v in converted.items()}
    head.load_state_dict(core, strict=True)
    return head.eval(), official


# ------------------------------------------------------------------ transcriptions of the official functions
def t_pos2embed(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Official ``pos2embed``: frequency of feature i is 2·floor(i/2)/n + 1; sin on even, cos on odd; (y, x)."""
    freqs = torch.tensor([2 * (i // 2) / n + 1 for i in range(n)], dtype=torch.float32)
    parts = []
    for axis in (1, 0):
        angle = pos[..., axis, None] * (2 * math.pi) / freqs
        feat = torch.empty_like(angle)
        feat[..., 0::2] = torch.sin(angle[..., 0::2])
        feat[..., 1::2] = torch.cos(angle[..., 1::2])
        parts.append(feat)
    return torch.cat(parts, dim=-1)


def t_inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def t_mlp(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    x = F.relu(x @ sd[prefix + "0.weight"].T + sd[prefix + "0.bias"])
    return x @ sd[prefix + "2.weight"].T + sd[prefix + "2.bias"]


def t_bev_query_embed(ref: torch.Tensor, sd: dict, h: int) -> torch.Tensor:
    ref = t_inverse_sigmoid(ref).sigmoid()
    return t_mlp(t_pos2embed(ref, h), sd, "pts_bbox_head.bev_embedding.")


def t_rv_query_embed(ref: torch.Tensor, lidar2img: np.ndarray, sd: dict, pad_hw, depth_num: int) -> torch.Tensor:
    """Official ``_rv_query_embed`` (after ``query_embed``'s round trip), one sample, view and anchor at a time."""
    ref = t_inverse_sigmoid(ref).sigmoid()
    pad_h, pad_w = pad_hw
    lo, hi = torch.tensor(PC_RANGE[:3]), torch.tensor(PC_RANGE[3:])
    depths = 1 + torch.arange(depth_num, dtype=torch.float32) * (PC_RANGE[3] - 1) / depth_num
    b_n, q_n = ref.shape[:2]
    out = torch.zeros(b_n, q_n, sd["pts_bbox_head.rv_embedding.2.bias"].shape[0])
    for b in range(b_n):
        for v in range(lidar2img.shape[1]):
            l2i = torch.from_numpy(lidar2img[b, v]).float()
            i2l = torch.from_numpy(np.linalg.inv(lidar2img[b, v])).float()  # float64 inverse, as official
            for q in range(q_n):
                p = ref[b, q] * (hi - lo) + lo
                proj = l2i @ torch.cat([p, torch.ones(1)])
                z = proj[2]
                xyz = proj[:3] / (z + (1e-6 if z > 0 else -1e-6))
                visible = bool(z > 0) and 0 <= xyz[0] < pad_w and 0 <= xyz[1] < pad_h
                pts = [i2l @ torch.cat([xyz * d, torch.ones(1)]) for d in depths]
                pts = (torch.stack(pts)[:, :3] - lo) / (hi - lo)  # (D, 3)
                if visible:
                    out[b, q] += t_mlp(pts.reshape(-1), sd, "pts_bbox_head.rv_embedding.")
    return out


def t_group_layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, groups: int, eps: float = 1e-6):
    n, c, length = x.shape
    xg = x.view(n, groups, c // groups, length)
    mu = xg.mean(2, keepdim=True)
    var = (xg - mu).pow(2).mean(2, keepdim=True)
    y = ((xg - mu) / (var + eps).sqrt()).view(n, c, length)
    return w.view(1, c, 1) * y + b.view(1, c, 1)


def t_separate_task_head(x: torch.Tensor, sd: dict, classes: int) -> dict[str, torch.Tensor]:
    """Official ``SeparateTaskHead.forward``: (L, B, Q, C) → 'n b q c -> b (n c) q' → grouped convs → back."""
    n_layers, b, q, c = x.shape
    flat = x.permute(1, 0, 3, 2).reshape(b, n_layers * c, q)
    out = {}
    for name, oc in {**BRANCHES, "cls_logits": classes}.items():
        p = f"pts_bbox_head.task_heads.0.{name}."
        y = F.conv1d(flat, sd[p + "0.weight"], groups=n_layers)
        y = F.relu(t_group_layer_norm(y, sd[p + "1.weight"], sd[p + "1.bias"], n_layers))
        y = F.conv1d(y, sd[p + "3.weight"], sd[p + "3.bias"], groups=n_layers)
        out[name] = y.view(b, n_layers, oc, q).permute(1, 0, 3, 2)
    return out


def t_mha(q, k, v, sd: dict, prefix: str, heads: int, mask=None) -> torch.Tensor:
    """Multi-head attention from packed in-projection weights (nn.MultiheadAttention / FlashMHA), batch-first."""
    w, bias = sd[prefix + "in_proj_weight"], sd[prefix + "in_proj_bias"]
    h = w.shape[1]
    wq, wk, wv = w.chunk(3)
    bq, bk, bv = bias.chunk(3)
    qp, kp, vp = q @ wq.T + bq, k @ wk.T + bk, v @ wv.T + bv
    d = h // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    scores = split(qp) @ split(kp).transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    ctx = (scores.softmax(-1) @ split(vp)).transpose(1, 2).reshape(q.shape[0], q.shape[1], h)
    return ctx @ sd[prefix + "out_proj.weight"].T + sd[prefix + "out_proj.bias"]


def t_decoder_layer(query, query_pos, memory, memory_pos, sd: dict, layer: int, heads: int, mask=None):
    """mmcv 1.x ``BaseTransformerLayer`` with operation order (self_attn, norm, cross_attn, norm, ffn, norm), eval."""
    p = f"pts_bbox_head.transformer.decoder.layers.{layer}."

    def ln(x: torch.Tensor, n: int) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], sd[f"{p}norms.{n}.weight"], sd[f"{p}norms.{n}.bias"], 1e-5)

    qk = query + query_pos
    query = ln(query + t_mha(qk, qk, query, sd, p + "attentions.0.attn.", heads, mask), 0)
    query = ln(query + t_mha(query + query_pos, memory + memory_pos, memory, sd, p + "attentions.1.attn.", heads), 1)
    hidden = F.relu(query @ sd[p + "ffns.0.layers.0.0.weight"].T + sd[p + "ffns.0.layers.0.0.bias"])
    return ln(query + hidden @ sd[p + "ffns.0.layers.1.weight"].T + sd[p + "ffns.0.layers.1.bias"], 2)


def t_denormalize_bbox(code: torch.Tensor) -> torch.Tensor:
    """Official ``denormalize_bbox``: code (cx, cy, log w, log l, cz, log h, sin, cos, vx, vy)."""
    rot = torch.atan2(code[..., 6:7], code[..., 7:8])
    return torch.cat(
        [code[..., 0:1], code[..., 1:2], code[..., 4:5], code[..., 2:3].exp(), code[..., 3:4].exp(),
         code[..., 5:6].exp(), rot, code[..., 8:9], code[..., 9:10]],
        dim=-1,
    )  # fmt: skip


def t_normalize_bbox(boxes: torch.Tensor) -> torch.Tensor:
    b = boxes
    return torch.cat(
        [b[..., 0:1], b[..., 1:2], b[..., 3:4].log(), b[..., 4:5].log(), b[..., 2:3], b[..., 5:6].log(),
         b[..., 6:7].sin(), b[..., 6:7].cos(), b[..., 7:8], b[..., 8:9]],
        dim=-1,
    )  # fmt: skip


def t_decode_single(logits: torch.Tensor, code: torch.Tensor, max_num: int, post_center_range) -> tuple:
    """Official ``MultiTaskBBoxCoder.decode_single`` with one task (task index 0 for every class)."""
    num_classes = logits.shape[-1]
    scores, idx = logits.sigmoid().view(-1).topk(max_num)
    labels = idx % num_classes
    boxes = t_denormalize_bbox(code[idx // num_classes])
    rng = torch.tensor(post_center_range)
    keep = (boxes[..., :3] >= rng[:3]).all(1) & (boxes[..., :3] <= rng[3:]).all(1)
    return boxes[keep], scores[keep], labels[keep]


def _cameras(batch: int = 1) -> np.ndarray:
    """Two pinhole cameras (160×64 padded image) looking along +x and +y of the LiDAR frame: (B, 2, 4, 4)."""
    k = np.array([[80.0, 0, 80, 0], [0, 80.0, 32, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    mats = []
    for yaw in (0.0, math.pi / 2):
        # camera axes in LiDAR coordinates: x right, y down, z forward
        fwd = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        l2c = np.eye(4)
        l2c[:3, :3] = np.stack([right, down, fwd])
        l2c[:3, 3] = [0.1, 0.3, -0.2]
        mats.append(k @ l2c)
    return np.stack([np.stack(mats)] * batch)


# ------------------------------------------------------------------ tests
def test_pos2embed_matches_the_official_function():
    pos = torch.rand(3, 5, 3)
    torch.testing.assert_close(pos2embed(pos, 16), t_pos2embed(pos, 16), rtol=1e-6, atol=1e-6)
    # the DETR form stays available as an option and is a different function
    assert (pos2embed(pos, 16, form="detr") - t_pos2embed(pos, 16)).abs().max() > 0.1
    with pytest.raises(ValueError, match="form"):
        pos2embed(pos, 16, form="sine")


def test_bev_query_embedding_matches_official_including_the_round_trip():
    head, official = _head_from_official()
    ref = torch.rand(2, 6, 3)
    ref[0, 0] = torch.tensor([0.0, 1.0, 0.5])  # the inverse_sigmoid(r).sigmoid() round trip moves 0 and 1
    with torch.no_grad():
        ours = head.coords.query_pe(ref, None, (64, 160))
    torch.testing.assert_close(ours, t_bev_query_embed(ref, official, SIZES["h"]), rtol=1e-5, atol=1e-5)


def test_camera_ray_query_embedding_matches_official():
    head, official = _head_from_official()
    g = torch.Generator().manual_seed(3)
    ref = torch.rand(2, 8, 3, generator=g)
    lidar2img = _cameras(batch=2)
    with torch.no_grad():
        ours = head.coords.query_pe(ref, torch.from_numpy(lidar2img).float(), (64, 160))
    expected = t_bev_query_embed(ref, official, SIZES["h"]) + t_rv_query_embed(
        ref, lidar2img, official, (64, 160), SIZES["depth"]
    )
    # float32 inverse here vs the official float64 inverse cast to float32: ~1e-6 relative on the ray points
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    # some anchors are seen by a camera and some are not, so both paths of the visibility mask are exercised
    rv = t_rv_query_embed(ref, lidar2img, official, (64, 160), SIZES["depth"])
    seen = rv.abs().sum(-1) > 0
    assert seen.any() and (~seen).any()


def test_grouped_task_head_matches_official_with_eps_1e6():
    head, official = _head_from_official()
    # small activations, where the LayerNorm eps (1e-6 official vs 1e-5) matters
    x = torch.randn(SIZES["layers"], 2, 5, SIZES["h"]) * 1e-3
    with torch.no_grad():
        ours = head.task_head(x)
    expected = t_separate_task_head(x, official, SIZES["classes"])
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-4, atol=1e-4)
    assert head.task_head.center[1].eps == 1e-6


def test_decoding_in_the_official_code_order():
    head, _ = _head_from_official()
    g = torch.Generator().manual_seed(5)
    n_layers, q, c = SIZES["layers"], SIZES["queries"], SIZES["classes"]
    logits = torch.randn(n_layers, 1, q, c, generator=g)
    # the head's branch concatenation (center 2, height 1, dim 3, rot 2, vel 2), as the official coder builds it
    code = torch.cat(
        [torch.rand(n_layers, 1, q, 2, generator=g) * 40 - 20, torch.rand(n_layers, 1, q, 1, generator=g) * 2,
         torch.randn(n_layers, 1, q, 1, generator=g), torch.rand(n_layers, 1, q, 1, generator=g) * 8 - 4,
         torch.randn(n_layers, 1, q, 1, generator=g), torch.randn(n_layers, 1, q, 4, generator=g)],
        dim=-1,
    )  # fmt: skip
    code[-1, 0, 0, 4] = 30.0  # z (official position 4) outside post_center_range: that query must be dropped
    ((boxes, scores, labels),) = head.decode({"logits": logits, "code": code})
    e_boxes, e_scores, e_labels = t_decode_single(logits[-1, 0], code[-1, 0], 7, head.cfg.post_center_range)
    torch.testing.assert_close(boxes, e_boxes)
    torch.testing.assert_close(scores, e_scores)
    assert torch.equal(labels, e_labels)
    # the reordered variant reads the same vector differently
    reordered = CmtHeadCore(CmtHeadConfig(**{**vars(head.cfg), "box_code_order": "reordered"}))
    ((boxes_r, _, _),) = reordered.decode({"logits": logits, "code": code})
    assert boxes_r.shape != boxes.shape or not torch.allclose(boxes_r, boxes)


def test_box_code_matches_official_normalize_bbox():
    from polyzoo.detection.cmt.bbox import denormalize_bbox, normalize_bbox

    boxes = torch.tensor([[1.0, -2.0, 0.3, 4.0, 1.8, 1.6, 0.7, 0.5, -0.2], [3.0, 5.0, -1.0, 0.8, 0.6, 1.7, -2.0, 0, 0]])
    torch.testing.assert_close(normalize_bbox(boxes), t_normalize_bbox(boxes))
    torch.testing.assert_close(denormalize_bbox(t_normalize_bbox(boxes)), t_denormalize_bbox(t_normalize_bbox(boxes)))
    reordered = normalize_bbox(boxes, "reordered")
    torch.testing.assert_close(reordered[:, 2], boxes[:, 2])  # z third in the reordered variant
    torch.testing.assert_close(denormalize_bbox(reordered, "reordered"), boxes)


def test_one_decoder_layer_in_eval_mode_matches_official():
    head, official = _head_from_official()
    g = torch.Generator().manual_seed(7)
    h, q, n = SIZES["h"], 6, 9
    query, query_pos = torch.randn(2, q, h, generator=g), torch.randn(2, q, h, generator=g)
    memory, memory_pos = torch.randn(2, n, h, generator=g), torch.randn(2, n, h, generator=g)
    mask = torch.zeros(q, q, dtype=torch.bool)
    mask[3:, :3] = True  # matching queries cannot see the (first three) denoising queries
    with torch.no_grad():
        ours = head.decoder.layers[1](query, query_pos, memory, memory_pos, mask)
    expected = t_decoder_layer(query, query_pos, memory, memory_pos, official, 1, heads=2, mask=mask)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_dropout_sits_where_the_official_model_has_it():
    layer = DecoderLayer(hidden_dim=16, num_heads=2, ffn_dim=24, dropout=0.5)
    # structure: self-attention weights and both attention outputs; nothing on cross-attention weights or the FFN
    assert layer.self_attn.dropout == 0.5
    assert layer.cross_attn.dropout == 0.0
    assert layer.dropout1.p == 0.5 and layer.dropout2.p == 0.5
    assert all(m.p == 0.0 for m in layer.ffn if isinstance(m, torch.nn.Dropout))
    # behaviour in training mode: the cross-attention and the FFN are deterministic, the self-attention is not
    layer.train()
    g = torch.Generator().manual_seed(0)
    q, pos, mem = torch.randn(1, 6, 16, generator=g), torch.randn(1, 6, 16, generator=g), torch.randn(1, 9, 16)
    cross = [layer.cross_attn(q + pos, mem, mem, need_weights=False)[0] for _ in range(2)]
    assert torch.equal(cross[0], cross[1])
    assert torch.equal(layer.ffn(q), layer.ffn(q))
    selfs = [layer.self_attn(q + pos, q + pos, q, need_weights=False)[0] for _ in range(2)]
    assert not torch.equal(selfs[0], selfs[1])
    # the options restore weight dropout in cross-attention and mmcv's FFN dropouts
    other = DecoderLayer(hidden_dim=16, num_heads=2, ffn_dim=24, dropout=0.1, cross_attn_weight_dropout=0.2,
                         ffn_dropout=0.3)  # fmt: skip
    assert other.cross_attn.dropout == 0.2
    assert [m.p for m in other.ffn if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]


def test_head_defaults_are_the_official_behaviour():
    cfg = CmtHeadConfig()
    assert (cfg.box_code_order, cfg.pos_form, cfg.group_norm_eps) == ("official", "official", 1e-6)
    assert (cfg.dropout, cfg.cross_attn_weight_dropout, cfg.ffn_dropout) == (0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="box_code_order"):
        CmtHeadConfig(box_code_order="xyz")


# ------------------------------------------------------------------ checkpoint filter
def test_official_head_keys_load_strictly_and_land_in_the_right_modules():
    head, official = _head_from_official()  # load_state_dict(strict=True) inside
    sd = head.state_dict()
    pairs = {
        "pts_bbox_head.transformer.decoder.layers.1.attentions.1.attn.in_proj_weight": "decoder.layers.1.cross_attn"
        ".in_proj_weight",
        "pts_bbox_head.transformer.decoder.layers.0.norms.2.bias": "decoder.layers.0.norm3.bias",
        "pts_bbox_head.transformer.decoder.layers.0.ffns.0.layers.1.weight": "decoder.layers.0.ffn.3.weight",
        "pts_bbox_head.shared_conv.bn.running_var": "shared_conv.1.running_var",
        "pts_bbox_head.task_heads.0.cls_logits.3.bias": "task_head.cls_logits.3.bias",
        "pts_bbox_head.rv_embedding.2.weight": "coords.rv_embedding.2.weight",
    }
    for official_key, ours in pairs.items():
        assert torch.equal(sd[ours], official[official_key]), official_key


def test_unknown_keys_are_refused_with_their_name():
    sd = official_head_state_dict(**SIZES)
    sd["pts_bbox_head.task_heads.1.center.0.weight"] = torch.zeros(1)  # a second task: not supported
    with pytest.raises(ValueError, match=r"ckpt\.pth: not an official CMT checkpoint key: .*task_heads\.1"):
        convert_official_state_dict(sd, source="ckpt.pth")
    assert convert_official_key("pts_bbox_head.loss_cls.weight") is None
    assert convert_official_key("module.pts_bbox_head.reference_points.weight") is None  # stripped by the dict API
    assert "pts_bbox_head.core.reference_points.weight" in convert_official_state_dict(
        {"module.pts_bbox_head.reference_points.weight": torch.zeros(2, 3)}
    )


def test_class_order_permutation_moves_each_groups_rows():
    sd = official_head_state_dict(**SIZES)
    target = list(reversed(OFFICIAL_CLASSES))
    out = convert_official_state_dict(sd, target_classes=target)
    w_off = sd["pts_bbox_head.task_heads.0.cls_logits.3.weight"].view(SIZES["layers"], 10, SIZES["head_conv"], 1)
    w_new = out["pts_bbox_head.core.task_head.cls_logits.3.weight"].view(SIZES["layers"], 10, SIZES["head_conv"], 1)
    for layer in range(SIZES["layers"]):
        for i, name in enumerate(target):
            assert torch.equal(w_new[layer, i], w_off[layer, OFFICIAL_CLASSES.index(name)])
    with pytest.raises(ValueError, match="cannot map classes"):
        convert_official_state_dict(sd, target_classes=["car"] * 10)


def _small_detector_cfg() -> dict:
    from mmengine.config import Config

    from polyzoo.detection.cmt.learning_check import config_path

    cfg = Config.fromfile(str(config_path("cmt_tiny_cpu.py")))
    model = cfg.model
    model.img_backbone = dict(type="VoVNet", spec="V-19-slim-eSE", out_features=("stage4", "stage5"), init_cfg=None)
    model.img_neck = dict(type="CPFPN", in_channels=[384, 512], out_channels=16, num_outs=2)
    head = model.pts_bbox_head
    head.update(
        in_channels=SIZES["in_ch"], hidden_dim=SIZES["h"], num_query=SIZES["queries"], depth_num=SIZES["depth"],
        num_classes=SIZES["classes"], num_layers=SIZES["layers"], num_heads=2, ffn_dim=SIZES["ffn"],
        head_conv=SIZES["head_conv"],
    )  # fmt: skip
    # a LiDAR branch whose BEV map has in_ch channels (SECONDFPN: 2 × 6)
    model.pts_neck.out_channels = [6, 6]
    return model


def _official_detector_state_dict(model) -> dict[str, torch.Tensor]:
    from collections import OrderedDict

    official = OrderedDict(
        {
            **official_head_state_dict(**SIZES),
            **official_vovnet19_slim_state_dict(),
            **official_cpfpn_state_dict([384, 512], 16),
        }
    )
    # mmdet3d's SparseEncoder / SECOND / SECONDFPN have the same key names in mmdet3d 1.0 and 1.x; an official
    # checkpoint (mmcv 1.x save_checkpoint keeps ``_metadata``) records spconv modules as version 2, which tells
    # mmdet3d's spconv-2 loader that the kernels are already in spconv 2's layout
    ours = model.state_dict()
    for k, v in ours.items():
        if k.startswith(("pts_middle_encoder.", "pts_backbone.", "pts_neck.")):
            official[k] = torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v.clone()
    official._metadata = OrderedDict(  # type: ignore[attr-defined]
        (k, v) for k, v in ours._metadata.items() if k.startswith(("pts_middle_encoder", "pts_backbone", "pts_neck"))
    )
    assert official._metadata["pts_middle_encoder.conv_input.0"]["version"] == 2
    return official


def test_official_detector_checkpoint_loads_strictly_through_the_scheme(tmp_path):
    pytest.importorskip("mmdet3d")
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401  (registers CMT and the cmt-official:// scheme)

    init_default_scope("mmdet3d")
    from mmdet3d.registry import MODELS

    model = MODELS.build(_small_detector_cfg())
    official = _official_detector_state_dict(model)
    converted = convert_official_state_dict(official)
    model.load_state_dict(converted, strict=True)
    # through an mmengine checkpoint file and the scheme (what load_from / tools/test.py use), strictly
    path = tmp_path / "cmt_official.pth"
    torch.save({"meta": {"CLASSES": list(OFFICIAL_CLASSES), "epoch": 20}, "state_dict": official}, path)
    fresh = MODELS.build(_small_detector_cfg())
    load_checkpoint(fresh, f"cmt-official://{path}", map_location="cpu", strict=True)
    got = fresh.state_dict()
    kernel = "pts_middle_encoder.encoder_layers.encoder_layer1.0.conv1.weight"
    assert torch.equal(got[kernel], official[kernel])  # spconv kernels unpermuted (version-2 metadata kept)
    assert torch.equal(got["img_backbone.body.stage3.1.layers.2.1.running_mean"],
                       official["img_backbone.stage3.OSA3_1.layers.2.OSA3_1_2/norm.running_mean"])  # fmt: skip
    assert torch.equal(got["img_backbone.body.stage2.0.concat.0.weight"],
                       official["img_backbone.stage2.OSA2_1.concat.OSA2_1_concat/conv.weight"])  # fmt: skip
    assert torch.equal(got["img_neck.body.fpn_conv.weight"], official["img_neck.fpn_convs.0.conv.weight"])
    assert torch.equal(got["pts_bbox_head.core.reference_points.weight"],
                       official["pts_bbox_head.reference_points.weight"])  # fmt: skip
    # a missing file is a one-line error naming it
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_checkpoint(fresh, f"cmt-official://{tmp_path / 'missing.pth'}", strict=True)


def t_coords_bev(grid_size: tuple[int, int], downsample: int) -> torch.Tensor:
    """Official ``CmtHead.coords_bev`` for ``grid_size = [x_len, y_len]``: (H·W, 2) normalised (x, y)."""
    x_size, y_size = grid_size[1] // downsample, grid_size[0] // downsample
    a = torch.linspace(0, x_size - 1, x_size)
    b = torch.linspace(0, y_size - 1, y_size)
    batch_y, batch_x = torch.meshgrid(a, b, indexing="ij")
    batch_x = (batch_x + 0.5) / x_size
    batch_y = (batch_y + 0.5) / y_size
    return torch.stack([batch_x, batch_y]).view(2, -1).T


def test_bev_cell_centres_match_official_on_square_grids():
    from polyzoo.detection.cmt.positional import bev_cell_centers

    torch.testing.assert_close(bev_cell_centers(6, 6), t_coords_bev((48, 48), 8))
    # the documented deviation: on a non-square grid the official code swaps the two cell counts
    h, w = 4, 6  # rows (y), columns (x) of the BEV map; the official grid_size is [x_len, y_len] = [48, 32]
    ours, official = bev_cell_centers(h, w), t_coords_bev((w * 8, h * 8), 8)
    assert ours.shape == official.shape
    assert not torch.allclose(ours, official)
    torch.testing.assert_close(ours[:, 0].max(), torch.tensor((w - 0.5) / w))  # x spans the columns


def test_paper_configs_use_the_official_classes_and_safe_readers():
    pytest.importorskip("mmdet3d")
    from mmengine.config import Config

    from polyzoo.detection.cmt.learning_check import CONFIG_DIR

    for name in ("cmt_voxel0075_vov_1600x640_cbgs.py", "cmt_voxel0100_r50_800x320_cbgs.py"):
        cfg = Config.fromfile(str(CONFIG_DIR / name))
        assert tuple(cfg.class_names) == OFFICIAL_CLASSES, name
        assert tuple(cfg.train_dataloader.dataset.dataset.metainfo.classes) == OFFICIAL_CLASSES
        assert cfg.train_dataloader.dataset.dataset.type == "CmtNuScenesDataset"
        assert cfg.val_dataloader.dataset.type == "CmtNuScenesDataset"
        assert cfg.val_evaluator.type == "CmtNuScenesMetric"
        head = cfg.model.pts_bbox_head
        for option in ("box_code_order", "pos_form", "group_norm_eps", "cross_attn_weight_dropout", "ffn_dropout"):
            assert option not in head, f"{name} overrides the official default {option}"
        assert head.dropout == 0.1


def test_official_class_order_in_metainfo_relabels_mmdet3d_infos(tmp_path):
    """mmdet3d 1.x infos store labels in its own nuScenes order; the paper configs' metainfo maps them to the
    official order the official weights predict."""
    pytest.importorskip("mmdet3d")
    import polyzoo.detection.cmt.mmdet3d_plugin as plugin
    from polyzoo.detection.cmt.toy_scenes import NUSCENES_CLASSES, ToySceneConfig, write_toy_dataset

    path = write_toy_dataset(tmp_path, ToySceneConfig(num_scenes=3, seed=4))
    ds = plugin.CmtNuScenesDataset(
        data_root=str(tmp_path) + "/",
        ann_file=path.name,
        pipeline=[],
        metainfo=dict(classes=list(OFFICIAL_CLASSES)),
        modality=dict(use_lidar=True, use_camera=True),
        data_prefix=dict(pts="", img=""),
        test_mode=False,
    )
    raw = pickle.loads(path.read_bytes())  # our own freshly written file
    moved = 0
    for i in range(len(ds)):
        raw_labels = [inst["bbox_label_3d"] for inst in raw["data_list"][i]["instances"]]
        expected = [OFFICIAL_CLASSES.index(NUSCENES_CLASSES[label]) for label in raw_labels]
        assert list(ds.get_data_info(i)["ann_info"]["gt_labels_3d"]) == expected
        moved += sum(e != r for e, r in zip(expected, raw_labels, strict=True))
    assert moved > 0  # pedestrians / traffic cones change index between the two orders


@pytest.mark.slow
def test_tools_test_py_runs_an_official_checkpoint(tmp_path, monkeypatch):
    """``tools/test.py CONFIG cmt-official://PATH`` (runner.test_main) loads an official-layout checkpoint."""
    pytest.importorskip("mmdet3d")
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401
    from polyzoo.detection.cmt.learning_check import config_path
    from polyzoo.detection.cmt.official_checkpoint import SCHEME, resolve_official_args
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset
    from polyzoo.detection.runner import test_main

    init_default_scope("mmdet3d")
    from mmdet3d.registry import MODELS

    cfg_file = config_path("cmt_toy_cpu.py")
    model = MODELS.build(Config.fromfile(str(cfg_file)).model)
    sizes = dict(in_ch=64, h=64, depth=16, queries=40, layers=2, ffn=128, head_conv=32, classes=3)
    official = {**official_head_state_dict(**sizes), **official_cpfpn_state_dict([64, 128], 64)}
    ours = model.state_dict()
    passthrough = ("img_backbone.", "pts_middle_encoder.", "pts_backbone.", "pts_neck.")  # mmdet/mmdet3d modules
    official.update({k: v.clone() for k, v in ours.items() if k.startswith(passthrough)})
    from collections import OrderedDict

    official = OrderedDict(official)
    official._metadata = OrderedDict((k, v) for k, v in ours._metadata.items() if k.startswith(passthrough))
    path = tmp_path / "official.pth"
    torch.save({"meta": {"epoch": 20}, "state_dict": official}, path)

    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    data = str(write_toy_dataset(tmp_path / "data", ToySceneConfig(num_scenes=1, seed=5)).parent) + "/"
    # what tools/test.py does with its arguments: the official checkpoint is converted once, then tested
    argv = resolve_official_args(
        [str(cfg_file), f"{SCHEME}{path}", "--work-dir", str(tmp_path / "work"), "--cfg-options",
         f"test_dataloader.dataset.data_root={data}", f"val_dataloader.dataset.data_root={data}",
         f"train_dataloader.dataset.data_root={data}"],
        tmp_path,
    )  # fmt: skip
    converted = argv[1]
    from polyzoo.detection.checkpoint import load_state_dict

    sd = load_state_dict(converted)
    model.load_state_dict(sd, strict=True)  # every model key, nothing else; spconv module versions kept
    ours_key = "pts_bbox_head.core.decoder.layers.0.cross_attn.out_proj.weight"
    official_key = "pts_bbox_head.transformer.decoder.layers.0.attentions.1.attn.out_proj.weight"
    assert torch.equal(model.state_dict()[ours_key], official[official_key])
    metrics = test_main(argv)
    assert {"cda/AP@0.5", "cda/mAP"} <= set(metrics)


def t_rv_pe(feat_hw, pad_hw, lidar2img: np.ndarray, sd: dict, depth_num: int) -> torch.Tensor:
    """Official ``_rv_pe`` + the transformer's '(bs v) h w c -> (v h w) bs c': (B, V·H·W, hidden)."""
    (h, w), (pad_h, pad_w) = feat_hw, pad_hw
    lo, hi = torch.tensor(PC_RANGE[:3]), torch.tensor(PC_RANGE[3:])
    depths = 1 + torch.arange(depth_num, dtype=torch.float32) * (PC_RANGE[3] - 1) / depth_num
    b_n, v_n = lidar2img.shape[:2]
    out = []
    for b in range(b_n):
        tokens = []
        for v in range(v_n):
            i2l = torch.from_numpy(np.linalg.inv(lidar2img[b, v])).float()
            for row in range(h):
                for col in range(w):
                    u_px, v_px = col * pad_w / w, row * pad_h / h
                    pts = torch.stack([i2l @ torch.tensor([u_px * d, v_px * d, d, 1.0]) for d in depths])[:, :3]
                    tokens.append(t_mlp(((pts - lo) / (hi - lo)).reshape(-1), sd, "pts_bbox_head.rv_embedding."))
        out.append(torch.stack(tokens))
    return torch.stack(out)


def test_image_token_ray_encoding_matches_official():
    head, official = _head_from_official()
    lidar2img = _cameras(batch=2)
    with torch.no_grad():
        ours = head.coords.image_pe(torch.from_numpy(lidar2img).float(), (2, 5), (64, 160))
    expected = t_rv_pe((2, 5), (64, 160), lidar2img, official, SIZES["depth"])
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
