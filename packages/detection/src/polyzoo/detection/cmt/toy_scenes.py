"""Toy 3D scenes in the nuScenes v2 info format (for CMT's learning check and tests).

Each scene has 1-4 boxed objects of 3 classes with distinct sizes on a flat ground plane, LiDAR points on the boxes'
visible surfaces and on the ground (5 features: x, y, z, intensity, 0), and ``num_cams`` pinhole cameras at the LiDAR
origin looking outwards (evenly spread yaw, 90° horizontal field of view) with known ``cam2img`` / ``lidar2cam``.
Images show each box's projected hull filled in its class colour (far to near) over a sky/ground background.

Output folder: ``<root>/<name>.pkl`` (``metainfo`` + ``data_list``, as mmdet3d's ``NuScenesDataset`` reads it),
``<root>/<token>__LIDAR_TOP.bin`` and ``<root>/<token>__CAM_i.png``. Boxes are mmdet3d LiDAR boxes
``(x, y, z_bottom, dx, dy, dz, yaw)``.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyzoo.shared.io import atomic_path

TOY_CLASSES: tuple[str, ...] = ("car", "pedestrian", "traffic_cone")
# mmdet3d's NuScenesDataset reads ``bbox_label_3d`` as an index into its own class list
NUSCENES_CLASSES: tuple[str, ...] = (
    "car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle", "pedestrian", "traffic_cone",
    "barrier",
)  # fmt: skip
_SIZES = {"car": (4.0, 1.8, 1.6), "pedestrian": (0.8, 0.8, 1.8), "traffic_cone": (0.5, 0.5, 0.8)}
_COLOURS = {"car": (40, 40, 220), "pedestrian": (40, 200, 40), "traffic_cone": (230, 120, 20)}  # BGR


@dataclass
class ToySceneConfig:
    """Generator settings (defaults sized for the tiny CMT config)."""

    num_scenes: int = 4
    num_cams: int = 4
    image_size: tuple[int, int] = (160, 64)  # (W, H)
    max_objects: int = 4
    extent: float = 14.0  # objects within ±extent m (x, y), at least min_range from the sensor
    min_range: float = 4.0
    ground_z: float = -1.6
    ground_points: int = 1500
    points_per_box: int = 250
    seed: int = 0


def cameras(num_cams: int, image_size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(cam2img 3×3, lidar2cam 4×4) per camera; camera i looks along yaw 2πi/num_cams."""
    w, h = image_size
    f = w / 2.0  # 90° horizontal field of view
    k = np.array([[f, 0, w / 2.0], [0, f, h / 2.0], [0, 0, 1.0]])
    out = []
    for i in range(num_cams):
        yaw = 2 * math.pi * i / num_cams
        c, s = math.cos(yaw), math.sin(yaw)
        l2c = np.eye(4)
        l2c[0, :3] = (s, -c, 0.0)  # image right
        l2c[1, :3] = (0.0, 0.0, -1.0)  # image down
        l2c[2, :3] = (c, s, 0.0)  # forward
        out.append((k.copy(), l2c))
    return out


def box_corners(box: np.ndarray) -> np.ndarray:
    """(x, y, z_bottom, dx, dy, dz, yaw) → (8, 3) corners."""
    x, y, z, dx, dy, dz, yaw = box[:7]
    sx, sy, sz = np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [0.0, 1.0], indexing="ij")
    local = np.stack([sx.ravel() * dx, sy.ravel() * dy, sz.ravel() * dz], 1)
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return local @ rot.T + np.array([x, y, z])


