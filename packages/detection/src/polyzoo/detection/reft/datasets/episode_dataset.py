"""``RefTEpisodeDataset``: every training item is a query image plus a support episode."""

from __future__ import annotations

import copy

import torch
from mmdet.registry import DATASETS

from ..models.reft import ROLE_KEY

__all__ = ["RefTEpisodeDataset"]


@DATASETS.register_module()
class RefTEpisodeDataset:
    """Wraps a detection dataset so that every item is a query image plus a support episode.

    Args:
        dataset: config or instance of the query dataset.
        support_dataset: config or instance of the support pool (default: the query dataset itself).
        shots_per_class: support images per class and episode.
        classes_per_episode: cover only this many classes per episode, drawn at random independently of the query
            image (default: every class). Memory bound for 60/80-class COCO at 1024 px (*ours*).
        episode_every: attach an episode to one item in this many (set it to the batch size: one episode per
            batch; mmengine's workers build whole batches, so a per-worker counter keeps that alignment).
        seed: sampler seed.

    ``__getitem__`` returns a list ``[query_item, support_item, ...]``; :func:`reft_collate` flattens the lists so
    that one batch holds the queries and their support images; support items carry ``metainfo['reft_role'] =
    'support'``. The support image for a class is drawn among the support pool's images containing that class; the
    episode covers every class with an instance in the pool, so the presence of a class centre says nothing about
    the query image (*ours*).
    """

    def __init__(
        self,
        dataset,
        support_dataset=None,
        shots_per_class: int = 1,
        episode_every: int = 1,
        seed: int = 0,
        classes_per_episode: int | None = None,
    ) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        sup = support_dataset if support_dataset is not None else self.dataset
        self.support = DATASETS.build(sup) if isinstance(sup, dict) else sup
        self.metainfo = copy.deepcopy(self.dataset.metainfo)
        self.shots_per_class = shots_per_class
        self.classes_per_episode = classes_per_episode
        self.episode_every = max(int(episode_every), 1)
        self._count = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.by_class: dict[int, list[int]] = {}
        for idx in range(len(self.support)):
            info = self.support.get_data_info(idx)
            for lab in {int(inst["bbox_label"]) for inst in info.get("instances", []) if not inst.get("ignore_flag")}:
                self.by_class.setdefault(lab, []).append(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> list[dict]:
        items = [self.dataset[idx]]
        self._count += 1
        if (self._count - 1) % self.episode_every:
            return items
        classes = sorted(self.by_class)
        if self.classes_per_episode is not None and self.classes_per_episode < len(classes):
            pick = torch.randperm(len(classes), generator=self.generator)[: self.classes_per_episode]
            classes = sorted(classes[int(i)] for i in pick)
        for lab in classes:
            pool = self.by_class[lab]
            for _ in range(self.shots_per_class):
                j = pool[int(torch.randint(len(pool), (1,), generator=self.generator))]
                item = self.support[j]
                item["data_samples"].set_metainfo({ROLE_KEY: "support"})
                items.append(item)
        return items
