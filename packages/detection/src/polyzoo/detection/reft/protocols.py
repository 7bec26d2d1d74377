"""Few-shot instance segmentation protocols for RefT (arXiv 2301.01156 v3): splits, K-shot files, settings, sampler.

No official RefT code exists; the protocol follows the TFA/iMTFA setup that RefT's tables use:

- COCO 2017, 80 classes, **20 novel = the PASCAL VOC classes** with COCO category ids
  ``1,2,3,4,5,6,7,9,16,17,18,19,20,21,44,62,63,64,67,72`` and the other 60 as base (TFA,
  ``ucbdrive/few-shot-object-detection: fsdet/data/builtin_meta.py``).
- K-shot files in the TFA layout: ``seed{i}/full_box_{K}shot_{cls}_trainval.json``, one COCO-format file per class
  holding exactly K annotations of that class (crowd annotations skipped), sampled by seed. The sampling rule is
  TFA's: images are drawn in random order and an image is taken only when all its annotations of that class still fit
  in the K budget. ``{cls}`` is the category *name* with spaces kept, as in TFA. Our seeds are our own (numpy
  ``default_rng(seed)``); they do not reproduce TFA's published files.
- Stages and settings (:data:`SETTINGS`):
  * base training on the base classes with all their data;
  * **FSIS**: fine-tune on the novel K-shot sets; report nAP (the issue's definition: novel only);
  * **gFSIS**: fine-tune on base + novel K-shot sets; report nAP, bAP and overall AP;
  * **iFSIS**: fine-tune on the novel K-shot sets only, never reading a base annotation, with the class-enhanced
    base knowledge distillation; report nAP and bAP.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polyzoo.shared.io import write_json_atomic

log = logging.getLogger(__name__)

__all__ = [
    "COCO_NOVEL_IDS",
    "SETTINGS",
    "FewShotSetting",
    "FewShotSplit",
    "SupportSampler",
    "coco_split",
    "kshot_path",
    "load_finetune_annotations",
    "sample_kshot",
    "write_kshot_files",
]

#: The 20 novel COCO category ids (the PASCAL VOC classes), TFA/iMTFA.
COCO_NOVEL_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)


@dataclass(frozen=True)
class FewShotSplit:
    """Base/novel split over category ids."""

    base_ids: tuple[int, ...]
    novel_ids: tuple[int, ...]

    @property
    def all_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.base_ids + self.novel_ids))

    def __post_init__(self) -> None:
        overlap = set(self.base_ids) & set(self.novel_ids)
        if overlap:
            raise ValueError(f"base and novel ids overlap: {sorted(overlap)}")


def coco_split(category_ids: Sequence[int], novel_ids: Sequence[int] = COCO_NOVEL_IDS) -> FewShotSplit:
    """Split ``category_ids`` into (base, novel); every novel id must be among the categories."""
    cats = sorted(int(c) for c in category_ids)
    missing = sorted(set(novel_ids) - set(cats))
    if missing:
        raise ValueError(f"novel ids {missing} are not categories of this dataset")
    novel = tuple(c for c in cats if c in set(novel_ids))
    return FewShotSplit(base_ids=tuple(c for c in cats if c not in set(novel_ids)), novel_ids=novel)


@dataclass(frozen=True)
class FewShotSetting:
    """One fine-tuning protocol.

    Attributes:
        name: ``fsis`` | ``gfsis`` | ``ifsis``.
        finetune_groups: which class groups' K-shot files the fine-tuning set is built from.
        metrics: which summary numbers are reported (``nAP``, ``nAP50``, ``bAP``, ``AP``).
        distill: whether the class-enhanced base knowledge distillation is used.
    """

    name: str
    finetune_groups: tuple[str, ...]
    metrics: tuple[str, ...]
    distill: bool = False
    notes: str = field(default="", compare=False)


SETTINGS: dict[str, FewShotSetting] = {
    "fsis": FewShotSetting("fsis", ("novel",), ("nAP", "nAP50"), notes="novel K-shot fine-tuning"),
    "gfsis": FewShotSetting("gfsis", ("base", "novel"), ("nAP", "nAP50", "bAP", "AP"), notes="base+novel K-shot"),
    "ifsis": FewShotSetting(
        "ifsis", ("novel",), ("nAP", "nAP50", "bAP"), distill=True, notes="novel only, no base data, distillation"
    ),
}


def _valid_anns(coco: dict) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        by_image[int(ann["image_id"])].append(ann)
    return by_image


def sample_kshot(coco: dict, category_id: int, shots: int, seed: int) -> dict:
    """Sample a TFA-style K-shot COCO dict for one category.

    Args:
        coco: full COCO-format annotation dict (``images``, ``annotations``, ``categories``).
        category_id: the category to sample.
        shots: K, the exact number of annotations wanted (fewer only if the dataset holds fewer).
        seed: sampling seed.

    Returns:
        COCO dict with the selected images and exactly their annotations of ``category_id`` (non-crowd).
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    by_image = _valid_anns(coco)
    per_image = {
        img: [a for a in anns if int(a["category_id"]) == category_id] for img, anns in sorted(by_image.items())
    }
    per_image = {img: anns for img, anns in per_image.items() if anns}
    rng = np.random.default_rng([seed, category_id])
    order = list(per_image)
    rng.shuffle(order)
    chosen_imgs, chosen_anns = [], []
    for img in order:
        anns = per_image[img]
        if len(chosen_anns) + len(anns) > shots:
            continue
        chosen_imgs.append(img)
        chosen_anns.extend(anns)
        if len(chosen_anns) == shots:
            break
    if len(chosen_anns) < shots:
        log.warning("category %d: only %d of %d shots available", category_id, len(chosen_anns), shots)
    images = {int(im["id"]): im for im in coco["images"]}
    return {
        "images": [copy.deepcopy(images[i]) for i in sorted(chosen_imgs)],
        "annotations": copy.deepcopy(sorted(chosen_anns, key=lambda a: a["id"])),
        "categories": copy.deepcopy(coco["categories"]),
    }


