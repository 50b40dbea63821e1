"""Batch transforms: the one seeded place where a training batch may be changed after loading,
for every method alike. ``mixup`` (Zhang et al., ICLR 2018) and ``cutmix`` (Yun et al., ICCV
2019) mix each image with another of the same batch and return *soft* targets (N, K); losses
take them as they are (cross-entropy accepts class probabilities) or read
``methods.hard_labels``. Random draws come from torch's global RNG, which the trainer re-seeds
every epoch, so a resumed run draws the same mixes.

Reference detail: one mixing weight per batch, lam ~ Beta(alpha, alpha), partner = a random
permutation of the batch (timm's ``Mixup`` in batch mode); CutMix pastes a box of area
(1 - lam) and then sets lam to the exact kept area.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..registry import Registry

BATCH_TRANSFORMS = Registry("batch transform")


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return y if y.dim() == 2 else F.one_hot(y, num_classes).to(torch.float32)


def _beta(alpha: float, device) -> float:
    return float(torch.distributions.Beta(alpha, alpha).sample())


@BATCH_TRANSFORMS.register("none")
def no_mix(x, y, num_classes: int, alpha: float):
    return x, y


@BATCH_TRANSFORMS.register("mixup")
def mixup(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float):
    """x' = lam x + (1 - lam) x[perm], y' = lam y + (1 - lam) y[perm]."""
    lam = _beta(alpha, x.device)
    perm = torch.randperm(x.shape[0]).to(x.device)
    t = one_hot(y, num_classes)
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


def cut_box(h: int, w: int, lam: float) -> tuple[int, int, int, int]:
    """A box of area ~(1 - lam) h w at a uniformly drawn centre, clipped to the image:
    (top, bottom, left, right)."""
    ratio = math.sqrt(1.0 - lam)
    ch, cw = int(h * ratio), int(w * ratio)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return top, bottom, left, right


@BATCH_TRANSFORMS.register("cutmix")
def cutmix(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float):
    """Paste a box of x[perm] into x; targets weighted by the exact pasted area."""
    lam = _beta(alpha, x.device)
    perm = torch.randperm(x.shape[0]).to(x.device)
    h, w = x.shape[-2:]
    top, bottom, left, right = cut_box(h, w, lam)
    x = x.clone()
    x[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    t = one_hot(y, num_classes)
    return x, kept * t + (1 - kept) * t[perm]
