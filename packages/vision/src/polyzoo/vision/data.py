"""Image classification data for ``polyzoo vision train/eval`` and the reproductions.

``DATA`` is one of:
- ``digits``: scikit-learn's bundled 1,797 handwritten digits (8×8, grey), split 80/20 stratified by a fixed seed;
- ``fashion-mnist`` or ``fashion-mnist:FOLDER``: the standard ``{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)``
  files, by default from ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
- a folder of images: ``FOLDER/train/<class>/*`` and ``FOLDER/val/<class>/*`` when those exist, otherwise
  ``FOLDER/<class>/*`` split 80/20 by a fixed seed (read with timm's ``ImageDataset`` and transforms).

Grey data sets are normalised with their training-set mean and standard deviation and resized (bilinear) to
``img_size`` on the fly; the models are then built with ``in_chans=1``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from polyzoo.shared.datasets import FASHION_MNIST_DIR, digits, digits_split, load_idx_splits, read_idx

__all__ = ["FASHION_MNIST_DIR", "ClassificationData", "TensorImages", "load_data", "read_idx"]


class TensorImages(Dataset):
    """In-memory images (N, C, H, W) uint8 or float with labels (N,), normalised and resized per item.

    Returns ``(image (C, img_size, img_size) float32, label int64)``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float, img_size: int | None):
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError(f"TensorImages: expected (N, C, H, W) images and N labels, got {tuple(images.shape)}")
        self.images, self.labels = images, labels.long()
        self.mean, self.std, self.img_size = mean, std, img_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.images[i].float() - self.mean) / self.std
        if self.img_size is not None and x.shape[-1] != self.img_size:
            x = F.interpolate(x[None], size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)[0]
        return x, self.labels[i]


@dataclasses.dataclass
class ClassificationData:
    """Train and evaluation splits with what a model needs to know about them."""

    train: Dataset
    eval: Dataset
    num_classes: int
    in_chans: int
    img_size: int
    name: str


def _grey(train_x, train_y, eval_x, eval_y, img_size, name, num_classes) -> ClassificationData:
    mean, std = float(train_x.float().mean()), float(train_x.float().std())
    size = img_size or train_x.shape[-1]
    return ClassificationData(
        TensorImages(train_x, train_y, mean, std, size),
        TensorImages(eval_x, eval_y, mean, std, size),
        num_classes,
        1,
        size,
        name,
    )


def load_data(spec: str, img_size: int | None = None, seed: int = 0, limit: int | None = None) -> ClassificationData:
    """Load ``spec`` (see the module docstring). ``limit`` keeps the first ``limit`` training and evaluation
    samples (for quick runs)."""
    if spec == "digits":
        images_np, labels_np = digits()
        idx_train, idx_eval = digits_split(labels_np, 0.2, seed)
        images = torch.from_numpy(images_np).unsqueeze(1)  # (N, 1, 8, 8), values in [0, 1]
        labels = torch.from_numpy(labels_np)
        data = _grey(images[idx_train], labels[idx_train], images[idx_eval], labels[idx_eval], img_size, spec, 10)
    elif spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        folder = Path(spec.split(":", 1)[1]) if ":" in spec else FASHION_MNIST_DIR
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST folder {folder} does not exist (install Debian's dataset-fashion-mnist, or pass "
                "fashion-mnist:FOLDER with the *-ubyte.gz files)"
            )
        idx = load_idx_splits(folder)
        data = _grey(
            torch.from_numpy(idx.train_images.copy()).unsqueeze(1),
            torch.from_numpy(idx.train_labels),
            torch.from_numpy(idx.test_images.copy()).unsqueeze(1),
            torch.from_numpy(idx.test_labels),
            img_size,
            "fashion-mnist",
            10,
        )
    else:
        data = _image_folder(Path(spec), img_size or 224, seed)
    if limit is not None:
        data.train = Subset(data.train, range(min(limit, len(data.train))))
        data.eval = Subset(data.eval, range(min(limit, len(data.eval))))
    return data


def _image_folder(root: Path, img_size: int, seed: int) -> ClassificationData:
    if not root.is_dir():
        raise FileNotFoundError(
            f"DATA {str(root)!r} is neither 'digits', 'fashion-mnist[:FOLDER]' nor an existing image folder"
        )
    from timm.data import ImageDataset, create_transform

    train_tf = create_transform(img_size, is_training=True)
    eval_tf = create_transform(img_size, is_training=False)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = ImageDataset(str(root / "train"), transform=train_tf)
        evald = ImageDataset(str(root / "val"), transform=eval_tf)
        classes = len(train.reader.class_to_idx)
    else:
        full_train = ImageDataset(str(root), transform=train_tf)
        full_eval = ImageDataset(str(root), transform=eval_tf)
        n = len(full_train)
        if n < 2:
            raise ValueError(f"{root}: found {n} images; expected <class>/<image> files")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        cut = max(1, int(0.8 * n))
        train, evald = Subset(full_train, perm[:cut]), Subset(full_eval, perm[cut:])
        classes = len(full_train.reader.class_to_idx)
    return ClassificationData(train, evald, classes, 3, img_size, str(root))
