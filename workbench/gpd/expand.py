"""Inverse Reparameterization: ``expand(student) -> DynamicTeacher``."""
from __future__ import annotations

import copy
import numbers

import torch
from torch import nn

from workbench.registry import unknown_choice

from .branches import DEFAULT_BRANCHES, SCALE_INITS, resolve_branches
from .plan import make_plan, trace_io
from .teacher import STUDENT_GRADS, CbrRule, DynamicTeacher, ExpandConfig, make_template, strip_hooks
from .verify import verify_widening
from .widen import add_branches, add_noise, widen_model

#: std of the symmetry-breaking noise on replicated entries (the official code uses N(0, 1e-6))
DEFAULT_NOISE = 1e-6
#: default example input: batch size, and image side when the model has no ``image_size``
EXAMPLE_BATCH = 2
DEFAULT_IMAGE_SIDE = 32


def default_example_input(model: nn.Module) -> torch.Tensor:
    """A small random batch shaped for ``model``: (2, in_channels of the first conv, s, s)
    with ``s = getattr(model, "image_size", 32)``; (2, in_features) for an MLP."""
    ref = next(model.parameters(), None)
    kw = dict(device=ref.device, dtype=ref.dtype) if ref is not None else {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            side = getattr(model, "image_size", DEFAULT_IMAGE_SIDE)
            return torch.randn(EXAMPLE_BATCH, m.in_channels, side, side, **kw)
        if isinstance(m, nn.Linear):
            return torch.randn(EXAMPLE_BATCH, m.in_features, **kw)
    raise ValueError(f"cannot guess an input for {type(model).__name__}: pass example_input=")


def _check_args(ratio, noise, scale_init, student_grad) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not ratio >= 1:
        raise ValueError(f"ratio must be a real number >= 1, got {ratio!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a real number >= 0, got {noise!r}")
    if scale_init not in SCALE_INITS:
        raise ValueError(unknown_choice("scale_init", scale_init, list(SCALE_INITS)))
    if student_grad not in STUDENT_GRADS:
        raise ValueError(unknown_choice("student_grad", student_grad, list(STUDENT_GRADS)))
    return float(ratio)


def expand(
    student: nn.Module,
    ratio: float = 2.0,
    branches=DEFAULT_BRANCHES,
    noise: float = DEFAULT_NOISE,
    scale_init: str = "one_zero",
    student_grad: str = "faithful",
    example_input: torch.Tensor | None = None,
) -> DynamicTeacher:
    """Build T_d from ``student`` (which is not modified).

    - ``ratio``: width multiplier r >= 1 (any real; C' = round(r C));
    - ``branches``: number of extra branches per kxk stride-1 conv (0 = channel-only GPD; an
      int n takes the first n of ``BRANCH_ORDER``) or a sequence of kinds from ``BRANCH_KINDS``;
      default ``DEFAULT_BRANCHES`` = the official code's 6 branches (original + 5);
    - ``noise``: std of N(0, noise^2) added to the replicated entries (0 = exact);
    - ``scale_init``: ``"one_zero"`` (function preserved) | ``"reference"`` (official from-scratch);
    - ``student_grad``: ``"faithful"`` | ``"compensated"`` (see ``workbench.gpd``);
    - ``example_input``: one small batch used to find the input/output layers and to verify the
      widening module by module (default: ``default_example_input(student)``).
    Random draws (noise, extra-branch weights) use torch's global RNG: seed it to reproduce.
    T_d's parameters keep the student's ``requires_grad`` flags.
    Raises ``UnsupportedLayerError`` naming the module for anything it cannot widen exactly.
    """
    ratio = _check_args(ratio, noise, scale_init, student_grad)
    kinds = resolve_branches(branches)
    x = default_example_input(student) if example_input is None else example_input
    base = copy.deepcopy(student).eval()
    strip_hooks(base)
    reads, writes = trace_io(base, x)
    plan = make_plan(base, ratio, reads, writes)
    wide = widen_model(copy.deepcopy(base), plan)
    verify_widening(base, wide, plan, x)
    add_noise(wide, plan, float(noise))
    branched = set(add_branches(wide, kinds, scale_init))

    template, order = make_template(student)
    rules = []
    for path, names in order.items():
        prefix = f"{path}." if path else ""
        for n in names:
            fold = path in branched and n == "weight"
            rules.append(CbrRule(prefix + n, path if fold else prefix + n, fold, plan.tensors[prefix + n]))
    config = ExpandConfig(ratio, kinds, float(noise), scale_init, student_grad)
    dt = DynamicTeacher(wide, template, order, rules, config, plan)
    return dt.train(student.training)
