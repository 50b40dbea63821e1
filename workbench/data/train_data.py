"""``train_data=``: train on another image set than the one the run evaluates on (DM-KD's protocol,
Li et al. 2023: distil on diffusion-generated images, evaluate on the real test set).

Syntax (one string; empty = the run's own training split):

- a folder -- a value that contains a path separator or names an existing folder -- holding one
  sub-folder of images per class (``<folder>/<class>/*.png``, torchvision's ``ImageFolder``
  layout, the layout DM-KD's generated sets are easily written in);
- a registered dataset's training split: ``<dataset>`` or ``<dataset>:<option>=<value>,...``
  (e.g. ``fashion_mnist:source=full`` or ``imagefolder:root=/data/syn``), options as
  :func:`workbench.data.build` takes them.

Class mapping, checked against the evaluation dataset before any training (one line naming the
folders or classes that do not match): a folder's class sub-folders are either all integers
(``0``, ``007``: the label itself, 0..K-1) or the evaluation dataset's class names (a ``/`` in a
name written as ``_``, e.g. ``T-shirt_top``); every class needs a folder, every folder a class. A
registered dataset must name the same classes in the same order.

Images are brought to the evaluation dataset's format: folder images are converted to its channel
count (grey or RGB), resized to its resolution (``Resize((s, s))``, bilinear with antialiasing,
DM-KD's CIFAR pipeline) and normalised with its mean/std; a registered dataset's tensors are
resized (bilinear) when their size differs. Augmentation (``augment=true``): below ``LARGE`` pixels
the evaluated dataset's own translation range and flip (``DatasetInfo.augment_pad`` /
``augment_flip``: fashion_mnist 2 px + flip, CIFAR 4 px + flip = DM-KD's CIFAR crop 32 pad 4, digits
no flip; ``max(1, round(s / 8))`` + flip where a dataset declares none), RandomResizedCrop + flip
from there (DM-KD's ImageNet pipeline); all draws come from torch's global RNG, which the trainer
seeds per epoch and checkpoints mid-epoch, so resumes stay exact with ``workers=0``.

Identity (:func:`fingerprint`): a folder's class sub-folders and image file names (read from
directory listings), a dataset's name, options and its own resolved identity: what the run name's
hash and the resume check cover.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .augment import TranslateFlip
from .base import DATASETS, DatasetInfo

FOLDER, DATASET = "folder", "dataset"
LARGE = 64  # from this resolution on, RandomResizedCrop (ImageNet-style) instead of pad-and-crop
PAD_FRACTION = 8  # translation of s / 8 pixels: 32 -> 4 (CIFAR), 28 -> 4, 8 -> 1
SLASH = "_"  # how a '/' in a class name is written in a folder name


@dataclass(frozen=True)
class TrainData:
    """A parsed ``train_data`` value."""

    kind: str  # FOLDER | DATASET
    path: str = ""  # FOLDER: the folder
    name: str = ""  # DATASET: the registered name
    options: dict = field(default_factory=dict)  # DATASET: its options

    def describe(self) -> str:
        if self.kind == FOLDER:
            return f"folder {self.path}"
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"dataset {self.name}" + (f" ({opts})" if opts else "")


def _value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse(spec: str) -> TrainData | None:
    """The parsed value, None for ``""``; ``ValueError`` (one line) for a malformed one. No file is read
    except one ``isdir`` check."""
    spec = (spec or "").strip()
    if not spec:
        return None
    if os.sep in spec or "/" in spec or spec.startswith((".", "~")) or Path(spec).is_dir():
        return TrainData(FOLDER, path=str(Path(spec).expanduser()))
    name, _, rest = spec.partition(":")
    if name not in DATASETS:
        raise ValueError(f"train_data: {spec!r} is neither a folder (no such directory) nor a registered dataset; "
                         f"give a folder of class sub-folders or one of {', '.join(DATASETS.names())} "
                         f"(as <dataset>:<option>=<value>,...)")
    options = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"train_data: {part!r} in {spec!r} is not <option>=<value>")
        options[key.strip()] = _value(val)
    allowed = DATASETS.get(name).OPTIONS
    bad = [k for k in options if k not in allowed]
    if bad:
        raise ValueError(f"train_data: dataset {name!r} has no option {bad[0]!r}; valid: {', '.join(allowed)}")
    return TrainData(DATASET, name=name, options=options)


# ------------------------------------------------------------------------------ folders
def _class_folders(path: Path) -> list[str]:
    return sorted(d.name for d in path.iterdir() if d.is_dir())


def _images(folder: Path) -> list[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    out = []
    for here, _dirs, files in os.walk(folder, followlinks=True):
        rel = os.path.relpath(here, folder)
        out += [os.path.normpath(os.path.join(rel, f)) for f in files if has_file_allowed_extension(f, IMG_EXTENSIONS)]
    return sorted(out)


def class_map(path: Path, info: DatasetInfo) -> dict[str, int]:
    """``{class folder: label}`` for the evaluation dataset ``info``; ``ValueError`` naming the mismatch."""
    if not path.is_dir():
        raise ValueError(f"train_data: no folder {path}")
    folders = _class_folders(path)
    if not folders:
        raise ValueError(f"train_data: {path} has no class sub-folders (expected <folder>/<class>/<images>)")
    k = info.num_classes
    if all(f.isdigit() for f in folders):
        mapping = {f: int(f) for f in folders}
        extra = [f for f, i in mapping.items() if i >= k]
        missing = sorted(set(range(k)) - set(mapping.values()))
        twice = len(set(mapping.values())) < len(mapping)
        if extra or missing or twice:
            raise ValueError(f"train_data: the class folders of {path} do not match {info.name}'s {k} classes "
                             f"(labels 0..{k - 1}): unknown {extra or 'none'}, missing {missing or 'none'}"
                             f"{', a label named twice' if twice else ''}")
        return mapping
    names = info.class_names or tuple(str(i) for i in range(k))
    by_name = {n.replace("/", SLASH): i for i, n in enumerate(names)}
    unknown = [f for f in folders if f not in by_name]
    missing = [n for n in by_name if n not in folders]
    if unknown or missing:
        raise ValueError(f"train_data: the class folders of {path} do not match {info.name}'s classes: unknown "
                         f"{unknown[:5] or 'none'}{' ...' if len(unknown) > 5 else ''}, missing "
                         f"{missing[:5] or 'none'}{' ...' if len(missing) > 5 else ''}; name them by label "
                         f"(0..{k - 1}) or by class name ({', '.join(list(by_name)[:4])}, ...)")
    return {f: by_name[f] for f in folders}


def _check_folder(path: Path, info: DatasetInfo) -> dict[str, int]:
    mapping = class_map(path, info)
    empty = [f for f in mapping if not _images(path / f)]
    if empty:
        raise ValueError(f"train_data: class folder {path / empty[0]} has no image files"
                         f"{f' (nor {len(empty) - 1} more)' if len(empty) > 1 else ''}")
    if not info.mean or not info.std:
        raise ValueError(f"train_data: {info.name} declares no normalisation (mean/std), so images from a folder "
                         f"cannot be brought to its format; use a registered dataset as train_data")
    return mapping


class FolderImages(Dataset):
    """The images of a class-folder tree as the evaluation dataset's tensors (see the module docstring)."""

    def __init__(self, path: Path, mapping: dict[str, int], info: DatasetInfo, augment: bool):
        from torchvision.datasets.folder import default_loader
        import torchvision.transforms as T

        self.loader, self.mode = default_loader, "L" if info.in_channels == 1 else "RGB"
        self.samples = [(str(path / c / f), label) for c, label in mapping.items() for f in _images(path / c)]
        self.targets = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        s = info.image_size
        ops = [T.Resize((s, s), antialias=True)]
        if augment and s >= LARGE:
            ops = [T.RandomResizedCrop(s, antialias=True), T.RandomHorizontalFlip()]
        self.pil_ops = T.Compose(ops + [T.ToTensor(), T.Normalize(info.mean, info.std)])
        pad = info.augment_pad if info.augment_pad >= 0 else max(1, round(s / PAD_FRACTION))
        flip = info.augment_flip if info.augment_pad >= 0 else True
        self.after = TranslateFlip(pad, flip) if augment and s < LARGE else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        x = self.pil_ops(self.loader(path).convert(self.mode))
        if self.after is not None:
            x = self.after(x)
        return x, label


