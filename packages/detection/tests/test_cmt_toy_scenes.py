"""Toy scene generator: nuScenes-style infos whose calibration, images and points agree with the boxes."""

import pickle

import numpy as np
from click.testing import CliRunner

from polyzoo.detection.cli import detection
from polyzoo.detection.cmt.toy_scenes import _COLOURS, NUSCENES_CLASSES, TOY_CLASSES, box_corners


def test_toy_data_cli_writes_consistent_scenes(tmp_path):
    import cv2

    result = CliRunner().invoke(detection, ["toy-data", str(tmp_path), "--scenes", "3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    info = pickle.loads((tmp_path / "toy_infos.pkl").read_bytes())
    assert len(info["data_list"]) == 3
    checked = 0
    for sample in info["data_list"]:
        pts = np.fromfile(tmp_path / sample["lidar_points"]["lidar_path"], dtype=np.float32).reshape(-1, 5)
        assert len(sample["images"]) == 4 and 1 <= len(sample["instances"]) <= 4
        for inst in sample["instances"]:
            box = np.asarray(inst["bbox_3d"])
            name = NUSCENES_CLASSES[inst["bbox_label_3d"]]
            assert name in TOY_CLASSES
            # LiDAR points lie on the box surface (within its slightly inflated footprint and height)
            corners = box_corners(box)
            near = np.linalg.norm(pts[:, :2] - box[:2], axis=1) < np.hypot(box[3], box[4]) / 2 + 0.05
            on_box = near & (pts[:, 2] > box[2] + 0.1)
            assert on_box.sum() > 20
            assert pts[on_box, 2].max() <= corners[:, 2].max() + 0.1
            # the box centre projects into the camera facing it, onto a pixel of its class colour
            centre = np.array([box[0], box[1], box[2] + box[5] / 2, 1.0])
            for cam in sample["images"].values():
                k = np.eye(4)
                k[:3, :3] = np.asarray(cam["cam2img"])
                uvw = k @ np.asarray(cam["lidar2cam"]) @ centre
                if uvw[2] <= 0:
                    continue
                u, v = uvw[:2] / uvw[2]
                if not (1 <= u < 159 and 1 <= v < 63):
                    continue
                img = cv2.imread(str(tmp_path / cam["img_path"]))
                colours = {
                    tuple(int(c) for c in img[int(v) + dv, int(u) + du]) for dv in (-1, 0, 1) for du in (-1, 0, 1)
                }
                occluded = any(
                    np.hypot(o["bbox_3d"][0], o["bbox_3d"][1]) < np.hypot(box[0], box[1])
                    for o in sample["instances"]
                    if o is not inst
                )
                if not occluded:
                    assert _COLOURS[name] in colours
                    checked += 1
    assert checked >= 2
