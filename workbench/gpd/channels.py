"""Channel maps: how one tensor dimension of the student is laid out in the dynamic teacher.

A student dimension of width ``C`` becomes ``C' = wide_width(C, r)`` in T_d. Wide channel ``j``
copies student channel ``g(j) = j mod C`` (the identity on the first ``C``), so ``g`` depends only
on ``(C, C')``: two tensors of equal width that are added (residuals) share the map for free.
A dimension made of ``s`` equal segments (ViT ``qkv``: [q | k | v]) is expanded segment by
segment. ``cnt(c) = #{j : g(j) = c}`` is the copy count of student channel ``c``.

Widening a tensor (IR): index every expanded dim with ``g``; on the dims a widening convention
*divides* (``DimRule.divide``: the output dims of channel-mixing layers in the reference
convention, the input dims in the full-scale one) divide by ``cnt(g(j))``. Slicing (CBR): keep
the student block (the first ``C`` of every segment) and multiply the divided dims by ``cnt``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def wide_width(width: int, ratio: float) -> int:
    """``round(ratio * width)`` (halves round up), never below ``width``."""
    return max(width, int(math.floor(ratio * width + 0.5)))


@dataclass(frozen=True)
class ChannelMap:
    """Map of one dimension: ``segments`` blocks of ``narrow`` student channels, each widened
    to ``wide`` channels."""

    narrow: int
    wide: int
    segments: int = 1

    def __post_init__(self):
        if self.narrow < 1 or self.wide < self.narrow or self.segments < 1:
            raise ValueError(f"invalid channel map {self}")

    @property
    def student_size(self) -> int:
        return self.narrow * self.segments

    @property
    def wide_size(self) -> int:
        return self.wide * self.segments

    @property
    def is_identity(self) -> bool:
        return self.wide == self.narrow

    @property
    def uniform(self) -> bool:
        """True when every student channel has the same copy count (``C`` divides ``C'``)."""
        return self.wide % self.narrow == 0

    def source_index(self) -> torch.Tensor:
        """``g`` over the whole wide dimension (student index of every wide channel)."""
        j = torch.arange(self.wide)
        return torch.cat([s * self.narrow + j % self.narrow for s in range(self.segments)])

    def student_index(self) -> torch.Tensor:
        """Wide positions of the student block (the first ``narrow`` of every segment)."""
        c = torch.arange(self.narrow)
        return torch.cat([s * self.wide + c for s in range(self.segments)])

    def _counts_narrow(self) -> torch.Tensor:
        return torch.bincount(torch.arange(self.wide) % self.narrow, minlength=self.narrow)

    def student_counts(self) -> torch.Tensor:
        """``cnt(c)`` for every student channel (length ``student_size``)."""
        return self._counts_narrow().repeat(self.segments)

    def wide_counts(self) -> torch.Tensor:
        """``cnt(g(j))`` for every wide channel (length ``wide_size``)."""
        return self._counts_narrow()[torch.arange(self.wide) % self.narrow].repeat(self.segments)

    def student_mask(self) -> torch.Tensor:
        """Bool mask over the wide dimension: True on the student block."""
        return (torch.arange(self.wide) < self.narrow).repeat(self.segments)


@dataclass(frozen=True)
class DimRule:
    """How one dim of a tensor is widened: ``divide`` dims are divided by the copy count."""

    dim: int
    cmap: ChannelMap
    divide: bool = False


def _along(vec: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return vec.reshape(shape)


def widen_tensor(t: torch.Tensor, rules: tuple[DimRule, ...]) -> torch.Tensor:
    """IR for one tensor: copy along every rule's dim, divide ``divide`` dims by the copy count."""
    out = t
    for r in rules:
        out = out.index_select(r.dim, r.cmap.source_index().to(t.device))
        if r.divide:
            out = out / _along(r.cmap.wide_counts().to(out), r.dim, out.ndim)
    return out


def student_block_mask(shape: torch.Size, rules: tuple[DimRule, ...]) -> torch.Tensor:
    """Bool tensor of ``shape``: True on the entries that belong to the student block."""
    mask = torch.ones(shape, dtype=torch.bool)
    for r in rules:
        mask = mask & _along(r.cmap.student_mask(), r.dim, len(shape))
    return mask


def slice_plain(t: torch.Tensor, rules: tuple[DimRule, ...]) -> torch.Tensor:
    """The student block of ``t`` (no count correction): used to compare and in tests."""
    out = t
    for r in rules:
        if r.cmap.segments == 1:
            out = out.narrow(r.dim, 0, r.cmap.narrow)
        else:
            out = out.index_select(r.dim, r.cmap.student_index().to(t.device))
    return out


def undo_scale(rules: tuple[DimRule, ...], ndim: int) -> torch.Tensor | None:
    """The factor CBR multiplies the sliced tensor by (product of ``cnt`` over divided dims),
    broadcastable to the sliced tensor; ``None`` when it is 1 everywhere."""
    scale = None
    for r in rules:
        if r.divide and not r.cmap.is_identity:
            s = _along(r.cmap.student_counts().float(), r.dim, ndim)
            scale = s if scale is None else scale * s
    return scale
