"""GPU frames/s of the paper's CMT fusion config (VoVNet-99, 1600×640, 0.075 m voxels), random init, batch 1.

Not run in CI. Usage on a CUDA machine, from the repository root:

    uv run python tools/bench/gpu_cmt.py --points 300000 --repeats 20 [--fp16] [--config ...r50_800x320_cbgs.py]

Requirements: the sparse encoder needs a CUDA build of spconv (``pip install spconv-cu120`` or the build matching
the CUDA runtime; the PyPI ``spconv`` is CPU-only), and voxelisation runs through mmcv's op on the device when mmcv
was built with CUDA, otherwise on the CPU (reported separately). Input: 6 random 1600×640 images and ``--points``
uniform LiDAR points in the range (10 nuScenes sweeps ≈ 300k). The paper reports 6.4 FPS on an A100 (with flash
attention, fp16).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "packages" / "detection" / "configs" / "cmt" / "cmt_voxel0075_vov_1600x640_cbgs.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT))
    parser.add_argument("--points", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--fp16", action="store_true", help="autocast to float16")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_cmt.py: no CUDA device")

    from mmdet3d.structures import Det3DDataSample
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401

    init_default_scope("mmdet3d")
    from mmdet3d.registry import MODELS

    dev = torch.device("cuda")
    cfg = Config.fromfile(args.config)
    model = MODELS.build(cfg.model).to(dev).eval()
    w, h = cfg.image_size
    rng = np.random.default_rng(0)
    lo, hi = np.array(cfg.point_cloud_range[:3]), np.array(cfg.point_cloud_range[3:])
    pts = np.concatenate([rng.uniform(lo, hi, (args.points, 3)), rng.uniform(0, 1, (args.points, 2))], 1)
    points = torch.as_tensor(pts, dtype=torch.float32)
    k = np.array([[1260.0, 0, w / 2, 0], [0, 1260.0, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    lidar2img = []
    for i in range(6):
        yaw = 2 * np.pi * i / 6
        r = np.eye(4)
        r[0, :3] = (np.sin(yaw), -np.cos(yaw), 0)
        r[1, :3] = (0, 0, -1)
        r[2, :3] = (np.cos(yaw), np.sin(yaw), 0)
        lidar2img.append(k @ r)
    sample = Det3DDataSample(metainfo={"lidar2img": np.stack(lidar2img), "pad_shape": (h, w), "img_shape": (h, w)})
    imgs = torch.randint(0, 255, (6, 3, h, w), dtype=torch.uint8).float()

    def voxel_inputs():
        pts_dev = points.to(dev)
        try:
            data = model.data_preprocessor({"inputs": {"points": [pts_dev], "img": [imgs.to(dev)]},
                                            "data_samples": [sample]}, training=False)  # fmt: skip
            where = "cuda"
        except (RuntimeError, NotImplementedError):
            data = model.data_preprocessor.cpu()({"inputs": {"points": [points], "img": [imgs]},
                                                  "data_samples": [sample]}, training=False)  # fmt: skip
            model.data_preprocessor.to(dev)
            vox = data["inputs"]["voxels"]
            data["inputs"]["voxels"] = {k2: v.to(dev) if torch.is_tensor(v) else v for k2, v in vox.items()}
            data["inputs"]["imgs"] = data["inputs"]["imgs"].to(dev)
            where = "cpu"
        return data, where

    def step(data):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=args.fp16):
            model(**data, mode="predict")
        torch.cuda.synchronize()

    t0 = time.perf_counter()
    data, where = voxel_inputs()
    torch.cuda.synchronize()
    prep = time.perf_counter() - t0
    for _ in range(args.warmup):
        step(data)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step(data)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    print(json.dumps({
        "config": Path(args.config).name, "device": torch.cuda.get_device_name(0), "fp16": args.fp16,
        "points": args.points, "voxelisation_on": where, "preprocess_s": round(prep, 4),
        "model_ms_per_frame": round(med * 1e3, 2), "model_fps": round(1 / med, 2),
        "max_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
