"""Apply a widening plan to a copy of the student (IR steps: widen, noise, branches)."""
from __future__ import annotations

import torch
from torch import nn

from .branches import MultiBranchConv2d, branchable
from .channels import student_block_mask, widen_tensor
from .layers import ReplicaAwareLayerNorm
from .plan import WideningPlan, unsupported


def _set_child(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, leaf, new)


def widen_model(model: nn.Module, plan: WideningPlan) -> nn.Module:
    """Widen ``model`` IN PLACE (pass a copy): tensors copied/divided per the plan, layer
    attributes updated, uneven-count LayerNorms made replica-aware. Full-scale convention:
    every wide feature is an exact copy of a student feature."""
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
        if type(m) is nn.Conv2d:
            depthwise = m.groups > 1
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
                ln = ReplicaAwareLayerNorm(m, lp.in_map)
                ln.load_state_dict(m.state_dict())
                _set_child(model, path, ln)
        else:
            m.num_features = lp.in_map.wide_size if lp.in_map else m.num_features
    for path, heads in plan.heads.items():
        m = model.get_submodule(path)
        if isinstance(getattr(m, "num_heads", None), int):
            m.num_heads = heads
    return model


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


def add_branches(model: nn.Module, kinds: tuple[str, ...], scale_init: str) -> list[str]:
    """Replace every branchable conv by a ``MultiBranchConv2d``; returns the converted paths."""
    if not kinds:
        return []
    paths = [path for path, m in model.named_modules() if branchable(m)]
    for path in paths:
        _set_child(model, path, MultiBranchConv2d(model.get_submodule(path), kinds, scale_init))
    return paths
