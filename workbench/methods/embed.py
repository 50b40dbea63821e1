"""``embed``: DisCo-style embedding distillation -- a *supervised adaptation* of DisCo (Gao et
al., ECCV 2022, "DisCo: Remedy Self-supervised Learning on Lightweight Models with Distilled
Contrastive Learning").

    L = CE (+ the logit loss ``embed_base``: kd or dkd) + w * mean_i || norm(P(f_s,i)) - norm(f_t,i) ||^2

f_s, f_t: the student's and the teacher's penultimate features (d_s, d_t wide); P: an MLP
d_s -> h -> d_t (Linear, ReLU, Linear: the MoCo-v2 projection head layout DisCo's students
use) trained with the student and dropped after training (never in ``student.pt``); norm: L2
normalisation; the squared distance is summed over the d_t dimensions and averaged over the
batch (for unit vectors it is 2 - 2 cos, in [0, 4]). ``embed_hidden`` = h is DisCo's
"distilling bottleneck" knob: a narrow hidden layer limits what the student can take from the
teacher, DisCo widens it to 2048 (the default here).

From DisCo (its public code, moco/builder.py + main_moco_distill.py): the distilled quantity is
the L2-normalised embedding, matched by a squared error; the projection head layout; the head
is discarded for deployment; the 2048 hidden width. Ours (adaptation, not DisCo): supervised
training with CE (DisCo trains MoCo-v2 self-supervised, the teacher's embedding is its own
projection head's output, not the penultimate feature); the teacher side has no head (we match
the teacher's penultimate feature directly); the squared error is summed over dimensions (DisCo's
``nn.MSELoss`` averages over them too: our w = 1 is its weight d_t); the optional KD/DKD term.
DisCo's published numbers (EfficientNet-B0, ImageNet linear evaluation) are not claims of this
method. Usable as GPD's base (``method=gpd base=embed``): each view gets its own MLP, sized for
its width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..keys import opt
from ..models.hooks import PENULTIMATE
from .base import Criterion, Distiller, feature_shapes
from .spec import build_criterion, method

DISCO_HIDDEN = 2048  # DisCo's widened student head (the bottleneck fix)
DEFAULT_WEIGHT = 1.0
LOGIT_BASES = ("none", "kd", "dkd")


class ProjectionMLP(nn.Sequential):
    """d_in -> hidden -> d_out: Linear, ReLU, Linear (MoCo-v2 / DisCo head layout)."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_out))


def embedding_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_i || norm(projected_i) - norm(target_i) ||^2 (float32)."""
    a, b = F.normalize(projected.float(), dim=1), F.normalize(target.float(), dim=1)
    return (a - b).pow(2).sum(1).mean()


class EmbedLoss(Criterion):
    """The embedding term plus an optional logit loss (``logit``: a KD/DKD criterion or None)."""

    student_features = teacher_features = (PENULTIMATE,)

    def __init__(self, s_dim: int, t_dim: int, hidden: int = DISCO_HIDDEN, weight: float = DEFAULT_WEIGHT,
                 logit: Criterion | None = None):
        super().__init__(None)
        self.projector = ProjectionMLP(s_dim, hidden, t_dim)
        self.weight, self.logit = float(weight), logit
        if logit is not None:
            self.default_ce_weight = logit.default_ce_weight  # KD's 0.1 with embed_base=kd

    def temperature_owner(self) -> Criterion:
        return self.logit if self.logit is not None else self  # what CTKD makes learnable

    def terms(self, s, t, y):
        out = self.logit.terms(s, t, y) if self.logit is not None else {}
        out["loss_embed"] = self.weight * embedding_loss(self.projector(s.features[PENULTIMATE]),
                                                         t.features[PENULTIMATE])
        return out


KEYS = {
    "embed_hidden": opt(DISCO_HIDDEN, "embed: hidden width h of the student projector d_s -> h -> d_t "
                        "(DisCo's distilling-bottleneck knob; DisCo widens it to 2048)", low=1),
    "embed_weight": opt(DEFAULT_WEIGHT, "embed: weight w of mean ||norm(P(f_s)) - norm(f_t)||^2", low=0.0),
    "embed_base": opt("none", "embed: logit loss added to the embedding term (none, kd, dkd: with their own keys)",
                      LOGIT_BASES),
}


def _check(cfg) -> None:
    if cfg.ctkd and cfg.embed_base == "none":
        raise ValueError("ctkd: embed with embed_base=none has no temperature to learn; use embed_base=kd or dkd")


def embed_criterion(ctx, model) -> EmbedLoss:
    """``model``: the network whose features are projected (the student, or a view of GPD's)."""
    cfg = ctx.cfg
    s_dim = feature_shapes(ctx, model, [PENULTIMATE])[PENULTIMATE][1]
    t_dim = feature_shapes(ctx, ctx.teacher, [PENULTIMATE])[PENULTIMATE][1]
    logit = build_criterion(cfg.embed_base, ctx, model)
    return EmbedLoss(s_dim, t_dim, cfg.embed_hidden, cfg.embed_weight, logit)


@method("embed", summary="DisCo-style embedding distillation (supervised adaptation): MLP-projected, "
        "normalised penultimate features", keys=KEYS, criterion=embed_criterion, validate=_check)
def build_embed(ctx):
    return Distiller(ctx.student, ctx.teacher, build_criterion("embed", ctx, ctx.student), ctx.cfg.ce_weight)