class Resized(Dataset):
    """A dataset's items resized (bilinear) to ``size`` x ``size``."""

    def __init__(self, dataset, size: int):
        from .catalog import labels

        self.dataset, self.size, self.targets = dataset, size, labels(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return F.interpolate(x[None].float(), size=(self.size, self.size), mode="bilinear",
                             align_corners=False, antialias=True)[0], y


def _check_dataset(td: TrainData, info: DatasetInfo) -> DatasetInfo:
    from .catalog import check_available, info as dataset_info

    check_available(td.name, **td.options)
    other = dataset_info(td.name, **td.options)
    if other.num_classes != info.num_classes or (other.class_names and info.class_names
                                                 and other.class_names != info.class_names):
        diff = [f"{i}: {a} vs {b}" for i, (a, b) in enumerate(zip(other.class_names, info.class_names)) if a != b]
        raise ValueError(f"train_data: {td.describe()} has {other.num_classes} classes, {info.name} "
                         f"{info.num_classes}; labels would not match ({'; '.join(diff[:3]) or 'other class count'})")
    if other.in_channels != info.in_channels:
        raise ValueError(f"train_data: {td.describe()} has {other.in_channels}-channel images, {info.name} "
                         f"{info.in_channels}")
    return other


def check(td: TrainData | None, info: DatasetInfo) -> None:
    """Everything about ``td`` against the evaluation dataset ``info`` (cheap: listings, no image
    is decoded); ``ValueError`` with one line."""
    if td is None:
        return
    if td.kind == FOLDER:
        _check_folder(Path(td.path), info)
    else:
        _check_dataset(td, info)


def build(td: TrainData, info: DatasetInfo, augment: bool) -> Dataset:
    """The training images of ``td`` in the evaluation dataset's format (``info``)."""
    if td.kind == FOLDER:
        return FolderImages(Path(td.path), _check_folder(Path(td.path), info), info, augment)
    from .catalog import build as build_dataset

    other = _check_dataset(td, info)
    ds = build_dataset(td.name, "train", **{"augment": augment, **td.options})
    return ds if other.image_size == info.image_size else Resized(ds, info.image_size)


def fingerprint(td: TrainData | None) -> str:
    """A hash of what ``td`` reads ("" for none): a folder's absolute path, class folders and
    image file names; a dataset's name, options and resolved identity (folder, source, fingerprint)."""
    if td is None:
        return ""
    h = hashlib.sha256()
    if td.kind == FOLDER:
        path = Path(td.path).absolute()
        h.update(f"folder:{path}\n".encode())
        if path.is_dir():
            for c in _class_folders(path):
                names = _images(path / c)
                h.update(f"{c}:{len(names)}\n".encode())
                h.update("\n".join(names).encode())
    else:
        from .catalog import identity

        where = identity(td.name, **td.options)
        h.update(f"dataset:{td.name}:{sorted(td.options.items())}:{where.source}:{where.folder}:"
                 f"{where.fingerprint}".encode())
    return h.hexdigest()[:16]
