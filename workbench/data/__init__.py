"""Dataset registry: ``build(name, split, **options)`` -> a map-style Dataset of
``(image_tensor, int_label)``; ``info(name, **options)`` -> :class:`DatasetInfo`.

Datasets: ``digits`` (scikit-learn's bundled handwritten digits: real, offline, the embedded
default), ``cifar10``, ``cifar100`` (torchvision), ``imagefolder`` (ImageNet-style folders) and
``synthetic`` (tiny random tensors for tests). ``split`` is ``"train"`` or ``"test"``;
``augment=None`` means "the standard training augmentation on the train split only".
``splits(name, options, per_class, seed, eval_on)`` (:mod:`.holdout`) carves a seeded,
class-balanced validation split out of the training split and returns what a run trains and
evaluates on.
Missing data raises :class:`DatasetNotFoundError` saying where to put the files and naming
``digits`` as the offline option.
"""
from __future__ import annotations

from .base import DATASETS, DataIdentity, DatasetInfo, DatasetNotFoundError
from . import cifar, digits, fashion_mnist, imagefolder, synthetic  # noqa: F401  (register themselves)
from .catalog import available, build, check_available, identity, info, labels, option_names, resolved_root  # noqa: F401
from .holdout import EVAL_SPLITS, holdout_indices, splits, training_split, validation_split  # noqa: F401


__all__ = ["DATASETS", "DatasetInfo", "DatasetNotFoundError", "DataIdentity", "EVAL_SPLITS", "available", "build",
           "info", "check_available", "holdout_indices", "identity", "labels", "option_names", "resolved_root",
           "splits", "training_split", "validation_split"]
