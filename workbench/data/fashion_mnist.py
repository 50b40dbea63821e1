"""``fashion_mnist``: Zalando's Fashion-MNIST (28x28 grey images of clothing, 10 balanced classes,
60,000 train + 10,000 test; MIT licence). Harder than ``digits``: room for a real
teacher-student gap.

Where the images come from (option ``source``):
- ``"embedded"``: the seeded, class-balanced subset committed to the repository
  (``workbench/data/embedded/``, licence notice and provenance beside it), checked against its
  sha256 on load. Offline, no root needed.
- ``"full"``: the standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ``.gz``), looked for in
  ``root`` (default: ``$WORKBENCH_DATA`` or the checkout's ``datasets/``), in its
  ``fashion-mnist/`` and torchvision ``FashionMNIST/raw/`` sub-folders, and in the folder of
  Debian's ``dataset-fashion-mnist`` package. With ``download=True`` (and internet) torchvision
  fetches them into ``<root>/FashionMNIST/raw``.
- ``"auto"`` (default): the full files when they are found, else the embedded subset (never
  downloads). Pin ``source`` when results must not depend on what the machine has installed.

Splits: ``train`` = the source's training images (all, or ``train_per_class`` per class picked
with ``seed``); ``test`` = the source's whole test split (the official test images).
Other options: ``image_size`` (28 native; other sizes are bilinear resamplings), ``classes``
(keep these classes, labels re-indexed 0..len-1 in the given order), ``augment`` (None = train
split only): random translation by up to ``CROP_PADDING`` pixels (zero = black padding, then a
crop back to size) and a horizontal flip with probability 1/2 — the standard small-image
pipeline (clothes stay clothes when mirrored). Pixels are scaled to [0, 1] and standardised
with the mean and std of the 60,000 official training images.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import paths
from .augment import TranslateFlip
from .base import DATASETS, DatasetEntry, DatasetInfo
from .fashion_files import NAME, NATIVE_SIZE, NUM_CLASSES, SOURCES, load, locate, resolve

MIN_SIZE = 8
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # of the 60,000 official training images, pixels / 255
UINT8_MAX = 255.0
CROP_PADDING = 2            # translation range at 28x28, scaled with image_size
FLIP = True
OPTIONS = ("source", "root", "download", "train_per_class", "seed", "image_size", "classes", "augment")


# ------------------------------------------------------------------------------ options and splits
def _classes(classes) -> tuple[int, ...]:
    if classes is None:
        return tuple(range(NUM_CLASSES))
    classes = tuple(int(c) for c in classes)
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < NUM_CLASSES for c in classes):
        raise ValueError(f"{NAME} classes must be distinct class numbers 0-{NUM_CLASSES - 1}, got {classes!r}")
    return classes


def _image_size(image_size) -> int:
    size = int(image_size) if image_size else NATIVE_SIZE
    if size < MIN_SIZE:
        raise ValueError(f"{NAME} image_size must be >= {MIN_SIZE} (0 = native {NATIVE_SIZE}), got {image_size!r}")
    return size


def _check_per_class(train_per_class, labels: np.ndarray, classes, kind: str) -> None:
    if train_per_class is None:
        return
    available = int(min(np.count_nonzero(labels == c) for c in classes))
    if not 1 <= int(train_per_class) <= available:
        hint = " (use data_source=full with the full files for more)" if kind == "embedded" else ""
        raise ValueError(f"{NAME} train_per_class must be None or 1..{available} for the {kind} "
                         f"training split{hint}, got {train_per_class!r}")


def select(labels: np.ndarray, classes, train_per_class=None, seed: int = 0) -> np.ndarray:
    """Sorted indices of the examples of ``classes``; with ``train_per_class`` k, k of each class
    drawn with ``seed`` (one generator, classes in the given order)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        picked.append(members if train_per_class is None else rng.permutation(members)[:int(train_per_class)])
    return np.sort(np.concatenate(picked))


def resample(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N x 1 x 28 x 28 -> uint8 N x 1 x size x size (bilinear, antialiased when shrinking)."""
    if size == images.shape[-1]:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < images.shape[-1])
    return x.round().clamp(0, UINT8_MAX).to(torch.uint8)


def crop_padding(size: int) -> int:
    return max(1, round(CROP_PADDING * size / NATIVE_SIZE))


# ------------------------------------------------------------------------------ the dataset
class FashionMNISTDataset(Dataset):
    """uint8 images kept as one tensor; augmentation and normalisation per item (the device path,
    :mod:`workbench.data.device`, does the same ops on whole batches)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, augment: bool, source: str):
        self.images, self.targets, self.augment, self.source = images, targets, augment, source
        self.pad = crop_padding(images.shape[-1])
        self.mean = torch.tensor([MEAN]).view(1, -1, 1, 1)
        self.std = torch.tensor([STD]).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        x = self.images[i]
        if self.augment:
            x = TranslateFlip(self.pad, FLIP)(x)  # the global RNG, seeded by the trainer
        x = (x[None].float() / UINT8_MAX - self.mean) / self.std
        return x[0], int(self.targets[i])

    def device_tensors(self):
        from .device import DeviceTensors

        return DeviceTensors(self.images, self.targets, self.augment, self.pad, FLIP, mean=(MEAN,), std=(STD,))


def build(split, source="auto", root=None, download=True, train_per_class=None, seed=0,
          image_size=None, classes=None, augment=None) -> FashionMNISTDataset:
    classes, size = _classes(classes), _image_size(image_size)
    kind, splits = load(source, root, download)
    images, labels = splits[split]
    if split == "train":
        _check_per_class(train_per_class, labels, classes, kind)
    keep = select(labels, classes, train_per_class if split == "train" else None, seed)
    remap = np.full(NUM_CLASSES, -1, dtype=np.int64)
    remap[list(classes)] = np.arange(len(classes))
    x = resample(torch.from_numpy(np.ascontiguousarray(images[keep])).unsqueeze(1), size)
    y = torch.from_numpy(remap[labels[keep]])
    augment = (split == "train") if augment is None else bool(augment)
    return FashionMNISTDataset(x, y, augment, kind)


def info(source="auto", root=None, download=True, train_per_class=None, seed=0, image_size=None,
         classes=None, augment=None) -> DatasetInfo:
    """No data is read; ``source`` is resolved (file look-up only, no download)."""
    size, classes = _image_size(image_size), _classes(classes)
    if source not in SOURCES:
        raise ValueError(f"{NAME} source must be one of {', '.join(SOURCES)}, got {source!r}")
    kind = resolve(source, root)[0] if source == "auto" else source
    return DatasetInfo(NAME, len(classes), 1, size, source=kind, class_names=tuple(CLASS_NAMES[c] for c in classes),
                       mean=(MEAN,), std=(STD,), augment_pad=crop_padding(size), augment_flip=FLIP)


def check_available(source="auto", root=None, download=True, train_per_class=None, seed=0,
                    image_size=None, classes=None, augment=None) -> None:
    """Find and read (cached) the files, verify them and the options against them."""
    kind, splits = load(source, root, download)
    _check_per_class(train_per_class, splits["train"][1], _classes(classes), kind)


DATASETS.register(NAME, DatasetEntry(NAME, OPTIONS, build, info, check_available, default_root=paths.data_root,
                                     locate=locate))
