"""``cskd``: Cumulative Spatial Knowledge Distillation, CNN -> ViT (Zhao et al., ICCV 2023).

DeiT's distillation (``methods.deit``) plus a per-patch loss. The CNN teacher's *dense logits*
(its own classifier at every position of the map its global pooling averages,
``models.dense.dense_logits``) are fused with its global logits, cumulatively moving from local
to global knowledge over training:

    target_e = d_e * dense + (1 - d_e) * global,   d_e = 1 - e / E  (linear; squared: (1 - e/E)^2,
                                                   cosine: cos(pi/2 * e/E)), e = epoch - 1 in 0..E-1

The student's distillation head is applied to every patch token (``patch_logits``), laid out on
its patch grid and average-pooled onto the teacher's grid (``losses_spatial.align_grids``; CIFAR
32 px with patch 4 is an 8x8 grid, resnet32x4's last map, so nothing is pooled; Fashion-MNIST
28 px: patch 4 gives resnet20's 7x7, the default patch 2 gives 14x14, pooled 2x2 as the CSKD
code pools DeiT's 14x14 onto RegNet's 7x7). Then

    L = (1 - alpha) CE(cls, y) + alpha CE(dist, argmax z_T) + w * mean_positions CE(patch, argmax target_e)

(``cskd_type=hard``; ``soft``: KL at ``deit_tau`` summed over classes and positions, batch mean,
as the public code normalises it; ``deit_type`` picks DeiT's hard/soft term independently).
Loss terms: ``loss_ce``, ``loss_deit``, ``loss_cskd``; the train record carries ``dense_weight``
(d_e of the epoch). Inference: the mean of the cls head, the dist head and the dense prediction
(the dist head on every patch token, averaged over the patches).

Follows the public code (Zhao et al., github Zzzzz1/CSKD: ``cskd/cskd.py``, its distilled ViT)
exactly in: alpha 0.5, weight 1, tau 1, the three schedules, d_e per epoch from the 0-based epoch
(so the last epoch still has d = 1/E), hard targets = argmax of the fused logits per position,
the soft variant's normalisation, teacher global logits = spatial mean of its dense logits, and
the three-way averaged inference. Ours: grid alignment in both directions (the teacher's map is
pooled when it is finer than the student's grid; the code hard-codes 14x14 -> 7x7), any zoo CNN
teacher, the small ViTs. Needs a CNN teacher with global average pooling (a ViT teacher has no
dense map); not usable with ``cache_teacher`` (it caches logits only) nor as GPD's base (see
``methods.deit``).
"""
from __future__ import annotations

import torch

from ..config import opt
from ..losses_spatial import (FUSION_SCHEDULES, align_grids, dense_hard_loss, dense_soft_loss, dense_weight,
                              fuse_targets, tokens_to_grid)
from ..models import vit
from ..models.dense import dense_logits, pooled_map_site
from .deit import DEIT_ALPHA, DEIT_TAU, NOT_A_BASE, TokenDistiller, check_token_student, eval_heads
from .spec import method

DENSE_LOSSES = ("hard", "soft")
CSKD_WEIGHT = 1.0  # public CSKD configs: cksd_loss_weight = 1.0

KEYS = {
    "cskd_type": opt("hard", "CSKD: per-patch loss: hard (CE against the fused target's top class per "
                     "position) or soft (KL at deit_tau summed over positions, as the public code)", DENSE_LOSSES),
    "cskd_weight": opt(CSKD_WEIGHT, "CSKD: weight of the per-patch loss (public code: 1)", low=0.0),
    "cskd_schedule": opt("linear", "CSKD: how the dense share d_e of the target falls from 1 to 0: linear 1 - e/E, "
                         "squared (1 - e/E)^2, cosine cos(pi/2 e/E)", FUSION_SCHEDULES),
}


class CSKD(TokenDistiller):
    def __init__(self, student, teacher, alpha: float = DEIT_ALPHA, token_loss: str = "hard",
                 tau: float = DEIT_TAU, ce_weight: float | None = None, dense_loss: str = "hard",
                 weight: float = CSKD_WEIGHT, schedule: str = "linear"):
        super().__init__(student, teacher, alpha, token_loss, tau, ce_weight)
        if dense_loss not in DENSE_LOSSES:
            raise ValueError(f"unknown per-patch loss {dense_loss!r}; valid choices: {', '.join(DENSE_LOSSES)}")
        if schedule not in FUSION_SCHEDULES:
            raise ValueError(f"unknown fusion schedule {schedule!r}; valid choices: {', '.join(FUSION_SCHEDULES)}")
        try:
            pooled_map_site(teacher)
        except ValueError as e:
            raise ValueError(f"cskd: the teacher {type(teacher).__name__} has no dense logits ({e})") from None
        self.dense_loss, self.weight, self.fusion_schedule = dense_loss, float(weight), schedule

    def dense_share(self) -> float:
        """d_e of the current epoch (the public code's 0-based epoch over the epoch count)."""
        return dense_weight(self.epoch - 1, self.epochs, self.fusion_schedule)

    def teacher_targets(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            logits, dense = dense_logits(self.teacher, x)
        return {"logits": logits, "dense": dense}

    def fused_target(self, student_map: torch.Tensor, targets: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(student map, fused target), both on the common grid."""
        s_map, t_map = align_grids(student_map, targets["dense"])
        return s_map, fuse_targets(t_map, targets["logits"], self.dense_share())

    def extra_terms(self, parts: dict, targets: dict, y: torch.Tensor) -> dict[str, torch.Tensor]:
        s_map = tokens_to_grid(self.student.patch_logits(parts["patches"]))
        s_map, target = self.fused_target(s_map, targets)
        if self.dense_loss == "hard":
            loss = dense_hard_loss(s_map, target)
        else:
            loss = dense_soft_loss(s_map, target, self.tau)
        return {"loss_cskd": self.weight * loss}

    def scalars(self) -> dict[str, float]:
        return {"dense_weight": self.dense_share()}


def _validate(cfg) -> None:
    from .. import models, teacher_refs

    check_token_student(cfg)
    if cfg.cache_teacher:
        raise ValueError("cache_teacher: cskd needs the teacher's dense logits at every step; the cache "
                         "holds global logits only (use cache_teacher=false)")
    arch = teacher_refs.arch(cfg.teacher) if teacher_refs.is_named(cfg.teacher) else cfg.teacher
    if arch in models.MODELS and models.family(arch) == "vit":
        raise ValueError(f"teacher: cskd distils a CNN teacher's dense logits (its classifier at every "
                         f"position of its last map); {arch!r} is a ViT (use method=deit)")


def _student_options(cfg) -> dict:
    return {"eval_heads": eval_heads(cfg, vit.CSKD_EVAL_HEADS)}


@method("cskd", summary="CSKD (Zhao et al. 2023): DeiT + per-patch loss against cumulatively fused dense->global "
        "teacher logits", keys=KEYS, validate=_validate, student_options=_student_options,
        not_a_base=NOT_A_BASE.format(name="cskd"))
def build_cskd(ctx):
    cfg = ctx.cfg
    return CSKD(ctx.student, ctx.teacher, cfg.deit_alpha, cfg.deit_type, cfg.deit_tau, cfg.ce_weight,
                cfg.cskd_type, cfg.cskd_weight, cfg.cskd_schedule)
