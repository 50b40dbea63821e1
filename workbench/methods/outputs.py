"""What a method reads from a model: its logits and the features a loss asks for, tapped by
forward hooks during the ordinary forward (models are never rewritten).

Feature names are module paths, ``"penultimate"`` (the classifier's input), ``"<path>:input"``,
or ``"stages"`` for the model's stage outputs (:data:`STAGES`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.hooks import FeatureTap, stage_paths

#: feature name that stands for all of a model's stage outputs
STAGES = "stages"


@dataclass
class Outputs:
    """One model's forward on a batch: logits and the features a criterion asked for."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def feature_names(model: nn.Module, names) -> list[str]:
    """``names`` with ``"stages"`` expanded to the model's stage paths."""
    out: list[str] = []
    for name in names:
        out += stage_paths(model) if name == STAGES else [name]
    return out


def run_with_features(model: nn.Module, x: torch.Tensor, names, detach: bool = False, call=None) -> Outputs:
    """``model(x)`` (or ``call(x)``: e.g. a view of GPD's teacher running ``model``'s modules)
    with the named features tapped by forward hooks."""
    call = call or model
    paths = feature_names(model, names)
    if not paths:
        return Outputs(call(x))
    with FeatureTap(model, paths, detach=detach) as tap:
        logits = call(x)
    return Outputs(logits, {p: tap[p] for p in paths})


def feature_shapes(ctx, model: nn.Module, names) -> dict[str, torch.Size]:
    """Shapes of ``model``'s named features on the build context's example batch (for sizing
    projectors, regressors, fusion modules), from one forward in eval mode without gradients, so
    no BatchNorm statistics change. Raises a clear error when no example batch is available."""
    if ctx.example_input is None:
        raise ValueError("this method sizes its modules from the features: build it with an example input batch")
    owner, call = ctx.calls.get(id(model), (model, None))
    was = owner.training
    owner.eval()
    try:
        with torch.no_grad():
            out = run_with_features(model, ctx.example_input, names, detach=True, call=call)
    finally:
        owner.train(was)
    return {n: f.shape for n, f in out.features.items()}


def freeze(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
