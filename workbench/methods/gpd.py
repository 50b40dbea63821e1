"""``gpd``: Gap Preserving Distillation (Guo et al., ICLR 2025), spec §4.

The trained module is the dynamic teacher T_d = IR(student) (``workbench.gpd.expand``); the
student S is its CBR view and shares every parameter (hard strategy). Per batch (x, y):

    z_T = T_s(x) (eval, no grad);   z_D, z_S = T_d(x), S_view(x)   (one call: view="both")
    L_D = CE(z_D, y) + w_dt * L_base(z_D, z_T)
    L_S = CE(z_S, y) + L_base(z_S, z_T) + lambda * SCE(z_S, sg(z_D))

and one optimizer step on T_d's parameters for L_D + L_S. L_base is the base method's loss
(any method with a criterion: KD, DKD, optionally with CTKD's learnable temperature, or a
feature loss such as ReviewKD or FitNet; ``base=none`` drops it: GPD from scratch, no static
teacher); CE weights are the base method's (KD 0.1, DKD 1.0, none 1.0), so "GPD on X" is X on
both views plus the SCE term. A base that reads features gets one instance per view, its
modules (ABF, regressors) sized for that view's widths (T_d's are r times the student's), as
the GPD paper's ReviewKD runs; the features are tapped by hooks on T_d and on the student
view's template. SCE: eps 0.1, T 1, lambda 3 (reference).
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

from dataclasses import replace

import torch
from torch import nn

from .. import gpd as surgery
from ..keys import opt
from ..losses import sce_loss
from ..models.hooks import FeatureTap
from .base import Distiller, Outputs, feature_names
from ..engine.roles import register_role
from .spec import ANY_BASE, NO_BASE, TEACHER_BY_BASE, build_criterion, method

#: the dynamic teacher, evaluated beside the student (between it and the static teacher)
DYNAMIC_TEACHER = register_role("dynamic_teacher", "T_d", 50, "GPD's dynamic teacher").name

DT_SUFFIX = "_dt"
#: the GPD reference code's model-EMA decay per step (timm ModelEmaV2, every CNN run), its
#: gradient-norm clip (train_dkd.py --clip-grad-norm 5) and precision (no AMP)
GPD_EMA_DECAY = 0.99996
GPD_GRAD_CLIP = 5.0
GPD_AMP = "off"


class GPD(Distiller):
    """``criterion``: the base loss on the student view; ``dt_criterion``: on T_d's view -- the
    same object unless the base reads features (then each is built for its view's widths)."""

    def __init__(self, dt: surgery.DynamicTeacher, teacher, criterion, ce_weight=None,
                 lam: float = 3.0, eps: float = 0.1, dt_base_weight: float = 1.0, dt_criterion=None):
        super().__init__(dt, teacher, criterion, ce_weight)
        self.dt_criterion = dt_criterion if dt_criterion is not criterion else None
        self.lam, self.eps, self.dt_base_weight = lam, eps, dt_base_weight

    @property
    def dt(self) -> surgery.DynamicTeacher:
        return self.student  # the trained module; the student is its view

    def criteria(self) -> list:
        return [c for c in (self.criterion, self.dt_criterion) if c is not None]

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None,
                teacher_logits: torch.Tensor | None = None):
        t = self.teacher_outputs(x, teacher_logits)
        dt, on_s = self.dt, self.criterion
        on_d = self.dt_criterion or self.criterion
        names_d = feature_names(dt.wide, on_d.student_features if on_d is not None else ())
        own = on_s.student_features if on_s is not None else ()
        names_s = feature_names(dt.student_template, dict.fromkeys((*own, *self.aux_terms.features())))
        with FeatureTap(dt.wide, names_d, detach=False) as tap_d, \
                FeatureTap(dt.student_template, names_s, detach=False) as tap_s:
            zd, zs = dt(x, view="both")
        d = Outputs(zd, {n: tap_d[n] for n in names_d})
        s = Outputs(zs, {n: tap_s[n] for n in names_s})
        dt_terms = self.loss_terms(d, t, y, on_d)
        losses = {"loss_ce" + DT_SUFFIX: dt_terms.pop("loss_ce")}
        losses.update({k + DT_SUFFIX: self.dt_base_weight * v for k, v in dt_terms.items()})
        losses.update(self.loss_terms(s, t, y, on_s))
        losses["loss_sce"] = self.lam * sce_loss(zs, zd.detach(), self.eps)
        losses.update(self.own_losses(s, x, y, index))  # own terms (CTC) on the student view
        return zs, losses

    def eval_models(self, trained: surgery.DynamicTeacher | None = None) -> dict[str, nn.Module]:
        # The extracted student equals the student view exactly (same weights, same BN stats)
        # and is a plain zoo model, so feature hooks and probes treat it like any student.
        dt = self.dt if trained is None else trained
        models = {"student": surgery.extract_student(dt), DYNAMIC_TEACHER: dt.wide}
        if self.teacher_ready() and trained is None:
            models["teacher"] = self.teacher
        return models

    def deployable_student(self, trained: surgery.DynamicTeacher | None = None) -> nn.Module:
        return surgery.extract_student(self.dt if trained is None else trained)

    #: multi-branch convs fold their kernels once per evaluation pass (not once per batch)
    eval_context = staticmethod(surgery.fold_once)

    def sync_bn_modules(self) -> list[nn.Module]:
        # T_d's BatchNorms only: the student view runs its template through functional_call
        # with CBR parameters, which SyncBatchNorm's converter cannot re-wrap; its statistics
        # stay per process (documented in the README's multi-GPU notes).
        return [self.dt.wide]


