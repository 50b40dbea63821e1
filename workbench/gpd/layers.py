"""Layers the dynamic teacher needs beyond plain widening."""
from __future__ import annotations

import torch
from torch import nn

from .channels import ChannelMap


class ReplicaAwareLayerNorm(nn.LayerNorm):
    """LayerNorm over a widened last dim whose statistics weight wide channel ``j`` by
    ``1 / (cnt(g(j)) * C)``: on a full-scale replicated input the mean and variance equal the
    student's, so the output is the replicated student output for ANY ratio. Used only when the
    copy counts are uneven (for even counts it equals ``nn.LayerNorm`` and is not used)."""

    def __init__(self, ln: nn.LayerNorm, cmap: ChannelMap):
        super().__init__(
            cmap.wide_size, eps=ln.eps, elementwise_affine=ln.elementwise_affine,
            bias=ln.bias is not None, device=_device(ln), dtype=_dtype(ln),
        )
        weights = 1.0 / (cmap.wide_counts().double() * cmap.student_size)
        self.register_buffer("stat_weights", weights.to(_dtype(ln)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.stat_weights.to(x.dtype)
        mean = (x * w).sum(-1, keepdim=True)
        centred = x - mean
        var = (centred * centred * w).sum(-1, keepdim=True)
        y = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


def _device(m: nn.Module):
    t = next(m.parameters(), None)
    return t.device if t is not None else None


def _dtype(m: nn.Module):
    t = next(m.parameters(), None)
    return t.dtype if t is not None else torch.get_default_dtype()

