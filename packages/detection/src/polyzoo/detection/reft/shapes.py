"""COCO-format synthetic shapes for RefT's learning check (no download; deterministic by seed).

Each image is ``size x size`` RGB on a noisy grey background with 1..``max_objects`` non-overlapping filled shapes;
each shape is one instance with a polygon segmentation, its box and area. The 8 categories differ in shape and
(jittered) colour so that a tiny model learns them in minutes on a CPU. Default split: ids 1-6 base, 7-8 novel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from polyzoo.shared.io import atomic_path, write_json_atomic

__all__ = ["SHAPES_NOVEL_IDS", "SHAPE_CATEGORIES", "make_shapes_coco", "polygon_for"]

SHAPE_CATEGORIES: tuple[dict, ...] = (
    {"id": 1, "name": "circle", "color": (220, 40, 40)},
    {"id": 2, "name": "square", "color": (40, 180, 40)},
    {"id": 3, "name": "triangle", "color": (40, 60, 220)},
    {"id": 4, "name": "diamond", "color": (220, 200, 40)},
    {"id": 5, "name": "cross", "color": (200, 40, 200)},
    {"id": 6, "name": "hexagon", "color": (40, 200, 200)},
    {"id": 7, "name": "star", "color": (240, 130, 20)},
    {"id": 8, "name": "ring", "color": (120, 60, 20)},
)
SHAPES_NOVEL_IDS: tuple[int, ...] = (7, 8)


def _regular(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(rot + 2 * math.pi * i / n), cy + r * math.sin(rot + 2 * math.pi * i / n)) for i in range(n)
    ]


def polygon_for(name: str, cx: float, cy: float, r: float, rot: float) -> list[list[tuple[float, float]]]:
    """Polygon(s) of a shape of radius ``r`` centred at (cx, cy); a ring is (outer, inner) drawn even-odd."""
    if name == "circle":
        return [_regular(cx, cy, r, 24, 0.0)]
    if name == "square":
        return [_regular(cx, cy, r, 4, rot + math.pi / 4)]
    if name == "triangle":
        return [_regular(cx, cy, r, 3, rot - math.pi / 2)]
    if name == "diamond":
        return [[(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]]
    if name == "hexagon":
        return [_regular(cx, cy, r, 6, rot)]
    if name == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else 0.45 * r
            a = rot - math.pi / 2 + math.pi * i / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return [pts]
    if name == "cross":
        w = 0.35 * r
        return [
            [
                (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w),
            ]
        ]  # fmt: skip
    if name == "ring":
        return [_regular(cx, cy, r, 24, 0.0), _regular(cx, cy, 0.5 * r, 24, 0.0)]
    raise ValueError(f"unknown shape {name!r}")


def _rasterise(polys: list[list[tuple[float, float]]], size: int) -> np.ndarray:
    """Binary mask; single polygons go through pycocotools so the image, the mask and the box all agree with the
    stored COCO polygon."""
    if len(polys) == 1:
        from pycocotools import mask as mask_utils

        flat = [float(v) for pt in polys[0] for v in pt]
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], size, size))).astype(bool)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.polygon(polys[0], fill=1)
    for hole in polys[1:]:
        draw.polygon(hole, fill=0)
    return np.asarray(img, dtype=bool)


def make_shapes_coco(
    out_dir: str | Path,
    num_images: int,
    seed: int = 0,
    size: int = 64,
    max_objects: int = 3,
    category_ids: tuple[int, ...] | None = None,
    radius: tuple[float, float] = (8.0, 14.0),
    ann_name: str = "annotations.json",
    image_id_offset: int = 0,
) -> Path:
    """Write ``num_images`` PNGs to ``out_dir/images`` and a COCO json ``out_dir/<ann_name>``; return the json path.

    ``category_ids`` restricts which shapes are drawn (all categories stay in the json's ``categories``). A ring's
    hole cannot be written as a COCO polygon, so ring instances carry an RLE mask; all other shapes carry polygons.
    """
    from pycocotools import mask as mask_utils

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cats = [c for c in SHAPE_CATEGORIES if category_ids is None or c["id"] in category_ids]
    if not cats:
        raise ValueError(f"no shape category among {category_ids}")
    images, anns = [], []
    ann_id = image_id_offset * 100 + 1
    for k in range(num_images):
        img_id = image_id_offset + k + 1
        base = rng.integers(90, 150)
        canvas = np.clip(base + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        occupied = np.zeros((size, size), dtype=bool)
        n_obj = int(rng.integers(1, max_objects + 1))
        for _ in range(n_obj):
            cat = cats[int(rng.integers(len(cats)))]
            for _attempt in range(20):
                r = float(rng.uniform(*radius))
                cx, cy = rng.uniform(r, size - r, size=2)
                polys = polygon_for(cat["name"], float(cx), float(cy), r, float(rng.uniform(0, 2 * math.pi)))
                m = _rasterise(polys, size)
                if m.sum() >= 16 and not (m & occupied).any():
                    break
            else:
                continue
            occupied |= m
            color = np.clip(np.array(cat["color"]) + rng.integers(-25, 26, 3), 0, 255)
            canvas[m] = color
            ys, xs = np.nonzero(m)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            if len(polys) == 1:
                seg: list | dict = [[float(v) for pt in polys[0] for v in pt]]
            else:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                seg = {"size": [size, size], "counts": rle["counts"].decode("ascii")}
            anns.append(
                {
                    "id": ann_id, "image_id": img_id, "category_id": cat["id"], "segmentation": seg,
                    "area": float(m.sum()), "bbox": bbox, "iscrowd": 0,
                }
            )  # fmt: skip
            ann_id += 1
        name = f"{img_id:06d}.png"
        with atomic_path(out_dir / "images" / name) as tmp:
            Image.fromarray(canvas).save(tmp, format="PNG")
        images.append({"id": img_id, "file_name": name, "width": size, "height": size})
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": "shape"} for c in SHAPE_CATEGORIES],
    }
    path = out_dir / ann_name
    write_json_atomic(path, coco)
    return path
