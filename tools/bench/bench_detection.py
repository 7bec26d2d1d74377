"""CPU latency per frame of the tiny CMT config (``packages/detection/configs/cmt/cmt_tiny_cpu.py``), inference,
batch 1: 6 cameras at 64×160 + one LiDAR sweep, voxelisation included (the data preprocessor), random init.

Anchor: the fusion model (LiDAR + cameras). Contenders, timed interleaved in the same process: the same model with
the images removed (LiDAR only), with the points removed (cameras only), and the fusion model with every thread
torch has (the others run on one thread, the setting used by tests and the learning check). Input: the real
nuScenes sample in ``../shared/data/nuscenes`` when present, otherwise a toy scene with 6 cameras.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from polyzoo.shared.paths import shared_data_dir
from polyzoo.shared.timing import time_interleaved

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "packages" / "detection" / "configs" / "cmt" / "cmt_tiny_cpu.py"


def _data_root(tmp: str) -> tuple[str, str, str]:
    shared = shared_data_dir(__file__) / "nuscenes"
    pkl = shared / "n015-2018-07-24-11-22-45+0800.pkl"
    if pkl.is_file():
        return str(shared) + "/", pkl.name, "nuScenes sample (34,688 points, 6×1600×900 → 6×64×160)"
    from polyzoo.detection.cmt.toy_scenes import ToySceneConfig, write_toy_dataset

    path = write_toy_dataset(tmp, ToySceneConfig(num_scenes=1, num_cams=6))
    return tmp + "/", path.name, "toy scene (6 cameras 64×160)"


def run(quick: bool = False) -> str:
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401

    init_default_scope("mmdet3d")
    from mmdet3d.registry import DATASETS, MODELS

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root, ann, source = _data_root(tmp)
        cfg = Config.fromfile(str(CONFIG))
        cfg.test_dataloader.dataset.data_root = root
        cfg.test_dataloader.dataset.ann_file = ann
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).eval()
        item = DATASETS.build(cfg.test_dataloader.dataset)[0]
    batch = pseudo_collate([item])
    no_img = {"inputs": {"points": batch["inputs"]["points"]}, "data_samples": batch["data_samples"]}
    no_pts = {"inputs": {"img": batch["inputs"]["img"]}, "data_samples": batch["data_samples"]}

    def frame(data, n_threads):
        def call():
            torch.set_num_threads(n_threads)
            with torch.no_grad():
                model(**model.data_preprocessor(data, training=False), mode="predict")

        return call

    contenders = {
        "fusion (1 thread)": frame(batch, 1),
        "LiDAR only (1 thread)": frame(no_img, 1),
        "cameras only (1 thread)": frame(no_pts, 1),
        f"fusion ({threads} threads)": frame(batch, threads),
    }
    try:
        times = time_interleaved(contenders, repeats=3 if quick else 10, warmup=1)
    finally:
        torch.set_num_threads(threads)
    anchor = times["fusion (1 thread)"]
    rows = [
        "| model (tiny CMT, inference, batch 1) | ms / frame | frames / s | × fusion (1 thread) |",
        "|---|---|---|---|",
    ]
    for name, t in times.items():
        rows.append(f"| {name} | {t * 1e3:.1f} | {1 / t:.2f} | {t / anchor:.2f} |")
    rows.append("")
    rows.append(f"Input: {source}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; median of "
                f"{3 if quick else 10} interleaved rounds; torch {torch.__version__}.")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    print(run(quick=True))
