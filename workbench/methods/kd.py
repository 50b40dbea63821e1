"""``kd``: Hinton et al. 2015. loss = ce_weight * CE + kd_weight * T^2 * KL(p_t^T || p_s^T);
defaults 0.1 / 0.9 / T=4 as in mdistiller."""
from ..losses import kd_loss
from .base import METHODS, Criterion, Distiller

DEFAULT_CE_WEIGHT, DEFAULT_KD_WEIGHT = 0.1, 0.9


class KDLoss(Criterion):
    default_ce_weight = DEFAULT_CE_WEIGHT

    def __init__(self, temperature: float = 4.0, weight: float = DEFAULT_KD_WEIGHT):
        super().__init__(temperature)
        self.weight = weight

    def terms(self, zs, zt, y):
        return {"loss_kd": self.weight * kd_loss(zs, zt, self.temperature())}


def kd_criterion(cfg) -> KDLoss:
    return KDLoss(cfg.kd_T, DEFAULT_KD_WEIGHT if cfg.kd_weight is None else cfg.kd_weight)


@METHODS.register("kd", needs_teacher=True)
def build_kd(cfg, student, teacher):
    return Distiller(student, teacher, kd_criterion(cfg), cfg.ce_weight)
