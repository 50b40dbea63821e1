"""Methods: one small file each on one base class (``base.Distiller``), registered with
everything the engine and the config need (``spec.MethodSpec``).

``ce`` (no teacher), ``kd``, ``dkd``, ``ctkd`` (learnable temperature around kd/dkd; also the
``ctkd=true`` extension), ``gpd`` (dynamic teacher around any base loss or none), ``deit`` and
``cskd`` (distillation-token ViT students, their own forward); more in the package. DOT is an
optimizer (``engine.optim``); how the student starts (random, checkpoint, weight inheritance) is
``workbench.student_init``.

Add a method: write ``methods/<name>.py`` with a ``Criterion`` (or ``Distiller`` subclass) and
a builder decorated with ``@method("<name>", keys=..., criterion=...)``. Every module of this
package is imported here, so nothing else needs editing: the config, the CLI and the notebooks
pick the method, its keys and their checks up from the registry.
"""
from __future__ import annotations

import copy
import importlib
import pkgutil

from ..keys import snapshot_epoch

from .base import TASK_PREFIX, Criterion, Distiller, Outputs, hard_labels
from .spec import (EXTENSIONS, METHODS, BuildContext, Extension, MethodSpec, base_methods, build_checks,
                   build_criterion, config_checks, declared_keys, method, register_extension)

_NOT_METHODS = {"base", "spec", "outputs", "own_terms", "snapshot", "group"}  # the base class and its parts
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _NOT_METHODS and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def build_method(cfg, student, teacher=None, example_input=None, train_labels=None) -> Distiller:
    """The configured method around ``student`` (and the frozen static ``teacher``), with the
    active extensions applied. ``train_labels``: the training set's labels in dataset order
    (methods with per-image state need them). With ``teacher=snapshot@E`` the teacher is a
    frozen copy of the student made here and filled at the end of epoch E."""
    snapshot_at = snapshot_epoch(cfg.teacher) if cfg.uses_teacher else None
    if snapshot_at is not None and teacher is None:
        teacher = copy.deepcopy(student)  # placeholder of the right shape; the snapshot fills it
    ctx = BuildContext(cfg, student, teacher, example_input, train_labels=train_labels)
    built = METHODS.get(cfg.method).build(ctx)
    if snapshot_at is not None:
        built.use_snapshot_teacher(snapshot_at)
    for name in EXTENSIONS:
        ext = EXTENSIONS.get(name)
        if ext.active(cfg):
            ext.apply(built, cfg, ctx)
    return built


def available() -> list[str]:
    return METHODS.names()


__all__ = ["METHODS", "EXTENSIONS", "TASK_PREFIX", "Criterion", "Distiller", "Outputs", "MethodSpec",
           "Extension", "BuildContext", "method", "register_extension", "build_method", "build_criterion",
           "available", "base_methods", "declared_keys", "config_checks", "build_checks", "hard_labels"]
