"""``digits``: scikit-learn's bundled handwritten digits (1797 real 8x8 grayscale images,
10 classes, ~180 per class). Offline and real: the embedded default dataset.

Options
- ``train_per_class`` (int or None, default None): None = stratified 70/30 train/test split;
  an int k = k training images per class, every other image is test (the low-label regime in
  which teacher/student gaps become visible, see the README).
- ``seed`` (int, default 0): seeds the split (fixed split for a fixed seed, independent of the
  training seed).
- ``image_size`` (int >= 8, default 8): 8 = native; larger sizes are bilinear upsamplings (e.g. 32
  to run CIFAR-sized models at their native resolution; CIFAR ResNets also run on 8x8).
- ``classes`` (tuple of digit classes or None = all): keep only these classes, labels re-indexed
  0..len-1 in the given order (e.g. source digits 0-4 / target digits 5-9 for transfer probes).
- ``augment`` (bool or None = train split only): random shifts of up to ``max(1, image_size//8)``
  pixels with zero padding.
Pixels are scaled to [0, 1] then standardised with the whole dataset's mean and std.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .augment import TranslateFlip
from .base import DATASETS, DatasetEntry, DatasetInfo

NAME = "digits"
NATIVE_SIZE = 8
NUM_CLASSES = 10
PIXEL_MAX = 16.0
MEAN, STD = 0.3053, 0.3760  # of all 1797 images after /16
TEST_FRACTION = 0.3  # used when train_per_class is None
OPTIONS = ("train_per_class", "seed", "image_size", "classes", "augment")


def _classes(classes) -> tuple[int, ...]:
    if classes is None:
        return tuple(range(NUM_CLASSES))
    classes = tuple(int(c) for c in classes)
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < NUM_CLASSES for c in classes):
        raise ValueError(f"digits classes must be distinct digits 0-9, got {classes!r}")
    return classes


def _check(image_size, train_per_class) -> None:
    if int(image_size) < NATIVE_SIZE:
        raise ValueError(f"digits image_size must be >= {NATIVE_SIZE}, got {image_size!r}")
    if train_per_class is not None and not (1 <= int(train_per_class) <= 150):
        raise ValueError(f"digits train_per_class must be None or 1..150, got {train_per_class!r}")


def split_indices(targets: np.ndarray, train_per_class, seed: int) -> dict[str, np.ndarray]:
    """Per-class seeded split: k per class for training (or 70 % when k is None), rest test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        k = int(train_per_class) if train_per_class is not None else int(round(len(idx) * (1 - TEST_FRACTION)))
        train.append(idx[:k])
        test.append(idx[k:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


class DigitsDataset(Dataset):
    def __init__(self, images: torch.Tensor, targets: torch.Tensor, augment: bool):
        self.images, self.targets, self.augment = images, targets, augment
        self.shift = max(1, images.shape[-1] // NATIVE_SIZE)
        self._augment = TranslateFlip(self.shift, flip=False)  # digits are not mirror-symmetric

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        x = self.images[i]
        if self.augment:
            x = self._augment(x)
        return x, int(self.targets[i])


def build(split: str, train_per_class=None, seed: int = 0, image_size: int = NATIVE_SIZE,
          classes=None, augment=None) -> DigitsDataset:
    from sklearn.datasets import load_digits

    _check(image_size, train_per_class)
    classes = _classes(classes)
    d = load_digits()
    keep = np.isin(d.target, classes)
    images, raw = d.images[keep], d.target[keep]
    remap = {c: i for i, c in enumerate(classes)}
    targets = np.array([remap[int(t)] for t in raw])
    idx = split_indices(targets, train_per_class, seed)[split]
    x = torch.tensor(images[idx], dtype=torch.float32).unsqueeze(1) / PIXEL_MAX
    if int(image_size) != NATIVE_SIZE:
        x = F.interpolate(x, size=(int(image_size),) * 2, mode="bilinear", align_corners=False)
    x = (x - MEAN) / STD
    augment = (split == "train") if augment is None else bool(augment)
    return DigitsDataset(x, torch.tensor(targets[idx]), augment)


def info(train_per_class=None, seed: int = 0, image_size: int = NATIVE_SIZE, classes=None,
         augment=None) -> DatasetInfo:
    _check(image_size, train_per_class)
    kept = _classes(classes)
    # labels are re-indexed 0..len-1; each keeps its digit as its name
    return DatasetInfo(NAME, len(kept), 1, int(image_size), class_names=tuple(str(c) for c in kept),
                       mean=(MEAN,), std=(STD,), augment_pad=max(1, int(image_size) // NATIVE_SIZE),
                       augment_flip=False)


DATASETS.register(NAME, DatasetEntry(NAME, OPTIONS, build, info))
