"""``ce``: plain cross-entropy training (no teacher). Also how teachers are trained."""
from .base import METHODS, Distiller


@METHODS.register("ce", needs_teacher=False)
def build_ce(cfg, student, teacher=None):
    return Distiller(student, None, None, cfg.ce_weight)
