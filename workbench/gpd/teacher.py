"""The dynamic teacher T_d and its shared-parameter student view (CBR).

``DynamicTeacher`` holds ``wide`` (T_d, the only owner of trainable parameters) and
``student_template`` (a copy of the plain student whose parameters were replaced by empty
placeholders; it keeps the student view's OWN BatchNorm running statistics as buffers). The
student view runs ``torch.func.functional_call(student_template, cbr_params(), x)`` where
``cbr_params()`` slices every T_d tensor to the student block, multiplies the dims IR divided by
the copy count, and -- for a multi-branch conv -- folds the SLICED branch tensors into one kernel
(slice first, then fold: the reference order, so the student never depends on T_d-only
channels). It is computed from ``wide`` at every call, so the student loss back-propagates into
T_d's parameters (hard sharing).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from workbench.registry import unknown_choice

from .branches import MultiBranchConv2d
from .channels import DimRule, undo_scale
from .plan import WideningPlan

VIEWS = ("teacher", "student", "both")
STUDENT_GRADS = ("faithful", "compensated")
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks")


@dataclass(frozen=True)
class ExpandConfig:
    """What ``expand`` was called with (stored in the state dict's extra state)."""

    ratio: float
    branches: tuple[str, ...]
    noise: float
    scale_init: str
    student_grad: str
    convention: str = "reference"
    branch_bias: bool = True


class _CompensatedScale(torch.autograd.Function):
    """``x * cnt`` forward; backward multiplies by ``1 / cnt`` instead of ``cnt``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad / scale, None


@dataclass(frozen=True)
class CbrRule:
    """How one student tensor is read out of T_d: sliced from ``source`` (a T_d tensor path),
    or, when ``fold``, folded from the sliced branch tensors of the multi-branch conv at
    module path ``source``."""

    name: str  # student tensor path
    source: str
    fold: bool = False


def strip_hooks(model: nn.Module) -> None:
    """Remove forward/backward hooks from every module of ``model`` (used on fresh copies)."""
    for m in model.modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(m, attr, None)
            if hooks is not None:
                hooks.clear()


def make_template(student: nn.Module, bias_paths=()) -> tuple[nn.Module, dict[str, list[str]]]:
    """A copy of ``student`` whose parameters are empty non-persistent placeholder buffers
    (filled by ``functional_call``); its persistent buffers (BN stats) stay. Convs in
    ``bias_paths`` that have no bias get a placeholder for one (the branched conv's bias). Also
    returns each module's parameter names in their original order."""
    template = copy.deepcopy(student)
    strip_hooks(template)
    order: dict[str, list[str]] = {}
    for path, m in template.named_modules():
        names = [n for n, p in m._parameters.items() if p is not None]
        if names:
            order[path] = names
        for n in names:
            p = m._parameters.pop(n)
            m.register_buffer(n, torch.empty(0, dtype=p.dtype, device=p.device), persistent=False)
    for path in bias_paths:
        m = template.get_submodule(path)
        if m._parameters.get("bias", 0) is None:
            m._parameters.pop("bias")
            m.register_buffer("bias", torch.empty(0, dtype=m.weight.dtype, device=m.weight.device), persistent=False)
    return template, order


class DynamicTeacher(nn.Module):
    """T_d plus the student view computed from it. ``dt(x)`` -> T_d logits;
    ``dt(x, view="student")`` -> student logits; ``dt(x, view="both")`` -> ``(z_D, z_S)``.

    Only ``wide`` owns parameters. ``state_dict`` holds ``wide.*`` (T_d parameters and BN
    stats), ``student_template.*`` (the student view's separate BN stats) and the config.
    ``train()``/``eval()`` apply to both views. ``student_grad`` may be changed at any time.
    ``bias_folds`` maps a branched conv whose bias the plain student cannot hold to the
    BatchNorm that alone reads it (``extract_student`` folds the bias into its running mean).
    """

    def __init__(self, wide: nn.Module, template: nn.Module, param_order: dict[str, list[str]],
                 rules: list[CbrRule], config: ExpandConfig, plan: WideningPlan,
                 bias_folds: dict[str, str] | None = None):
        super().__init__()
        self.plan = plan  # channel maps of every student tensor (read-only information)
        self.wide = wide
        self.student_template = template
        self._param_order = param_order
        self._rules = list(rules)
        self.config = config
        self.student_grad = config.student_grad
        self.bias_folds = dict(bias_folds or {})
        consts = nn.Module()  # non-persistent index/scale constants: move with .to(), not saved
        self._const_key: dict[str, int] = {}
        for name in dict.fromkeys(self._sliced_names()):
            k = len(self._const_key)
            self._const_key[name] = k
            rules_ = plan.tensors[name]
            for r in rules_:
                if r.cmap.segments > 1:
                    consts.register_buffer(f"i{k}_{r.dim}", r.cmap.student_index(), persistent=False)
            source = self._wide_tensor(name)
            scale = undo_scale(rules_, source.ndim)
            if scale is not None:
                consts.register_buffer(f"s{k}", scale.to(source.dtype), persistent=False)
        self._cbr = consts

    # ------------------------------------------------------------------ helpers
    def _sliced_names(self) -> list[str]:
        """Every T_d tensor CBR slices (folded convs: all their branch tensors)."""
        names = []
        for rule in self._rules:
            if rule.fold:
                prefix = rule.source + "."
                names += [prefix + n for n in self.wide.get_submodule(rule.source).tensor_dims()]
            else:
                names.append(rule.source)
        return names

    def _wide_tensor(self, name: str) -> torch.Tensor:
        path, _, leaf = name.rpartition(".")
        m = self.wide.get_submodule(path) if path else self.wide
        return getattr(m, leaf)

    def _slice(self, name: str) -> torch.Tensor:
        """The student block of T_d tensor ``name``, divided dims multiplied back by cnt."""
        k = self._const_key[name]
        t = self._wide_tensor(name)
        for r in self.plan.tensors[name]:
            if r.cmap.segments == 1:
                t = t.narrow(r.dim, 0, r.cmap.narrow)
            else:
                t = t.index_select(r.dim, getattr(self._cbr, f"i{k}_{r.dim}"))
        scale = getattr(self._cbr, f"s{k}", None)
        if scale is not None:
            t = t * scale if self.student_grad == "faithful" or not t.requires_grad else _CompensatedScale.apply(t, scale)
        return t

    @property
    def branched_paths(self) -> list[str]:
        """Module paths of T_d's multi-branch convs."""
        return [p for p, m in self.wide.named_modules() if isinstance(m, MultiBranchConv2d)]

    # ------------------------------------------------------------------ CBR
    def cbr_params(self) -> dict[str, torch.Tensor]:
        """The student's parameters, sliced (then folded) from T_d (differentiable)."""
        if self.student_grad not in STUDENT_GRADS:
            raise ValueError(unknown_choice("student_grad", self.student_grad, list(STUDENT_GRADS)))
        out = {}
        for rule in self._rules:
            if rule.fold:
                conv = self.wide.get_submodule(rule.source)
                plain = self.student_template.get_submodule(rule.source)
                prefix = rule.source + "."
                out[rule.name] = conv.fold(lambda n, p=prefix: self._slice(p + n), plain.in_channels,
                                           plain.out_channels, plain.groups)
            else:
                out[rule.name] = self._slice(rule.source)
        return out

    def _student_forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.student_template, self.cbr_params(), (x,), strict=False)

    def forward(self, x: torch.Tensor, view: str = "teacher"):
        if view == "teacher":
            return self.wide(x)
        if view == "student":
            return self._student_forward(x)
        if view == "both":
            return self.wide(x), self._student_forward(x)
        raise ValueError(unknown_choice("view", view, list(VIEWS)))

    def student_view(self) -> "StudentView":
        """An ``nn.Module`` whose forward is ``self(x, view="student")`` (registers nothing)."""
        return StudentView(self)

    # ------------------------------------------------------------------ state
    def get_extra_state(self):
        return {"config": asdict(self.config)}

    def set_extra_state(self, state) -> None:
        saved = dict(state["config"])
        for key in ("ratio", "branches", "convention", "branch_bias"):
            have = getattr(self.config, key)
            was = tuple(saved[key]) if key == "branches" and key in saved else saved.get(key, have)
            if was != have:
                raise ValueError(f"state dict was saved from a DynamicTeacher with {key}={was!r}, "
                                 f"this one has {key}={have!r}")

    def extra_repr(self) -> str:
        c = self.config
        return (f"ratio={c.ratio}, branches={list(c.branches)}, noise={c.noise}, scale_init={c.scale_init!r}, "
                f"convention={c.convention!r}, student_grad={self.student_grad!r}")


class StudentView(nn.Module):
    """``forward(x) = dt(x, view="student")``; holds ``dt`` without registering it, so its
    parameters are not registered twice. ``train()``/``eval()`` are forwarded to ``dt``."""

    def __init__(self, dt: DynamicTeacher):
        super().__init__()
        object.__setattr__(self, "dt", dt)

    @property
    def student_template(self) -> nn.Module:
        return self.dt.student_template

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dt(x, view="student")

    def train(self, mode: bool = True) -> "StudentView":
        self.dt.train(mode)
        return super().train(mode)


def extract_student(dt: DynamicTeacher) -> nn.Module:
    """The deployable student: a plain instance of the student's class (a copy of the
    template) holding the sliced, folded weights and the student view's BN statistics; a
    branched conv's bias that the plain conv cannot hold is folded into the running mean of the
    BatchNorm that alone reads it (exact: BN(y + b) with mean mu == BN(y) with mean mu - b, and
    the running-mean update keeps that offset). Its state dict loads with ``strict=True`` into
    a fresh model of the same architecture."""
    with torch.no_grad():
        params = {k: v.detach().clone() for k, v in dt.cbr_params().items()}
    student = copy.deepcopy(dt.student_template)
    strip_hooks(student)
    for path, names in dt._param_order.items():
        m = student.get_submodule(path)
        prefix = f"{path}." if path else ""
        for n in names:
            del m._buffers[n]
        for n in names:
            m.register_parameter(n, nn.Parameter(params[prefix + n]))
    with torch.no_grad():
        for conv_path, bn_path in dt.bias_folds.items():
            conv = student.get_submodule(conv_path)
            del conv._buffers["bias"]
            conv._parameters["bias"] = None
            student.get_submodule(bn_path).running_mean.sub_(params[conv_path + ".bias"])
    return student
