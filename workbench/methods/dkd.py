"""``dkd``: Decoupled KD (Zhao et al., CVPR 2022). loss = CE + w(epoch) * (alpha * TCKD +
beta * NCKD) * T^2 with w rising linearly to 1 over ``warmup`` epochs (w = min(epoch/warmup, 1),
epochs 1-based, as in mdistiller: its ImageNet configs' ``WARMUP: 1`` is therefore the same as
our 0 = no warm-up); defaults alpha 1, beta 8, T 4, warm-up 20 -- 0 under CTKD, whose public
code's DKD loss has no warm-up. DKD's target-class term needs class indices: with soft targets
(mixup/cutmix) it uses the most probable class."""
from ..keys import opt
from ..losses import dkd_loss
from .base import Criterion, Distiller, hard_labels
from .spec import build_criterion, method

#: mdistiller's CIFAR DKD.WARMUP; the public CTKD code's DKD has none
DKD_WARMUP_EPOCHS = 20.0
CTKD_DKD_WARMUP_EPOCHS = 0.0


class DKDLoss(Criterion):
    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, warmup=DKD_WARMUP_EPOCHS):
        super().__init__(temperature)
        self.alpha, self.beta, self.warmup = alpha, beta, warmup

    def warmup_factor(self) -> float:
        return min(self.epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def terms(self, s, t, y):
        loss = dkd_loss(s.logits, t.logits, hard_labels(y), self.alpha, self.beta, self.temperature())
        return {"loss_dkd": self.warmup_factor() * loss}


KEYS = {
    "dkd_alpha": opt(1.0, "DKD: TCKD weight", low=0.0),
    "dkd_beta": opt(8.0, "DKD: NCKD weight", low=0.0),
    "dkd_T": opt(4.0, "DKD temperature", low=1e-6),
    "dkd_warmup": opt(None, "DKD: epochs of linear warm-up of the distillation weight (None = 20 as in "
                      "mdistiller's CIFAR DKD, 0 under CTKD as in the public CTKD code; 0 = none)",
                      low=0.0, kind="Optional[float]"),
}


def dkd_warmup(cfg) -> float:
    """DKD warm-up epochs in effect (0 = none)."""
    if cfg.dkd_warmup is not None:
        return cfg.dkd_warmup
    return CTKD_DKD_WARMUP_EPOCHS if cfg.ctkd else DKD_WARMUP_EPOCHS


def dkd_criterion(ctx, model=None) -> DKDLoss:
    cfg = ctx.cfg
    return DKDLoss(cfg.dkd_alpha, cfg.dkd_beta, cfg.dkd_T, dkd_warmup(cfg))


@method("dkd", summary="Decoupled KD (Zhao et al. 2022): alpha TCKD + beta NCKD, 20-epoch warm-up",
        keys=KEYS, criterion=dkd_criterion)
def build_dkd(ctx):
    return Distiller(ctx.student, ctx.teacher, build_criterion("dkd", ctx, ctx.student), ctx.cfg.ce_weight)
