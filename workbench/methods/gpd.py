"""``gpd``: Gap Preserving Distillation (Guo et al., ICLR 2025), spec §4.

The trained module is the dynamic teacher T_d = IR(student) (``workbench.gpd.expand``); the
student S is its CBR view and shares every parameter (hard strategy). Per batch (x, y):

    z_T = T_s(x) (eval, no grad);   z_D, z_S = T_d(x), S_view(x)   (one call: view="both")
    L_D = CE(z_D, y) + w_dt * L_base(z_D, z_T)
    L_S = CE(z_S, y) + L_base(z_S, z_T) + lambda * SCE(z_S, sg(z_D))

and one optimizer step on T_d's parameters for L_D + L_S. L_base is the base method's loss
(KD or DKD, optionally with CTKD's learnable temperature; ``base=none`` drops it: GPD from
scratch, no static teacher); CE weights are the base method's (KD 0.1, DKD 1.0, none 1.0), so
"GPD on X" is X on both views plus the SCE term. SCE: eps 0.1, T 1, lambda 3 (reference).
Fine-tuning = the student passed in already holds pre-trained weights (``init=``).

Reference defaults (spec §2-§4; the surgery's guarantees are in ``workbench.gpd``): branches
on the student widened by IR in the output-side convention (``widening=reference``), branch
scales per setting (``scale_init=auto``: the reference vector for distillation and from-scratch
runs, one/zero when fine-tuning from ``init=``), a zero-initialised bias per branched conv,
slice-then-fold CBR, gradient clipping at 5, model EMA of T_d (decay 0.99996 per step, the
engine evaluates raw and EMA and reports max(raw, EMA)) and fp32. Today's earlier conventions
stay available as options: ``widening=full_scale``, ``scale_init=one_zero``, ``student_grad``.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import gpd as surgery
from ..losses import sce_loss
from .base import METHODS, Distiller
from .ctkd import BASE_CRITERIA

DT_SUFFIX = "_dt"


class GPD(Distiller):
    def __init__(self, dt: surgery.DynamicTeacher, teacher, criterion, ce_weight=None,
                 lam: float = 3.0, eps: float = 0.1, dt_base_weight: float = 1.0):
        super().__init__(dt, teacher, criterion, ce_weight)
        self.lam, self.eps, self.dt_base_weight = lam, eps, dt_base_weight

    @property
    def dt(self) -> surgery.DynamicTeacher:
        return self.student  # the trained module; the student is its view

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        zt = self.teacher_logits(x)
        zd, zs = self.dt(x, view="both")
        dt_terms = self.loss_terms(zd, zt, y)
        losses = {"loss_ce" + DT_SUFFIX: dt_terms.pop("loss_ce")}
        losses.update({k + DT_SUFFIX: self.dt_base_weight * v for k, v in dt_terms.items()})
        losses.update(self.loss_terms(zs, zt, y))
        losses["loss_sce"] = self.lam * sce_loss(zs, zd.detach(), self.eps)
        return zs, losses

    def eval_models(self, trained: surgery.DynamicTeacher | None = None) -> dict[str, nn.Module]:
        # The extracted student equals the student view exactly (same weights, same BN stats)
        # and is a plain zoo model, so feature hooks and probes treat it like any student.
        dt = self.dt if trained is None else trained
        models = {"student": surgery.extract_student(dt), "dynamic_teacher": dt.wide}
        if self.teacher is not None and trained is None:
            models["teacher"] = self.teacher
        return models

    def deployable_student(self, trained: surgery.DynamicTeacher | None = None) -> nn.Module:
        return surgery.extract_student(self.dt if trained is None else trained)

    def sync_bn_modules(self) -> list[nn.Module]:
        # T_d's BatchNorms only: the student view runs its template through functional_call
        # with CBR parameters, which SyncBatchNorm's converter cannot re-wrap; its statistics
        # stay per process (documented in the README's multi-GPU notes).
        return [self.dt.wide]


def expand_student(cfg, student: nn.Module, example_input=None) -> surgery.DynamicTeacher:
    return surgery.expand(student, ratio=cfg.ratio, branches=cfg.gpd_branches(), noise=cfg.gpd_noise(),
                          scale_init=resolved_scale_init(cfg), student_grad=cfg.student_grad,
                          convention=cfg.widening, branch_bias=cfg.branch_bias, example_input=example_input)


def resolved_scale_init(cfg) -> str:
    """``auto``: the reference's per-setting init -- one/zero when fine-tuning a pre-trained
    student (``init=``), the reference scale vector otherwise."""
    if cfg.scale_init != "auto":
        return cfg.scale_init
    return "one_zero" if cfg.init else "reference"


@METHODS.register("gpd", needs_teacher=None)  # needs one unless base=none
def build_gpd(cfg, student, teacher, example_input=None):
    base = cfg.resolved_base
    criterion = BASE_CRITERIA[base](cfg) if base != "none" else None
    dt = expand_student(cfg, student, example_input)
    return GPD(dt, teacher if base != "none" else None, criterion, cfg.ce_weight,
               cfg.gpd_lambda, cfg.sce_eps, cfg.dt_base_weight)
