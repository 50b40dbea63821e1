"""Fashion-MNIST's files: finding the standard IDX files, reading them (cached), and the embedded
subset committed to the repository (verified against its sha256 on load).

Look-up order for the full files: ``root`` (default: ``$WORKBENCH_DATA`` or the checkout's
``datasets/``), its ``fashion-mnist/`` and torchvision ``FashionMNIST/raw/`` sub-folders, then
the folder where Debian's ``dataset-fashion-mnist`` package installs them.

Every full file is checked against the MD5 of its published content (:data:`CONTENT_MD5`: the
uncompressed IDX bytes, so a plain file, Zalando's ``.gz`` and a re-compressed ``.gz`` such as
Debian's all pass) when it is read; a flipped pixel or a shifted label is one line naming the file.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import paths
from ..digest import file_sha256 as sha256  # the scripts' and tests' name (fashion_files.sha256)
from . import idx
from .base import DatasetNotFoundError, failure

NAME = "fashion_mnist"
NATIVE_SIZE = 28
NUM_CLASSES = 10
FILES = {  # split: (images, labels) file names without the optional .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SUBFOLDERS = ((), ("fashion-mnist",), ("FashionMNIST", "raw"))  # under root; the last is torchvision's
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # `dpkg -L dataset-fashion-mnist`
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
EMBEDDED_FILE = EMBEDDED_DIR / "fashion_mnist_subset.npz"
EMBEDDED_SHA256 = "444ce00c72b2e546dd825d1917e4161f0b0eb77f9009b04f040afd027c02cc6e"
SOURCES = ("auto", "embedded", "full")
#: MD5 of each file's uncompressed IDX content as published with the dataset (the ``.gz`` files'
#: own MD5s, which torchvision checks on download, are 8d4fb7e6..., 25c81989..., bef4ecab...,
#: bb300cfd...; these are of their content, and equal those of Debian's re-compressed copies,
#: sha256 in workbench/data/embedded/PROVENANCE.md)
CONTENT_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


class DatasetFileError(ValueError):
    """Dataset files that are present but unusable (damaged, wrong shape, incomplete folder)."""


# ------------------------------------------------------------------------------ finding the files
def _file(folder: Path, stem: str):
    for name in (stem, stem + ".gz"):  # torchvision keeps both; the plain one reads faster
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_folders(root=None) -> list[Path]:
    """Where the full IDX files are looked for, in order."""
    base = Path(root) if root else paths.data_root()
    return [base.joinpath(*sub) for sub in SUBFOLDERS] + [DEBIAN_DIR]


def find_full(root=None):
    """The first folder holding all four IDX files, or None. A folder holding only some of them
    is an error (naming the missing ones), never silently skipped."""
    stems = [s for pair in FILES.values() for s in pair]
    for folder in candidate_folders(root):
        found = [s for s in stems if _file(folder, s) is not None]
        if len(found) == len(stems):
            return folder
        if found:
            missing = ", ".join(s for s in stems if s not in found)
            raise DatasetFileError(f"{NAME}: {folder} holds only some of the IDX files (missing: {missing}[.gz])")
    return None


def _not_found(root, download_error: BaseException | None = None) -> DatasetNotFoundError:
    looked = ", ".join(paths.shown(f) for f in candidate_folders(root))
    failed = f"; download failed ({failure(download_error)})" if download_error is not None else ""
    return DatasetNotFoundError(
        f"dataset {NAME!r}: the full IDX files (train-images-idx3-ubyte, ... plain or .gz) are in none of: "
        f"{looked}{failed}.",
        "Put them in one of these folders (or install Debian's dataset-fashion-mnist), or use the subset "
        "in the repo: data_source=embedded.",
        "Put them in one of these folders (or install Debian's dataset-fashion-mnist), or use the subset "
        "in the repo: data_source = 'embedded'.")


def download_folder(root=None) -> Path:
    """Where a download puts the files (torchvision's layout)."""
    base = Path(root) if root else paths.data_root()
    return base.joinpath(*SUBFOLDERS[-1])


def _download(root) -> Path:
    import torchvision.datasets as tvd

    from .base import quiet_download

    base = Path(root) if root else paths.data_root()
    try:
        with quiet_download(base, base.joinpath(*SUBFOLDERS[-1])):
            for train in (True, False):
                tvd.FashionMNIST(root=str(base), train=train, download=True)
    except Exception as e:  # no network, DNS failure, permission error, ...
        raise _not_found(root, e) from e
    return base.joinpath(*SUBFOLDERS[-1])


def resolve(source: str = "auto", root=None, download: bool = False):
    """``("embedded", None)`` or ``("full", folder)`` for the ``source`` option."""
    if source not in SOURCES:
        raise ValueError(f"{NAME} source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "embedded":
        return "embedded", None
    folder = find_full(root)
    if folder is not None:
        return "full", folder
    if source == "auto":
        return "embedded", None
    if download:
        return "full", _download(root)
    raise _not_found(root)


def locate(source="auto", root=None, **_) -> tuple[str, Path | None]:
    """``(kind, folder)`` the data would be read from, without downloading: the embedded subset
    (no folder), the folder holding the full files, or where a download would put them."""
    try:
        return resolve(source, root)
    except DatasetNotFoundError:
        return "full", download_folder(root)


# ------------------------------------------------------------------------------ loading
def _checked(images: np.ndarray, labels: np.ndarray, where: str):
    if images.ndim != 3 or images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE):
        raise DatasetFileError(f"{NAME}: {where}: images of shape {images.shape[1:]}, expected "
                               f"{NATIVE_SIZE}x{NATIVE_SIZE}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetFileError(f"{NAME}: {where}: {len(labels)} labels for {len(images)} images")
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DatasetFileError(f"{NAME}: {where}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}")
    return images, labels


def _check_published(path: Path, stem: str, raw: bytes) -> None:
    """The content of IDX file ``path`` is the published one (:data:`CONTENT_MD5`)."""
    got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if got != CONTENT_MD5[stem]:
        raise DatasetFileError(f"{NAME}: {path} is not the published {stem} (content MD5 {got}, expected "
                               f"{CONTENT_MD5[stem]}): damaged or modified; replace it with the original file")


@lru_cache(maxsize=4)
def _load_full_cached(folder: str, stamp: tuple) -> dict:
    out = {}
    for split, stems in FILES.items():
        paths_ = [_file(Path(folder), stem) for stem in stems]
        try:
            raws = [idx.read_bytes(p) for p in paths_]
            images, labels = (idx.parse(raw, str(p)) for raw, p in zip(raws, paths_))
            out[split] = _checked(images, labels, f"{paths_[0].name} / {paths_[1].name} in {folder}")
        except idx.IDXError as e:
            raise DatasetFileError(f"{NAME}: {e}") from None
        for p, stem, raw in zip(paths_, stems, raws):  # well-formed; now the very files published
            _check_published(p, stem, raw)
    return out


def load_full(folder) -> dict:
    """``{split: (uint8 images N x 28 x 28, uint8 labels N)}`` from the IDX files in ``folder``
    (cached per folder while the files are unchanged)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.name.split(".")[0] in {s for v in FILES.values() for s in v})
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _load_full_cached(str(folder), stamp)


@lru_cache(maxsize=2)
def load_embedded(path=EMBEDDED_FILE, expected_sha256: str = EMBEDDED_SHA256) -> dict:
    """``{split: (images, labels)}`` of the committed subset, after checking its sha256."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset {NAME!r}: the embedded subset {path} is missing; restore it "
                                   f"from the repository (git checkout -- {path.name}) or use data_source=full")
    got = sha256(path)
    if got != expected_sha256:
        raise DatasetFileError(f"{NAME}: the embedded subset {path} is damaged (sha256 {got[:16]}..., expected "
                               f"{expected_sha256[:16]}...); restore it from the repository")
    with np.load(path) as z:
        return {split: _checked(z[f"{split}_images"], z[f"{split}_labels"], str(path)) for split in FILES}


def load(source: str = "auto", root=None, download: bool = False) -> tuple[str, dict]:
    """``(kind, {split: (uint8 images, uint8 labels)})`` from the resolved source."""
    kind, folder = resolve(source, root, download)
    return kind, (load_embedded() if kind == "embedded" else load_full(folder))
