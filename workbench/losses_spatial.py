"""Pure spatial functions for dense (per-position) distillation, CSKD first (Zhao et al., ICCV
2023, "Cumulative Spatial Knowledge Distillation for Vision Transformers"). No state.

- ``tokens_to_grid(tokens)``: ViT patch tokens / per-patch logits (N, P, C) -> a map (N, C, h, w);
- ``pool_to_grid(x, grid)`` and ``align_grids(student, teacher)``: average-pool dense maps onto a
  common grid (CIFAR 32 px with patch 4 gives an 8x8 grid, the size of resnet32x4's last map,
  so nothing is pooled there);
- ``dense_weight(epoch, epochs, schedule)`` and ``fuse_targets(dense, global_logits, weight)``:
  CSKD's cumulative knowledge fusion, target = d_e * dense + (1 - d_e) * global;
- ``dense_hard_loss(student, target)`` / ``dense_soft_loss(student, target, T)``: CSKD's
  per-position losses (the public code's hard and soft variants and normalisations).

Conventions: maps are channels-first (N, C, H, W) like the teacher's ``dense_logits``; logits
of a position are along dim 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .losses import kl_along_classes

#: how d_e falls from 1 (epoch 0: the teacher's dense map) to 0 (last epoch: its global logits)
FUSION_SCHEDULES = ("linear", "squared", "cosine")


def dense_weight(epoch: float, epochs: int, schedule: str = "linear") -> float:
    """CSKD's weight d_e of the dense target at ``epoch`` (0 <= epoch <= epochs; fractions allowed
    for a per-step schedule), with x = epoch / epochs:

    - ``linear``: 1 - x (the paper's default);
    - ``squared``: (1 - x)^2;
    - ``cosine``: cos(pi/2 * x).

    All are 1 at x = 0, 0 at x = 1 and non-increasing in between; the formulas follow the
    public CSKD code's ``linear``, ``x2`` and ``cos`` decay functions (our names)."""
    if schedule not in FUSION_SCHEDULES:
        raise ValueError(f"unknown fusion schedule {schedule!r}; valid choices: {', '.join(FUSION_SCHEDULES)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not 0 <= epoch <= epochs:
        raise ValueError(f"epoch must lie in [0, epochs={epochs}], got {epoch!r}")
    x = epoch / epochs
    if schedule == "linear":
        return 1.0 - x
    if schedule == "squared":
        return (1.0 - x) ** 2
    return math.cos(math.pi / 2 * x)


def fuse_targets(dense: torch.Tensor, global_logits: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * dense + (1 - weight) * global_logits`` at every position: (N, K, H, W) from a
    dense map (N, K, H, W) and global logits (N, K) (broadcast over the grid)."""
    if dense.ndim != 4 or global_logits.shape != dense.shape[:2]:
        raise ValueError(
            f"fuse_targets needs dense (N, K, H, W) and global_logits (N, K) of the same N, K; got "
            f"{tuple(dense.shape)} and {tuple(global_logits.shape)}"
        )
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must lie in [0, 1], got {weight!r}")
    return weight * dense + (1.0 - weight) * global_logits[:, :, None, None]


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(N, P, C) tokens in row-major order on a square grid -> (N, C, h, w) with h = w = sqrt(P)."""
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be (N, P, C), got shape {tuple(tokens.shape)}")
    n, p, c = tokens.shape
    side = math.isqrt(p)
    if side * side != p:
        raise ValueError(f"{p} tokens do not form a square grid (patch tokens only: drop cls/dist tokens first)")
    return tokens.transpose(1, 2).reshape(n, c, side, side)


def pool_to_grid(x: torch.Tensor, grid) -> torch.Tensor:
    """Average-pool a (N, C, h, w) map onto ``grid`` = (H, W) (an int means square) with H <= h and
    W <= w; unchanged (the same tensor) when the sizes already agree. When H divides h and W
    divides w every cell is the mean of an (h/H) x (w/W) block, so the map's spatial mean is kept;
    otherwise adaptive pooling's windows have unequal sizes and may overlap."""
    if x.ndim != 4:
        raise ValueError(f"pool_to_grid needs a (N, C, h, w) map, got shape {tuple(x.shape)}")
    target = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if len(target) != 2 or any(g < 1 for g in target):
        raise ValueError(f"grid must be a positive int or (H, W), got {grid!r}")
    h, w = x.shape[-2:]
    if target == (h, w):
        return x
    if target[0] > h or target[1] > w:
        raise ValueError(f"cannot pool a {h}x{w} map onto a finer {target[0]}x{target[1]} grid (no upsampling)")
    return F.adaptive_avg_pool2d(x, target)


def align_grids(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both (N, C, h, w) maps pooled onto their common coarser grid (min height, min width): the
    student is pooled to the teacher's grid when it is finer (the CSKD code pools DeiT's 14x14 to
    the teacher's 7x7), the teacher to the student's when the teacher's is finer (our addition)."""
    grid = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    return pool_to_grid(student, grid), pool_to_grid(teacher, grid)


def _check_maps(student: torch.Tensor, target: torch.Tensor) -> None:
    if student.ndim != 4 or student.shape != target.shape:
        raise ValueError(f"dense losses need two (N, K, H, W) maps of one shape, got {tuple(student.shape)} "
                         f"and {tuple(target.shape)} (align the grids first: align_grids)")


def dense_hard_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CSKD's hard per-position loss: at every position, cross-entropy of the student's logits
    against the target's most probable class; the mean over batch and positions."""
    _check_maps(student, target)
    return F.cross_entropy(student, target.argmax(dim=1))


def dense_soft_loss(student: torch.Tensor, target: torch.Tensor, temperature) -> torch.Tensor:
    """CSKD's soft per-position loss with its public code's normalisation: KL(p_target^T ||
    p_student^T) at every position, summed over the classes *and the positions*, averaged over
    the batch, times T^2 (so a map of P positions weighs P times a single KL)."""
    _check_maps(student, target)
    t = temperature
    kl = kl_along_classes(F.log_softmax(target / t, dim=1), F.log_softmax(student / t, dim=1))
    return kl.sum(dim=(1, 2)).mean() * t**2


# ---------------------------------------------------------------------------------------------
# Transformations of a feature map (N, C, H, W) for the composed distiller (``methods/composed.py``).
#: grids of the multi-scale pooling (levels finer than the map are skipped)
POOL_GRIDS = (1, 2, 4)


def _check_map(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} needs a (N, C, H, W) feature map, got shape {tuple(x.shape)}")


def spatial_attention(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer's map (Zagoruyko & Komodakis 2017): Q = mean over channels of |A|^p,
    flattened to (N, H*W) and L2-normalised per example (``F.normalize``'s eps). Width-free."""
    _check_map(x, "spatial attention")
    return F.normalize(x.abs().pow(p).mean(1).flatten(1), dim=1)


def channel_attention(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The channel counterpart: mean over positions of |A|^p, (N, C), L2-normalised per example."""
    _check_map(x, "channel attention")
    return F.normalize(x.abs().pow(p).mean((2, 3)), dim=1)


def position_mask(shape, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A random (N, 1, H, W) 0/1 mask over the positions of maps of ``shape`` (N, C, H, W): each
    position is dropped (0) with probability ``ratio``, independently per example, drawn from
    ``generator`` (float32 on the generator's device)."""
    n, _, h, w = shape
    return (torch.rand((n, 1, h, w), generator=generator, device=generator.device) >= ratio).float()


def multiscale_pool(x: torch.Tensor, grids=POOL_GRIDS) -> torch.Tensor:
    """Average-pool the map onto each g x g grid of ``grids`` no finer than the map and
    concatenate them per example: (N, C * sum g^2) (a spatial pyramid: global, quadrant, ...)."""
    _check_map(x, "multi-scale pooling")
    h, w = x.shape[-2:]
    levels = [g for g in grids if g <= min(h, w)]
    return torch.cat([F.adaptive_avg_pool2d(x, g).flatten(1) for g in levels], dim=1)
