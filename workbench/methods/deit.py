"""``deit``: DeiT's distillation through a distillation token (Touvron et al., ICML 2021), the
baseline CSKD is compared with.

The student is a ViT with a distillation token (``vit_nano_dist``, ``vit_tiny_dist``,
``vit_small_dist``: ``models.vit.DistilledViT``). Per batch (x, y), with the static teacher's
logits z_T = T_s(x) (eval mode, no gradient) and the student's two heads from one forward
(``forward_parts``: ``cls`` on the cls token, ``dist`` on the distillation token):

    L = (1 - alpha) * CE(cls, y) + alpha * CE(dist, argmax z_T)                  deit_type=hard
    L = (1 - alpha) * CE(cls, y) + alpha * T^2 * sum KL(p_T^T || p_dist^T) / (N K)  deit_type=soft

Inference (and every evaluation, probe and ``student.pt``): the mean of the cls and dist heads'
logits (``vit_eval_heads=auto``). Loss terms: ``loss_ce`` (the cls head) and ``loss_deit``.

Follows the public DeiT code (facebookresearch/deit ``losses.DistillationLoss`` and its distilled
ViT) exactly in: which head gets which target, alpha 0.5, tau 1, the soft variant's
normalisation (summed KL / number of logits), the teacher seeing the same (mixed) batch, and
inference = (cls + dist) / 2. Ours: the small ViTs and any zoo teacher (the paper's teacher is a
RegNetY-16GF); under ``mix=mixup|cutmix`` the cls head's CE takes the soft targets (DeiT: timm's
Mixup, which alternates mixup and cutmix, plus label smoothing -- our batch transforms draw one
kind per run and have no smoothing). ``ce_weight``, when set, replaces 1 - alpha.

Not a base loss for other methods: its loss reads the distillation token's head, which GPD's
dynamic-teacher views (and CTKD's temperature) do not see; ``base=deit`` is refused with that
reason. (IR/CBR themselves widen and extract a distillation-token ViT exactly; GPD with
``base=kd`` on such a student distils its averaged prediction.) For the same reason the
add-ons that hook into the base forward are refused with deit/cskd: CTKD's temperature and CTC's
terms (``ctc_alpha > 0``; ``TokenDistiller.forward`` runs neither, and the trainer's call with
batch indices used to fail mid-run).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..keys import opt
from ..losses import deit_hard_loss, deit_soft_loss
from ..models import vit
from .base import Distiller
from .spec import method

TOKEN_LOSSES = ("hard", "soft")
DEIT_ALPHA = 0.5  # facebookresearch/deit main.py --distillation-alpha
DEIT_TAU = 1.0  # facebookresearch/deit main.py --distillation-tau
AUTO_HEADS = "auto"
NOT_A_BASE = ("its loss reads a ViT's distillation-token and patch outputs, which GPD's dynamic-teacher views "
              "and CTKD's temperature do not see; train method={name} on its own")

KEYS = {
    "deit_type": opt("hard", "DeiT/CSKD: loss on the distillation token: hard (CE against the teacher's top "
                     "class, DeiT's best) or soft (KL at deit_tau, DeiT's normalisation)", TOKEN_LOSSES),
    "deit_alpha": opt(DEIT_ALPHA, "DeiT/CSKD: weight alpha of the distillation-token loss; the cls head's CE "
                      "gets 1 - alpha unless ce_weight is set (DeiT: 0.5)", low=0.0, high=1.0),
    "deit_tau": opt(DEIT_TAU, "DeiT/CSKD: temperature of the soft variants (DeiT: 1)", low=1e-6),
    "vit_eval_heads": opt(AUTO_HEADS, "DeiT/CSKD: heads whose logits the student's prediction averages: auto "
                          "(deit: cls,dist as DeiT; cskd: cls,dist,dense as CSKD) or a comma list of "
                          f"{', '.join(vit.EVAL_HEADS)}", list_value=True),
}


def eval_heads(cfg, default: tuple[str, ...]) -> tuple[str, ...]:
    """``vit_eval_heads`` as a checked tuple (``auto``: ``default``, the method's)."""
    text = cfg.vit_eval_heads.strip()
    if text == AUTO_HEADS:
        return default
    return vit.check_eval_heads(tuple(h.strip() for h in text.split(",") if h.strip()))


def check_token_student(cfg) -> None:
    """The checks every distillation-token method shares (one-line ``ValueError``s)."""
    from .. import models

    if cfg.student in models.MODELS and not models.has_distillation_token(cfg.student):
        raise ValueError(f"student: method {cfg.method} trains a ViT with a distillation token "
                         f"({', '.join(models.with_distillation_token())}); got student={cfg.student!r}")
    if cfg.ctkd:
        raise ValueError(f"ctkd: CTKD's learnable temperature is not wired into method {cfg.method}'s "
                         f"distillation-token loss; use ctkd=false")
    from . import ctc

    if ctc.active(cfg):
        raise ValueError(f"ctc_alpha: CTC's add-on terms are not wired into method {cfg.method}'s distillation-token "
                         f"forward (they would never run); leave ctc_alpha unset or 0")
    try:
        eval_heads(cfg, vit.DEIT_EVAL_HEADS)
    except ValueError as e:
        raise ValueError(f"vit_eval_heads: {e}") from None


class TokenDistiller(Distiller):
    """A distillation-token ViT student: CE on the cls head plus DeiT's loss on the dist head, one
    forward (``forward_parts``) per batch; subclasses add terms on the patch tokens
    (:meth:`extra_terms`) and richer teacher targets (:meth:`teacher_targets`). Returns the
    averaged prediction (the student's ``forward``) as the batch's logits."""

    def __init__(self, student, teacher, alpha: float = DEIT_ALPHA, token_loss: str = "hard",
                 tau: float = DEIT_TAU, ce_weight: float | None = None):
        if not isinstance(student, vit.DistilledViT):
            raise ValueError(f"{type(self).__name__} needs a ViT with a distillation token "
                             f"(vit.DistilledViT), got {type(student).__name__}")
        if token_loss not in TOKEN_LOSSES:
            raise ValueError(f"unknown distillation-token loss {token_loss!r}; valid choices: {', '.join(TOKEN_LOSSES)}")
        super().__init__(student, teacher, None, 1.0 - alpha if ce_weight is None else ce_weight)
        self.alpha, self.token_loss, self.tau = float(alpha), token_loss, float(tau)
        self.epoch, self.epochs = 1, 1

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        self.epoch, self.epochs = epoch, epochs

    def teacher_targets(self, x: torch.Tensor, cached_logits=None) -> dict[str, torch.Tensor]:
        """``{"logits": z_T}`` (no grad; ``cached_logits`` when the engine's teacher-logit cache serves them)."""
        return {"logits": self.teacher_outputs(x, cached_logits).logits}

    def token_term(self, dist_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if self.token_loss == "hard":
            return deit_hard_loss(dist_logits, teacher_logits)
        return deit_soft_loss(dist_logits, teacher_logits, self.tau)

    def extra_terms(self, parts: dict, targets: dict, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def forward(self, x: torch.Tensor, y: torch.Tensor, index=None, teacher_logits=None):
        targets = self.teacher_targets(x, teacher_logits)
        parts = self.student.forward_parts(x)
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(parts["cls"], y),
                  "loss_deit": self.alpha * self.token_term(parts["dist"], targets["logits"])}
        losses.update(self.extra_terms(parts, targets, y))
        return self.student.combine(parts), losses


def _student_options(cfg) -> dict:
    return {"eval_heads": eval_heads(cfg, vit.DEIT_EVAL_HEADS)}


@method("deit", summary="DeiT (Touvron et al. 2021): hard distillation of a ViT's distillation token",
        keys=KEYS, validate=check_token_student, student_options=_student_options,
        not_a_base=NOT_A_BASE.format(name="deit"))
def build_deit(ctx):
    cfg = ctx.cfg
    return TokenDistiller(ctx.student, ctx.teacher, cfg.deit_alpha, cfg.deit_type, cfg.deit_tau, cfg.ce_weight)
