"""Inverse Reparameterization: ``expand(student) -> DynamicTeacher``.

Order (the reference code's): 1. the student becomes a multi-branch net at its own width
(``add_branches``, scales per ``scale_init``); 2. every tensor of that net -- branch weights,
scales and biases included -- is widened by IR; 3. the widening is verified module by module on
an example batch; 4. symmetry-breaking noise. So T_d equals the (multi-branch) student at init
whatever the branch scales are.
"""
from __future__ import annotations

import copy
import numbers

import torch
from torch import nn

from workbench.registry import unknown_choice

from .branches import DEFAULT_BRANCHES, SCALE_INITS, MultiBranchConv2d, add_branches, branchable, resolve_branches
from .plan import CONVENTIONS, bn_readers, make_plan, trace_io
from .teacher import STUDENT_GRADS, CbrRule, DynamicTeacher, ExpandConfig, make_template, strip_hooks
from .verify import verify_widening
from .widen import add_noise, attach_hooks, widen_model

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


def _check_args(ratio, noise, scale_init, student_grad, convention) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not ratio >= 1:
        raise ValueError(f"ratio must be a real number >= 1, got {ratio!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a real number >= 0, got {noise!r}")
    if scale_init not in SCALE_INITS:
        raise ValueError(unknown_choice("scale_init", scale_init, list(SCALE_INITS)))
    if student_grad not in STUDENT_GRADS:
        raise ValueError(unknown_choice("student_grad", student_grad, list(STUDENT_GRADS)))
    if convention not in CONVENTIONS:
        raise ValueError(unknown_choice("convention", convention, list(CONVENTIONS)))
    return float(ratio)


def expand(
    student: nn.Module,
    ratio: float = 2.0,
    branches=DEFAULT_BRANCHES,
    noise: float = DEFAULT_NOISE,
    scale_init: str = "one_zero",
    student_grad: str = "faithful",
    convention: str = "reference",
    branch_bias: bool = True,
    example_input: torch.Tensor | None = None,
) -> DynamicTeacher:
    """Build T_d from ``student`` (which is not modified).

    - ``ratio``: width multiplier r >= 1 (any real; C' = round(r C));
    - ``branches``: extra branches per kxk stride-1 conv (0 = channel-only GPD; an int n takes
      the first n of ``BRANCH_ORDER``) or a sequence of kinds from ``BRANCH_KINDS``; default
      ``DEFAULT_BRANCHES`` = the official code's 6 branches (original + 5);
    - ``noise``: std of N(0, noise^2) added to the replicated entries (0 = exact);
    - ``scale_init``: ``"one_zero"`` (default; the official fine-tuning init: origin branch 1,
      the others 0, so the student view -- and T_d at ``noise=0`` -- compute the student's
      function: IR in the strict sense) | ``"reference"`` (the official distillation /
      from-scratch init: the student is re-initialised as a multi-branch net with scales
      0.25/0.25/0/0.5/0.05/0.5, so its function changes; T_d still equals the student VIEW).
      ``method=gpd`` passes its choice explicitly (``scale_init=auto``: reference, one_zero when
      fine-tuning from ``init=``), so training does not depend on this default;
    - ``student_grad``: ``"faithful"`` | ``"compensated"`` (see ``workbench.gpd``);
    - ``convention``: ``"reference"`` (T_d features = student features / cnt) | ``"full_scale"``
      (T_d features = copies); see ``workbench.gpd.plan``;
    - ``branch_bias``: give branched convs a zero-initialised learnable bias (reference) where
      the plain student can hold it exactly (a conv with its own bias, or one read by a single
      BatchNorm, into whose running mean ``extract_student`` folds it);
    - ``example_input``: one small batch used to trace the model and verify the widening
      module by module (default: ``default_example_input(student)``).
    Random draws (branch weights, noise) use torch's global RNG: seed it to reproduce.
    T_d's parameters keep the student's ``requires_grad`` flags.
    Raises ``UnsupportedLayerError`` naming the module for anything it cannot widen exactly.
    """
    ratio = _check_args(ratio, noise, scale_init, student_grad, convention)
    kinds = resolve_branches(branches)
    x = default_example_input(student) if example_input is None else example_input
    base = copy.deepcopy(student).eval()
    strip_hooks(base)
    bias_folds = _bias_folds(base, x) if kinds and branch_bias else {}
    own_bias = {p for p, m in base.named_modules() if branchable(m) and m.bias is not None}
    add_branches(base, kinds, scale_init, frozenset(bias_folds) | own_bias)  # the multi-branch student

    reads, writes, shapes = trace_io(base, x)
    plan = make_plan(base, ratio, reads, writes, convention, shapes)
    wide = widen_model(copy.deepcopy(base), plan)
    attach_hooks(wide, plan, _shapes_of(wide, x))
    verify_widening(base, wide, plan, x)
    add_noise(wide, plan, float(noise))

    branched = {p for p, m in base.named_modules() if isinstance(m, MultiBranchConv2d)}
    template, order = make_template(student, bias_folds)
    rules = []
    for path, names in order.items():
        prefix = f"{path}." if path else ""
        for n in names:
            rules.append(CbrRule(prefix + n, path if (path in branched and n == "weight") else prefix + n,
                                 fold=path in branched and n == "weight"))
    rules += [CbrRule(f"{p}.bias", f"{p}.bias") for p in bias_folds]
    config = ExpandConfig(ratio, kinds, float(noise), scale_init, student_grad, convention, bool(branch_bias))
    dt = DynamicTeacher(wide, template, order, rules, config, plan, bias_folds)
    return dt.train(student.training)


def check_widening(student: nn.Module, ratio: float, convention: str = "reference",
                   example_input: torch.Tensor | None = None) -> None:
    """Raise ``UnsupportedLayerError`` (naming the module) if ``student`` cannot be widened by
    ``ratio``: the plan only -- one traced forward of a copy, nothing widened or verified -- so a
    run can be refused before it starts. :func:`expand` re-checks everything when it builds T_d."""
    x = default_example_input(student) if example_input is None else example_input
    base = copy.deepcopy(student).eval()
    strip_hooks(base)
    reads, writes, shapes = trace_io(base, x)
    make_plan(base, float(ratio), reads, writes, convention, shapes)


def _bias_folds(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """Branchable bias-free convs read by a single BatchNorm with running statistics."""
    paths = [p for p, m in model.named_modules() if branchable(m) and m.bias is None]
    if not paths:
        return {}
    found = bn_readers(copy.deepcopy(model), x, paths)
    return {c: b for c, b in found.items() if model.get_submodule(b).running_mean is not None}


def _shapes_of(model: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    _, _, shapes = trace_io(model, x)
    return shapes