KEYS = {
    "ratio": opt(2.0, "GPD: channel expansion ratio r of the dynamic teacher", low=1.0),
    "branches": opt("default", "GPD: extra conv branches: 'default', a count (0 = channel-only), "
                    "or a comma list of branch kinds", numbers_as_text=True, list_value=True),
    "noise": opt(-1.0, "GPD: std of the symmetry-breaking noise on copied weights (-1 = default)"),
    "scale_init": opt("auto", "GPD: branch scale init: auto (the reference's per-setting choice: "
                      "one_zero when the student starts from init= (a checkpoint or inheritance), reference "
                      "otherwise), reference "
                      "(origin/avg/prior/1x1-kxk/kxk/dws = 0.25/0.25/0/0.5/0.05/0.5), one_zero",
                      ("auto", "reference", "one_zero")),
    "widening": opt("reference", "GPD: IR convention: reference (T_d features = student features / r, "
                    "the official code's parametrization and step sizes) or full_scale (copies)",
                    ("reference", "full_scale")),
    "branch_bias": opt(True, "GPD: a zero-initialised learnable bias on every branched conv (reference)"),
    "student_grad": opt("faithful", "GPD: gradient of the student loss into shared slices",
                        ("faithful", "compensated")),
    "gpd_lambda": opt(3.0, "GPD: weight of SCE(student, sg(dynamic teacher))", low=0.0),
    "sce_eps": opt(0.1, "GPD: label-smoothing eps of the SCE term", low=0.0, high=1.0),
    "dt_base_weight": opt(1.0, "GPD: weight of L_base(T_d, T_s) in the dynamic teacher's loss "
                          "(gap-control knob; 1 = paper)", low=0.0),
}


def gpd_branches(cfg) -> tuple[str, ...]:
    """``branches`` as the tuple of kinds :func:`workbench.gpd.expand` takes."""
    from ..gpd.branches import DEFAULT_BRANCHES, resolve_branches

    text = cfg.branches.strip()
    if text == "default":
        return tuple(DEFAULT_BRANCHES)
    if text.lstrip("+-").isdigit():
        if int(text) < 0:
            raise ValueError(f"{text!r} is a negative count; use 'default', a count >= 0 (0 = channel-only) "
                             f"or a comma list of branch kinds")
        return resolve_branches(int(text))
    return resolve_branches(tuple(k.strip() for k in text.split(",") if k.strip()))


NOISE_DEFAULT = -1.0  # the ``noise`` value meaning "the reference's std" (surgery.DEFAULT_NOISE)
#: ratios tried to tell which ones widen a student that ``ratio`` cannot (cheap: a plan per ratio)
RATIO_CANDIDATES = (1.25, 1.5, 2.0, 3.0, 4.0)


def gpd_noise(cfg) -> float:
    return surgery.DEFAULT_NOISE if cfg.noise == NOISE_DEFAULT else cfg.noise


