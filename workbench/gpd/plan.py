"""The widening plan: which dims of which student tensors are expanded, how, and which T_d
modules need hooks.

Conventions (``CONVENTIONS``), both exact in function (T_d == student at noise 0):
- ``"reference"`` (the official code): every T_d feature is the student feature divided by the
  copy count ``cnt`` of its channel (``r`` for an integer ratio). Channel-mixing layers (convs
  with groups 1 or G, linears) divide the OUTPUT dims of their tensors by ``cnt`` and copy the
  input dims; per-channel layers (BatchNorm, LayerNorm, depthwise convs, non-homogeneous
  activation modules such as GELU) keep the student's values and run on full-scale copies (a
  pre-hook multiplies their input by ``cnt``, a hook divides their output; a BatchNorm whose
  channels share one count computes the same map on the divided input instead,
  ``layers.count_scaled``); attention's q and k
  are multiplied back by ``cnt`` after ``qkv`` (so q.k is the student's); ViT tokens are
  divided. CBR multiplies the sliced output dims by ``cnt``: one student SGD step then moves
  every widened conv/linear ``cnt^2`` times as far as a standalone student's, BN and the
  classifier once (the reference's factors).
- ``"full_scale"`` (ours): every T_d feature is an exact copy of the student feature; the
  INPUT dims of channel-mixing layers are divided; no hooks. One student SGD step moves every
  layer that reads replicated channels ``cnt^2`` times as far (inner convs and the classifier),
  the first conv and BN once.

Supported layers (exact type match; anything else that owns parameters raises
``UnsupportedLayerError`` naming its path and type):
- ``nn.Conv2d`` with ``groups`` 1, depthwise ``groups == in_channels`` (groups become the new
  width) or ``1 < groups < in_channels`` (grouped, ShuffleNet; integer ratio: a layout hook
  reorders channels group by group around the conv); ``MultiBranchConv2d`` (groups 1 or
  depthwise; every branch tensor widened by its declared dims);
- ``nn.Linear`` (a child named ``qkv`` is widened segment by segment: [q | k | v]);
- ``nn.BatchNorm1d/2d/3d``, ``nn.LayerNorm`` over the last dim (replica-aware statistics when
  the copy counts are uneven);
- direct parameters named in ``TOKEN_PARAMS`` (ViT ``cls_token``, ``pos_embed``): last dim;
- the parameter-free channel-layout modules of the ShuffleNets (``ShuffleBlock``,
  ``SplitBlock``, ``Concat``; integer ratio): layout hooks keep every activation in the
  canonical layout (wide channel j copies student channel j mod C).

The image input dim and the class output dim are not expanded. A layer *reads the model input*
when the input reaches the model input through the autograd graph without crossing a
channel-mixing layer (conv with groups != in_channels, linear); a layer *produces the model
output* when the output is reached back from the logits the same way. Both come from one
traced forward on ``example_input`` (per-channel layers -- BN, LN, depthwise conv -- are
crossed, so e.g. a BN on the logits keeps the class width too).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.models.shufflenet import Concat, ShuffleBlock, SplitBlock

from .branches import DWS_EXPANSION, MultiBranchConv2d
from .channels import ChannelMap, DimRule, wide_width

CONVENTIONS = ("reference", "full_scale")
#: direct (non-layer) parameters widened along their last dim, like a feature
TOKEN_PARAMS = ("cls_token", "pos_embed", "dist_token")
#: Linear children whose output is ``s`` equal segments widened separately
SEGMENTED_LINEARS = {"qkv": 3}
#: segments of ``qkv`` whose dot product must see full-scale values (q and k)
QK_SEGMENTS = (0, 1)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: parameter-free modules whose result depends on the channel grouping: never exact here
WIDTH_SENSITIVE = (nn.GroupNorm, nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle,
                   nn.LocalResponseNorm, nn.CrossMapLRN2d)
#: element-wise activations that are not positively homogeneous (f(x / c) != f(x) / c): in the
#: reference convention they run on full-scale copies (hooks). ReLU, LeakyReLU, pooling and
#: dropout commute with the division and need nothing.
NON_HOMOGENEOUS = (nn.GELU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                   nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish)
LAYOUT_MODULES = (ShuffleBlock, SplitBlock, Concat)


class UnsupportedLayerError(ValueError):
    """``expand`` cannot widen this module exactly (the message names its path and type)."""


def unsupported(path: str, module: nn.Module | None, why: str) -> UnsupportedLayerError:
    kind = type(module).__name__ if module is not None else "?"
    return UnsupportedLayerError(f"module {path or '<root>'!r} ({kind}): {why}")


def _is_conv(m: nn.Module) -> bool:
    return type(m) in (nn.Conv2d, MultiBranchConv2d)


def _is_layer(m: nn.Module) -> bool:
    return _is_conv(m) or type(m) in (nn.Linear, nn.LayerNorm) or type(m) in BATCHNORMS


def _is_depthwise(m: nn.Module) -> bool:
    return _is_conv(m) and m.groups > 1 and m.groups == m.in_channels


def _is_grouped(m: nn.Module) -> bool:
    return _is_conv(m) and 1 < m.groups < m.in_channels


def _mixes_channels(m: nn.Module) -> bool:
    """Linear / non-depthwise conv: its output width is unrelated to its input width."""
    return type(m) is nn.Linear or (_is_conv(m) and not _is_depthwise(m))


@dataclass
class LayerPlan:
    """One widened layer: maps of its input/output channel dims (None = not expanded)."""

    path: str
    in_map: ChannelMap | None
    out_map: ChannelMap | None
    out_dim: int  # channel dim of the layer's output tensor (1 for conv/BN, -1 for linear/LN)
    per_channel: bool = False  # BN/LN/depthwise: runs on full-scale copies in the reference convention


@dataclass
class WideningPlan:
    ratio: float
    convention: str = "reference"
    tensors: dict[str, tuple[DimRule, ...]] = field(default_factory=dict)  # params and buffers
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)  # attention path -> wide head count
    shapes: dict[str, tuple] = field(default_factory=dict)  # path -> (input shapes, output shapes)

    def cmap(self, width: int, segments: int = 1) -> ChannelMap:
        narrow = width // segments
        return ChannelMap(narrow, wide_width(narrow, self.ratio), segments)

    @property
    def divides_outputs(self) -> bool:
        return self.convention == "reference"

    @property
    def copies(self) -> int:
        """The integer copy count r (layout modules and grouped convs need one)."""
        return int(round(self.ratio))


# ----------------------------------------------------------------------------- tracing

def trace_io(model: nn.Module, x: torch.Tensor) -> tuple[set[str], set[str], dict[str, tuple]]:
    """Paths of the layers that read the model input, of those that produce its output, and
    every module's (input shapes, output shapes) -- one forward of ``model`` as is; call it on a
    throw-away copy in eval mode."""
    x = x.detach().clone().requires_grad_(True)
    layers = {path: m for path, m in model.named_modules() if _is_layer(m)}
    node_owner: dict = {}  # autograd node of a layer output -> layer path
    reads: set[str] = set()
    shapes: dict[str, tuple] = {}

    def walk_to_input(t: torch.Tensor) -> bool:
        return t is x or any(getattr(node, "variable", None) is x
                             for node in _walk_back(t.grad_fn, node_owner, layers))

    def pre(path):
        def hook(_m, args):
            if path in layers and args and isinstance(args[0], torch.Tensor) and walk_to_input(args[0]):
                reads.add(path)
        return hook

    def post(path):
        def hook(_m, args, out):
            shapes.setdefault(path, (_shapes(args), _shapes(out)))
            if path in layers and isinstance(out, torch.Tensor) and out.grad_fn is not None:
                node_owner.setdefault(out.grad_fn, path)
        return hook

    handles = []
    for path, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(pre(path)))
        handles.append(m.register_forward_hook(post(path)))
    try:
        out = run_example(model, x)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise UnsupportedLayerError(f"{type(model).__name__}.forward must return a logits tensor, got {type(out).__name__}")
    writes = {node_owner[node] for node in _walk_back(out.grad_fn, node_owner, layers) if node in node_owner}
    return reads, writes, shapes


def _walk_back(start, node_owner: dict, layers: dict):
    """Autograd nodes reached backwards from ``start`` (breadth first, each once) without crossing
    a channel-mixing layer: such a layer's output node is yielded, the nodes behind it are not."""
    seen, todo = set(), deque([start])
    while todo:
        node = todo.popleft()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        owner = node_owner.get(node)
        if owner is None or not _mixes_channels(layers[owner]):
            todo.extend(n for n, _ in node.next_functions)


