"""Seeding and random-state capture for reproducible runs.

NumPy's legacy global generator is seeded and captured on purpose: third-party code (augmentations, data
loaders) draws from it, and exact resume needs its state.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SeededSamples", "get_rng_state", "sample_seed", "seed_everything", "set_rng_state"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices). With ``deterministic``, ask PyTorch for deterministic
    kernels (raising where an op has none) and set the cuBLAS workspace variable that requires."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def get_rng_state() -> dict[str, Any]:
    """The random states of Python, NumPy and PyTorch (CPU and every CUDA device) of this process."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`get_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of ``epoch`` in a run seeded with ``seed`` (distinct for every triple
    in practice; a splitmix64-style mix of the three numbers)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return (x ^ (x >> 31)) % 2**63


class SeededSamples(Dataset):
    """A dataset whose every sample draws its randomness (augmentations, frame offsets) from its own seed,
    ``sample_seed(seed, epoch, index)``, instead of from the process's running random state.

    Why: a data loader fetches ahead (Accelerate fetches the next batch before yielding the current one, loader
    workers run batches ahead, each with its own random state), so the random state saved in a checkpoint is
    not the state the next sample will be drawn with. Seeding each sample by its position makes the data a pure
    function of (seed, epoch, index): a run killed at any step and resumed sees exactly the samples an
    uninterrupted run sees, with any number of loader workers. Python's, NumPy's global and torch's CPU random
    states are seeded for the call and restored after it, so fetching never disturbs the model's randomness
    (dropout) in the main process.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (classes, collate helpers, ...)
        if name == "dataset" or name.startswith("__"):  # never a protocol method such as Subset's __getitems__,
            raise AttributeError(name)  # which the DataLoader would call instead of our seeded __getitem__
        return getattr(self.dataset, name)

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """The batched fetch the DataLoader prefers: each sample still seeded by its own index."""
        return [self[i] for i in indices]

    def __getitem__(self, index: int) -> Any:
        s = sample_seed(self.seed, self.epoch, int(index))
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        with torch.random.fork_rng(devices=[]):
            random.seed(s)
            np.random.seed(s % 2**32)  # noqa: NPY002
            torch.manual_seed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)  # noqa: NPY002
