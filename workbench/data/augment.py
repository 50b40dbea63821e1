"""The one augmentation pipeline of the small-image datasets (digits, fashion_mnist, CIFAR):
random translation (zero padding + a crop of the original size at a uniform offset, i.e.
torchvision's ``RandomCrop(size, padding=pad)``) and an optional horizontal flip with
probability 1/2 (``RandomHorizontalFlip``). The same function augments one item on the
DataLoader path (:class:`TranslateFlip`, global RNG, seeded by the trainer each epoch) and whole
batches on the device-resident path (:mod:`workbench.data.device`, its own seeded generator),
so both paths draw from one definition.
"""
from __future__ import annotations

import torch

FLIP_PROB = 0.5


def augment_batch(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation (zero padding ``pad`` on each side, then a crop of the original size at
    a uniform offset per image) and optional horizontal flip, for a whole batch at once."""
    n, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
        rows = (oy[:, None] + torch.arange(h, device=dev)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
        cols = (ox[:, None] + torch.arange(w, device=dev)).view(n, 1, 1, w).expand(n, c, h, w)
        x = padded.gather(2, rows).gather(3, cols)
    if flip:
        mask = torch.rand(n, generator=generator, device=dev) < FLIP_PROB
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


class TranslateFlip:
    """Per-item transform over a (C, H, W) tensor (any dtype): :func:`augment_batch` on a batch
    of one."""

    def __init__(self, pad: int, flip: bool):
        self.pad, self.flip = int(pad), bool(flip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return augment_batch(x[None], self.pad, self.flip, generator=None)[0]

    def __repr__(self) -> str:
        return f"TranslateFlip(pad={self.pad}, flip={self.flip})"
