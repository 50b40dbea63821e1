"""Dense logits of a CNN: its own classifier applied at every position of the feature map that
its global average pooling averages (CSKD's teacher dense prediction, Zhao et al., ICCV 2023).

``dense_logits(model, x) -> (logits (N, K), dense (N, K, H, W))``.

The map is read with a hook, never by rewriting a forward: a forward *pre*-hook on the model's
global average pool (the last ``nn.AdaptiveAvgPool2d`` with output size 1) captures the pool's
input, so any BN/ReLU applied after the last block (WRN's ``bn1``-ReLU, ShuffleV2's ``conv2``,
VGG's functional ReLU, MobileNetV2's ``conv2``) is included. torchvision's MobileNetV2 pools
functionally, so there a forward hook captures the output of ``features`` instead.

Because the classifier ``W f + b`` is affine, the spatial mean of ``dense`` equals ``logits``
(up to float summation order). The dense map applies only the classifier ``nn.Linear`` (found by
``hooks.classifier_path``): a dropout in front of it (torchvision's MobileNetV2) is identity in
eval mode, which is how teachers run.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .hooks import classifier_path

#: modules that pool functionally: (module type name, path of the module whose OUTPUT is pooled)
FUNCTIONAL_POOL_SITES = (("torchvision.models.mobilenetv2.MobileNetV2", "features"),)
MAP_DIMS = 4


def _qualified_name(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def _is_global_avg_pool(m: nn.Module) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))


def pooled_map_site(model: nn.Module) -> tuple[str, str]:
    """``(module path, "input" | "output")``: where the map that global pooling averages is read."""
    pools = [name for name, m in model.named_modules() if _is_global_avg_pool(m)]
    if pools:
        return pools[-1], "input"
    for qualified, path in FUNCTIONAL_POOL_SITES:
        if _qualified_name(model) == qualified:
            return path, "output"
    raise ValueError(
        f"dense_logits needs a CNN with a global average pool (nn.AdaptiveAvgPool2d(1)); "
        f"{type(model).__name__} has none (a DistilledViT gives per-patch logits with patch_logits)"
    )


def dense_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, dense)``: the model's ordinary logits (N, K) from one forward, and its classifier
    applied at every position of the pooled map, (N, K, H, W). Gradients flow as usual (wrap in
    ``torch.no_grad()`` for a static teacher); the hook is removed when the call returns."""
    path, side = pooled_map_site(model)
    site = model.get_submodule(path)
    captured: list[torch.Tensor] = []
    if side == "input":
        handle = site.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    else:
        handle = site.register_forward_hook(lambda _m, _args, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured or captured[-1].ndim != MAP_DIMS:
        raise ValueError(f"{type(model).__name__}.{path} did not see a (N, C, H, W) map in the forward")
    fmap = captured[-1]
    head = model.get_submodule(classifier_path(model))
    if not isinstance(head, nn.Linear) or head.in_features != fmap.shape[1]:
        raise ValueError(
            f"{type(model).__name__}: the pooled map has {fmap.shape[1]} channels but the classifier "
            f"{classifier_path(model)!r} is not a Linear reading them"
        )
    # F.linear, not head(...): the classifier's own hooks (e.g. a FeatureTap) must not fire again
    dense = F.linear(fmap.movedim(1, -1), head.weight, head.bias).movedim(-1, 1)
    return logits, dense