def kshot_path(root: str | Path, seed: int, shots: int, category_name: str) -> Path:
    """TFA file name: ``<root>/seed{seed}/full_box_{K}shot_{name}_trainval.json``."""
    return Path(root) / f"seed{seed}" / f"full_box_{shots}shot_{category_name}_trainval.json"


def write_kshot_files(
    coco: dict,
    out_root: str | Path,
    shots: Sequence[int],
    seeds: Sequence[int],
    category_ids: Sequence[int] | None = None,
) -> list[Path]:
    """Write TFA-style K-shot files for every (seed, K, category); returns the written paths (atomic writes)."""
    names = {int(c["id"]): c["name"] for c in coco["categories"]}
    cats = sorted(names) if category_ids is None else [int(c) for c in category_ids]
    paths = []
    for seed in seeds:
        for k in shots:
            for cid in cats:
                path = kshot_path(out_root, seed, k, names[cid])
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(path, sample_kshot(coco, cid, k, seed))
                paths.append(path)
    return paths


def load_finetune_annotations(
    kshot_root: str | Path,
    setting: FewShotSetting | str,
    split: FewShotSplit,
    categories: Sequence[dict],
    shots: int,
    seed: int,
) -> dict:
    """Build the fine-tuning COCO dict of a setting from the K-shot files, reading only the groups it allows.

    For iFSIS (and FSIS) only the novel classes' files are opened, so no base annotation is ever read. Images that
    appear in several class files are merged (their annotations concatenated, each annotation once).

    Args:
        kshot_root: folder holding ``seed{i}/full_box_{K}shot_{name}_trainval.json``.
        setting: a :class:`FewShotSetting` or its name.
        split: base/novel ids.
        categories: the COCO ``categories`` list (id, name) of the full label space.
        shots, seed: which files.

    Returns:
        COCO dict (``images``, ``annotations``, ``categories`` = all categories of the label space).
    """
    if isinstance(setting, str):
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; expected one of {sorted(SETTINGS)}")
        setting = SETTINGS[setting]
    names = {int(c["id"]): c["name"] for c in categories}
    groups = {"base": split.base_ids, "novel": split.novel_ids}
    allowed = [cid for g in setting.finetune_groups for cid in groups[g]]
    images: dict[int, dict] = {}
    anns: dict[int, dict] = {}
    for cid in allowed:
        path = kshot_path(kshot_root, seed, shots, names[cid])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: K-shot file for category {cid} ({names[cid]!r}) not found")
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        for ann in data["annotations"]:
            if int(ann["category_id"]) != cid:
                raise ValueError(f"{path}: annotation {ann['id']} has category {ann['category_id']}, expected {cid}")
            anns[int(ann["id"])] = ann
        for im in data["images"]:
            images[int(im["id"])] = im
    return {
        "images": [images[i] for i in sorted(images)],
        "annotations": [anns[i] for i in sorted(anns)],
        "categories": [copy.deepcopy(dict(c)) for c in categories],
    }


class SupportSampler:
    """Draws support episodes: for every class, ``shots_per_class`` annotated images of that class.

    Args:
        coco: COCO dict of the support pool (e.g. the fine-tuning K-shot set, or the base training set).
        category_ids: classes to cover in every episode (default: all categories with annotations).
        shots_per_class: support images per class and episode.
        seed: RNG seed.

    An episode is a list of ``(category_id, image_id, [annotation dicts of that class in that image])``; iterate
    the sampler for an endless stream of episodes.
    """

    def __init__(
        self, coco: dict, category_ids: Sequence[int] | None = None, shots_per_class: int = 1, seed: int = 0
    ) -> None:
        self.by_class: dict[int, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for img, anns in _valid_anns(coco).items():
            for a in anns:
                self.by_class[int(a["category_id"])][img].append(a)
        if category_ids is None:
            category_ids = sorted(self.by_class)
        empty = [c for c in category_ids if not self.by_class.get(c)]
        if empty:
            raise ValueError(f"SupportSampler: categories {empty} have no annotation in the support pool")
        self.category_ids = [int(c) for c in category_ids]
        self.shots_per_class = shots_per_class
        self.rng = np.random.default_rng(seed)

    def sample(self) -> list[tuple[int, int, list[dict]]]:
        episode = []
        for cid in self.category_ids:
            imgs = sorted(self.by_class[cid])
            take = min(self.shots_per_class, len(imgs))
            for i in self.rng.choice(len(imgs), size=take, replace=False):
                img = imgs[int(i)]
                episode.append((cid, img, list(self.by_class[cid][img])))
        return episode

    def __iter__(self) -> Iterator[list[tuple[int, int, list[dict]]]]:
        while True:
            yield self.sample()