def run_example(model: nn.Module, x: torch.Tensor):
    """``model(x)`` with autograd on; a failure is reported as a bad example input."""
    try:
        with torch.enable_grad():
            return model(x)
    except Exception as exc:  # noqa: BLE001 -- the model cannot run this input at all
        raise ValueError(f"the student failed on the example input {tuple(x.shape)}: {exc}; "
                         f"pass example_input= shaped like real inputs") from exc


def _shapes(obj) -> tuple:
    if isinstance(obj, torch.Tensor):
        return (tuple(obj.shape),)
    if isinstance(obj, (tuple, list)):
        return tuple(s for o in obj for s in _shapes(o))
    return ()


# ----------------------------------------------------------------------------- planning

def make_plan(model: nn.Module, ratio: float, reads: set[str], writes: set[str],
              convention: str = "reference", shapes: dict | None = None) -> WideningPlan:
    """The widening plan of ``model`` (raises ``UnsupportedLayerError`` for what it cannot do)."""
    plan = WideningPlan(ratio, convention, shapes=dict(shapes or {}))
    for path, m in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(m, WIDTH_SENSITIVE):
            raise unsupported(path, m, "its result depends on the channel grouping, so widening by replication is not exact")
        if isinstance(m, LAYOUT_MODULES):
            _need_integer_ratio(plan, path, m, "it rearranges channels")
        if _is_layer(m):
            _plan_layer(plan, path, prefix, m, path in reads, path in writes)
        elif not _inside_branch(path, model):
            for name, p in m.named_parameters(recurse=False):
                if name not in TOKEN_PARAMS:
                    raise unsupported(path, m, f"owns parameter {name!r} {tuple(p.shape)} that cannot be widened exactly "
                                      f"(supported: Conv2d, Linear, BatchNorm, LayerNorm, "
                                      f"direct parameters named {TOKEN_PARAMS})")
                plan.tensors[prefix + name] = (DimRule(p.ndim - 1, plan.cmap(p.shape[-1]), plan.divides_outputs),)
        _plan_attention(plan, path, m)
    return plan


