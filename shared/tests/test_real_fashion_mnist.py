"""The real Fashion-MNIST IDX files (Debian's dataset-fashion-mnist, which .ci/run installs) through the shared
reader; the vision and security loaders' real-data tests are ``packages/vision/tests/test_real_fashion_mnist.py``
and ``packages/security/tests/test_data.py::test_real_fashion_mnist``.

Expected values are the published ones (Xiao et al. 2017 and the zalandoresearch/fashion-mnist README): 60,000
training and 10,000 test images of 28x28, ten classes of 6,000 training and 1,000 test images each, IDX magic
numbers 2051 (images) and 2049 (labels). The raw bytes are also parsed here with our own transcription of the IDX
layout (big-endian int32 magic, then one int32 per dimension, then unsigned bytes) and compared with ``read_idx``.
Skips when the files are absent; fails instead under ``POLYZOO_REQUIRE_DATA=1`` (CI installs the package).
"""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from polyzoo.shared.datasets import load_idx_splits, read_idx
from polyzoo.shared.paths import missing_data

ROOT = Path(os.environ.get("POLYZOO_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FILES = {
    "train-images-idx3-ubyte.gz": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": (2049, (60000,)),
    "t10k-images-idx3-ubyte.gz": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": (2049, (10000,)),
}


@pytest.fixture(scope="module")
def fashion() -> Path:
    missing = [name for name in FILES if not (ROOT / name).is_file()]
    if missing:
        missing_data(f"Fashion-MNIST files {missing} not in {ROOT} (apt-get install dataset-fashion-mnist)")
    return ROOT


def _parse_idx(path: Path) -> tuple[int, tuple[int, ...], bytes]:
    raw = gzip.decompress(path.read_bytes())
    (magic,) = struct.unpack(">i", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "i" * ndim, raw[4 : 4 + 4 * ndim])
    return magic, dims, raw[4 + 4 * ndim :]


def test_published_headers_shapes_and_bytes(fashion):
    for name, (magic, shape) in FILES.items():
        got_magic, dims, payload = _parse_idx(fashion / name)
        assert (got_magic, dims) == (magic, shape), name
        arr = read_idx(fashion / name)
        assert arr.shape == shape and arr.dtype == np.uint8
        assert arr.tobytes() == payload, name


def test_published_label_counts(fashion):
    splits = load_idx_splits(fashion)
    assert splits.train_images.shape == (60000, 28, 28) and splits.test_images.shape == (10000, 28, 28)
    assert np.bincount(splits.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(splits.test_labels, minlength=10).tolist() == [1000] * 10
    assert splits.test_labels[0] == 9  # the first test image is an ankle boot (class 9)
    assert splits.train_images.max() == 255 and splits.train_images.min() == 0

