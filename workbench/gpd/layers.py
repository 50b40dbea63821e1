"""What the dynamic teacher needs beyond copied tensors: a replica-aware LayerNorm and forward
hooks that keep a widened module exact without changing its parameters or state-dict keys.

Hooks are plain module-level functions reading non-persistent buffers of the module they sit
on, so they survive ``deepcopy`` (EMA copies) and ``.to()``:
- *scale* hooks (reference convention): a per-channel module runs on full-scale copies --
  input multiplied by ``cnt`` before, output divided by ``cnt`` after; a BatchNorm whose channels
  all have one count is replaced by its *count-scaled* twin instead (the same map computed on
  the divided input, without the two passes over the activation: -4 % GPD step, -20 % T_d
  eval on CPU; bit-identical for ratio 2);
- *q/k* hook (reference convention): the q and k segments of a ``qkv`` output multiplied by
  ``cnt``, so attention logits are the student's;
- *layout* hooks (grouped convs and the ShuffleNets' channel shuffle/split/concat; integer
  ratio r): every activation between modules keeps the canonical layout (wide channel j copies
  student channel j mod C, i.e. r consecutive copies of the whole student tensor); a module
  that needs another order gets its input permuted before and its output permuted back after.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .channels import ChannelMap

SCALE_IN, SCALE_OUT = "_gpd_scale_in", "_gpd_scale_out"
QK_SCALE = "_gpd_qk_scale"
IN_INDEX, OUT_INDEX = "_gpd_in_index", "_gpd_out_index"


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


def _along(vec: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return vec.reshape(shape)


# ------------------------------------------------------------------ count-scaled BatchNorm
class _CountScaled:
    """A BatchNorm of T_d in the reference convention whose input channels all have the same
    copy count ``c`` (integer ratio): the module equals "input x c, BatchNorm, output / c" (the
    scale hooks below) without the two passes over the activation. With ``x`` the divided
    input, BN(x c) / c = (x - mean x) / sqrt(var x + eps / c^2) * (gamma / c) + beta / c, and its
    running statistics are those of ``x c`` (``c`` x the mean, ``c^2`` x the variance of ``x``):
    the module keeps them at full scale, as the hooked BatchNorm does. For a power-of-two ``c``
    (ratio 2 or 4) every scaled quantity is exact in floating point, so outputs, gradients and
    statistics are bit-identical to the hooked BatchNorm's; otherwise they agree to rounding."""

    copy_count: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        c = self.copy_count
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        tracked = self.running_mean is not None and (not self.training or self.track_running_stats)
        mean = self.running_mean / c if tracked else None
        var = self.running_var / (c * c) if tracked else None
        weight = self.weight / c if self.weight is not None else x.new_full((x.shape[1],), 1 / c)
        bias = self.bias / c if self.bias is not None else None
        y = F.batch_norm(x, mean, var, weight, bias, batch_stats, momentum, self.eps / (c * c))
        if tracked and self.training:  # F.batch_norm updated the divided copies: back to full scale
            with torch.no_grad():
                self.running_mean.copy_(mean * c)
                self.running_var.copy_(var * (c * c))
        return y


class CountScaledBatchNorm1d(_CountScaled, nn.BatchNorm1d):
    pass


class CountScaledBatchNorm2d(_CountScaled, nn.BatchNorm2d):
    pass


class CountScaledBatchNorm3d(_CountScaled, nn.BatchNorm3d):
    pass


COUNT_SCALED = {nn.BatchNorm1d: CountScaledBatchNorm1d, nn.BatchNorm2d: CountScaledBatchNorm2d,
                nn.BatchNorm3d: CountScaledBatchNorm3d}


def count_scaled(bn: nn.Module, count: int) -> nn.Module:
    """``bn`` (an exact ``nn.BatchNorm1d/2d/3d``) as its count-scaled twin: same values, same
    state-dict keys, same train/eval mode."""
    twin = COUNT_SCALED[type(bn)](bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                  device=_device(bn), dtype=_dtype(bn))
    twin.load_state_dict(bn.state_dict())
    for name, p in bn.named_parameters():
        getattr(twin, name).requires_grad_(p.requires_grad)
    twin.copy_count = float(count)
    return twin.train(bn.training)


