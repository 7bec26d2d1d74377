"""The COCO-format loading path of RefT on a real COCO-format sample: labelme's instance-segmentation example.

The sample ships in the labelme sdist (``examples/instance_segmentation/data_dataset_coco``: real photos with
polygon annotations written by labelme2coco). Tests never download: ``.ci/run`` fetches the sdist once with
``pip download --no-deps --no-binary labelme labelme==6.3.1`` into ``$POLYZOO_LABELME_SDIST_DIR`` (default
``~/.cache/polyzoo/labelme``); the test skips with the reason when it is not there, and fails instead when
``$POLYZOO_REQUIRE_DATA`` is set (as .ci/run sets it).
"""

import copy
import json
import os
import tarfile
from pathlib import Path

import pytest

from polyzoo.shared.paths import missing_data

SDIST_DIR = Path(os.environ.get("POLYZOO_LABELME_SDIST_DIR", Path.home() / ".cache" / "polyzoo" / "labelme"))
SUBDIR = "examples/instance_segmentation/data_dataset_coco"


@pytest.fixture(scope="module")
def labelme_coco(tmp_path_factory) -> Path:
    archives = sorted(SDIST_DIR.glob("labelme-*.tar.gz")) if SDIST_DIR.is_dir() else []
    if not archives:
        missing_data(
            f"no labelme sdist in {SDIST_DIR} (fetch it with `python3 -m pip download --no-deps --no-binary labelme "
            f"labelme==6.3.1 -d {SDIST_DIR}`, as .ci/run does)"
        )
    out = tmp_path_factory.mktemp("labelme")
    with tarfile.open(archives[-1]) as tar:
        members = [m for m in tar.getmembers() if f"/{SUBDIR}/" in m.name and m.isfile()]
        if not members:
            missing_data(f"{archives[-1].name} has no {SUBDIR}")
        tar.extractall(out, members=members, filter="data")
    found = list(out.glob(f"*/{SUBDIR}/annotations.json"))
    if not found:
        missing_data(f"{archives[-1].name}: no {SUBDIR}/annotations.json")
    return found[0].parent


def test_real_coco_sample_loads_through_the_reft_pipeline(labelme_coco):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from polyzoo.detection.reft import mmdet_plugin  # noqa: F401
    from polyzoo.detection.reft.protocols import SupportSampler, sample_kshot

    ann = json.loads((labelme_coco / "annotations.json").read_text())
    anns = [a for a in ann["annotations"] if not a.get("iscrowd", 0)]
    assert ann["images"] and anns, "the sample must hold images and annotations"
    names = tuple(c["name"] for c in sorted(ann["categories"], key=lambda c: c["id"]))

    init_default_scope("mmdet")
    from mmdet.registry import DATASETS

    cfg = Config.fromfile(str(Path(__file__).resolve().parents[1] / "configs" / "reft" / "reft_tiny_shapes.py"))
    d = copy.deepcopy(cfg.val_dataloader.dataset)
    d.data_root = ""
    d.ann_file = str(labelme_coco / "annotations.json")
    d.data_prefix = dict(img=str(labelme_coco) + "/")
    d.metainfo = dict(classes=names)
    ds = DATASETS.build(d)
    assert len(ds) == len(ann["images"])
    total = 0
    for i in range(len(ds)):
        item = ds[i]
        gt = item["data_samples"].gt_instances
        info = ds.get_data_info(i)
        assert len(gt) == len([x for x in info["instances"] if not x["ignore_flag"]])
        h, w = item["inputs"].shape[-2:]
        assert gt.masks.masks.shape[-2:] == (h, w)
        assert (gt.masks.masks.reshape(len(gt), -1).sum(-1) > 0).all(), "every polygon must rasterise to pixels"
        total += len(gt)
    assert total == len(anns)

    # the few-shot tools work on it too
    # TFA's rule takes an image only when all its instances of the class fit in K: ask for the smallest per-image count
    cid = anns[0]["category_id"]
    per_image: dict[int, int] = {}
    for a in anns:
        if a["category_id"] == cid:
            per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    k = min(per_image.values())
    shot = sample_kshot(ann, cid, shots=k, seed=0)
    assert len(shot["annotations"]) == k and {a["category_id"] for a in shot["annotations"]} == {cid}
    episode = SupportSampler(ann, seed=0).sample()
    assert {c for c, _, _ in episode} == {a["category_id"] for a in anns}
