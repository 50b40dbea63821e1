"""``cifar10`` / ``cifar100`` through torchvision, stored under the dataset root
(``datasets/`` by default). Standard KD-literature pipeline: RandomCrop(32, padding 4) +
horizontal flip on the train split, per-channel normalisation on both splits.

Options: ``root`` (default :func:`workbench.paths.data_root`), ``download`` (default True:
fetch into ``root`` when absent; offline this fails with a clear message), ``augment``.

The up-front check verifies every file of the extracted folder against the MD5 sums torchvision
ships (what is missing or damaged is named); a verified folder is remembered by file sizes and
modification times, so the hashing (~1 s) happens once per process.
"""
from __future__ import annotations

from pathlib import Path

from .. import paths
from .augment import TranslateFlip
from .base import DATASETS, DatasetEntry, DatasetInfo, failure, not_found, quiet_download

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
IMAGE_SIZE = 32
CROP_PADDING = 4
STATS = {  # per-channel mean, std of the training images
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# label names in label order, as the datasets' own meta files list them (batches.meta / meta)
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple("""
        apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
        can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
        dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
        lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
        pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
        seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
        tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
        worm""".split()),
}
FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
OPTIONS = ("root", "download", "augment")


def _tv_class(name):
    import torchvision.datasets as tvd

    return tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100


def default_root() -> Path:
    return paths.data_root()


_VERIFIED: set = set()  # (file, size, mtime_ns) already checked in this process


def _expected_files(name: str) -> list[tuple[str, str]]:
    """(file name, md5) of every file torchvision reads from the extracted folder."""
    tv = _tv_class(name)
    return [*tv.train_list, *tv.test_list, (tv.meta["filename"], tv.meta["md5"])]


def problems(name: str, root: Path) -> str:
    """What is wrong with ``root``'s extracted CIFAR folder ('' if every file checks out)."""
    from torchvision.datasets.utils import check_integrity

    folder = root / FOLDER[name]
    if not folder.is_dir():
        return f"no folder {paths.shown(folder)}"
    missing, damaged = [], []
    for fname, md5 in _expected_files(name):
        path = folder / fname
        if not path.is_file():
            missing.append(fname)
            continue
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:
            if not check_integrity(str(path), md5):
                damaged.append(fname)
                continue
            _VERIFIED.add(key)
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
            ([f"wrong checksum (damaged or not the original file): {', '.join(damaged)}"] if damaged else [])
    return f"folder {paths.shown(folder)} is incomplete or damaged: " + "; ".join(parts) if parts else ""


def _ensure(name: str, root, download: bool) -> Path:
    root = Path(root) if root is not None else default_root()
    problem = problems(name, root)
    if not problem:
        return root
    how = f"Put the folder extracted from {URL} at that path" + \
        (" (delete the damaged one first)" if "damaged" in problem else "")
    if not download:
        raise not_found(name, problem, how)
    archive = root / _tv_class(name).filename
    try:
        with quiet_download(root, root / FOLDER[name], archive):
            root.mkdir(parents=True, exist_ok=True)
            _tv_class(name)(root=str(root), train=True, download=True)
            _tv_class(name)(root=str(root), train=False, download=True)
    except Exception as e:  # no network, DNS failure, permission error, ...
        raise not_found(name, f"{problem}; download failed ({failure(e)})", how) from e
    problem = problems(name, root)
    if problem:
        raise not_found(name, f"after downloading, {problem}", how)
    return root


def transforms(name: str, train: bool):
    import torch
    import torchvision.transforms as T

    mean, std = STATS[name]
    # = RandomCrop(32, padding=4) + RandomHorizontalFlip, from the one pipeline the device path uses
    ops = [TranslateFlip(CROP_PADDING, flip=True)] if train else []
    return T.Compose([T.PILToTensor(), *ops, T.ConvertImageDtype(torch.float32), T.Normalize(mean, std)])


def _register(name: str):
    def build(split, root=None, download=True, augment=None):
        root = _ensure(name, root, download)
        augment = (split == "train") if augment is None else bool(augment)
        ds = _tv_class(name)(root=str(root), train=split == "train", download=False,
                             transform=transforms(name, augment))
        ds.workbench_stats, ds.workbench_augment = STATS[name], augment  # for data.device (GPU-resident path)
        return ds

    def info(root=None, download=True, augment=None):
        return DatasetInfo(name, NUM_CLASSES[name], 3, IMAGE_SIZE, class_names=CLASS_NAMES[name],
                           mean=STATS[name][0], std=STATS[name][1], augment_pad=CROP_PADDING)

    def check(root=None, download=True, augment=None):
        _ensure(name, root, download)

    DATASETS.register(name, DatasetEntry(name, OPTIONS, build, info, check, default_root))


for _name in NUM_CLASSES:
    _register(_name)