def _check_student(cfg, student: nn.Module, example_input, train_size) -> None:
    """The dynamic teacher can be made from this student at ``ratio``; if not, one line naming the
    layer and the ratios that do work (before any folder is made)."""
    from ..gpd.expand import check_widening
    from ..gpd.plan import UnsupportedLayerError

    def widens(ratio: float) -> bool:
        try:
            check_widening(student, ratio, cfg.widening, example_input)
        except UnsupportedLayerError:
            return False
        return True

    try:
        check_widening(student, cfg.ratio, cfg.widening, example_input)
    except UnsupportedLayerError as e:
        works = [f"{r:g}" for r in RATIO_CANDIDATES if r != cfg.ratio and widens(r)]
        tried = ", ".join(f"{r:g}" for r in RATIO_CANDIDATES)
        raise ValueError(f"ratio: GPD cannot widen {cfg.student} by {cfg.ratio:g}: {e}; ratios that work for "
                         f"{cfg.student}: {', '.join(works) if works else 'none'} (of {tried} tried)") from None


def _validate(cfg) -> None:
    if cfg.noise < 0 and cfg.noise != NOISE_DEFAULT:
        raise ValueError(f"noise: {cfg.noise:g} is not a standard deviation; use {NOISE_DEFAULT:g} (the reference's "
                         f"{surgery.DEFAULT_NOISE:g}) or a value >= 0")
    try:
        gpd_branches(cfg)
    except ValueError as e:
        raise ValueError(f"branches: {e}") from None
    if cfg.sync_bn and cfg.widening == "reference":
        # PyTorch's SyncBatchNorm conversion builds plain BatchNorms: it drops the copy-count
        # scaling of T_d's BNs (count-scaled twins and scale hooks), so T_d would no longer be an
        # exact widening of the student
        raise ValueError("sync_bn: not supported with gpd widening=reference (SyncBatchNorm would drop the "
                         "copy-count scaling of the dynamic teacher's BatchNorms); use sync_bn=false "
                         "(per-GPU statistics) or widening=full_scale")


def _size_factor(cfg) -> float:
    """T_d holds ~r^2 x (1 + branches) the student's parameters."""
    return cfg.ratio**2 * (1 + len(gpd_branches(cfg)))


def expand_student(cfg, student: nn.Module, example_input=None) -> surgery.DynamicTeacher:
    return surgery.expand(student, ratio=cfg.ratio, branches=gpd_branches(cfg), noise=gpd_noise(cfg),
                          scale_init=resolved_scale_init(cfg), student_grad=cfg.student_grad,
                          convention=cfg.widening, branch_bias=cfg.branch_bias, example_input=example_input)


def resolved_scale_init(cfg) -> str:
    """``auto``: the reference's per-setting init -- one/zero when fine-tuning a pre-trained
    student (``init=``: a checkpoint, or weight inheritance, so T_d starts as the inherited
    student), the reference scale vector otherwise."""
    if cfg.scale_init != "auto":
        return cfg.scale_init
    return "one_zero" if cfg.init else "reference"


def _resolve(cfg) -> dict:
    """The effective values of gpd's keys that default to "the reference's choice"."""
    return {"scale_init": resolved_scale_init(cfg), "noise": gpd_noise(cfg), "branches": ",".join(gpd_branches(cfg))}


@method("gpd", summary="Gap Preserving Distillation (Guo et al. 2025): dynamic teacher by IR, student by CBR",
        teacher=TEACHER_BY_BASE, bases=("dkd", ANY_BASE, NO_BASE), keys=KEYS, validate=_validate,
        check_build=_check_student,
        defaults={"grad_clip": GPD_GRAD_CLIP, "amp": GPD_AMP, "ema_decay": GPD_EMA_DECAY},
        size_factor=_size_factor, resolve=_resolve)
def build_gpd(ctx):
    cfg = ctx.cfg
    base = cfg.resolved_base
    dt = expand_student(cfg, ctx.student, ctx.example_input)
    # the student view's template has no parameters of its own: it runs through T_d
    ctx = replace(ctx, calls={**ctx.calls, id(dt.student_template): (dt, lambda x: dt(x, view="student"))})
    criterion = build_criterion(base, ctx, dt.student_template)
    dt_criterion = criterion
    if criterion is not None and criterion.student_features:  # sized for T_d's widths
        dt_criterion = build_criterion(base, ctx, dt.wide)
    return GPD(dt, ctx.teacher if base != NO_BASE else None, criterion, cfg.ce_weight,
               cfg.gpd_lambda, cfg.sce_eps, cfg.dt_base_weight, dt_criterion)
