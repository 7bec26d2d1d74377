"""Unit tests of CMT's mechanisms on tiny tensors (plain PyTorch core, no OpenMMLab)."""

import math

import numpy as np
import pytest
import torch

from polyzoo.detection.cmt.bbox import decode_topk, denormalize_bbox, hungarian_assign, normalize_bbox
from polyzoo.detection.cmt.denoise import prepare_denoising
from polyzoo.detection.cmt.evaluation import center_distance_ap
from polyzoo.detection.cmt.head import CmtHeadConfig, CmtHeadCore, SeparateTaskHead
from polyzoo.detection.cmt.masking import choose_masked_modality, grid_mask
from polyzoo.detection.cmt.positional import CoordinateEncoder, bev_cell_centers, depth_bins, lift_pixels, pos2embed
from polyzoo.detection.cmt.transformer import CmtDecoder

PC_RANGE = (-20.0, -20.0, -3.0, 20.0, 20.0, 3.0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and much better on a shared 2-core machine
    yield
    torch.set_num_threads(previous)


def _front_camera(fx: float = 50.0, cx: float = 80.0, cy: float = 32.0, yaw: float = 0.0) -> torch.Tensor:
    """lidar2img of a pinhole camera at the origin looking along the LiDAR direction (cos yaw, sin yaw, 0)."""
    k = torch.tensor([[fx, 0, cx, 0], [0, fx, cy, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    c, s = math.cos(yaw), math.sin(yaw)
    # camera axes in LiDAR coords: x_cam = right, y_cam = down, z_cam = forward
    fwd, right, down = (c, s, 0.0), (s, -c, 0.0), (0.0, 0.0, -1.0)
    r = torch.eye(4)
    r[0, :3], r[1, :3], r[2, :3] = torch.tensor(right), torch.tensor(down), torch.tensor(fwd)
    return k @ r


def _boxes() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    b0 = torch.tensor([[8.0, 1.0, 0.0, 4.0, 2.0, 1.5, 0.3, 1.0, 0.0]])
    b1 = torch.tensor([[10.0, -3.0, 0.2, 4.0, 2.0, 1.5, -0.5, 0.0, 0.5], [5.0, 4.0, 0.0, 0.8, 0.8, 1.8, 0.0, 0.0, 0.0]])
    return [b0, b1], [torch.tensor([0]), torch.tensor([0, 2])]


# ---------------------------------------------------------------- boxes, matching, decoding
def test_bbox_code_round_trip():
    boxes = torch.tensor([[1.0, -2.0, 0.5, 4.0, 2.0, 1.5, 2.9, 0.3, -0.1], [0.0, 0.0, 0.0, 0.5, 0.6, 0.7, -3.0, 0, 0]])
    code = normalize_bbox(boxes)  # official order: (x, y, log dx, log dy, z, log dz, sin, cos, vx, vy)
    assert code.shape == (2, 10)
    torch.testing.assert_close(code[:, [2, 3, 5]], boxes[:, 3:6].log())
    torch.testing.assert_close(code[:, 4], boxes[:, 2])
    torch.testing.assert_close(denormalize_bbox(code), boxes)
    reordered = normalize_bbox(boxes, "reordered")  # (x, y, z, log d, ...)
    torch.testing.assert_close(reordered[:, 3:6], boxes[:, 3:6].log())
    torch.testing.assert_close(denormalize_bbox(reordered, "reordered"), boxes)
    assert normalize_bbox(boxes[:, :7]).shape == (2, 8)
    with pytest.raises(ValueError, match="expected 7 or 9"):
        normalize_bbox(boxes[:, :5])


def test_hungarian_assign_recovers_permutation():
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(4, 9, generator=gen) * 5 + 1
    labels = torch.tensor([0, 1, 2, 1])
    perm = torch.tensor([5, 0, 3, 2])  # query index holding each gt
    code = torch.randn(7, 10, generator=gen) * 10
    code[perm] = normalize_bbox(gt)
    logits = torch.full((7, 3), -4.0)
    logits[perm, labels] = 4.0
    assigned = hungarian_assign(logits, code, labels, gt, (2, 2, 1, 1, 1, 1, 1, 1, 0.2, 0.2))
    expected = torch.full((7,), -1)
    expected[perm] = torch.arange(4)
    assert torch.equal(assigned, expected)
    assert (hungarian_assign(logits, code, labels[:0], gt[:0], [1] * 10) == -1).all()


def test_decode_topk_is_nms_free_and_filters_range():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 4.0], [3.0, 2.0]])
    boxes = torch.tensor([[1.0, 1, 0, 1, 1, 1, 0, 0, 0], [2.0, 2, 0, 1, 1, 1, 0, 0, 0], [50.0, 0, 0, 1, 1, 1, 0, 0, 0]])
    out_boxes, scores, labels = decode_topk(logits, normalize_bbox(boxes), max_num=4)
    assert scores.tolist() == sorted(scores.tolist(), reverse=True) and len(scores) == 4
    assert labels.tolist() == [0, 1, 0, 1]  # duplicates of one query are kept: no NMS
    _, scores, _ = decode_topk(logits, normalize_bbox(boxes), 4, post_center_range=(-10, -10, -5, 10, 10, 5))
    assert len(scores) == 2  # the box at x = 50 m is dropped
    torch.testing.assert_close(out_boxes[0], boxes[0])


# ---------------------------------------------------------------- coordinate encoding
def test_pos2embed_and_bev_centres():
    emb = pos2embed(torch.zeros(3, 2), num_pos_feats=8)
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb[:, 0::2], torch.zeros(3, 8))  # sin(0)
    torch.testing.assert_close(emb[:, 1::2], torch.ones(3, 8))  # cos(0)
    c = bev_cell_centers(2, 4)
    assert c.shape == (8, 2)
    torch.testing.assert_close(c[0], torch.tensor([0.125, 0.25]))
    torch.testing.assert_close(c[5], torch.tensor([0.375, 0.75]))  # row 1 (y), column 1 (x)
    d = depth_bins(4, 9.0)
    torch.testing.assert_close(d, torch.tensor([1.0, 3.0, 5.0, 7.0]))


