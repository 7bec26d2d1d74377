"""The vision loader on the real Fashion-MNIST files (Debian's dataset-fashion-mnist, which .ci/run installs):
published sizes (60,000 / 10,000, 6,000 / 1,000 per class; the first test image is an ankle boot, class 9).
Skips when absent; fails instead under ``POLYZOO_REQUIRE_DATA=1`` (CI)."""

import os
from pathlib import Path

import torch

from polyzoo.shared.paths import missing_data

ROOT = Path(os.environ.get("POLYZOO_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def test_vision_loader_reads_the_real_files():
    from polyzoo.vision.data import load_data

    if not (ROOT / "t10k-labels-idx1-ubyte.gz").is_file():
        missing_data(f"Fashion-MNIST not in {ROOT} (apt-get install dataset-fashion-mnist)")
    fashion = ROOT

    data = load_data(f"fashion-mnist:{fashion}", img_size=28)
    assert (len(data.train), len(data.eval), data.num_classes) == (60000, 10000, 10)
    assert torch.bincount(data.train.labels).tolist() == [6000] * 10
    assert torch.bincount(data.eval.labels).tolist() == [1000] * 10
    image, label = data.eval[0]
    assert image.shape == (1, 28, 28) and int(label) == 9
