"""What the engine needs from a method: the small interface the trainer uses
(:class:`TrainedMethod`; :class:`workbench.methods.Distiller` implements it) and the loss-dict
convention.

A method's training forward returns ``(student_logits, {name: loss})``; the trainer sums the
dict. Keys starting with :data:`TASK_PREFIX` are task losses, every other key a distillation
loss (DOT keeps separate momentum for the two groups). What a method needs of the engine beyond
that is one declaration, :class:`MethodNeeds`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol

import torch
from torch import nn

TASK_PREFIX = "loss_ce"


@contextmanager
def no_context(*models: nn.Module):
    """The default evaluation context: nothing to set up."""
    yield


@dataclass(frozen=True)
class MethodNeeds:
    """What a built method asks of the engine."""

    #: feed each batch's dataset indices (``forward(x, y, index=...)``): per-image state (CTC's memories)
    index: bool = False
    #: some parameters sit out some steps: DDP must look for unused ones
    find_unused_parameters: bool = False
    #: per-epoch lr / weight-decay factors (``engine.schedule.TwoStageSchedule``), None = the run's schedule
    schedule: Any = None
    #: modules whose BatchNorms ``sync_bn=true`` converts
    sync_bn_modules: tuple = ()
    #: ``eval_context(*models)`` wraps every evaluation pass over those models
    eval_context: Callable = no_context
    #: the frozen static teacher whose train-set logits ``cache_teacher=true`` computes once (None: none)
    static_teacher: Optional[nn.Module] = None
    #: the values of the run's keys the built method settled (e.g. ``ce_weight`` when the key was left to
    #: the method): recorded in ``config.json``'s ``effective`` block
    settled: Mapping[str, Any] = field(default_factory=dict)
    #: a stateful batch transform (``engine.batch.StatefulTransform``) the method shares with its own
    #: terms, used instead of a fresh one made from ``cfg.mix`` (RecursiveMix's history); None: none
    batch_transform: Any = None


class TrainedMethod(Protocol):
    """Every member of a method the trainer uses (besides ``nn.Module``'s ``to`` / ``train``)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, index: Optional[torch.Tensor] = None,
                teacher_logits: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training forward (``teacher_logits``: served by the engine's teacher-logit cache)."""

    def needs(self) -> MethodNeeds: ...

    def trained_module(self) -> nn.Module:
        """What is optimised, averaged by the EMA and wrapped by DDP (a method training several
        networks: an ``nn.ModuleList`` of them, ``methods/group.py``)."""

    def param_groups(self, lr: float, weight_decay: float, wd_exempt: bool = False) -> list[dict]: ...

    def on_epoch_start(self, epoch: int, epochs: int) -> None: ...

    def end_epoch(self, epoch: int, epochs: int) -> Optional[Callable]:
        """After an epoch's training: a no-grad pass to run over the training data (called with
        each batch's ``x, y, index``), or None."""

    def scalars(self) -> dict[str, float]:
        """Per-epoch scalars for the train record."""

    def eval_models(self, trained: Optional[nn.Module] = None) -> dict[str, nn.Module]:
        """Models to evaluate by role, read from ``trained`` (the live module, or its EMA copy)."""

    def deployable_student(self, trained: Optional[nn.Module] = None) -> nn.Module: ...

    def state(self) -> dict: ...

    def load_state(self, state: dict) -> None: ...
