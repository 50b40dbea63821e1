"""``synthetic``: tiny seeded random tensors for tests. Each class has a fixed random prototype
and examples are prototype + Gaussian noise, so a model can actually learn the labels.

Options: ``num_classes`` (10), ``in_channels`` (3), ``image_size`` (32), ``size`` (examples per
split; default 64 train / 32 test), ``noise`` (0.5), ``seed`` (0).
"""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from .base import DATASETS, DatasetEntry, DatasetInfo

NAME = "synthetic"
DEFAULT_SIZE = {"train": 64, "test": 32}
OPTIONS = ("num_classes", "in_channels", "image_size", "size", "noise", "seed")


def build(split, num_classes=10, in_channels=3, image_size=32, size=None, noise=0.5, seed=0):
    size = DEFAULT_SIZE[split] if size is None else int(size)
    g = torch.Generator().manual_seed(int(seed))
    protos = torch.randn(num_classes, in_channels, image_size, image_size, generator=g)
    g.manual_seed(int(seed) * 2 + (split == "test") + 1)
    y = torch.randint(0, num_classes, (size,), generator=g)
    x = protos[y] + noise * torch.randn(size, in_channels, image_size, image_size, generator=g)
    return TensorDataset(x, y)


def info(num_classes=10, in_channels=3, image_size=32, size=None, noise=0.5, seed=0):
    return DatasetInfo(NAME, int(num_classes), int(in_channels), int(image_size))


DATASETS.register(NAME, DatasetEntry(NAME, OPTIONS, build, info))
