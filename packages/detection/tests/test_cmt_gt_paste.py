"""CMT's multi-modal GT-paste: the database (points + image patches, JSON index) and CmtUnifiedObjectSample."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
TOY_CONFIG = REPO / "packages" / "detection" / "configs" / "cmt" / "cmt_toy_cpu.py"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401
    from polyzoo.detection.cmt.gt_paste import build_gt_database, loading_dataset
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    init_default_scope("mmdet3d")
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, ToySceneConfig(num_scenes=6, seed=3))
    cfg = Config.fromfile(str(TOY_CONFIG))
    dataset = loading_dataset(cfg, str(root) + "/")
    db = build_gt_database(dataset, root / "gt_db", list(cfg.class_names), progress=False)
    return dataset, db, list(cfg.class_names)


def test_database_holds_every_object_with_its_points_and_patch(toy):
    from mmdet3d.structures.ops import box_np_ops

    from polyzoo.detection.cmt.gt_paste import load_sample

    dataset, db, classes = toy
    infos = json.loads(db.read_text())["infos"]
    n_objects = sum(len(load_sample(dataset, i)["gt_labels_3d"]) for i in range(len(dataset)))
    assert sum(len(v) for v in infos.values()) == n_objects
    sample = load_sample(dataset, 0)
    boxes = sample["gt_bboxes_3d"].tensor.numpy()
    first = [e for c in classes for e in infos[c] if e["sample_idx"] == 0]
    assert len(first) == len(boxes)
    for e in first:
        pts = np.fromfile(db.parent / e["path"], dtype=np.float32).reshape(-1, e["points_dim"])
        assert len(pts) == e["num_points_in_gt"] > 0
        box = np.array(e["box3d_lidar"])
        back = pts[:, :3] + box[:3]  # stored relative to the box's bottom centre: back inside the box
        assert box_np_ops.points_in_rbbox(back, box[None, :7]).all()
        assert e["image_path"] and (db.parent / e["image_path"]).is_file()


def test_paste_adds_objects_to_points_boxes_and_images(toy):
    from mmdet3d.datasets.transforms.data_augment_utils import box_collision_test
    from mmdet3d.structures.ops import box_np_ops

    from polyzoo.detection.cmt.gt_paste import CmtUnifiedObjectSample, _lidar2img, _project_boxes, load_sample

    dataset, db, classes = toy
    t = CmtUnifiedObjectSample(str(db), classes, {"car": 4, "pedestrian": 4, "traffic_cone": 4}, min_points=1, seed=0)
    grew = 0
    for idx in range(len(dataset)):
        before = load_sample(dataset, idx)
        n0, p0 = len(before["gt_labels_3d"]), len(before["points"])
        imgs0 = [im.copy() for im in before["img"]]
        out = t(before)
        n1 = len(out["gt_labels_3d"])
        assert len(out["gt_bboxes_3d"]) == n1 >= n0
        if n1 == n0:
            continue
        grew += 1
        boxes = out["gt_bboxes_3d"].tensor.numpy()
        # no two boxes overlap in BEV
        bev = box_np_ops.center_to_corner_box2d(boxes[:, 0:2], boxes[:, 3:5], boxes[:, 6])
        coll = box_collision_test(bev, bev)
        np.fill_diagonal(coll, False)
        assert not coll.any()
        # every pasted box holds points (its database points), and per class at most the requested number
        inside = box_np_ops.points_in_rbbox(out["points"].tensor.numpy()[:, :3], boxes[n0:, :7])
        assert (inside.sum(0) > 0).all()
        for k in range(len(classes)):  # never beyond the requested count (objects already present stay)
            had, has = int((out["gt_labels_3d"][:n0] == k).sum()), int((out["gt_labels_3d"] == k).sum())
            assert has <= max(4, had)
        # pixels changed inside some pasted object's 2-D box, and only inside the union of 2-D boxes
        corners = out["gt_bboxes_3d"].corners.numpy()
        changed_any = False
        for img0, img1, l2i in zip(imgs0, out["img"], _lidar2img(out), strict=True):
            box2d, _, valid = _project_boxes(corners, l2i, img0.shape[:2])
            covered = np.zeros(img0.shape[:2], bool)
            for i in np.nonzero(valid)[0]:
                covered[box2d[i, 1] : box2d[i, 3], box2d[i, 0] : box2d[i, 2]] = True
            diff = np.abs(img1.astype(np.float64) - img0).sum(-1) > 0
            assert not (diff & ~covered).any()
            changed_any |= bool(diff.any())
        assert changed_any
        assert len(out["points"]) != p0 or n1 > n0
    assert grew >= 2


def test_disabled_and_bad_index_say_so(toy, tmp_path):
    from polyzoo.detection.cmt.gt_paste import CmtUnifiedObjectSample, load_db_infos, load_sample

    dataset, db, classes = toy
    t = CmtUnifiedObjectSample(str(db), classes, {"car": 5}, seed=0)
    t.disabled = True  # what mmdet3d's DisableObjectSampleHook sets
    r = load_sample(dataset, 0)
    n = len(r["gt_labels_3d"])
    assert len(t(r)["gt_labels_3d"]) == n
    bad = tmp_path / "dbinfos.json"
    bad.write_text(json.dumps({"infos": {"car": [{"name": "car", "path": "x.bin"}]}}))
    with pytest.raises(ValueError, match=r"infos\['car'\]\[0\] lacks"):
        load_db_infos(bad)
    with pytest.raises(FileNotFoundError, match=r"cmt_gt_database\.py"):
        load_db_infos(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not in classes"):
        CmtUnifiedObjectSample(str(db), classes, {"bus": 2})


def test_disable_hook_finds_the_transform():
    from mmdet3d.datasets.transforms import ObjectSample

    from polyzoo.detection.cmt.gt_paste import CmtUnifiedObjectSample

    assert issubclass(CmtUnifiedObjectSample, ObjectSample)  # DisableObjectSampleHook switches ObjectSample off


def test_database_script_runs(tmp_path):
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    write_toy_dataset(tmp_path / "toy", ToySceneConfig(num_scenes=2, seed=1))
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "data" / "cmt_gt_database.py"), str(TOY_CONFIG), "--out",
         str(tmp_path / "db"), "--data-root", str(tmp_path / "toy") + "/", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    infos = json.loads((tmp_path / "db" / "dbinfos.json").read_text())["infos"]
    assert sum(len(v) for v in infos.values()) > 0
