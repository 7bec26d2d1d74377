"""polyzoo.shared.datasets: digits and the MNIST/Fashion-MNIST IDX reader."""

import gzip
import struct

import numpy as np
import pytest

from polyzoo.shared.datasets import digits, digits_split, load_idx_splits, read_idx


def test_digits_equal_scikit_learn():
    sklearn = pytest.importorskip("sklearn.datasets")
    images, labels = digits()
    ref = sklearn.load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, (ref.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(labels, ref.target)


def test_digits_split_is_stratified_and_seeded():
    _, labels = digits()
    tr, te = digits_split(labels, 0.2, seed=3)
    assert len(tr) + len(te) == 1797 and len(te) == 360 and not set(tr) & set(te)
    assert np.array_equal(te, digits_split(labels, 0.2, seed=3)[1])
    assert not np.array_equal(te, digits_split(labels, 0.2, seed=4)[1])
    counts = np.bincount(labels[te], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~20% of each class's ~180


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_splits_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        arrays[prefix] = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, (n,))
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", arrays[prefix][0])
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", arrays[prefix][1])
    s = load_idx_splits(tmp_path)
    np.testing.assert_array_equal(s.train_images, arrays["train"][0])
    np.testing.assert_array_equal(s.test_labels, arrays["t10k"][1])
    assert s.train_labels.dtype == np.int64 and s.test_images.dtype == np.uint8
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x09\x03" + b"\x00" * 12)
    with pytest.raises(ValueError, match=r"bad\.gz: bad IDX magic"):
        read_idx(bad)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 11]))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: label 11 outside 0\.\.9"):
        load_idx_splits(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        load_idx_splits(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_idx_splits(tmp_path / "nowhere")