# ----------------------------------------------------------------------------- scale hooks
def _scale_input(m, args):
    return (args[0] * getattr(m, SCALE_IN),) + tuple(args[1:])


def _scale_output(m, args, out):
    return out / getattr(m, SCALE_OUT)


def attach_scale(m: nn.Module, in_map: ChannelMap, out_map: ChannelMap, dim: int, ndim: int, dtype) -> None:
    """``m`` runs on full-scale copies: input x cnt before, output / cnt after (along ``dim``
    of an ``ndim``-d activation)."""
    m.register_buffer(SCALE_IN, _along(in_map.wide_counts().to(dtype), dim, ndim), persistent=False)
    m.register_buffer(SCALE_OUT, _along(out_map.wide_counts().to(dtype), dim, ndim), persistent=False)
    m.register_forward_pre_hook(_scale_input)
    m.register_forward_hook(_scale_output)


def _scale_qk(m, args, out):
    return out * getattr(m, QK_SCALE)


def attach_qk_scale(m: nn.Linear, cmap: ChannelMap, segments: tuple[int, ...], dtype) -> None:
    """Multiply the q and k segments of a widened ``qkv`` output by ``cnt``."""
    seg = torch.ones(cmap.segments, cmap.wide)
    counts = cmap.wide_counts().reshape(cmap.segments, cmap.wide).float()
    for s in segments:
        seg[s] = counts[s]
    m.register_buffer(QK_SCALE, seg.reshape(-1).to(dtype), persistent=False)
    m.register_forward_hook(_scale_qk)


# ----------------------------------------------------------------------------- layout hooks
def _permute_input(m, args):
    return (args[0].index_select(1, getattr(m, IN_INDEX)),) + tuple(args[1:])


def _permute_output(m, args, out):
    return out.index_select(1, getattr(m, OUT_INDEX))


def attach_permutation(m: nn.Module, in_index: torch.Tensor | None = None,
                       out_index: torch.Tensor | None = None) -> None:
    """Reorder the channels (dim 1) of ``m``'s first input and/or of its output."""
    if in_index is not None:
        m.register_buffer(IN_INDEX, in_index, persistent=False)
        m.register_forward_pre_hook(_permute_input)
    if out_index is not None:
        m.register_buffer(OUT_INDEX, out_index, persistent=False)
        m.register_forward_hook(_permute_output)


def group_major_index(width: int, groups: int, copies: int) -> torch.Tensor:
    """Canonical -> group-major: position (g, b, i) of the result (group g, copy b, channel i of
    the group) takes canonical channel b * width + g * n + i (n = width // groups)."""
    n = width // groups
    g, b, i = torch.meshgrid(torch.arange(groups), torch.arange(copies), torch.arange(n), indexing="ij")
    return (b * width + g * n + i).reshape(-1)


def inverse(index: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(index)
    out[index] = torch.arange(len(index))
    return out


def split_major_index(width: int, first: int, copies: int) -> torch.Tensor:
    """Canonical -> [all copies of channels < first | all copies of the rest]."""
    b = torch.arange(copies)[:, None] * width
    return torch.cat([(b + torch.arange(first)).reshape(-1), (b + torch.arange(first, width)).reshape(-1)])


def concat_index(widths: list[int], copies: int) -> torch.Tensor:
    """[canonical part 1 | canonical part 2 | ...] -> canonical layout of the concatenation."""
    total, starts, s = sum(widths), [], 0
    for w in widths:
        starts.append(s)
        s += copies * w
    out = torch.empty(copies * total, dtype=torch.long)
    for b in range(copies):
        offset = b * total
        for w, start in zip(widths, starts):
            out[offset: offset + w] = start + b * w + torch.arange(w)
            offset += w
    return out
