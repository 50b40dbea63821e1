"""The dataset registry's operations: build a registered dataset, read its info and labels,
check its files are there (every dataset module registers itself in ``base.DATASETS``)."""
from __future__ import annotations

from pathlib import Path

from ..registry import unknown_choice
from .base import DATASETS, SPLITS, DataIdentity, DatasetInfo


def available() -> list[str]:
    return DATASETS.names()


def _entry(name: str):
    return DATASETS.get(name)


def build(name: str, split: str, **options):
    """Build dataset ``name`` for ``split`` ("train" | "test")."""
    if split not in SPLITS:
        raise ValueError(unknown_choice("split", split, list(SPLITS)))
    return _entry(name).build(split, **options)


def info(name: str, **options) -> DatasetInfo:
    """Classes, channels and image size of ``name`` with ``options`` (no data loaded)."""
    return _entry(name).info(**options)


def check_available(name: str, **options) -> None:
    """Raise DatasetNotFoundError early (before any training) if the files are missing and
    cannot be downloaded. Cheap: does not load the data."""
    _entry(name).check_available(**options)


def resolved_root(name: str, root=None):
    """The folder ``name`` is read from given ``root`` (None: the default), or None for
    datasets that are not read from a folder (digits, synthetic)."""
    return _entry(name).resolved_root(root)


def identity(name: str, **options) -> DataIdentity:
    """What ``name`` with ``options`` reads, resolved (:class:`DataIdentity`): the same for every
    dataset -- ``data_root=`` if given, else the default root, with a dataset's own look-up rules
    (fashion_mnist: where the full files are found, or the embedded subset). Never raises for
    absent or damaged data (the up-front check reports that): it then names the folder it would read."""
    entry = _entry(name)
    try:
        return entry.identity(**options)
    except (ValueError, OSError):
        root = entry.resolved_root(options.get("root"))
        return DataIdentity("", str(Path(root).absolute()) if root is not None else "", "")


def labels(dataset):
    """The labels of a built dataset in index order, as a LongTensor (N,): its ``targets``
    when it has them (every dataset here), the labels of a TensorDataset, else read item by item."""
    import torch

    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, torch.utils.data.TensorDataset):
        targets = dataset.tensors[1]
    if targets is None:
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return torch.as_tensor(targets, dtype=torch.long).reshape(-1).clone()


def option_names(name: str) -> list[str]:
    return list(_entry(name).OPTIONS)