def _inside_branch(path: str, model: nn.Module) -> bool:
    """Branch submodules of a MultiBranchConv2d are planned with their conv."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), MultiBranchConv2d):
            return True
    return False


def _need_integer_ratio(plan, path, m, why):
    if abs(plan.ratio - plan.copies) > 1e-9:
        raise unsupported(path, m, f"{why}; widening it needs an integer ratio (got {plan.ratio})")


def _rules(plan: WideningPlan, dims, maps: dict, mixing: bool) -> tuple[DimRule, ...]:
    """DimRules of one tensor from its declared dims: (dim, map key, side). In a channel-mixing
    stage the convention divides the output side (reference) or the input side (full scale)."""
    divided_side = "out" if plan.divides_outputs else "in"
    out = []
    for dim, key, side in dims:
        cmap = maps.get(key)
        if cmap is not None:
            out.append(DimRule(dim, cmap, mixing and side == divided_side))
    return tuple(sorted(out, key=lambda r: r.dim))


def _plan_layer(plan, path, prefix, m, reads_input, writes_output):
    def maybe(width, expand, segments=1):
        return plan.cmap(width, segments) if expand else None

    if _is_conv(m):
        _plan_conv(plan, path, prefix, m, reads_input, writes_output)
    elif type(m) is nn.Linear:
        segments = SEGMENTED_LINEARS.get(path.rpartition(".")[2], 1)
        if m.out_features % segments:
            segments = 1
        in_map = maybe(m.in_features, not reads_input)
        out_map = maybe(m.out_features, not writes_output, segments)
        maps = {"out": out_map, "in": in_map}
        plan.tensors[prefix + "weight"] = _rules(plan, ((0, "out", "out"), (1, "in", "in")), maps, True)
        plan.tensors[prefix + "bias"] = _rules(plan, ((0, "out", "out"),), maps, True)
        plan.layers[path] = LayerPlan(path, in_map, out_map, -1)
    elif type(m) is nn.LayerNorm:
        if len(m.normalized_shape) != 1:
            raise unsupported(path, m, f"LayerNorm over {tuple(m.normalized_shape)}: only the last dim is supported")
        cmap = maybe(m.normalized_shape[0], not (reads_input or writes_output))
        for name in ("weight", "bias"):
            plan.tensors[prefix + name] = (DimRule(0, cmap),) if cmap else ()
        plan.layers[path] = LayerPlan(path, cmap, cmap, -1, per_channel=True)
    else:  # batch norm
        cmap = maybe(m.num_features, not (reads_input or writes_output))
        for name in ("weight", "bias", "running_mean", "running_var"):
            plan.tensors[prefix + name] = (DimRule(0, cmap),) if cmap else ()
        plan.tensors[prefix + "num_batches_tracked"] = ()
        plan.layers[path] = LayerPlan(path, cmap, cmap, 1, per_channel=True)


def _plan_conv(plan, path, prefix, m, reads_input, writes_output):
    if m.groups == 1:
        in_map = plan.cmap(m.in_channels) if not reads_input else None
        out_map = plan.cmap(m.out_channels) if not writes_output else None
        maps = {"out": out_map, "in": in_map, "in_g": in_map}
        per_channel = False
    elif _is_depthwise(m):
        if reads_input or writes_output:
            raise unsupported(path, m, "a depthwise conv on the model input or output is not supported")
        in_map, out_map = plan.cmap(m.in_channels), plan.cmap(m.out_channels)
        mult = m.out_channels // m.in_channels
        if out_map.wide != mult * in_map.wide:
            raise unsupported(path, m, f"depth multiplier {mult}: {m.out_channels} channels widen to {out_map.wide}, "
                              f"not {mult} x {in_map.wide}; use an integer ratio")
        maps = {"out": out_map, "in": in_map, "in_g": None}
        per_channel = True
    else:
        if reads_input or writes_output:
            raise unsupported(path, m, f"a grouped conv (groups={m.groups}) on the model input or output is not supported")
        _need_integer_ratio(plan, path, m, f"a grouped conv (groups={m.groups}) mixes channels group by group")
        g = m.groups
        in_map = ChannelMap(m.in_channels, plan.copies * m.in_channels)
        out_map = ChannelMap(m.out_channels, plan.copies * m.out_channels)
        # inside the conv the layout is group-major: segment s holds the copies of group s
        maps = {"out": ChannelMap(m.out_channels // g, plan.copies * m.out_channels // g, g),
                "in_g": ChannelMap(m.in_channels // g, plan.copies * m.in_channels // g)}
        per_channel = False
    if isinstance(m, MultiBranchConv2d):
        e = DWS_EXPANSION
        rows = ChannelMap(m.in_channels * e, in_map.wide * e) if in_map is not None else None
        maps.update(rows=rows, rows_g=rows if m.groups == 1 else None)
        for name, dims in m.tensor_dims().items():
            plan.tensors[prefix + name] = _rules(plan, dims, maps, mixing=not per_channel)
    else:
        plan.tensors[prefix + "weight"] = _rules(plan, ((0, "out", "out"), (1, "in_g", "in")), maps, not per_channel)
        plan.tensors[prefix + "bias"] = _rules(plan, ((0, "out", "out"),), maps, not per_channel)
    plan.layers[path] = LayerPlan(path, in_map, out_map, 1, per_channel=per_channel)


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


def bn_readers(model: nn.Module, x: torch.Tensor, paths: list[str]) -> dict[str, str]:
    """``conv path -> BatchNorm path`` for the modules in ``paths`` whose output is read by one
    BatchNorm and by nothing else (one traced forward of ``model``; use a throw-away copy in
    eval mode). A constant added to such a conv's output can be folded into that BatchNorm."""
    modules = dict(model.named_modules())
    conv_node: dict = {}  # autograd node of a conv output -> conv path
    bn_input: dict = {}  # autograd node of a BN output -> (BN path, node of its input)

    def conv_hook(path):
        def hook(_m, _args, out):
            conv_node[out.grad_fn] = path
        return hook

    def bn_hook(path):
        def hook(_m, args, out):
            bn_input[out.grad_fn] = (path, args[0].grad_fn)
        return hook

    handles = [modules[p].register_forward_hook(conv_hook(p)) for p in paths]
    handles += [m.register_forward_hook(bn_hook(p)) for p, m in modules.items() if type(m) in BATCHNORMS]
    try:
        out = run_example(model, x.detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    readers: dict = {}  # node -> nodes that take it as an input
    seen, todo = set(), deque([out.grad_fn])
    while todo:
        node = todo.popleft()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None:
                readers.setdefault(nxt, set()).add(node)
                todo.append(nxt)
    found = {}
    for node, path in conv_node.items():
        users = readers.get(node, set())
        if len(users) == 1:
            (user,) = users
            if user in bn_input and bn_input[user][1] is node:
                found[path] = bn_input[user][0]
    return found
