"""RefT protocols (split, TFA-style K-shot files, settings, support sampler) and COCOeval nAP/bAP."""

import builtins
import json
from pathlib import Path

import numpy as np
import pytest

from polyzoo.detection.reft.evaluation import evaluate_fewshot, masks_to_coco_results
from polyzoo.detection.reft.protocols import (
    COCO_NOVEL_IDS,
    SETTINGS,
    SupportSampler,
    coco_split,
    kshot_path,
    load_finetune_annotations,
    sample_kshot,
    write_kshot_files,
)
from polyzoo.detection.reft.shapes import SHAPES_NOVEL_IDS, make_shapes_coco


def test_coco_60_20_split():
    coco_ids = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
        35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
        63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
    ]  # fmt: skip
    split = coco_split(coco_ids)
    assert len(split.novel_ids) == 20 and len(split.base_ids) == 60
    assert split.novel_ids == (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)
    assert set(split.base_ids).isdisjoint(COCO_NOVEL_IDS)
    with pytest.raises(ValueError, match="not categories"):
        coco_split([1, 2, 3])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    path = make_shapes_coco(root, num_images=40, seed=3)
    return root, json.loads(Path(path).read_text())


def test_shapes_generator_is_coco(shapes):
    root, coco = shapes
    assert len(coco["images"]) == 40 and len(coco["categories"]) == 8
    for ann in coco["annotations"]:
        assert ann["area"] > 0 and len(ann["bbox"]) == 4 and ann["segmentation"]
    assert all((root / "images" / im["file_name"]).is_file() for im in coco["images"])
    again = json.loads(Path(make_shapes_coco(root / "again", num_images=40, seed=3)).read_text())
    assert again["annotations"] == coco["annotations"]  # deterministic by seed


def test_kshot_sampling_is_exact_and_seeded(shapes, tmp_path):
    _, coco = shapes
    a = sample_kshot(coco, 3, shots=5, seed=1)
    assert len(a["annotations"]) == 5 and {x["category_id"] for x in a["annotations"]} == {3}
    assert sample_kshot(coco, 3, shots=5, seed=1) == a
    b = sample_kshot(coco, 3, shots=5, seed=2)
    assert {x["id"] for x in b["annotations"]} != {x["id"] for x in a["annotations"]}
    paths = write_kshot_files(coco, tmp_path, shots=[1, 5], seeds=[0, 1])
    assert len(paths) == 2 * 2 * 8
    p = kshot_path(tmp_path, 1, 5, "triangle")
    assert p.name == "full_box_5shot_triangle_trainval.json" and p.parent.name == "seed1"
    assert json.loads(p.read_text()) == a


def test_ifsis_finetuning_never_reads_base_annotations(shapes, tmp_path, monkeypatch):
    _, coco = shapes
    write_kshot_files(coco, tmp_path, shots=[5], seeds=[0])
    split = coco_split([c["id"] for c in coco["categories"]], SHAPES_NOVEL_IDS)
    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    ft = load_finetune_annotations(tmp_path, "ifsis", split, coco["categories"], shots=5, seed=0)
    monkeypatch.undo()
    base_names = {c["name"] for c in coco["categories"] if c["id"] in split.base_ids}
    novel_names = {c["name"] for c in coco["categories"] if c["id"] in split.novel_ids}
    assert opened and not any(f"_{n}_" in Path(f).name for f in opened for n in base_names)
    assert {Path(f).name.split("_")[3] for f in opened} == novel_names
    assert {a["category_id"] for a in ft["annotations"]} == set(split.novel_ids)
    assert len(ft["annotations"]) == 5 * len(split.novel_ids)
    # and the files of the base classes are not even needed
    for name in base_names:
        kshot_path(tmp_path, 0, 5, name).unlink()
    again = load_finetune_annotations(tmp_path, SETTINGS["ifsis"], split, coco["categories"], shots=5, seed=0)
    assert again == ft
    with pytest.raises(FileNotFoundError, match="K-shot file"):
        load_finetune_annotations(tmp_path, "gfsis", split, coco["categories"], shots=5, seed=0)


def test_gfsis_uses_base_and_novel(shapes, tmp_path):
    _, coco = shapes
    write_kshot_files(coco, tmp_path, shots=[1], seeds=[4])
    split = coco_split([c["id"] for c in coco["categories"]], SHAPES_NOVEL_IDS)
    ft = load_finetune_annotations(tmp_path, "gfsis", split, coco["categories"], shots=1, seed=4)
    assert {a["category_id"] for a in ft["annotations"]} == set(split.all_ids)


def test_support_sampler_covers_every_class(shapes):
    _, coco = shapes
    sampler = SupportSampler(coco, shots_per_class=2, seed=0)
    ep = sampler.sample()
    cats = [c for c, _, _ in ep]
    assert sorted(set(cats)) == sorted({a["category_id"] for a in coco["annotations"]})
    assert all(cats.count(c) == 2 for c in set(cats))
    assert all(all(a["category_id"] == c and a["image_id"] == img for a in anns) for c, img, anns in ep)
    assert SupportSampler(coco, shots_per_class=2, seed=0).sample() == ep
    with pytest.raises(ValueError, match="no annotation"):
        SupportSampler(coco, category_ids=[99])


def test_evaluation_nap_bap(shapes):
    """Perfect predictions on novel classes only -> nAP 100, bAP 0; AP in between."""
    _, coco = shapes
    from pycocotools import mask as mask_utils

    results = []
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"] and a["category_id"] in SHAPES_NOVEL_IDS]
        if not anns:
            continue
        masks = []
        for a in anns:
            seg = a["segmentation"]
            rle = (
                mask_utils.merge(mask_utils.frPyObjects(seg, im["height"], im["width"]))
                if isinstance(seg, list)
                else seg
            )
            masks.append(mask_utils.decode(rle))
        results += masks_to_coco_results(im["id"], np.stack(masks), [0.9] * len(anns), [a["category_id"] for a in anns])
    base = [c["id"] for c in coco["categories"] if c["id"] not in SHAPES_NOVEL_IDS]
    out = evaluate_fewshot(coco, results, base, SHAPES_NOVEL_IDS)
    assert out["segm"]["nAP"] == pytest.approx(100.0) and out["segm"]["nAP50"] == pytest.approx(100.0)
    assert out["segm"]["bAP"] == 0.0
    assert 0.0 < out["segm"]["AP"] < 100.0
    assert out["bbox"]["nAP"] > 90.0
    assert evaluate_fewshot(coco, [], base, SHAPES_NOVEL_IDS)["segm"]["nAP"] == 0.0
