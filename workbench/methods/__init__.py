"""Methods: one small file each on one base class (``base.Distiller``).

``ce`` (no teacher), ``kd``, ``dkd``, ``ctkd`` (learnable temperature around kd/dkd) and
``gpd`` (dynamic teacher around none/kd/dkd). DOT is an optimizer (``engine.optim``), CTKD a
temperature wrapper (``ctkd=true`` works for kd, dkd and gpd). Add a method: write
``methods/<name>.py`` with a ``Criterion`` (or ``Distiller`` subclass) and a builder registered
with ``@METHODS.register("<name>")``, import it below, add the name to ``config.METHODS``.
"""
from __future__ import annotations

from . import ce, ctkd, dkd, gpd, kd  # noqa: F401  (register themselves)
from .base import METHODS, TASK_PREFIX, Criterion, Distiller
from .ctkd import LearnableTemperature, apply_ctkd


def build_method(cfg, student, teacher=None, example_input=None) -> Distiller:
    """The configured method around ``student`` (and the frozen static ``teacher``)."""
    builder = METHODS.get(cfg.method)
    kwargs = {"example_input": example_input} if cfg.method == "gpd" else {}
    method = builder(cfg, student, teacher, **kwargs)
    if cfg.ctkd and method.criterion is not None and not isinstance(method.criterion.temperature, LearnableTemperature):
        apply_ctkd(method.criterion, cfg)
    return method


def available() -> list[str]:
    return METHODS.names()


__all__ = ["METHODS", "TASK_PREFIX", "Criterion", "Distiller", "build_method", "available"]
