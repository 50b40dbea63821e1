"""Batch transforms: the one seeded place where a training batch may be changed after loading,
for every method alike. ``mixup`` (Zhang et al., ICLR 2018) and ``cutmix`` (Yun et al., ICCV
2019) mix each image with another of the same batch and return *soft* targets (N, K); losses
take them as they are (cross-entropy accepts class probabilities) or read
``methods.hard_labels``. Random draws come from torch's global RNG, which the trainer re-seeds
every epoch, so a resumed run draws the same mixes.

Reference detail: one mixing weight per batch, lam ~ Beta(alpha, alpha), partner = a random
permutation of the batch (timm's ``Mixup`` in batch mode); CutMix pastes a box of area
(1 - lam) and then sets lam to the exact kept area.

*Stateful* transforms (:class:`StatefulTransform`: ``recursivemix``) keep something from one step to
the next. A registered class is instantiated once per trainer (:func:`make_transform`) unless the
method brings its own instance (``MethodNeeds.batch_transform``: RecursiveMix shares its history
with its consistency term); the trainer calls ``start_epoch`` at every epoch start, ``observe``
after every training forward, and saves ``state()`` per process in a mid-epoch checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


def make_transform(name: str):
    """The transform registered as ``name``: the function itself, or a fresh instance of a
    registered :class:`StatefulTransform` class (with its defaults)."""
    entry = BATCH_TRANSFORMS.get(name)
    return entry() if isinstance(entry, type) else entry


class StatefulTransform:
    """A batch transform that keeps state across the steps of an epoch (see the module docstring)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float):
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called at every epoch start, before a mid-epoch position is restored."""

    def observe(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        """After the training forward on the transformed batch ``(x, y)``: the model's ``logits``."""

    def state(self) -> dict:
        """What a mid-epoch checkpoint keeps (CPU tensors)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state` (at the resumed step)."""


@dataclass(frozen=True)
class RecursiveBatch:
    """What RecursiveMix did to the batch it returned last: the pasted box ``(x1, y1, x2, y2)`` in
    input pixels, lambda (the current batch's share of the image area, 1 = nothing pasted), the
    previous step's full-image logits of the images pasted (one row per current image, float32,
    detached), and the input size ``(h, w)``."""

    box: tuple[int, int, int, int]
    lam: float
    prev_logits: torch.Tensor
    size: tuple[int, int]


@BATCH_TRANSFORMS.register("recursivemix")
class RecursiveMix(StatefulTransform):
    """RecursiveMix (Yang et al., 2022; public code implus/RecursiveMix-pytorch after its H/W fix):
    paste the *whole previous mixed batch*, resized, into one box of the current batch.

    Per batch: side ratio r = sqrt(U(0, alpha)) (the nominal area is uniform on [0, alpha]), a box of
    int(H r) x int(W r) pixels at a uniform centre (row, column), clipped to the image; the previous
    step's mixed inputs are resized into it (``mode``: nearest by default, bilinear with
    align_corners); lambda = 1 - clipped area / image area and y = lambda y + (1 - lambda) y_prev
    (y_prev itself mixed, so older labels decay geometrically). The first batch of every epoch (no
    history: it is cleared at each epoch start) is returned as it is, with one-hot targets and
    lambda = 1. ``current`` tells the consistency term (``methods/recursivemix.py``) the box,
    lambda and the previous full-image logits.

    Where we differ from the reference: the three draws (ratio, centre column, centre row) come from
    torch's global RNG (the reference: Python's ``random`` and NumPy's), which the trainer seeds per
    epoch and checkpoints mid-epoch, and the history is part of the mid-epoch checkpoint, so a
    resumed run continues bit-identically; a previous batch with fewer images than the current one
    (not possible within an epoch of one loader) is reused cyclically (the reference slices
    ``old[:bs]``, which requires it to be larger); a box that is empty (zero rows or columns) pastes
    nothing and gives lambda = 1 (the reference skips only a 0 x 0 box). Label smoothing of the
    reference's targets is not applied here (the run's loss decides).
    """

    MODES = ("nearest", "bilinear")

    def __init__(self, alpha: float = 0.5, mode: str = "nearest"):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"recursivemix_alpha: {alpha} is outside (0, 1] (the nominal box area is U(0, alpha))")
        if mode not in self.MODES:
            raise ValueError(f"recursivemix_resize: {mode!r} is not one of {', '.join(self.MODES)}")
        self.alpha, self.mode = float(alpha), mode
        self.prev: dict | None = None  # {"x", "y", "logits"} of the previous step of this epoch
        self.current: RecursiveBatch | None = None

    def draw_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)``: the clipped box (three draws from the global RNG)."""
        ratio = math.sqrt(float(torch.rand(())) * self.alpha)
        bh, bw = int(h * ratio), int(w * ratio)
        cx, cy = int(torch.randint(w, ())), int(torch.randint(h, ()))
        x1, x2 = min(max(cx - bw // 2, 0), w), min(max(cx + bw // 2, 0), w)
        y1, y2 = min(max(cy - bh // 2, 0), h), min(max(cy + bh // 2, 0), h)
        return x1, y1, x2, y2

    def __call__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = None):
        t = one_hot(y, num_classes)
        h, w = x.shape[-2:]
        if self.prev is None:
            self.current = None
            return x, t
        idx = torch.arange(x.shape[0]) % self.prev["x"].shape[0]
        prev = {k: v.to(x.device)[idx.to(x.device)] for k, v in self.prev.items()}
        x1, y1, x2, y2 = self.draw_box(h, w)
        area = (x2 - x1) * (y2 - y1)
        lam = 1.0 - area / (h * w)
        if area > 0:
            x = x.clone()
            align = None if self.mode == "nearest" else True
            x[..., y1:y2, x1:x2] = F.interpolate(prev["x"].to(x.dtype), size=(y2 - y1, x2 - x1), mode=self.mode,
                                                 align_corners=align)
        self.current = RecursiveBatch((x1, y1, x2, y2), lam, prev["logits"], (h, w))
        return x, lam * t + (1.0 - lam) * prev["y"]

    def start_epoch(self, epoch: int) -> None:
        self.prev, self.current = None, None

    def observe(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        self.prev = {"x": x.detach(), "y": y.detach().float(), "logits": logits.detach().float()}

    def state(self) -> dict:
        if self.prev is None:
            return {"prev": None}
        return {"prev": {k: v.detach().cpu().clone() for k, v in self.prev.items()}}

    def load_state(self, state: dict) -> None:
        self.prev = state.get("prev")
        self.current = None
