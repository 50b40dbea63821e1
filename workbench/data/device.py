"""Device-resident data: the whole (small, CIFAR-sized) dataset lives on the accelerator as one
tensor, batches are gathered by index and augmented there in a few batched tensor ops (random
translation by padding + cropping, horizontal flip), then normalised. No per-image Python, no
DataLoader workers, no host-to-device copies per step: the fast path for CIFAR on a GPU.

Data order is the trainer's sampler (:class:`workbench.engine.distributed.GlobalBatchSampler`),
so with ``augment=false`` a device-resident run sees exactly the batches of the DataLoader path.
With augmentation, crops/flips are drawn from a per-epoch seeded generator on the device: the
same distribution as the torchvision pipeline (RandomCrop(32, padding=4) with zero fill,
RandomHorizontalFlip), not the same random draws.

Supported datasets expose what is needed (see :func:`device_tensors`): ``cifar10``/``cifar100``
(uint8 images, normalised on the device), ``fashion_mnist`` (the same, from its own
``device_tensors()`` method: any dataset may offer one), ``digits`` (already-normalised float
images, translation only, as its CPU augmentation) and ``synthetic`` (plain tensors, no
augmentation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from .augment import augment_batch  # noqa: F401  (re-exported)

# datasets :func:`device_tensors` supports
DEVICE_DATASETS = ("cifar10", "cifar100", "digits", "fashion_mnist", "synthetic")
UINT8_MAX = 255.0


@dataclass
class DeviceTensors:
    images: torch.Tensor            # N,C,H,W (uint8 raw pixels, or float already normalised)
    targets: torch.Tensor           # N (long)
    augment: bool
    pad: int                        # translation range in pixels (zero fill)
    flip: bool
    mean: Optional[Sequence[float]] = None  # per-channel, applied after /255 (uint8 images only)
    std: Optional[Sequence[float]] = None


def device_tensors(dataset) -> Optional[DeviceTensors]:
    """The dataset as tensors (on the CPU), or None when it cannot live on the device."""
    from .digits import DigitsDataset

    if callable(getattr(dataset, "device_tensors", None)):
        return dataset.device_tensors()
    if isinstance(dataset, DigitsDataset):
        return DeviceTensors(dataset.images, dataset.targets.long(), dataset.augment, dataset.shift, flip=False)
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:  # synthetic
        x, y = dataset.tensors
        return DeviceTensors(x, y.long(), augment=False, pad=0, flip=False)
    stats = getattr(dataset, "workbench_stats", None)
    raw = getattr(dataset, "data", None)
    if stats is not None and isinstance(raw, np.ndarray) and raw.dtype == np.uint8 and raw.ndim == 4:
        from .cifar import CROP_PADDING

        images = torch.from_numpy(raw).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
        return DeviceTensors(images, torch.as_tensor(dataset.targets, dtype=torch.long),
                             bool(dataset.workbench_augment), CROP_PADDING, flip=True, mean=stats[0], std=stats[1])
    return None


class DeviceLoader:
    """Batches from device-resident tensors, in the order of ``sampler`` (an iterable of
    indices, this rank's share), ``batch_size`` per step. Yields ``(x, y)`` or, with
    ``with_index``, ``(x, y, index)``."""

    def __init__(self, tensors: DeviceTensors, sampler, batch_size: int, device: torch.device,
                 channels_last: bool = False, with_index: bool = False):
        self.sampler, self.batch_size, self.device = sampler, batch_size, device
        self.channels_last, self.with_index = channels_last, with_index
        self.images = tensors.images.to(device)
        self.targets = tensors.targets.to(device)
        self.augment, self.pad, self.flip = tensors.augment, tensors.pad, tensors.flip
        self.scale = None
        if tensors.mean is not None:
            mean = torch.tensor(tensors.mean, device=device).view(1, -1, 1, 1)
            std = torch.tensor(tensors.std, device=device).view(1, -1, 1, 1)
            self.scale = (mean, std)
        self.generator = torch.Generator(device=device)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def rng_state(self) -> torch.Tensor:
        """The augmentation generator's state (a mid-epoch checkpoint keeps it: batches skipped on
        resume draw nothing, so the rest of the epoch draws what it would have)."""
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def __iter__(self) -> Iterator:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long, device=self.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images.index_select(0, idx)
            if self.augment:
                x = augment_batch(x, self.pad, self.flip, self.generator)
            if self.scale is not None:
                x = (x.float() / UINT8_MAX - self.scale[0]) / self.scale[1]
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.targets.index_select(0, idx)
            yield (x, y, idx) if self.with_index else (x, y)


class Indexed(torch.utils.data.Dataset):
    """``(x, y, index)`` items: lets the DataLoader path look up per-example caches."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i
