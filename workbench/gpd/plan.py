"""The widening plan: which dims of which student tensors are expanded, and how.

Supported layers (exact type match; anything else that owns parameters raises
``UnsupportedLayerError`` naming its path and type):
- ``nn.Conv2d`` with ``groups`` 1 (weight rows copied, columns copied and divided) or
  depthwise ``groups == in_channels`` (rows copied, groups = the new width, no division);
- ``nn.Linear`` (a child named ``qkv`` is widened segment by segment: [q | k | v]);
- ``nn.BatchNorm1d/2d/3d`` (affine params and running stats copied), ``nn.LayerNorm`` over the
  last dim (copied; replica-aware statistics when the copy counts are uneven);
- direct parameters named in ``TOKEN_PARAMS`` (ViT ``cls_token``, ``pos_embed``): last dim copied.

The image input dim and the class output dim are not expanded. A layer *reads the model input*
when the input reaches the model input through the autograd graph without crossing a
channel-mixing layer (conv with groups 1, linear); a layer *produces the model output* when the
output is reached back from the logits the same way. Both come from one traced forward on
``example_input`` (per-channel layers -- BN, LN, depthwise conv -- are crossed, so e.g. a BN on
the logits keeps the class width too).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
from torch import nn

from .channels import ChannelMap, DimRule, wide_width

#: direct (non-layer) parameters widened along their last dim, like a feature
TOKEN_PARAMS = ("cls_token", "pos_embed", "dist_token")
#: Linear children whose output is ``s`` equal segments widened separately
SEGMENTED_LINEARS = {"qkv": 3}
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: parameter-free modules whose result depends on the channel grouping: never exact here
WIDTH_SENSITIVE = (nn.GroupNorm, nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle,
                   nn.LocalResponseNorm, nn.CrossMapLRN2d)


class UnsupportedLayerError(ValueError):
    """``expand`` cannot widen this module exactly (the message names its path and type)."""


def unsupported(path: str, module: nn.Module | None, why: str) -> UnsupportedLayerError:
    kind = type(module).__name__ if module is not None else "?"
    return UnsupportedLayerError(f"module {path or '<root>'!r} ({kind}): {why}")


def _is_layer(m: nn.Module) -> bool:
    return type(m) in (nn.Conv2d, nn.Linear, nn.LayerNorm) or type(m) in BATCHNORMS


def _is_depthwise(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels


def _mixes_channels(m: nn.Module) -> bool:
    """Linear / groups-1 conv: its output width is unrelated to its input width."""
    return type(m) is nn.Linear or (type(m) is nn.Conv2d and not _is_depthwise(m))


@dataclass
class LayerPlan:
    """One widened layer: maps of its input/output channel dims (None = not expanded)."""

    path: str
    in_map: ChannelMap | None
    out_map: ChannelMap | None
    out_dim: int  # channel dim of the layer's output tensor (1 for conv/BN, -1 for linear/LN)


@dataclass
class WideningPlan:
    ratio: float
    tensors: dict[str, tuple[DimRule, ...]] = field(default_factory=dict)  # params and buffers
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)  # attention path -> wide head count

    def cmap(self, width: int, segments: int = 1) -> ChannelMap:
        narrow = width // segments
        return ChannelMap(narrow, wide_width(narrow, self.ratio), segments)


# ----------------------------------------------------------------------------- tracing

def trace_io(model: nn.Module, x: torch.Tensor) -> tuple[set[str], set[str]]:
    """Paths of the layers that read the model input and of those that produce its output
    (one forward of ``model`` as is; call it on a throw-away copy in eval mode)."""
    x = x.detach().clone().requires_grad_(True)
    layers = {path: m for path, m in model.named_modules() if _is_layer(m)}
    node_owner: dict = {}  # autograd node of a layer output -> layer path
    reads: set[str] = set()

    def walk_to_input(t: torch.Tensor) -> bool:
        if t is x:
            return True
        seen, todo = set(), deque([t.grad_fn])
        while todo:
            node = todo.popleft()
            if node is None or node in seen:
                continue
            seen.add(node)
            owner = node_owner.get(node)
            if owner is not None and _mixes_channels(layers[owner]):
                continue
            if getattr(node, "variable", None) is x:
                return True
            todo.extend(n for n, _ in node.next_functions)
        return False

    def pre(path):
        def hook(_m, args):
            if args and isinstance(args[0], torch.Tensor) and walk_to_input(args[0]):
                reads.add(path)
        return hook

    def post(path):
        def hook(_m, _args, out):
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                node_owner.setdefault(out.grad_fn, path)
        return hook

    handles = []
    for path, m in layers.items():
        handles.append(m.register_forward_pre_hook(pre(path)))
        handles.append(m.register_forward_hook(post(path)))
    try:
        with torch.enable_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 -- the model cannot run this input at all
        raise ValueError(f"the student failed on the example input {tuple(x.shape)}: {exc}; "
                         f"pass example_input= shaped like real inputs") from exc
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise UnsupportedLayerError(f"{type(model).__name__}.forward must return a logits tensor, got {type(out).__name__}")
    writes: set[str] = set()
    seen, todo = set(), deque([out.grad_fn])
    while todo:
        node = todo.popleft()
        if node is None or node in seen:
            continue
        seen.add(node)
        owner = node_owner.get(node)
        if owner is not None:
            writes.add(owner)
            if _mixes_channels(layers[owner]):
                continue
        todo.extend(n for n, _ in node.next_functions)
    return reads, writes


# ----------------------------------------------------------------------------- planning

def make_plan(model: nn.Module, ratio: float, reads: set[str], writes: set[str]) -> WideningPlan:
    """The widening plan of ``model`` (raises ``UnsupportedLayerError`` for what it cannot do)."""
    plan = WideningPlan(ratio)
    for path, m in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(m, WIDTH_SENSITIVE):
            raise unsupported(path, m, "its result depends on the channel grouping, so widening by replication is not exact")
        if _is_layer(m):
            _plan_layer(plan, path, prefix, m, path in reads, path in writes)
        else:
            for name, p in m.named_parameters(recurse=False):
                if name not in TOKEN_PARAMS:
                    raise unsupported(path, m, f"owns parameter {name!r} {tuple(p.shape)} that cannot be widened exactly "
                                      f"(supported: Conv2d groups 1/depthwise, Linear, BatchNorm, LayerNorm, "
                                      f"direct parameters named {TOKEN_PARAMS})")
                plan.tensors[prefix + name] = (DimRule(p.ndim - 1, plan.cmap(p.shape[-1])),)
        _plan_attention(plan, path, m)
    return plan


def _plan_layer(plan, path, prefix, m, reads_input, writes_output):
    def maybe(width, expand, segments=1):
        return plan.cmap(width, segments) if expand else None

    if type(m) is nn.Conv2d:
        if m.groups == 1:
            in_map = maybe(m.in_channels, not reads_input)
            out_map = maybe(m.out_channels, not writes_output)
            w = [DimRule(1, in_map, reads=True)] if in_map else []
        elif _is_depthwise(m):
            if reads_input or writes_output:
                raise unsupported(path, m, "a depthwise conv on the model input or output is not supported")
            in_map, out_map = plan.cmap(m.in_channels), plan.cmap(m.out_channels)
            mult = m.out_channels // m.in_channels
            if out_map.wide != mult * in_map.wide:
                raise unsupported(path, m, f"depth multiplier {mult}: {m.out_channels} channels widen to {out_map.wide}, "
                                  f"not {mult} x {in_map.wide}; use an integer ratio")
            w = []
        else:
            raise unsupported(path, m, f"grouped conv with groups={m.groups} (only 1 or in_channels) cannot be widened by replication")
        if out_map:
            w.insert(0, DimRule(0, out_map))
        plan.tensors[prefix + "weight"] = tuple(w)
        plan.tensors[prefix + "bias"] = (DimRule(0, out_map),) if out_map else ()
        plan.layers[path] = LayerPlan(path, in_map, out_map, 1)
    elif type(m) is nn.Linear:
        segments = SEGMENTED_LINEARS.get(path.rpartition(".")[2], 1)
        if m.out_features % segments:
            segments = 1
        in_map = maybe(m.in_features, not reads_input)
        out_map = maybe(m.out_features, not writes_output, segments)
        w = ([DimRule(0, out_map)] if out_map else []) + ([DimRule(1, in_map, reads=True)] if in_map else [])
        plan.tensors[prefix + "weight"] = tuple(w)
        plan.tensors[prefix + "bias"] = (DimRule(0, out_map),) if out_map else ()
        plan.layers[path] = LayerPlan(path, in_map, out_map, -1)
    elif type(m) is nn.LayerNorm:
        if len(m.normalized_shape) != 1:
            raise unsupported(path, m, f"LayerNorm over {tuple(m.normalized_shape)}: only the last dim is supported")
        cmap = maybe(m.normalized_shape[0], not (reads_input or writes_output))
        for name in ("weight", "bias"):
            plan.tensors[prefix + name] = (DimRule(0, cmap),) if cmap else ()
        plan.layers[path] = LayerPlan(path, cmap, cmap, -1)
    else:  # batch norm
        cmap = maybe(m.num_features, not (reads_input or writes_output))
        for name in ("weight", "bias", "running_mean", "running_var"):
            plan.tensors[prefix + name] = (DimRule(0, cmap),) if cmap else ()
        plan.tensors[prefix + "num_batches_tracked"] = ()
        plan.layers[path] = LayerPlan(path, cmap, cmap, 1)


def _plan_attention(plan, path, m):
    """Attention widened by whole heads: head_dim fixed, so the wide width must be a whole
    number of heads."""
    head_dim = getattr(m, "head_dim", None)
    qkv = getattr(m, "qkv", None)
    if not isinstance(head_dim, int) or type(qkv) is not nn.Linear:
        return
    cmap = plan.cmap(qkv.in_features)
    if qkv.in_features % head_dim or cmap.wide % head_dim:
        raise unsupported(path, m, f"width {qkv.in_features} -> {cmap.wide} is not a whole number of heads of "
                          f"head_dim {head_dim}; choose a ratio r with round(r * {qkv.in_features}) divisible by {head_dim}")
    plan.heads[path] = cmap.wide // head_dim
