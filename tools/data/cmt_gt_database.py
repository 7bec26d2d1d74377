"""Build CMT's multi-modal GT-paste database (object points + image patches) for a CMT config's training set.

    uv run python tools/data/cmt_gt_database.py packages/detection/configs/cmt/cmt_voxel0075_vov_1600x640_cbgs.py \
        --out data/nuscenes/cmt_gt_database

The database is what ``CmtUnifiedObjectSample`` reads (``db_info=<out>/dbinfos.json``); see
``polyzoo.detection.cmt.gt_paste``. The output folder is replaced atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a CMT config (its train_dataloader.dataset and class_names are used)")
    parser.add_argument("--out", required=True, help="database folder (replaced if present)")
    parser.add_argument("--data-root", default=None, help="override the dataset's data_root")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import polyzoo.detection.cmt.mmdet3d_plugin  # noqa: F401  (registers CMT)
    from polyzoo.detection.cmt.gt_paste import build_gt_database, loading_dataset

    init_default_scope("mmdet3d")
    cfg = Config.fromfile(args.config)
    dataset = loading_dataset(cfg, args.data_root)
    path = build_gt_database(dataset, args.out, list(cfg.class_names), progress=not args.no_progress)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
