"""CMT through mmdet3d: registration, transforms, the tiny model on toy and real data, the paper configs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polyzoo.shared.paths import shared_data_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "cmt"
SHARED = shared_data_dir(__file__)
NUSCENES = SHARED / "nuscenes"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast and much better on a shared 2-core machine
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mm():
    from mmengine.registry import init_default_scope

    import polyzoo.detection.cmt.mmdet3d_plugin as plugin

    init_default_scope("mmdet3d")
    return plugin


def _cfg(name: str, **data_root):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / name))
    for key in ("train_dataloader", "test_dataloader"):
        if data_root:
            cfg[key].dataset.data_root = data_root["root"]
    return cfg


def _batch(model, dataset, indices, training):
    from mmengine.dataset import pseudo_collate

    return model.data_preprocessor(pseudo_collate([dataset[i] for i in indices]), training=training)


def test_registered(mm):
    from mmdet3d.registry import METRICS, MODELS, TRANSFORMS

    for name in ("CmtDetector", "CmtHead", "VoVNet", "CPFPN"):
        assert MODELS.get(name) is not None, name
    assert TRANSFORMS.get("ModalMask3D") is not None and TRANSFORMS.get("CmtMultiViewResize") is not None
    assert METRICS.get("CenterDistanceAP") is not None


def test_multiview_resize_keeps_projection_consistent(mm):
    from polyzoo.detection.cmt.toy_scenes import cameras

    ((k, l2c),) = cameras(1, (320, 180))
    point = np.array([6.0, 1.0, -0.5, 1.0])
    img = np.zeros((180, 320, 3), dtype=np.uint8)
    for mode, size in (("stretch", (160, 64)), ("crop_top", (160, 64))):
        res = mm.CmtMultiViewResize(size, mode)({"img": [img], "cam2img": [k], "lidar2cam": [l2c]})
        assert res["img"][0].shape == (64, 160, 3)
        before = np.eye(4)
        before[:3, :3] = k
        uvw = before @ l2c @ point
        after = res["lidar2img"][0] @ point
        u0, v0 = uvw[:2] / uvw[2]
        u1, v1 = after[:2] / after[2]
        if mode == "stretch":
            np.testing.assert_allclose([u1, v1], [u0 * 160 / 320, v0 * 64 / 180], rtol=1e-6)
        else:  # scale 0.5 → 160×90, then the top 26 rows are cropped
            np.testing.assert_allclose([u1, v1], [u0 * 0.5, v0 * 0.5 - 26], rtol=1e-6)


def test_modal_mask_modes(mm):
    from mmdet3d.structures import LiDARPoints

    def results():
        return {"img": [np.ones((4, 4, 3))], "points": LiDARPoints(torch.ones(5, 5), points_dim=5)}

    out = mm.ModalMask3D(mode="test", mask_modal="points")(results())
    assert out["points"].tensor.abs().sum() == 0 and out["img"][0].sum() > 0
    out = mm.ModalMask3D(mode="test", mask_modal="image")(results())
    assert out["img"][0].sum() == 0 and out["points"].tensor.abs().sum() > 0
    t = mm.ModalMask3D(mode="train", seed=0)
    seen = {t(results())["masked_modality"] for _ in range(40)}
    assert seen == {None, "image", "points"}
    with pytest.raises(ValueError, match="mask_modal"):
        mm.ModalMask3D(mode="test", mask_modal="radar")


def test_tiny_model_on_toy_scene_all_modalities(mm, tmp_path):
    from mmdet3d.registry import DATASETS, MODELS

    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    write_toy_dataset(tmp_path, ToySceneConfig(num_scenes=2, seed=3))
    cfg = _cfg("cmt_toy_cpu.py", root=str(tmp_path) + "/")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)  # deterministic pipeline (no masking), with GT packed
    data = _batch(model, dataset, [0, 1], training=True)
    assert data["inputs"]["imgs"].shape == (2, 4, 3, 64, 160)
    model.train()
    losses = model(**data, mode="loss")
    assert {"loss_cls", "loss_bbox", "dn_loss_cls", "d0.loss_bbox"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0
    assert model.pts_middle_encoder.conv_input[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(**data, mode="predict")
        assert len(out) == 2 and out[0].pred_instances_3d.bboxes_3d.tensor.shape[1] == 9
        for drop in ("imgs", "voxels"):  # a sensor removed entirely
            inputs = {k: v for k, v in data["inputs"].items() if k != drop and not (drop == "voxels" and k == "points")}
            res = model(inputs, data["data_samples"], mode="predict")
            assert res[0].pred_instances_3d.scores_3d.numel() > 0


@pytest.mark.skipif(
    not (NUSCENES / "n015-2018-07-24-11-22-45+0800.pkl").is_file(), reason=f"no nuScenes sample in {NUSCENES}"
)
def test_tiny_model_on_real_nuscenes_sample(mm):
    from mmdet3d.registry import DATASETS, MODELS

    cfg = _cfg("cmt_tiny_cpu.py", root=str(NUSCENES) + "/")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t["type"] != "ModalMask3D"]
    dataset = DATASETS.build(ds_cfg)
    item = dataset[0]
    assert item["inputs"]["img"].shape == (6, 3, 64, 160)
    assert item["inputs"]["points"].shape[1] == 5 and len(item["data_samples"].gt_instances_3d) > 0
    data = _batch(model, dataset, [0], training=True)
    model.train()
    losses = model(**data, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        pred = model(**data, mode="predict")[0].pred_instances_3d
        assert pred.bboxes_3d.tensor.shape == (100, 9)
        r = cfg.model.pts_bbox_head.post_center_range
        centres = pred.bboxes_3d.gravity_center
        assert (centres[:, 0].abs() <= r[3]).all()
    # points removed (ModalMask3D test mode zeroes them) and images removed
    for modal in ("points", "image"):
        test_cfg = cfg.test_dataloader.dataset.copy()
        test_cfg.pipeline = [dict(t, mask_modal=modal) if t["type"] == "ModalMask3D" else t for t in test_cfg.pipeline]
        test_set = DATASETS.build(test_cfg)
        batch = _batch(model, test_set, [0], training=False)
        if modal == "points":
            assert batch["inputs"]["points"][0].abs().sum() == 0
        else:
            assert batch["inputs"]["imgs"].abs().sum() > 0  # zero pixels, normalised: constant, not zero
            assert torch.unique(batch["inputs"]["imgs"][0, :, 0]).numel() == 1
        with torch.no_grad():
            assert model(**batch, mode="predict")[0].pred_instances_3d.scores_3d.numel() == 100


def test_paper_configs_build(mm):
    from mmdet3d.registry import MODELS

    vov = _cfg("cmt_voxel0075_vov_1600x640_cbgs.py")
    assert vov.model.pts_middle_encoder.sparse_shape == [41, 1440, 1440]
    model = MODELS.build(vov.model)
    body = model.img_backbone.body
    assert (
        sum(len([m for m in getattr(body, s) if not isinstance(m, torch.nn.MaxPool2d)]) for s in body.stage_names) == 16
    )
    assert body.out_channels["stage4"] == 768 and body.out_channels["stage5"] == 1024
    head = model.pts_bbox_head.core
    assert head.reference_points.weight.shape == (900, 3) and len(head.decoder.layers) == 6
    assert head.coords.rv_embedding[0].in_features == 64 * 3
    assert head.shared_conv[0].in_channels == 512
    with torch.no_grad():
        feats = model.img_backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [4, 2]  # strides 16 and 32
    # the paper's training pipeline: GT-paste on the raw views first, then image and 3-D augmentations, then masking
    from mmdet3d.registry import TRANSFORMS

    steps = [t["type"] for t in vov.train_dataloader.dataset.dataset.pipeline]
    order = ["LoadAnnotations3D", "CmtUnifiedObjectSample", "CmtResizeCropFlipImage", "CmtGlobalRotScaleTrans",
             "CmtRandomFlip3D", "ModalMask3D", "Pack3DDetInputs"]  # fmt: skip
    assert [s for s in steps if s in order] == order
    for t in vov.train_dataloader.dataset.dataset.pipeline:
        if not t["type"].startswith("Load"):
            TRANSFORMS.build(t)  # the GT database is read lazily, on the first sample
    assert vov.custom_hooks[0].type == "DisableObjectSampleHook" and vov.custom_hooks[0].disable_after_epoch == 15
    assert vov.optim_wrapper.type == "AmpOptimWrapper" and vov.model.img_backbone.norm_eval is True
    r50 = _cfg("cmt_voxel0100_r50_800x320_cbgs.py")
    r50_steps = [t["type"] for t in r50.train_dataloader.dataset.dataset.pipeline]
    assert [s for s in r50_steps if s in order] == order
    assert r50.model.img_backbone.depth == 50
    assert r50.model.pts_middle_encoder.sparse_shape == [41, 1024, 1024]  # junjie18/CMT's fusion R50 config
    assert math.isclose(r50.optim_wrapper.optimizer.lr, 1.4e-4)
    model = MODELS.build(r50.model)
    assert model.img_neck.body.lateral[1].in_channels == 2048


def test_vovnet_frozen_stages_and_norm_eval(mm):
    from mmdet3d.registry import MODELS

    net = MODELS.build(dict(type="VoVNet", spec="V-19-slim-eSE", out_features=("stage3",), frozen_stages=1))
    body = net.body
    assert not any(p.requires_grad for p in body.stem.parameters())
    assert not any(p.requires_grad for p in body.stage2.parameters())
    assert all(p.requires_grad for p in body.stage3.parameters())
    net.train()
    assert not body.stage2.training and body.stage3.training  # frozen stages keep BN statistics
    (out,) = net(torch.randn(1, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is None for p in body.stem.parameters()) and body.stage3[1].concat[0].weight.grad is not None
    normed = MODELS.build(dict(type="VoVNet", spec="V-19-slim-eSE", norm_eval=True)).train()
    bns = [m for m in normed.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    with pytest.raises(ValueError, match="frozen_stages"):
        MODELS.build(dict(type="VoVNet", spec="V-19-slim-eSE", frozen_stages=7))
