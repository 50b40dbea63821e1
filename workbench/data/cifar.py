"""``cifar10`` / ``cifar100`` through torchvision, stored under the dataset root
(``datasets/`` by default). Standard KD-literature pipeline: RandomCrop(32, padding 4) +
horizontal flip on the train split, per-channel normalisation on both splits.

Options: ``root`` (default :func:`workbench.paths.data_root`), ``download`` (default True:
fetch into ``root`` when absent; offline this fails with a clear message), ``augment``.
"""
from __future__ import annotations

from pathlib import Path

from .. import paths
from . import DATASETS
from .base import DatasetEntry, DatasetInfo, not_found

IMAGE_SIZE = 32
CROP_PADDING = 4
STATS = {  # per-channel mean, std of the training images
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
OPTIONS = ("root", "download", "augment")


def _tv_class(name):
    import torchvision.datasets as tvd

    return tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100


def _ensure(name: str, root, download: bool) -> Path:
    root = Path(root) if root is not None else paths.data_root()
    if (root / FOLDER[name]).is_dir():
        return root
    how = (f"Download it on a machine with internet (it is fetched automatically into {root} "
           f"when download=True), or place the extracted '{FOLDER[name]}' folder from "
           f"https://www.cs.toronto.edu/~kriz/cifar.html inside {root}.")
    if not download:
        raise not_found(name, root / FOLDER[name], how)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _tv_class(name)(root=str(root), train=True, download=True)
        _tv_class(name)(root=str(root), train=False, download=True)
    except Exception as e:  # no network, DNS failure, permission error, ...
        raise not_found(name, root / FOLDER[name], f"Automatic download failed ({type(e).__name__}: {e}). " + how) from e
    return root


def transforms(name: str, train: bool):
    import torchvision.transforms as T

    mean, std = STATS[name]
    ops = [T.RandomCrop(IMAGE_SIZE, padding=CROP_PADDING), T.RandomHorizontalFlip()] if train else []
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def _register(name: str):
    def build(split, root=None, download=True, augment=None):
        root = _ensure(name, root, download)
        augment = (split == "train") if augment is None else bool(augment)
        ds = _tv_class(name)(root=str(root), train=split == "train", download=False,
                             transform=transforms(name, augment))
        ds.workbench_stats, ds.workbench_augment = STATS[name], augment  # for data.device (GPU-resident path)
        return ds

    def info(root=None, download=True, augment=None):
        return DatasetInfo(name, NUM_CLASSES[name], 3, IMAGE_SIZE)

    def check(root=None, download=True, augment=None):
        _ensure(name, root, download)

    DATASETS.register(name, DatasetEntry(name, OPTIONS, build, info, check))


for _name in NUM_CLASSES:
    _register(_name)
