"""The small image sets several domains share, read once: scikit-learn's 8×8 digits and the MNIST /
Fashion-MNIST IDX files.

- :func:`digits`: the 1,797 handwritten digits of ``sklearn.datasets.load_digits``, read straight from the CSV
  inside the installed scikit-learn (importing scikit-learn costs seconds), values 0–16 scaled to [0, 1].
  scikit-learn must be installed (the domains that use digits depend on it).
- :func:`digits_split`: the stratified train/test split every domain uses (scikit-learn's ``train_test_split``
  with ``random_state=seed``, ``stratify=labels``), so a fraction and a seed give the same split everywhere.
- :func:`read_idx` / :func:`load_idx_splits`: the ``{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)`` files of
  MNIST and Fashion-MNIST (by default Debian's ``dataset-fashion-mnist`` folder, :data:`FASHION_MNIST_DIR`), as
  uint8 arrays; every malformed file raises ``ValueError`` naming it.

Normalisation, resizing and the tensors a domain trains on stay in the domain (they differ by paper).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR",
    "IdxSplits",
    "default_fashion_mnist_root",
    "digits",
    "digits_split",
    "load_idx_splits",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` puts the four ``*-ubyte.gz`` files."""


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits: images ``(1797, 8, 8)`` float32 in [0, 1] (raw 0–16 divided by 16) and labels
    ``(1797,)`` int64, in ``load_digits`` order."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ModuleNotFoundError("the digits data set ships with scikit-learn, which is not installed")
    for root in spec.submodule_search_locations or []:
        csv = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
            return (table[:, :64].reshape(-1, 8, 8) / 16.0).astype(np.float32), table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits  # the CSV moved: let scikit-learn find it

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def digits_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a stratified split of ``labels`` (scikit-learn's ``train_test_split``)."""
    from sklearn.model_selection import train_test_split

    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    return idx_train, idx_test


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``*-ubyte`` or ``*-ubyte.gz``) of unsigned bytes: labels ``(N,)`` or images ``(N, H, W)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read IDX data ({exc})") from exc
    if len(data) < 4:
        raise ValueError(f"{path}: file too short for an IDX header ({len(data)} bytes)")
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08 or ndim not in (1, 3):
        raise ValueError(
            f"{path}: bad IDX magic {data[:4].hex()} (expected 00000801 for labels or 00000803 for images)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX header says {dims} = {expected} bytes of data, file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def default_fashion_mnist_root() -> Path | None:
    """:data:`FASHION_MNIST_DIR` when Debian's ``dataset-fashion-mnist`` is installed, else ``None``."""
    return FASHION_MNIST_DIR if (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file() else None


@dataclasses.dataclass
class IdxSplits:
    """MNIST-format train and test splits: images ``(N, H, W)`` uint8, labels ``(N,)`` int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{folder}: missing {stem}.gz (or {stem}); an MNIST/Fashion-MNIST folder holds train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (.gz), e.g. Debian's "
        f"dataset-fashion-mnist in {FASHION_MNIST_DIR}"
    )


def load_idx_splits(folder: str | os.PathLike | None = None, num_classes: int = 10) -> IdxSplits:
    """The four IDX files of ``folder`` (default: Debian's Fashion-MNIST), checked for matching lengths and labels
    below ``num_classes``."""
    folder = Path(folder) if folder is not None else default_fashion_mnist_root()
    if folder is None:
        raise FileNotFoundError(
            "Fashion-MNIST not found: pass a folder with train-images-idx3-ubyte.gz etc., or install Debian's "
            f"dataset-fashion-mnist ({FASHION_MNIST_DIR})"
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST/Fashion-MNIST folder not found: {folder}")
    out = []
    for prefix in ("train", "t10k"):
        images_path, labels_path = (
            _find(folder, f"{prefix}-images-idx3-ubyte"),
            _find(folder, f"{prefix}-labels-idx1-ubyte"),
        )
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{images_path} / {labels_path}: expected images (N, H, W) and labels (N,), got "
                f"{images.shape} / {labels.shape}"
            )
        if len(labels) == 0:
            raise ValueError(f"{labels_path}: no samples")
        if labels.max() >= num_classes:
            raise ValueError(f"{labels_path}: label {int(labels.max())} outside 0..{num_classes - 1}")
        out += [images, labels.astype(np.int64)]
    return IdxSplits(*out)
