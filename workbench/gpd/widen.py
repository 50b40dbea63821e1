"""Apply a widening plan to a copy of the (multi-branch) student: widen tensors, update layer
attributes, attach the hooks the convention and the layout need, add symmetry-breaking noise."""
from __future__ import annotations

import torch
from torch import nn

from workbench.models.shufflenet import Concat, ShuffleBlock, SplitBlock

from . import layers
from .channels import ChannelMap, student_block_mask, widen_tensor
from .plan import (NON_HOMOGENEOUS, QK_SEGMENTS, SEGMENTED_LINEARS, WideningPlan, _is_conv, _is_grouped,
                   unsupported)


def _set_child(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, leaf, new)


def widen_model(model: nn.Module, plan: WideningPlan) -> nn.Module:
    """Widen ``model`` IN PLACE (pass a copy): tensors copied/divided per the plan, layer
    attributes updated, uneven-count LayerNorms made replica-aware."""
    with torch.no_grad():
        for path, m in model.named_modules():
            prefix = f"{path}." if path else ""
            for store in (m._parameters, m._buffers):
                for name, t in list(store.items()):
                    if t is None:
                        continue
                    rules = plan.tensors.get(prefix + name)
                    if rules is None:
                        if store is m._parameters:
                            raise unsupported(path, m, f"parameter {name!r} has no widening rule")
                        continue  # an unplanned buffer is kept as is (verification checks the result)
                    new = widen_tensor(t, rules)
                    store[name] = nn.Parameter(new, requires_grad=t.requires_grad) if store is m._parameters else new
    for path, lp in plan.layers.items():
        m = model.get_submodule(path)
        if _is_conv(m):
            depthwise = m.groups > 1 and m.groups == m.in_channels
            m.in_channels = lp.in_map.wide_size if lp.in_map else m.in_channels
            m.out_channels = lp.out_map.wide_size if lp.out_map else m.out_channels
            if depthwise:
                m.groups = m.in_channels
        elif type(m) is nn.Linear:
            m.in_features = lp.in_map.wide_size if lp.in_map else m.in_features
            m.out_features = lp.out_map.wide_size if lp.out_map else m.out_features
        elif type(m) is nn.LayerNorm:
            if lp.in_map is None:
                continue
            m.normalized_shape = (lp.in_map.wide_size,)
            if not lp.in_map.uniform:
                ln = layers.ReplicaAwareLayerNorm(m, lp.in_map)
                ln.load_state_dict(m.state_dict())
                _set_child(model, path, ln)
        else:
            m.num_features = lp.in_map.wide_size if lp.in_map else m.num_features
    for path, heads in plan.heads.items():
        m = model.get_submodule(path)
        if isinstance(getattr(m, "num_heads", None), int):
            m.num_heads = heads
    return model


def attach_hooks(model: nn.Module, plan: WideningPlan, wide_shapes: dict[str, tuple]) -> None:
    """Hooks that keep the widened ``model`` exact: layout permutations (grouped convs, channel
    shuffle/split/concat) always; in the reference convention also scale hooks on per-channel
    modules (a BatchNorm with one copy count for all channels becomes its count-scaled twin
    instead, ``layers.count_scaled``: the same map without the two activation passes) and the
    q/k hook. ``wide_shapes``: every module's (input, output) shapes in the
    widened model, to find the channel dim of parameter-free modules."""
    dtype = next(model.parameters()).dtype
    r = plan.copies
    replace: dict[str, nn.Module] = {}
    for path, m in model.named_modules():
        lp = plan.layers.get(path)
        if path not in plan.shapes:
            continue  # never called on the example input (e.g. a stride-1 unit's Concat)
        if lp is not None and _is_grouped(m):
            c_in, c_out = lp.in_map.narrow, lp.out_map.narrow
            layers.attach_permutation(m, layers.group_major_index(c_in, m.groups, r),
                                      layers.inverse(layers.group_major_index(c_out, m.groups, r)))
        elif isinstance(m, ShuffleBlock):
            width = _input_width(plan, path)
            layers.attach_permutation(m, in_index=layers.group_major_index(width, m.groups, r))
        elif isinstance(m, SplitBlock):
            width = _input_width(plan, path)
            layers.attach_permutation(m, in_index=layers.split_major_index(width, int(width * m.ratio), r))
        elif isinstance(m, Concat):
            widths = [s[1] for s in plan.shapes[path][0]]
            layers.attach_permutation(m, out_index=layers.concat_index(widths, r))
        if not plan.divides_outputs:
            continue
        if lp is not None and lp.per_channel and lp.out_map is not None:
            if type(m) in layers.COUNT_SCALED and lp.in_map == lp.out_map and lp.in_map.uniform:
                replace[path] = layers.count_scaled(m, lp.in_map.wide // lp.in_map.narrow)  # no hooks needed
                continue
            ndim = len(wide_shapes[path][1][0])
            layers.attach_scale(m, lp.in_map, lp.out_map, lp.out_dim % ndim, ndim, dtype)
        elif lp is not None and path.rpartition(".")[2] in SEGMENTED_LINEARS and lp.out_map is not None \
                and lp.out_map.segments > 1:
            layers.attach_qk_scale(m, lp.out_map, QK_SEGMENTS, dtype)
        elif isinstance(m, NON_HOMOGENEOUS) and path in plan.shapes:
            found = _widened_dim(plan.shapes[path][0][0], wide_shapes[path][0][0])
            if found is not None:
                dim, narrow, wide = found
                cmap = ChannelMap(narrow, wide)
                layers.attach_scale(m, cmap, cmap, dim, len(wide_shapes[path][0][0]), dtype)
    for path, new in replace.items():
        _set_child(model, path, new)


def _input_width(plan: WideningPlan, path: str) -> int:
    return plan.shapes[path][0][0][1]


def _widened_dim(student_shape: tuple, wide_shape: tuple):
    diff = [(d, s, w) for d, (s, w) in enumerate(zip(student_shape, wide_shape)) if s != w]
    if len(diff) > 1:
        raise unsupported("", None, f"an activation widened along several dims {student_shape} -> {wide_shape}")
    return diff[0] if diff else None


def add_noise(model: nn.Module, plan: WideningPlan, sigma: float) -> None:
    """Add N(0, sigma^2) to the replicated parameter entries (outside the student block)."""
    if sigma == 0:
        return
    with torch.no_grad():
        for name, p in model.named_parameters():
            rules = plan.tensors.get(name, ())
            if not any(not r.cmap.is_identity for r in rules):
                continue
            outside = ~student_block_mask(p.shape, rules).to(p.device)
            p.add_(torch.randn_like(p) * sigma * outside)
