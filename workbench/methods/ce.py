"""``ce``: plain cross-entropy training (no teacher). Also how teachers are trained."""
from .base import Distiller
from .spec import TEACHER_NONE, method


@method("ce", summary="cross-entropy only (also trains the cached teachers)", teacher=TEACHER_NONE)
def build_ce(ctx):
    return Distiller(ctx.student, None, None, ctx.cfg.ce_weight)
