"""RefT's episode dataset (``mmdet.registry.DATASETS``) and collate function (mmengine ``FUNCTIONS``)."""

from .collate import reft_collate
from .episode_dataset import RefTEpisodeDataset

__all__ = ["RefTEpisodeDataset", "reft_collate"]
