"""A validation split carved from the training data, so that settings are chosen without the test set.

``holdout_indices(labels, per_class, seed)`` picks ``per_class`` examples of every class
(class-balanced) with a seeded permutation per class (one ``numpy`` generator seeded with ``seed``,
classes in ascending order); the rest stay for training. ``splits(name, options, per_class, seed,
eval_on)`` applies it to dataset ``name``'s *training split as configured* (``train_per_class``
first, so with k images per class the run trains on k - per_class and validates on per_class) and
returns ``(train, evaluation)``:

- ``eval_on="test"``: (train minus val, the test split) -- ``per_class=0`` is the plain run;
- ``eval_on="val"``: (train minus val, val); the test split is never built.

The validation images are read without augmentation (the evaluation pipeline of the same files:
for ``imagefolder`` the resize + centre crop). Both parts are :class:`Subset`\\ s that keep the
labels (``targets``) and the device-resident path (``device_tensors``) of the dataset they cut.
Identical for the same dataset options, ``per_class`` and ``seed``; disjoint from the test split
because it is a part of the training split. Works for every registered dataset (digits,
fashion_mnist, cifar10/100, imagefolder, synthetic).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import unknown_choice
from .catalog import build, labels

EVAL_SPLITS = ("test", "val")


def holdout_indices(labels, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` sorted index arrays: ``per_class`` examples of every class for val, drawn
    with ``seed``; every class must keep at least one training example."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if per_class >= counts.min():
        c = int(classes[counts.argmin()])
        raise ValueError(f"val_per_class={per_class}: class {c} has only {int(counts.min())} training images, and "
                         f"the validation images are carved from them (leaving at least one to train on); "
                         f"valid: 0..{int(counts.min()) - 1}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        val.append(members[:per_class])
        train.append(members[per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class Subset(Dataset):
    """The examples ``indices`` of ``dataset``, with their labels (``targets``) and, when the
    dataset can live on the device, its device tensors restricted to them."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.targets = labels(dataset)[torch.from_numpy(self.indices)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[int(self.indices[i])]

    def device_tensors(self):
        from .device import device_tensors

        tensors = device_tensors(self.dataset)
        if tensors is None:
            return None
        idx = torch.from_numpy(self.indices)
        return dataclasses.replace(tensors, images=tensors.images[idx], targets=tensors.targets[idx])


def training_split(name: str, options: dict, per_class: int = 0, seed: int = 0):
    """The training split of ``name`` minus its validation split (the whole training split when
    ``per_class`` is 0)."""
    train = build(name, "train", **options)
    if per_class < 1:
        return train
    return Subset(train, holdout_indices(labels(train), per_class, seed)[0])


def splits(name: str, options: dict, per_class: int = 0, seed: int = 0, eval_on: str = "test"):
    """``(train, evaluation)`` datasets of ``name`` with ``options`` (see the module docstring)."""
    if eval_on not in EVAL_SPLITS:
        raise ValueError(unknown_choice("evaluation split", eval_on, list(EVAL_SPLITS)))
    if eval_on == "val" and per_class < 1:
        raise ValueError("eval_on=val needs a validation split: set val_per_class to a positive number")
    train = training_split(name, options, per_class, seed)
    return train, (validation_split(name, options, per_class, seed) if eval_on == "val"
                   else build(name, "test", **options))


def validation_split(name: str, options: dict, per_class: int, seed: int) -> Subset:
    """The validation split of ``name``'s training split, read without augmentation."""
    if per_class < 1:
        raise ValueError("a validation split needs val_per_class >= 1")
    plain = build(name, "train", **{**options, "augment": False})
    return Subset(plain, holdout_indices(labels(plain), per_class, seed)[1])
