"""Optimizer parameter groups with weight-decay exemptions.

``decay_groups(model, weight_decay)`` -> ``[{"params": decayed, "weight_decay": weight_decay},
{"params": exempt, "weight_decay": 0.0}]`` (empty groups are left out), where a trainable
parameter is *exempt* when it is

- a parameter of a normalisation layer (BatchNorm/InstanceNorm, LayerNorm, GroupNorm, by type);
- a bias (its own name is ``bias``, in any module);
- a direct parameter that its owning module lists in ``no_weight_decay_names`` (the ViT lists
  ``cls_token``, ``pos_embed`` and, with a distillation token, ``dist_token``).

This is the usual DeiT/timm recipe (no decay for norms, biases, tokens and position embeddings)
decided by module type and declared names rather than by name patterns, so a renamed layer
cannot slip through. Parameters with ``requires_grad=False`` are left out, as in the methods'
``param_groups``; a parameter shared by several modules is listed once. Callers add their own
keys (``lr``, ...) to the returned dicts.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

NORM_TYPES = (_NormBase, nn.LayerNorm, nn.GroupNorm)
BIAS_NAME = "bias"


def _exempt(module: nn.Module, name: str) -> bool:
    return (isinstance(module, NORM_TYPES) or name == BIAS_NAME
            or name in getattr(module, "no_weight_decay_names", ()))


def decay_exempt_names(model: nn.Module) -> list[str]:
    """Dotted names of the trainable parameters ``decay_groups`` puts in the no-decay group."""
    return [name for name, exempt, _ in _classified(model) if exempt]


def _classified(model: nn.Module):
    seen: set[int] = set()
    for path, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            yield (f"{path}.{name}" if path else name), _exempt(module, name), p


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer parameter groups: decayed (``weight_decay``) and exempt (0.0); see above."""
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    decayed, exempt = [], []
    for _, is_exempt, p in _classified(model):
        (exempt if is_exempt else decayed).append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