def test_anchor_projected_then_relifted_lands_on_its_ray():
    l2i = _front_camera(yaw=0.4)
    point = torch.tensor([7.0, 3.5, -0.4, 1.0])
    proj = l2i @ point
    depth = proj[2]
    uv = (proj[:2] / depth).view(1, 2)
    lifted = lift_pixels(uv, torch.tensor([1.0, float(depth), 2 * float(depth)]), torch.linalg.inv(l2i))
    assert lifted.shape == (1, 3, 3)
    torch.testing.assert_close(lifted[0, 1], point[:3], atol=1e-4, rtol=1e-4)  # at its own depth: the point
    # every lifted point is collinear with the camera centre (origin) and the anchor
    cross = torch.linalg.cross(lifted[0], point[:3].expand(3, 3), dim=-1)
    torch.testing.assert_close(cross, torch.zeros(3, 3), atol=1e-3, rtol=0)


def test_coordinate_encoder_shapes_and_visibility():
    enc = CoordinateEncoder(hidden_dim=16, depth_num=4, pc_range=PC_RANGE)
    l2i = torch.stack([_front_camera(yaw=0.0), _front_camera(yaw=math.pi)]).unsqueeze(0)  # (1, 2, 4, 4)
    assert enc.bev_pe(3, 5).shape == (15, 16)
    assert enc.image_pe(l2i, (4, 10), (64, 160)).shape == (1, 2 * 4 * 10, 16)
    # anchors: one in front of camera 0, one behind both cameras' image planes (straight up, not visible)
    ref = torch.tensor([[[0.75, 0.5, 0.5], [0.5, 0.5, 0.99]]])
    rv = enc.rv_query_pe(ref, l2i, (64, 160))
    assert rv.shape == (1, 2, 16)
    assert rv[0, 0].abs().sum() > 0
    torch.testing.assert_close(rv[0, 1], torch.zeros(16))
    # the same anchor seen by both a camera and its copy: the image term is summed over views
    rv2 = enc.rv_query_pe(ref[:, :1], torch.cat([l2i[:, :1], l2i[:, :1]], 1), (64, 160))
    torch.testing.assert_close(rv2, 2 * rv[:, :1])
    assert enc.query_pe(ref, None, (64, 160)).shape == (1, 2, 16)


