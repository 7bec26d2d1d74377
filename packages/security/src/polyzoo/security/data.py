"""Image data for distillation and backdoor experiments: scikit-learn's digits, Fashion-MNIST (``*-ubyte.gz``),
CIFAR-10 python batches and any ImageFolder tree, loaded into normalised tensors.

Every loader returns an :class:`ImageData`: ``train_x``/``test_x`` of shape ``(N, C, H, W)`` already normalised
with the per-channel ``mean``/``std`` of the official code (Fashion-MNIST 0.2861/0.3530, CIFAR-10
0.4914,0.4822,0.4465 / 0.2023,0.1994,0.2010), labels ``(N,)`` int64. Fashion-MNIST is resized to 32×32 by default
as ``DC/utils.py`` of https://github.com/liuyugeng/baadd does (bilinear; the official code resizes with PIL).

CIFAR-10 batches are pickles: they are read with a restricted unpickler that only rebuilds the builtin containers
and the numpy array/dtype constructors such a batch needs; anything else raises :class:`UnsafePickleError`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from polyzoo.shared.datasets import default_fashion_mnist_root, digits, digits_split, load_idx_splits, read_idx

__all__ = [
    "DATASETS",
    "ImageData",
    "UnsafePickleError",
    "default_fashion_mnist_root",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "read_idx",
    "safe_unpickle",
]

DATASETS = ("digits", "fashion-mnist", "cifar10", "imagefolder")


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside the allow-list (it could run arbitrary code)."""


@dataclasses.dataclass
class ImageData:
    """A normalised image classification data set split into train and test."""

    name: str
    train_x: torch.Tensor  # (N, C, H, W) float32, normalised
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int

    @property
    def channel(self) -> int:
        return self.train_x.shape[1]

    @property
    def im_size(self) -> tuple[int, int]:
        return (self.train_x.shape[2], self.train_x.shape[3])

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Map raw pixels in [0, 1] with shape ``(..., C, H, W)`` to the normalised space."""
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (raw - mean) / std

    def train_dataset(self) -> TensorDataset:
        return TensorDataset(self.train_x, self.train_y)

    def test_dataset(self) -> TensorDataset:
        return TensorDataset(self.test_x, self.test_y)


def _normalise(raw: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (raw - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _resize(raw: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or (raw.shape[-1] == size and raw.shape[-2] == size):
        return raw
    return F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 handwritten digits (8×8, values 0–16 scaled to [0, 1]), stratified split
    (:func:`polyzoo.shared.datasets.digits_split`)."""
    images, labels = digits()
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    idx_train, idx_test = digits_split(labels, test_fraction, seed)
    mean = (float(x[idx_train].mean()),)
    std = (float(x[idx_train].std()),)
    xn = _normalise(x, mean, std)
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return ImageData("digits", xn[idx_train], y[idx_train], xn[idx_test], y[idx_test], mean, std, 10)


def load_fashion_mnist(root: str | os.PathLike | None = None, resize: int | None = 32) -> ImageData:
    """Fashion-MNIST from ``root/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (60k/10k; default: Debian's
    copy), read by :func:`polyzoo.shared.datasets.load_idx_splits`."""
    splits = load_idx_splits(root)
    mean, std = (0.2861,), (0.3530,)

    def tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        raw = _resize(torch.from_numpy(images.copy()).float().unsqueeze(1) / 255.0, resize)
        return _normalise(raw, mean, std), torch.from_numpy(labels)

    train_x, train_y = tensors(splits.train_images, splits.train_labels)
    test_x, test_y = tensors(splits.test_images, splits.test_labels)
    return ImageData("fashion-mnist", train_x, train_y, test_x, test_y, mean, std, 10)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays and builtin containers are allowed"
            )
        return super().find_class(module, name)


def safe_unpickle(path: str | os.PathLike, encoding: str = "bytes") -> object:
    """Unpickle ``path`` allowing only builtin containers and numpy arrays (CIFAR batch contents)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(io.BufferedReader(f), encoding=encoding).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a valid CIFAR python batch ({type(exc).__name__}: {exc})") from exc


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict batch, got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: batch lacks the 'data' and/or 'labels' field (keys: {sorted(map(str, obj))})")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(
            f"{path}: field 'data' must be uint8 (N, 3072) matching {len(labels)} labels, got {data.dtype} {data.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise ValueError(f"{path}: field 'labels' has values outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | os.PathLike) -> ImageData:
    """CIFAR-10 python batches from ``root`` (``data_batch_1..5`` and ``test_batch``, or a
    ``cifar-10-batches-py`` subfolder)."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    train = [_cifar_batch(_require(root / f"data_batch_{i}")) for i in range(1, 6)]
    test = _cifar_batch(_require(root / "test_batch"))
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    tx = torch.from_numpy(np.concatenate([b[0] for b in train])).float() / 255.0
    ty = torch.from_numpy(np.concatenate([b[1] for b in train]))
    return ImageData(
        "cifar10",
        _normalise(tx, mean, std),
        ty,
        _normalise(torch.from_numpy(test[0]).float() / 255.0, mean, std),
        torch.from_numpy(test[1]),
        mean,
        std,
        10,
    )


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch not found: {path}")
    return path


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image_folder(
    root: str | os.PathLike, size: int = 32, grayscale: bool = False, test_fraction: float = 0.2, seed: int = 0
) -> ImageData:
    """Images in ``root/<class>/<image>`` (classes sorted by name), resized to ``size``×``size``; a stratified
    ``test_fraction`` is held out. Mean/std are measured on the training part."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageFolder root not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ValueError(f"{root}: an ImageFolder needs at least two class subfolders, found {classes}")
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{root / cls}: no image files ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        for p in files:
            try:
                with Image.open(p) as im:
                    im = im.convert("L" if grayscale else "RGB").resize((size, size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"{p}: cannot decode image ({exc})") from exc
            images.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).float() / 255.0
    y = torch.tensor(labels, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(len(classes)):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = round(test_fraction * len(idx))
        if len(idx) > 1:
            n_test = min(max(n_test, 1), len(idx) - 1)
            test_mask[idx[:n_test]] = True
    train_raw = x[~test_mask]
    mean = tuple(float(v) for v in train_raw.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-6) for v in train_raw.std(dim=(0, 2, 3)))
    return ImageData(
        "imagefolder",
        _normalise(train_raw, mean, std),
        y[~test_mask],
        _normalise(x[test_mask], mean, std),
        y[test_mask],
        mean,
        std,
        len(classes),
    )


def load_dataset(name: str, path: str | os.PathLike | None = None, seed: int = 0) -> ImageData:
    """Dispatch on ``name`` (one of :data:`DATASETS`; anything else raises ``ValueError`` naming the choices)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    if name == "digits":
        return load_digits(seed=seed)
    if name == "fashion-mnist":
        return load_fashion_mnist(path)
    if name == "cifar10":
        if path is None:
            raise ValueError("cifar10 needs --data-path pointing at the cifar-10-batches-py folder")
        return load_cifar10(path)
    if path is None:  # imagefolder
        raise ValueError("imagefolder needs --data-path pointing at a folder of class subfolders")
    return load_image_folder(path, seed=seed)