def _surface_points(box: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Points on the four sides and the top of a box (the bottom touches the ground)."""
    x, y, z, dx, dy, dz, yaw = box[:7]
    u = rng.uniform(-0.5, 0.5, size=(n, 3))
    face = rng.integers(0, 5, size=n)
    u[face == 0, 0], u[face == 1, 0] = -0.5, 0.5
    u[face == 2, 1], u[face == 3, 1] = -0.5, 0.5
    u[face == 4, 2] = 0.5
    local = u * np.array([dx, dy, dz]) + np.array([0, 0, dz / 2])
    c, s = math.cos(yaw), math.sin(yaw)
    pts = local @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]).T + np.array([x, y, z])
    # keep the side facing the sensor (a crude visibility test: closer than the box centre, or the top)
    centre_dist = math.hypot(x, y)
    keep = (np.hypot(pts[:, 0], pts[:, 1]) <= centre_dist + 0.05) | (face == 4)
    return pts[keep]


def _sample_boxes(cfg: ToySceneConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    boxes, labels = [], []
    n = int(rng.integers(1, cfg.max_objects + 1))
    tries = 0
    while len(boxes) < n and tries < 200:
        tries += 1
        label = int(rng.integers(0, len(TOY_CLASSES)))
        dx, dy, dz = _SIZES[TOY_CLASSES[label]]
        x, y = rng.uniform(-cfg.extent, cfg.extent, size=2)
        if math.hypot(x, y) < cfg.min_range:
            continue
        if any(math.hypot(x - b[0], y - b[1]) < (dx + b[3]) / 2 + 1.0 for b in boxes):
            continue
        boxes.append([x, y, cfg.ground_z, dx, dy, dz, rng.uniform(-math.pi, math.pi)])
        labels.append(label)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 7), np.asarray(labels, dtype=np.int64)


def _render(
    boxes: np.ndarray, labels: np.ndarray, k: np.ndarray, l2c: np.ndarray, size: tuple[int, int], ground_z: float
) -> np.ndarray:
    import cv2

    w, h = size
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[: h // 2] = (200, 170, 130)  # sky
    img[h // 2 :] = (90, 90, 90)  # ground
    order = np.argsort([-np.linalg.norm(b[:2]) for b in boxes])
    for i in order:
        corners = box_corners(boxes[i])
        cam = (l2c[:3, :3] @ corners.T + l2c[:3, 3:4]).T
        if (cam[:, 2] < 0.2).any():
            continue
        uv = (k @ cam.T).T
        uv = uv[:, :2] / uv[:, 2:3]
        hull = cv2.convexHull(np.round(uv).astype(np.int32))
        cv2.fillConvexPoly(img, hull, _COLOURS[TOY_CLASSES[int(labels[i])]])
    return img


def make_scene(cfg: ToySceneConfig, rng: np.random.Generator) -> dict:
    """One scene: ``boxes`` (N, 7), ``labels`` (N,), ``points`` (P, 5) float32, ``images`` list of H×W×3 uint8,
    ``cams`` list of (cam2img, lidar2cam)."""
    boxes, labels = _sample_boxes(cfg, rng)
    ground = np.stack(
        [
            rng.uniform(-cfg.extent - 4, cfg.extent + 4, cfg.ground_points),
            rng.uniform(-cfg.extent - 4, cfg.extent + 4, cfg.ground_points),
            cfg.ground_z + rng.normal(0, 0.03, cfg.ground_points),
        ],
        1,
    )
    parts = [ground] + [_surface_points(b, cfg.points_per_box, rng) for b in boxes]
    xyz = np.concatenate(parts) + rng.normal(0, 0.01, size=(sum(len(p) for p in parts), 3))
    points = np.concatenate([xyz, rng.uniform(0, 1, (len(xyz), 1)), np.zeros((len(xyz), 1))], 1).astype(np.float32)
    cams = cameras(cfg.num_cams, cfg.image_size)
    images = [_render(boxes, labels, k, l2c, cfg.image_size, cfg.ground_z) for k, l2c in cams]
    return {"boxes": boxes, "labels": labels, "points": points, "images": images, "cams": cams}


def write_toy_dataset(root: str | Path, cfg: ToySceneConfig | None = None, name: str = "toy_infos") -> Path:
    """Generate ``cfg.num_scenes`` scenes into ``root``; returns the info file path (written atomically)."""
    import cv2

    cfg = cfg or ToySceneConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    data_list = []
    for idx in range(cfg.num_scenes):
        scene = make_scene(cfg, rng)
        token = f"toy{cfg.seed:04d}_{idx:04d}"
        lidar_name = f"{token}__LIDAR_TOP.bin"
        with atomic_path(root / lidar_name) as tmp:
            scene["points"].tofile(tmp)
        images = {}
        for i, ((k, l2c), img) in enumerate(zip(scene["cams"], scene["images"], strict=True)):
            img_name = f"{token}__CAM_{i}.png"
            ok, buf = cv2.imencode(".png", img)
            if not ok:
                raise RuntimeError(f"could not encode {root / img_name}")
            with atomic_path(root / img_name) as tmp:
                Path(tmp).write_bytes(buf.tobytes())
            images[f"CAM_{i}"] = {
                "img_path": img_name,
                "cam2img": k.tolist(),
                "lidar2cam": l2c.tolist(),
                "cam2ego": np.linalg.inv(l2c).tolist(),
                "sample_data_token": f"{token}_cam{i}",
                "timestamp": float(idx),
            }
        instances = [
            {
                "bbox_label": NUSCENES_CLASSES.index(TOY_CLASSES[int(lab)]),
                "bbox_3d": [float(v) for v in box],
                "bbox_3d_isvalid": True,
                "bbox_label_3d": NUSCENES_CLASSES.index(TOY_CLASSES[int(lab)]),
                "num_lidar_pts": int(cfg.points_per_box),
                "velocity": [0.0, 0.0],
            }
            for box, lab in zip(scene["boxes"], scene["labels"], strict=True)
        ]
        data_list.append(
            {
                "sample_idx": idx,
                "token": token,
                "timestamp": float(idx),
                "ego2global": np.eye(4).tolist(),
                "images": images,
                "lidar_points": {"num_pts_feats": 5, "lidar_path": lidar_name, "lidar2ego": np.eye(4).tolist()},
                "instances": instances,
                "cam_instances": {},
            }
        )
    info = {
        "metainfo": {
            "categories": {c: i for i, c in enumerate(NUSCENES_CLASSES)},
            "dataset": "toy",
            "info_version": "1.1",
        },
        "data_list": data_list,
    }
    path = root / f"{name}.pkl"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(info, fh)
    return path
