"""CMT's training augmentations keep cameras, LiDAR and boxes consistent (papers: pipeline sanity check 2)."""

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def aug():
    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401  (registers the transforms)
    from polyzoo.detection.cmt import augment

    return augment


def _project(lidar2img: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """(V, N, 2) pixels of (N, 3) LiDAR points in every view."""
    h = np.concatenate([xyz, np.ones((len(xyz), 1))], 1)
    uvw = np.einsum("vij,nj->vni", lidar2img, h)
    return uvw[..., :2] / uvw[..., 2:3]


def _scene(num_views: int = 2, size=(320, 180)):
    from mmdet3d.structures import LiDARInstance3DBoxes, LiDARPoints

    from polyzoo.detection.cmt.toy_scenes import cameras

    cams = cameras(num_views, size)
    k4 = [np.pad(np.asarray(k, dtype=np.float64), ((0, 1), (0, 1))) for k, _ in cams]
    for k in k4:
        k[3, 3] = 1.0
    l2c = [np.asarray(m, dtype=np.float64) for _, m in cams]
    boxes = LiDARInstance3DBoxes(
        torch.tensor([[6.0, 1.0, -1.0, 4.0, 2.0, 1.5, 0.3], [9.0, -3.0, -1.0, 1.0, 1.0, 1.8, 1.2]])
    )
    pts = torch.cat([boxes.gravity_center, torch.tensor([[7.0, 2.0, -1.7], [12.0, -1.0, 0.5]])])
    points = LiDARPoints(torch.cat([pts, torch.ones(len(pts), 2)], 1), points_dim=5)
    return {
        "points": points,
        "gt_bboxes_3d": boxes,
        "cam2img": k4,
        "lidar2cam": l2c,
        "lidar2img": np.stack([k @ m for k, m in zip(k4, l2c, strict=True)]),
        "img": [np.zeros((size[1], size[0], 3), np.uint8) for _ in range(num_views)],
    }


def test_global_rot_scale_trans_keeps_every_point_on_its_pixel(aug):
    res = _scene()
    before_pts = _project(res["lidar2img"], res["points"].tensor[:, :3].numpy().astype(np.float64))
    before_ctr = _project(res["lidar2img"], res["gt_bboxes_3d"].gravity_center.numpy().astype(np.float64))
    np.random.seed(0)  # noqa: NPY002  (mmdet3d's GlobalRotScaleTrans draws from NumPy's global RNG)
    t = aug.CmtGlobalRotScaleTrans(rot_range=[-0.785, 0.785], scale_ratio_range=[0.9, 1.1], translation_std=[0.5] * 3)
    out = t(res)
    moved = out["points"].tensor[:, :3].numpy().astype(np.float64)
    assert not np.allclose(moved, _scene()["points"].tensor[:, :3].numpy(), atol=1e-3)  # the scene did move
    np.testing.assert_allclose(_project(out["lidar2img"], moved), before_pts, rtol=1e-4, atol=1e-3)
    centres = out["gt_bboxes_3d"].gravity_center.numpy().astype(np.float64)
    np.testing.assert_allclose(_project(out["lidar2img"], centres), before_ctr, rtol=1e-4, atol=1e-3)
    # lidar2cam moved the same way: lidar2img is still cam2img @ lidar2cam
    for k, l2c, l2i in zip(out["cam2img"], out["lidar2cam"], out["lidar2img"], strict=True):
        np.testing.assert_allclose(k @ l2c, l2i, atol=1e-6)


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_bev_flip_moves_points_boxes_and_cameras_together(aug, direction):
    res = _scene()
    xyz0 = res["points"].tensor[:, :3].numpy().astype(np.float64).copy()
    yaw0 = res["gt_bboxes_3d"].yaw.clone()
    before = _project(res["lidar2img"], xyz0)
    p = (1.0, 0.0) if direction == "horizontal" else (0.0, 1.0)
    out = aug.CmtRandomFlip3D(*p, seed=0)(res)
    xyz = out["points"].tensor[:, :3].numpy().astype(np.float64)
    axis = 1 if direction == "horizontal" else 0
    np.testing.assert_allclose(xyz[:, axis], -xyz0[:, axis])
    np.testing.assert_allclose(np.delete(xyz, axis, 1), np.delete(xyz0, axis, 1))
    assert not torch.allclose(out["gt_bboxes_3d"].yaw, yaw0)
    np.testing.assert_allclose(_project(out["lidar2img"], xyz), before, rtol=1e-6, atol=1e-6)
    assert out[f"pcd_{direction}_flip"] is True


def test_resize_crop_flip_moves_pixels_and_projection_together(aug):
    res = _scene(num_views=1)
    xyz = res["points"].tensor[:, :3].numpy().astype(np.float64)[:1]  # first box centre
    (u, v), = _project(res["lidar2img"], xyz)[0]  # fmt: skip
    u, v = int(np.rint(u)), int(np.rint(v))
    res["img"][0][v - 1 : v + 2, u - 1 : u + 2] = 255  # a bright dot where the box centre projects
    seen_flip, seen_dot = set(), 0
    for seed in range(6):
        r = _scene(num_views=1)
        r["img"] = [res["img"][0].copy()]
        out = aug.CmtResizeCropFlipImage((200, 96), resize_lim=(0.94, 1.25), bot_pct_lim=(0.0, 0.2), seed=seed)(r)
        img = out["img"][0]
        assert img.shape == (96, 200, 3) and out["img_shape"] == (96, 200)
        (pu, pv), = _project(out["lidar2img"], xyz)[0]  # fmt: skip
        ys, xs = np.nonzero(img[..., 0] > 100)
        if len(xs):  # the dot is inside the crop: it sits where the updated projection says
            assert abs(xs.mean() - pu) < 1.0 and abs(ys.mean() - pv) < 1.0
            seen_dot += 1
        k, l2c = out["cam2img"][0], out["lidar2cam"][0]
        np.testing.assert_allclose(k @ l2c, out["lidar2img"][0], atol=1e-9)
        seen_flip.add(bool(out["img_aug_matrix"][0, 0] < 0))
    assert seen_flip == {True, False} and seen_dot >= 3


def test_resize_crop_flip_test_mode_is_deterministic_and_bad_args_say_so(aug):
    a = aug.CmtResizeCropFlipImage((160, 64), training=False)(_scene(1))
    b = aug.CmtResizeCropFlipImage((160, 64), training=False)(_scene(1))
    np.testing.assert_array_equal(a["img_aug_matrix"], b["img_aug_matrix"])
    assert a["img_aug_matrix"][0, 0] == pytest.approx(0.5)  # fit width 320 → 160, no flip
    with pytest.raises(ValueError, match="resize_lim"):
        aug.CmtResizeCropFlipImage((160, 64), resize_lim=(1.2, 0.9))
    with pytest.raises(ValueError, match="flip_ratio_bev_vertical"):
        aug.CmtRandomFlip3D(0.5, 1.5)


def test_real_nuscenes_sample_through_the_paper_augmentations(aug):
    """The real sample (6 cameras, 69 boxes): after image and 3-D augmentation every box centre projects where the
    pixel map sends its original projection."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from polyzoo.detection.cmt.gt_paste import load_sample, loading_dataset
    from polyzoo.shared.paths import shared_data_dir

    root = shared_data_dir(__file__) / "nuscenes"
    if not any(root.glob("*.pkl")):
        pytest.skip(f"the real nuScenes sample (info .pkl, images, LiDAR) is not under {root}; set POLYZOO_SHARED_DATA")
    init_default_scope("mmdet3d")
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[1] / "configs" / "cmt" / "cmt_tiny_cpu.py"))
    res = load_sample(loading_dataset(cfg, str(root) + "/"), 0)
    centres0 = res["gt_bboxes_3d"].gravity_center.numpy().astype(np.float64)
    l2i0 = np.stack([np.pad(np.asarray(k, np.float64), ((0, 4 - len(k)), (0, 4 - len(k)))) for k in res["cam2img"]])
    l2i0[:, 3, 3] = 1.0
    l2i0 = l2i0 @ np.stack([np.asarray(m, np.float64) for m in res["lidar2cam"]])
    np.random.seed(1)  # noqa: NPY002  (mmdet3d's GlobalRotScaleTrans draws from NumPy's global RNG)
    res = aug.CmtResizeCropFlipImage((400, 160), seed=1)(res)
    res = aug.CmtGlobalRotScaleTrans(
        rot_range=[-0.785, 0.785], scale_ratio_range=[0.9, 1.1], translation_std=[0.5] * 3
    )(res)
    res = aug.CmtRandomFlip3D(1.0, 1.0, seed=0)(res)
    assert len(res["img"]) == 6 and res["img"][0].shape[:2] == (160, 400)
    m = res["img_aug_matrix"]
    centres = res["gt_bboxes_3d"].gravity_center.numpy().astype(np.float64)
    h0 = np.concatenate([centres0, np.ones((len(centres0), 1))], 1)
    h1 = np.concatenate([centres, np.ones((len(centres), 1))], 1)
    for v in range(6):
        p0, p1 = h0 @ l2i0[v].T, h1 @ res["lidar2img"][v].T
        front = p0[:, 2] > 0.1
        uv0 = p0[front, :2] / p0[front, 2:3]
        uv1 = p1[front, :2] / p1[front, 2:3]
        expect = uv0 @ m[:2, :2].T + m[:2, 2]
        np.testing.assert_allclose(uv1, expect, rtol=1e-4, atol=1e-3)
