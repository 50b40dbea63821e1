"""``dkd``: Decoupled KD (Zhao et al., CVPR 2022). loss = CE + w(epoch) * (alpha * TCKD +
beta * NCKD) * T^2 with w rising linearly to 1 over ``warmup`` epochs (w = min(epoch/warmup, 1),
epochs 1-based, as in mdistiller: its ImageNet configs' ``WARMUP: 1`` is therefore the same as
our 0 = no warm-up); defaults alpha 1, beta 8, T 4, warm-up 20 (0 under CTKD, see
``RunConfig.resolved_dkd_warmup``)."""
from ..config import DKD_WARMUP_EPOCHS
from ..losses import dkd_loss
from .base import METHODS, Criterion, Distiller


class DKDLoss(Criterion):
    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, warmup=DKD_WARMUP_EPOCHS):
        super().__init__(temperature)
        self.alpha, self.beta, self.warmup = alpha, beta, warmup

    def warmup_factor(self) -> float:
        return min(self.epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def terms(self, zs, zt, y):
        loss = dkd_loss(zs, zt, y, self.alpha, self.beta, self.temperature())
        return {"loss_dkd": self.warmup_factor() * loss}


def dkd_criterion(cfg) -> DKDLoss:
    return DKDLoss(cfg.dkd_alpha, cfg.dkd_beta, cfg.dkd_T, cfg.resolved_dkd_warmup)


@METHODS.register("dkd", needs_teacher=True)
def build_dkd(cfg, student, teacher):
    return Distiller(student, teacher, dkd_criterion(cfg), cfg.ce_weight)
