"""``ctkd``: Curriculum Temperature KD (Li et al., AAAI 2023) -- wraps a KD or DKD loss.

The temperature is learnable, T = t_start + t_end * sigmoid(theta) (1 and 20; theta starts at 1
as in the reference code's global temperature), and reaches theta through a gradient-reversal
layer: the temperature *maximises* the distillation loss that the student minimises.
The reversal strength lambda follows an easy-to-hard cosine curriculum, RISING from lambda_min
to lambda_max over ``loops`` epochs and then staying there:

    lambda(e) = l_min + (l_max - l_min) * (1 + cos(pi * (1 + min(e, loops) / loops))) / 2

with e the 1-based epoch, so with the defaults (0, 1, 10 loops) lambda = 0.0245 in epoch 1 and
1.0 from epoch 10 on. This is exactly the public code's schedule (zhengli97/CTKD: in
``train_student.py``, ``CosineDecay(decay_max, decay_min, decay_loops).get_value(epoch)`` with
``scripts/run_cifar_distill.sh``'s 0, -1, 10 falls from 0 to -1, and the reversal layer
multiplies theta's gradient by that value, i.e. reverses it with strength
(1 - cos(pi * e / loops)) / 2), which has the paper's direction too.
Under CTKD the DKD loss has no warm-up by default (``methods.dkd.dkd_warmup``), as in the
public code. CTKD is both a method (``method=ctkd base=kd|dkd``) and an extension
(``ctkd=true``) that makes the temperature of any temperature-based loss learnable, so it also
composes with GPD (both views' losses).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..keys import opt
from .base import Criterion, Distiller
from .spec import Extension, build_criterion, method, register_extension

THETA_INIT = 1.0


def curriculum_lambda(epoch: int, loops: int, lam_min: float = 0.0, lam_max: float = 1.0) -> float:
    """The reversal strength in 1-based ``epoch``: rises from lam_min (reached at epoch 0, i.e.
    never in training) to lam_max at epoch ``loops`` and stays there."""
    e = min(max(epoch, 0), loops)
    return lam_min + 0.5 * (lam_max - lam_min) * (1.0 + math.cos(math.pi * (1.0 + e / loops)))


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


def reverse_grad(x: torch.Tensor, lam: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by ``-lam``."""
    return _ReverseGrad.apply(x, lam)


class LearnableTemperature(nn.Module):
    """``group_lr``: the temperature's own learning rate (None = the run's)."""

    def __init__(self, t_start=1.0, t_end=20.0, loops=10, lam_min=0.0, lam_max=1.0, lr=None):
        super().__init__()
        self.group_lr = lr
        self.theta = nn.Parameter(torch.tensor(THETA_INIT))
        self.t_start, self.t_end = t_start, t_end
        self.loops, self.lam_min, self.lam_max = loops, lam_min, lam_max
        self.lam = lam_min

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.lam = curriculum_lambda(epoch, self.loops, self.lam_min, self.lam_max)

    def forward(self) -> torch.Tensor:
        return self.t_start + self.t_end * torch.sigmoid(reverse_grad(self.theta, self.lam))

    def extra_repr(self) -> str:
        return f"T = {self.t_start} + {self.t_end} * sigmoid(theta), lambda={self.lam:.3f}"


def apply_ctkd(criterion: Criterion, cfg) -> Criterion:
    criterion.temperature = LearnableTemperature(cfg.ctkd_t_start, cfg.ctkd_t_end, cfg.ctkd_loops,
                                                 cfg.ctkd_lambda_min, cfg.ctkd_lambda_max, cfg.ctkd_lr or None)
    return criterion


KEYS = {
    "ctkd": opt(False, "CTKD: learn the temperature adversarially (wraps the base loss; method=ctkd sets it)"),
    "ctkd_t_start": opt(1.0, "CTKD: T = t_start + t_end * sigmoid(theta)", low=0.0),
    "ctkd_t_end": opt(20.0, "CTKD: see ctkd_t_start", low=0.0),
    "ctkd_lambda_min": opt(0.0, "CTKD: gradient-reversal strength the cosine curriculum starts from "
                           "(at epoch 0, so epoch 1 is already above it: 0.0245 of the range with 10 loops)", low=0.0),
    "ctkd_lambda_max": opt(1.0, "CTKD: gradient-reversal strength from epoch ctkd_loops on", low=0.0),
    "ctkd_loops": opt(10, "CTKD: epochs of the cosine easy-to-hard curriculum", low=1),
    "ctkd_lr": opt(0.0, "CTKD: temperature learning rate (0 = same as lr)", low=0.0),
}


def _check(cfg) -> None:
    if cfg.ctkd and not cfg.uses_teacher:
        raise ValueError("ctkd: CTKD learns the temperature of a KD/DKD loss; "
                         f"method={cfg.method} base={cfg.resolved_base} has none")


def _apply(method_, cfg, ctx=None) -> None:
    for criterion in (c.temperature_owner() for c in method_.criteria()):
        if criterion.temperature is None:
            raise ValueError(f"ctkd: the {type(criterion).__name__} loss has no temperature to learn")
        if not isinstance(criterion.temperature, LearnableTemperature):
            apply_ctkd(criterion, cfg)


register_extension(Extension("ctkd", KEYS, active=lambda cfg: cfg.ctkd, apply=_apply, validate=_check))


@method("ctkd", summary="Curriculum Temperature KD (Li et al. 2023): learnable T via gradient reversal",
        bases=("kd", "dkd"), implies={"ctkd": True})
def build_ctkd(ctx):
    """KD or DKD (``base``); the ``ctkd`` extension makes the temperature learnable."""
    return Distiller(ctx.student, ctx.teacher, build_criterion(ctx.cfg.resolved_base, ctx, ctx.student),
                     ctx.cfg.ce_weight)