# ---------------------------------------------------------------- denoising
def test_denoising_groups_mask_and_noise_bounds():
    boxes, labels = _boxes()
    anchors = torch.rand(20, 3)
    gen = torch.Generator().manual_seed(1)
    refs, mask, dn = prepare_denoising(anchors, boxes, labels, PC_RANGE, num_classes=3, scalar=3, generator=gen)
    max_gt = 2
    assert dn.num_groups == min(3, 20 // max_gt) and dn.pad_size == 6
    assert refs.shape == (2, 26, 3) and mask.shape == (26, 26)
    torch.testing.assert_close(refs[:, 6:], anchors.expand(2, -1, -1))
    assert mask[6:, :6].all() and not mask[6:, 6:].any() and not mask[:6, 6:].any()
    for g in range(3):
        block = slice(2 * g, 2 * g + 2)
        assert not mask[block, block].any()
        others = [i for i in range(6) if i // 2 != g]
        assert mask[block][:, others].all()
    # noised centres stay within half a box size of the truth (in normalised units)
    rng = torch.tensor(PC_RANGE)
    true = (dn.boxes[:, :3] - rng[:3]) / (rng[3:] - rng[:3])
    got = refs[dn.batch_index, dn.query_index]
    half = dn.boxes[:, 3:6] / 2 / (rng[3:] - rng[:3])
    assert ((got - true).abs() <= half + 1e-6).all()
    assert set(dn.labels.tolist()) <= {0, 2, 3}
    # without ground truth there is no DN
    refs, mask, dn = prepare_denoising(anchors, [torch.zeros(0, 9)] * 2, [torch.zeros(0)] * 2, PC_RANGE, 3)
    assert dn is None and mask is None and refs.shape == (2, 20, 3)


def test_denoising_no_object_labels_follow_split():
    boxes = [torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]])]
    _, _, dn = prepare_denoising(torch.rand(600, 3), boxes, [torch.tensor([1])], PC_RANGE, 3, scalar=500, split=0.75)
    frac = (dn.labels == 3).float().mean().item()
    # P(|U(-1,1)^3| > 0.75) = 1 - (4/3 π 0.75^3 / 8) ≈ 0.779
    assert abs(frac - (1 - 4 / 3 * math.pi * 0.75**3 / 8)) < 0.08


# ---------------------------------------------------------------- decoder
def test_decoder_mask_isolates_matching_queries_from_dn_queries():
    torch.manual_seed(0)
    dec = CmtDecoder(num_layers=2, hidden_dim=16, num_heads=2, ffn_dim=32, dropout=0.0).eval()
    mem = [torch.randn(1, 7, 16), torch.randn(1, 5, 16)]
    pos = [torch.randn(1, 7, 16), torch.randn(1, 5, 16)]
    qpos = torch.randn(1, 6, 16)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2:, :2] = True  # the last 4 (matching) queries cannot see the first 2 (DN)
    out = dec(qpos, mem, pos, mask)
    assert out.shape == (2, 1, 6, 16)
    qpos2 = qpos.clone()
    qpos2[:, :2] += 5.0
    out2 = dec(qpos2, mem, pos, mask)
    torch.testing.assert_close(out[:, :, 2:], out2[:, :, 2:])
    assert not torch.allclose(out[:, :, :2], out2[:, :, :2])
    # cross-attention reads both modalities: changing the image tokens changes the output
    out3 = dec(qpos, [mem[0], mem[1] + 1.0], pos, mask)
    assert not torch.allclose(out, out3)


# ---------------------------------------------------------------- head
def _tiny_head(**kw) -> CmtHeadCore:
    cfg = dict(
        in_channels=8, hidden_dim=16, num_query=12, depth_num=4, num_classes=3, pc_range=PC_RANGE, num_layers=2,
        num_heads=2, ffn_dim=32, head_conv=8, scalar=2, max_num=10, post_center_range=None,
    )  # fmt: skip
    cfg.update(kw)
    return CmtHeadCore(CmtHeadConfig(**cfg))


def test_separate_task_head_groups_are_per_layer():
    head = SeparateTaskHead(4, {"center": (2, 2), "cls_logits": (3, 2)}, groups=2, head_conv=5)
    assert head.center[0].groups == 2 and head.center[0].weight.shape == (10, 4, 1)
    torch.testing.assert_close(head.cls_logits[-1].bias, torch.full((6,), -2.19))
    x = torch.randn(2, 1, 3, 4)
    out = head(x)
    assert out["center"].shape == (2, 1, 3, 2) and out["cls_logits"].shape == (2, 1, 3, 3)
    x2 = x.clone()
    x2[1] += 1  # changing layer 1's features leaves layer 0's outputs unchanged
    torch.testing.assert_close(head(x2)["center"][0], out["center"][0])


