"""``RefTSupportBankHook``: recompute the support bank before every validation/test epoch."""

from __future__ import annotations

from mmdet.registry import DATASETS, HOOKS
from mmengine.hooks import Hook

from ..datasets.episode_dataset import RefTEpisodeDataset
from ..models.support_bank import compute_support_bank

__all__ = ["RefTSupportBankHook"]


@HOOKS.register_module()
class RefTSupportBankHook(Hook):
    """Before every validation/test epoch, compute the support bank of a support set and give it to the model.

    Args:
        support_dataset: config (or instance) of the support set, with a pipeline that loads the GT masks (e.g. the
            K-shot fine-tuning set). Default: the support pool of the training :class:`RefTEpisodeDataset`.
        batch_size: support images per forward.
    """

    priority = "NORMAL"

    def __init__(self, support_dataset=None, batch_size: int = 8) -> None:
        self.support_dataset = support_dataset
        self.batch_size = batch_size

    def _dataset(self, runner):
        if self.support_dataset is not None:
            if isinstance(self.support_dataset, dict):
                self.support_dataset = DATASETS.build(self.support_dataset)
            return self.support_dataset
        ds = runner.train_dataloader.dataset
        if not isinstance(ds, RefTEpisodeDataset):
            raise ValueError("RefTSupportBankHook: set support_dataset (the training set is not a RefTEpisodeDataset)")
        return ds.support

    def _update(self, runner) -> None:
        from mmengine.dataset import pseudo_collate

        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        ds = self._dataset(runner)
        batches = (
            pseudo_collate([ds[i] for i in range(s, min(s + self.batch_size, len(ds)))])
            for s in range(0, len(ds), self.batch_size)
        )
        model.set_support_bank(compute_support_bank(model, batches))

    def before_val_epoch(self, runner) -> None:
        self._update(runner)

    def before_test_epoch(self, runner) -> None:
        self._update(runner)
