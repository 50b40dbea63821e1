"""``imagefolder``: ImageNet-style ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*``.

Standard pipeline: RandomResizedCrop(image_size) + horizontal flip for training;
Resize(image_size / 0.875) + CenterCrop(image_size) for evaluation; ImageNet normalisation.
Options: ``root`` (default ``<data root>/imagenet``), ``image_size`` (224), ``augment``.
"""
from __future__ import annotations

from pathlib import Path

from .. import paths
from . import DATASETS
from .base import DatasetEntry, DatasetInfo, not_found

NAME = "imagefolder"
DEFAULT_SIZE = 224
CENTER_CROP_FRACTION = 0.875  # resize to size/0.875 then center-crop (256 -> 224)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLIT_DIRS = {"train": "train", "test": "val"}
OPTIONS = ("root", "image_size", "augment")


def _root(root) -> Path:
    root = Path(root) if root is not None else paths.data_root() / "imagenet"
    missing = [d for d in SPLIT_DIRS.values() if not (root / d).is_dir()]
    if missing:
        raise not_found(NAME, root, f"Expected class sub-folders under {root}/train and {root}/val "
                        f"(missing: {', '.join(missing)}); for ImageNet, extract ILSVRC2012 there "
                        f"with the validation images sorted into class folders.")
    return root


def transforms(image_size: int, train: bool):
    import torchvision.transforms as T

    if train:
        ops = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(round(image_size / CENTER_CROP_FRACTION))), T.CenterCrop(image_size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(MEAN, STD)])


def build(split, root=None, image_size=DEFAULT_SIZE, augment=None):
    import torchvision.datasets as tvd

    root = _root(root)
    augment = (split == "train") if augment is None else bool(augment)
    return tvd.ImageFolder(str(root / SPLIT_DIRS[split]), transform=transforms(int(image_size), augment))


def info(root=None, image_size=DEFAULT_SIZE, augment=None):
    root = _root(root)
    classes = [d for d in (root / "train").iterdir() if d.is_dir()]
    return DatasetInfo(NAME, len(classes), 3, int(image_size))


DATASETS.register(NAME, DatasetEntry(NAME, OPTIONS, build, info))
