"""``imagefolder``: ImageNet-style ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*``.

Standard pipeline: RandomResizedCrop(image_size) + horizontal flip for training;
Resize(image_size / 0.875) + CenterCrop(image_size) for evaluation; ImageNet normalisation.
Options: ``root`` (default ``<data root>/imagenet``), ``image_size`` (224), ``augment``.

Labels: one class index for both splits, from the ``train`` class folders (sorted names). The
``val`` folders must name the same classes; otherwise every label after a missing folder would
shift, so a mismatch is an error naming the missing and extra folders; a class folder without
image files is an error naming it (torchvision would stop on it after the run had started).

Identity (:func:`fingerprint`): the run name's hash and the cached teacher's key cover the class
folders and the list of image files in each (their names, read from directory listings: no file
is opened or stat'ed), so class folders swapped or edited in place make another run and another
teacher, and a resumed run whose files changed is refused. Limit: a swap of class folders whose
file lists are identical (the same names in every class) is not seen; ImageNet's names carry the
class id (``n01440764_10026.JPEG``).
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from .. import paths
from .base import DATASETS, DatasetEntry, DatasetInfo, not_found

NAME = "imagefolder"
DEFAULT_SIZE = 224
CENTER_CROP_FRACTION = 0.875  # resize to size/0.875 then center-crop (256 -> 224)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLIT_DIRS = {"train": "train", "test": "val"}
OPTIONS = ("root", "image_size", "augment")


def default_root() -> Path:
    return paths.data_root() / "imagenet"


def _root(root) -> Path:
    root = Path(root) if root is not None else default_root()
    missing = [d for d in SPLIT_DIRS.values() if not (root / d).is_dir()]
    if missing:
        raise not_found(NAME, f"no {' or '.join(missing)} folder in {paths.shown(root)}",
                        "Put class sub-folders in train/ and val/ there (ImageNet: ILSVRC2012 with the "
                        "validation images sorted into class folders)")
    return root


def _folders(path: Path) -> list[str]:
    return sorted(d.name for d in path.iterdir() if d.is_dir())


def _image_files(folder: Path) -> tuple[str, ...]:
    """Relative paths of the image files under ``folder`` (torchvision's extensions and walk)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    out = []
    for here, _dirs, files in os.walk(folder, followlinks=True):
        rel = os.path.relpath(here, folder)
        out += [os.path.normpath(os.path.join(rel, f)) for f in files if has_file_allowed_extension(f, IMG_EXTENSIONS)]
    return tuple(sorted(out))


def _stamp(root: Path) -> tuple:
    """Modification times of the split and class folders: what a rename, an added or a removed file changes."""
    out = []
    for split_dir in SPLIT_DIRS.values():
        top = root / split_dir
        out.append((split_dir, top.stat().st_mtime_ns))
        out += [(f"{split_dir}/{c}", (top / c).stat().st_mtime_ns) for c in _folders(top)]
    return tuple(out)


@lru_cache(maxsize=8)
def _listing(root: str, stamp: tuple) -> dict[str, dict[str, tuple[str, ...]]]:
    return {split_dir: {c: _image_files(Path(root) / split_dir / c) for c in _folders(Path(root) / split_dir)}
            for split_dir in SPLIT_DIRS.values()}


def listing(root: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """``{split folder: {class folder: image files}}`` (cached while the folders are unchanged)."""
    root = Path(root)
    return _listing(str(root.resolve()), _stamp(root))


def fingerprint(folder: Path, image_size=DEFAULT_SIZE, augment=None, root=None) -> str:
    """A hash of the class folders and their image file lists ("" when the folder is not there yet)."""
    try:
        files = listing(Path(folder))
    except OSError:
        return ""
    h = hashlib.sha256()
    for split_dir, classes in files.items():
        for c, names in classes.items():
            h.update(f"{split_dir}/{c}:{len(names)}\n".encode())
            h.update("\n".join(names).encode())
    return h.hexdigest()[:16]


def class_index(root: Path) -> dict[str, int]:
    """``{class folder: label}`` shared by every split, from ``train``; raises if a split's class
    folders differ from train's (naming the missing and extra ones)."""
    classes = _folders(root / SPLIT_DIRS["train"])
    if not classes:
        raise ValueError(f"imagefolder: no class folders under {root / SPLIT_DIRS['train']}")
    for split_dir in SPLIT_DIRS.values():
        have = set(_folders(root / split_dir))
        missing, extra = sorted(set(classes) - have), sorted(have - set(classes))
        if missing or extra:
            raise ValueError(f"imagefolder: the class folders of {root / split_dir} differ from those of "
                             f"{root / SPLIT_DIRS['train']} (labels would not match): "
                             f"missing {missing or 'none'}, extra {extra or 'none'}; every split needs the "
                             f"same class folders")
    return {c: i for i, c in enumerate(classes)}


def _dataset(path: Path, class_to_idx: dict[str, int], transform):
    """torchvision's ImageFolder with the shared class index instead of the split's own."""
    import torchvision.datasets as tvd

    class SharedIndexFolder(tvd.ImageFolder):
        def find_classes(self, directory):
            return list(class_to_idx), dict(class_to_idx)

    return SharedIndexFolder(str(path), transform=transform)


def transforms(image_size: int, train: bool):
    import torchvision.transforms as T

    if train:
        ops = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        ops = [T.Resize(int(round(image_size / CENTER_CROP_FRACTION))), T.CenterCrop(image_size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(MEAN, STD)])


def build(split, root=None, image_size=DEFAULT_SIZE, augment=None):
    root = _root(root)
    augment = (split == "train") if augment is None else bool(augment)
    return _dataset(root / SPLIT_DIRS[split], class_index(root), transforms(int(image_size), augment))


def info(root=None, image_size=DEFAULT_SIZE, augment=None):
    folders = class_index(_root(root))
    return DatasetInfo(NAME, len(folders), 3, int(image_size), class_names=tuple(folders), mean=MEAN, std=STD)


def check(root=None, image_size=DEFAULT_SIZE, augment=None):
    root = _root(root)
    class_index(root)
    for split_dir, classes in listing(root).items():
        empty = [c for c, names in classes.items() if not names]
        if empty:
            raise ValueError(f"imagefolder: class folder {root / split_dir / empty[0]} has no image files"
                             f"{f' (nor {len(empty) - 1} more of {root / split_dir})' if len(empty) > 1 else ''}; "
                             f"every class needs images in every split: add them or remove the class from each split")


DATASETS.register(NAME, DatasetEntry(NAME, OPTIONS, build, info, check, default_root, fingerprint=fingerprint))
