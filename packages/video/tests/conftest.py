"""Fixtures of the video tests: real clips from ../shared/data/video and small clips encoded here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polyzoo.shared.paths import shared_data_dir

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests use tiny tensors: one intra-op thread is faster, and far faster on a shared, loaded CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_video_dir() -> Path:
    root = shared_data_dir(__file__) / "video"
    if not (root / "kinetics_arm_wrestling.mp4").is_file():
        pytest.skip(f"real clips not found in {root} (set POLYZOO_SHARED_DATA to the shared data folder)")
    return root


def index_frames(num_frames: int, height: int = 32, width: int = 64) -> np.ndarray:
    """(F, H, W, 3) uint8 frames whose grey level encodes the frame index (index·8 + 4 for F ≤ 31)."""
    levels = (np.arange(num_frames) * 8 + 4).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, height, width, 3)).copy()


@pytest.fixture(scope="session")
def index_clip(tmp_path_factory) -> Path:
    """A 30-frame H.264 mp4 (one keyframe) whose frames' grey level encodes their index."""
    from polyzoo.video.synthetic import write_video

    path = tmp_path_factory.mktemp("clips") / "index.mp4"
    return write_video(path, index_frames(30), fps=10)


@pytest.fixture(scope="session")
def synthetic_lists(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic temporal-order data set (2 clips per class per split, 4 steps of 32×32)."""
    from polyzoo.video.synthetic import SyntheticConfig, make_dataset

    out = tmp_path_factory.mktemp("synthetic")
    return make_dataset(out, {"train": 2, "val": 1}, SyntheticConfig(size=32, steps=4, hold=2), seed=0)
