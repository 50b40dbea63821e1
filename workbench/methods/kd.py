"""``kd``: Hinton et al. 2015. loss = ce_weight * CE + kd_weight * T^2 * KL(p_t^T || p_s^T);
defaults 0.1 / 0.9 / T=4 as in mdistiller."""
from ..keys import opt
from ..losses import kd_loss
from .base import Criterion, Distiller
from .spec import build_criterion, method

DEFAULT_CE_WEIGHT, DEFAULT_KD_WEIGHT = 0.1, 0.9


class KDLoss(Criterion):
    default_ce_weight = DEFAULT_CE_WEIGHT

    def __init__(self, temperature: float = 4.0, weight: float = DEFAULT_KD_WEIGHT):
        super().__init__(temperature)
        self.weight = weight

    def terms(self, s, t, y):
        return {"loss_kd": self.weight * kd_loss(s.logits, t.logits, self.temperature())}


KEYS = {
    "kd_weight": opt(None, "KD term weight (None = 0.9, mdistiller's)", low=0.0, kind="Optional[float]"),
    "kd_T": opt(4.0, "KD temperature", low=1e-6),
}


def kd_criterion(ctx, model=None) -> KDLoss:
    cfg = ctx.cfg
    return KDLoss(cfg.kd_T, DEFAULT_KD_WEIGHT if cfg.kd_weight is None else cfg.kd_weight)


@method("kd", summary="Hinton et al. 2015: CE 0.1 + KL at T=4 weight 0.9", keys=KEYS, criterion=kd_criterion,
        defaults={"ce_weight": DEFAULT_CE_WEIGHT})
def build_kd(ctx):
    return Distiller(ctx.student, ctx.teacher, build_criterion("kd", ctx, ctx.student), ctx.cfg.ce_weight)