def test_head_forward_loss_backward_and_decode():
    torch.manual_seed(0)
    head = _tiny_head().train()
    boxes, labels = _boxes()
    l2i = torch.stack([_front_camera(yaw=0.0), _front_camera(yaw=math.pi)]).expand(2, -1, -1, -1)
    out = head(torch.randn(2, 8, 4, 4), torch.randn(2, 2, 16, 2, 5), l2i, (32, 80), boxes, labels)
    assert out["logits"].shape == (2, 2, 12, 3) and out["code"].shape == (2, 2, 12, 10)
    assert out["dn_logits"].shape[2] == out["dn"].pad_size == 4
    centres = out["code"][..., :3]
    assert (centres >= torch.tensor(PC_RANGE[:3])).all() and (centres <= torch.tensor(PC_RANGE[3:])).all()
    losses = head.loss(out, boxes, labels)
    assert set(losses) == {
        "loss_cls", "loss_bbox", "dn_loss_cls", "dn_loss_bbox", "d0.loss_cls", "d0.loss_bbox", "d0.dn_loss_cls",
        "d0.dn_loss_bbox",
    }  # fmt: skip
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert head.reference_points.weight.grad.abs().sum() > 0
    assert head.coords.rv_embedding[0].weight.grad.abs().sum() > 0  # image PE is trained
    head.eval()
    with torch.no_grad():
        for bev, img in ((None, torch.randn(2, 2, 16, 2, 5)), (torch.randn(2, 8, 4, 4), None)):
            res = head.decode(head(bev, img, l2i, (32, 80)))
            assert len(res) == 2 and res[0][0].shape == (10, 9)
    with pytest.raises(ValueError, match="both modalities"):
        head(None, None, None, None)


def test_head_overfits_one_scene():
    torch.manual_seed(0)
    head = _tiny_head(dropout=0.0, scalar=2, num_query=12).train()
    boxes, labels = [_boxes()[0][1]], [_boxes()[1][1]]
    bev = torch.randn(1, 8, 4, 4)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        losses = head.loss(head(bev, None, None, None, boxes, labels), boxes, labels)
        loss = losses["loss_cls"] + losses["loss_bbox"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert loss.item() < 0.5 * first


# ---------------------------------------------------------------- masked modality, GridMask
def test_masked_modality_frequencies():
    rng = np.random.default_rng(0)
    draws = [choose_masked_modality(rng) for _ in range(4000)]
    assert abs(draws.count("image") / 4000 - 0.25) < 0.03
    assert abs(draws.count("points") / 4000 - 0.25) < 0.03
    assert abs(draws.count(None) / 4000 - 0.5) < 0.03
    with pytest.raises(ValueError):
        choose_masked_modality(rng, 0.8, 0.5)


def test_grid_mask_zeroes_squares_between_stripes():
    imgs = torch.ones(2, 3, 32, 48)
    out = grid_mask(imgs, torch.Generator().manual_seed(0), ratio=0.5, prob=1.0)
    zero = out == 0
    assert 0.05 < zero.float().mean() < 0.6
    assert torch.equal(zero[0], zero[1]) and torch.equal(zero[:, 0], zero[:, 2])  # same grid, all channels
    assert torch.equal(grid_mask(imgs, prob=0.0), imgs)


# ---------------------------------------------------------------- centre-distance AP
def test_center_distance_ap_thresholds():
    gt = (np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]), np.array([0, 1]))
    perfect = (gt[0].copy(), np.array([0.9, 0.8]), np.array([0, 1]))
    assert center_distance_ap([perfect], [gt])["mAP"] == pytest.approx(1.0)
    shifted = (gt[0] + np.array([1.5, 0.0, 0.0]), np.array([0.9, 0.8]), np.array([0, 1]))
    ap = center_distance_ap([shifted], [gt])
    assert ap["AP@0.5"] == 0 and ap["AP@1"] == 0 and ap["AP@2"] == pytest.approx(1.0) and ap["AP@4"] == 1
    wrong_class = (gt[0].copy(), np.array([0.9, 0.8]), np.array([1, 0]))
    assert center_distance_ap([wrong_class], [gt])["mAP"] == 0
    # a high-scoring false positive before the true positive halves precision at full recall
    fp = (np.array([[50.0, 0, 0], [0.0, 0, 0]]), np.array([0.9, 0.5]), np.array([0, 0]))
    ap = center_distance_ap([fp], [(gt[0][:1], gt[1][:1])])
    assert ap["AP@1"] == pytest.approx(0.5)
