"""CMT's multi-modal GT-paste: a ground-truth database of object points *and* image patches, and the
``CmtUnifiedObjectSample`` transform that pastes sampled objects into both the point cloud and the camera images.

Paper recipe (CMT, ICCV 2023; official ``UnifiedObjectSample`` with ``sample_2d=True, mixup_rate=0.5`` and the
``tools/data_converter/create_unified_gt_database.py`` database; re-implemented here from its behaviour):

Database (:func:`build_gt_database`): for every annotated object of the training set, the LiDAR points inside its
box (coordinates relative to the box's bottom centre, as mmdet3d's GT database) and the image patch under its
projected 2-D box in the camera where that box is largest (all 8 corners in front of the camera).

Paste (:class:`CmtUnifiedObjectSample`), per training sample:

1. per class, ``sample_groups[class] − (objects of that class already present)`` objects are drawn from the
   database (each class's pool shuffled and walked through, as mmdet3d's sampler), dropping any whose BEV box
   collides with a present or already accepted box;
2. the scene's points inside the accepted boxes are removed and the objects' points added at their boxes;
3. in every camera, the 2-D boxes of all objects (present and pasted) in front of it are drawn far to near: a
   pasted object's patch is resized into its box, a present object's own pixels (cropped before any paste) are put
   back, so nearer objects stay on top; with ``mixup_rate = m ≥ 0`` each draw is ``(1 − m)·image + m·patch``.

Differences from the official code, deliberately: the database index is JSON (``dbinfos.json``), never a pickle;
objects are kept in the pool only with at least ``min_points`` points (official ``filter_by_min_points``); the
transform subclasses mmdet3d's ``ObjectSample`` only so that mmdet3d's ``DisableObjectSampleHook`` can switch it off
for the last epochs (the README's "15e+5e" schedule); it does not use ``ObjectSample``'s pickle-based sampler.
Place it right after loading (before the image resize and the 3-D augmentations, as the official pipeline does):
it projects with the raw ``cam2img @ lidar2cam``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from mmdet3d.datasets.transforms import ObjectSample
from mmdet3d.datasets.transforms.data_augment_utils import box_collision_test
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures.ops import box_np_ops
from tqdm.auto import tqdm

from polyzoo.detection.cmt.augment import lidar2img_matrices as _lidar2img
from polyzoo.shared.io import atomic_dir, write_json_atomic

__all__ = ["CmtUnifiedObjectSample", "build_gt_database", "load_db_infos", "load_sample", "loading_dataset"]

DB_INFO_FIELDS = ("name", "path", "box3d_lidar", "num_points_in_gt")


def _project_boxes(corners: np.ndarray, lidar2img: np.ndarray, hw: tuple[int, int]):
    """2-D boxes (x0, y0, x1, y1, clipped) and mean depths of (N, 8, 3) corners in one camera; ``valid`` marks
    boxes wholly in front of the camera whose clipped box is more than 1 pixel wide and high."""
    h, w = hw
    pts = np.concatenate([corners, np.ones_like(corners[..., :1])], -1) @ lidar2img.T  # (N, 8, 4)
    depth = pts[..., 2]
    front = (depth > 0).all(-1)
    uv = pts[..., :2] / np.where(np.abs(depth) < 1e-9, 1e-9, depth)[..., None]
    box = np.concatenate([uv.min(1), uv.max(1)], -1)
    box = np.floor(box).astype(np.int64)
    box[:, 0::2] = np.clip(box[:, 0::2], 0, w - 1)
    box[:, 1::2] = np.clip(box[:, 1::2], 0, h - 1)
    valid = front & ((box[:, 2:] - box[:, :2]) > 1).all(-1)
    return box, depth.mean(-1), valid


def load_sample(dataset, idx: int) -> dict:
    """Run ``dataset``'s pipeline on sample ``idx`` as mmdet3d's ``Det3DDataset.prepare_data`` does, without its
    check for packed ``data_samples`` (a loading-only pipeline returns the plain results dict)."""
    import copy

    info = copy.deepcopy(dataset.get_data_info(idx))
    info["box_type_3d"], info["box_mode_3d"] = dataset.box_type_3d, dataset.box_mode_3d
    return dataset.pipeline(info)


def build_gt_database(dataset, out_dir: str | Path, classes: Sequence[str], progress: bool = True) -> Path:
    """Write the multi-modal GT database of ``dataset`` to ``out_dir`` (replaced atomically) and return the path of
    its ``dbinfos.json``.

    Args:
        dataset: an mmdet3d dataset whose pipeline only loads (points, multi-view images with ``cam2img`` and
            ``lidar2cam``, and 3-D annotations), e.g. the training set of a CMT config with its loading steps.
        out_dir: folder of the database (``points/*.bin``, ``images/*.png``, ``dbinfos.json``).
        classes: label index → class name (the config's ``class_names``).
    """
    out_dir = Path(out_dir)
    infos: dict[str, list[dict]] = {c: [] for c in classes}
    with atomic_dir(out_dir) as tmp:
        (tmp / "points").mkdir()
        (tmp / "images").mkdir()
        for idx in tqdm(range(len(dataset)), desc="GT database", disable=not progress):
            results = load_sample(dataset, idx)
            points = results["points"].tensor.numpy()
            boxes = results["gt_bboxes_3d"]
            labels = np.asarray(results["gt_labels_3d"])
            if len(labels) == 0:
                continue
            box_np = boxes.tensor.numpy()
            inside = box_np_ops.points_in_rbbox(points[:, :3], box_np[:, :7])
            corners = boxes.corners.numpy()
            imgs = results.get("img")
            best = [(-1, None)] * len(labels)  # (area, (view, x0, y0, x1, y1)) per object
            if imgs:
                for v, l2i in enumerate(_lidar2img(results)):
                    box2d, _, valid = _project_boxes(corners, l2i, imgs[v].shape[:2])
                    area = (box2d[:, 2] - box2d[:, 0]) * (box2d[:, 3] - box2d[:, 1])
                    for j in np.nonzero(valid)[0]:
                        if area[j] > best[j][0]:
                            best[j] = (int(area[j]), (v, *map(int, box2d[j])))
            for j, label in enumerate(labels):
                if not 0 <= int(label) < len(classes):
                    continue  # a class outside the list (label -1 = ignored in mmdet3d)
                name = classes[int(label)]
                stem = f"{idx}_{name}_{j}"
                obj = points[inside[:, j]].copy()
                obj[:, :3] -= box_np[j, :3]
                obj.astype(np.float32).tofile(tmp / "points" / f"{stem}.bin")
                entry = {
                    "name": name,
                    "path": f"points/{stem}.bin",
                    "box3d_lidar": [float(x) for x in box_np[j]],
                    "num_points_in_gt": int(inside[:, j].sum()),
                    "points_dim": int(points.shape[1]),
                    "sample_idx": int(idx),
                    "image_path": None,
                }
                if best[j][1] is not None:
                    v, x0, y0, x1, y1 = best[j][1]
                    patch = np.clip(np.asarray(imgs[v][y0:y1, x0:x1]), 0, 255).astype(np.uint8)
                    if not cv2.imwrite(str(tmp / "images" / f"{stem}.png"), patch):
                        raise OSError(f"could not write the image patch {stem}.png under {out_dir}")
                    entry["image_path"] = f"images/{stem}.png"
                infos[name].append(entry)
        write_json_atomic(tmp / "dbinfos.json", {"classes": list(classes), "infos": infos})
    return out_dir / "dbinfos.json"


def loading_dataset(cfg, data_root: str | None = None):
    """The training set of an mmengine config with only its loading steps (types starting with ``Load``): the
    input :func:`build_gt_database` needs. Dataset wrappers (``CBGSDataset``) are unwrapped."""
    import copy

    from mmdet3d.registry import DATASETS

    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    leaf_types = ("NuScenesDataset", "CmtNuScenesDataset")
    while "dataset" in ds_cfg and ds_cfg.get("type") not in leaf_types and isinstance(ds_cfg["dataset"], dict):
        ds_cfg = ds_cfg["dataset"]
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if str(t["type"]).startswith("Load")]
    if data_root is not None:
        ds_cfg.data_root = data_root
    return DATASETS.build(ds_cfg)


def load_db_infos(path: str | Path) -> dict[str, list[dict]]:
    """Read and check a ``dbinfos.json`` written by :func:`build_gt_database` (class → list of entries)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: GT database index not found; build it with tools/data/cmt_gt_database.py CONFIG"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    infos = data.get("infos") if isinstance(data, dict) else None
    if not isinstance(infos, dict):
        raise ValueError(f"{path}: expected an object with 'infos': {{class: [entries]}}")
    for name, entries in infos.items():
        for i, e in enumerate(entries):
            missing = [f for f in DB_INFO_FIELDS if f not in e]
            if missing:
                raise ValueError(f"{path}: infos[{name!r}][{i}] lacks {missing}")
            if len(e["box3d_lidar"]) < 7:
                raise ValueError(
                    f"{path}: infos[{name!r}][{i}].box3d_lidar has {len(e['box3d_lidar'])} values, need ≥7"
                )
    return infos


class _Pool:
    """Walks a shuffled class pool without replacement, reshuffling when exhausted (mmdet3d's BatchSampler)."""

    def __init__(self, entries: list[dict], rng: np.random.Generator) -> None:
        self.entries, self.rng = entries, rng
        self.order, self.pos = rng.permutation(len(entries)), 0

    def take(self, n: int) -> list[dict]:
        out = []
        for _ in range(min(n, len(self.entries))):
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(len(self.entries)), 0
            out.append(self.entries[self.order[self.pos]])
            self.pos += 1
        return out


@TRANSFORMS.register_module()
class CmtUnifiedObjectSample(ObjectSample):
    """Paste database objects into points and images (module docstring).

    Args:
        db_info: path of ``dbinfos.json``; entry paths are relative to its folder.
        classes: the config's class names (label index order).
        sample_groups: class → number of objects a sample should hold after pasting.
        min_points: class → minimum points of a database object to be used (default 5 each, as the paper's config).
        mixup_rate: blend weight of pasted pixels (< 0: replace), 0.5 in the paper.
        use_dim: point features to keep from the database files (as the points loader's ``use_dim``).
        seed: seed of this transform's generator (None: fresh entropy).
    """

    def __init__(
        self,
        db_info: str,
        classes: Sequence[str],
        sample_groups: Mapping[str, int],
        min_points: Mapping[str, int] | int = 5,
        mixup_rate: float = 0.5,
        use_dim: int = 5,
        seed: int | None = None,
    ) -> None:  # ObjectSample.__init__ is not called: it builds mmdet3d's pickle-based sampler
        self.db_info, self.classes = str(db_info), list(classes)
        unknown = sorted(set(sample_groups) - set(self.classes))
        if unknown:
            raise ValueError(f"CmtUnifiedObjectSample.sample_groups: classes {unknown} are not in classes")
        self.sample_groups = {c: int(n) for c, n in sample_groups.items()}
        self.min_points = (
            {c: int(min_points) for c in self.classes} if isinstance(min_points, int) else dict(min_points)
        )
        self.mixup_rate, self.use_dim = float(mixup_rate), int(use_dim)
        self.disabled = False  # set by mmdet3d's DisableObjectSampleHook
        self.rng = np.random.default_rng(seed)
        self._root = Path(self.db_info).parent
        self._pools: dict[str, _Pool] | None = None  # loaded lazily (dataloader workers, configs that never train)

    def _load(self) -> dict[str, _Pool]:
        if self._pools is None:
            infos = load_db_infos(self.db_info)
            self._pools = {}
            for c in self.sample_groups:
                keep = [e for e in infos.get(c, []) if e["num_points_in_gt"] >= self.min_points.get(c, 0)]
                if keep:
                    self._pools[c] = _Pool(keep, self.rng)
        return self._pools

    def _sample(self, gt_boxes: np.ndarray, gt_labels: np.ndarray) -> list[dict]:
        pools, accepted = self._load(), []
        avoid = gt_boxes[:, :7]
        for c, target in self.sample_groups.items():
            n = target - int(np.sum(gt_labels == self.classes.index(c)))
            if n <= 0 or c not in pools:
                continue
            cand = pools[c].take(n)
            cand_boxes = np.array([e["box3d_lidar"][:7] for e in cand], dtype=np.float64)
            total = np.concatenate([avoid, cand_boxes])
            bev = box_np_ops.center_to_corner_box2d(total[:, 0:2], total[:, 3:5], total[:, 6])
            coll = box_collision_test(bev, bev)
            np.fill_diagonal(coll, False)
            kept = []
            for i in range(len(avoid), len(total)):
                if coll[i].any():  # drop it: it no longer blocks anything
                    coll[i] = False
                    coll[:, i] = False
                else:
                    kept.append(i - len(avoid))
            if kept:
                accepted += [cand[k] for k in kept]
                avoid = np.concatenate([avoid, cand_boxes[kept]])
        return accepted

    def _load_points(self, entry: dict) -> np.ndarray:
        path = self._root / entry["path"]
        dim = int(entry.get("points_dim", self.use_dim))
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size % dim:
            raise ValueError(f"{path}: {raw.size} floats is not a multiple of points_dim {dim}")
        pts = raw.reshape(-1, dim)[:, : self.use_dim].copy()
        pts[:, :3] += np.asarray(entry["box3d_lidar"][:3], dtype=np.float32)
        return pts

    def _load_patch(self, entry: dict) -> np.ndarray | None:
        if not entry.get("image_path"):
            return None
        patch = cv2.imread(str(self._root / entry["image_path"]), cv2.IMREAD_COLOR)
        if patch is None:
            raise ValueError(f"{self._root / entry['image_path']}: unreadable image patch")
        return patch

    def transform(self, results: dict) -> dict:
        if self.disabled:
            return results
        boxes, labels = results["gt_bboxes_3d"], np.asarray(results["gt_labels_3d"])
        sampled = self._sample(boxes.tensor.numpy().astype(np.float64), labels)
        if not sampled:
            return results
        box_dim = boxes.tensor.shape[1]
        new = np.array([(e["box3d_lidar"] + [0.0] * box_dim)[:box_dim] for e in sampled], dtype=np.float32)
        new_labels = np.array([self.classes.index(e["name"]) for e in sampled], dtype=labels.dtype)
        points = results["points"]
        inside = box_np_ops.points_in_rbbox(points.coord.numpy(), new[:, :7]).any(-1)
        points = points[np.logical_not(inside)]
        pasted = np.concatenate([self._load_points(e) for e in sampled])
        points = points.cat([points.new_point(pasted)])
        all_boxes = boxes.new_box(np.concatenate([boxes.tensor.numpy(), new]))
        if results.get("img"):
            patches = [self._load_patch(e) for e in sampled]
            results["img"] = self._paste_images(results, all_boxes.corners.numpy(), len(labels), patches)
        results["points"] = points
        results["gt_bboxes_3d"] = all_boxes
        results["gt_labels_3d"] = np.concatenate([labels, new_labels])
        return results

    def _paste_images(self, results: dict, corners: np.ndarray, num_raw: int, patches) -> list[np.ndarray]:
        out = []
        m = self.mixup_rate
        for img, l2i in zip(results["img"], _lidar2img(results), strict=True):
            img = img.copy()
            box2d, depth, valid = _project_boxes(corners, l2i, img.shape[:2])
            order = [int(i) for i in np.nonzero(valid)[0][np.argsort(-depth[valid], kind="stable")]]  # far → near
            raw_crops = {
                i: img[box2d[i, 1] : box2d[i, 3], box2d[i, 0] : box2d[i, 2]].copy() for i in order if i < num_raw
            }
            for i in order:
                x0, y0, x1, y1 = box2d[i]
                if i < num_raw:
                    patch = raw_crops[i]
                else:
                    src = patches[i - num_raw]
                    if src is None or src.size == 0:
                        continue
                    patch = cv2.resize(src, (int(x1 - x0), int(y1 - y0))).astype(img.dtype)
                    if img.ndim == 3 and patch.ndim == 3 and patch.shape[2] != img.shape[2]:
                        continue
                region = img[y0:y1, x0:x1]
                img[y0:y1, x0:x1] = patch if m < 0 else region * (1 - m) + patch * m
            out.append(img)
        return out

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(db_info={self.db_info!r}, sample_groups={self.sample_groups}, "
            f"mixup_rate={self.mixup_rate})"
        )
