"""The one base class every method builds on (mdistiller-style).

A :class:`Distiller` holds the trained network(s), an optional static teacher (always in eval
mode, never receiving gradients) and a *criterion*: the distillation loss on top of
cross-entropy (``KDLoss``, ``DKDLoss``, or None for plain CE). Its ``forward(x, y)`` is the
training forward and returns ``(student_logits, {"loss_ce": ..., "loss_kd": ...})``; the
trainer sums the dict. Loss keys starting with ``loss_ce`` are task losses, all others are
distillation losses (DOT treats the two groups separately).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

METHODS = Registry("method")
TASK_PREFIX = "loss_ce"


class FixedTemperature(nn.Module):
    """The default temperature provider: a constant. CTKD swaps in a learnable one."""

    def __init__(self, value: float):
        super().__init__()
        self.value = float(value)

    def forward(self) -> float:
        return self.value

    def extra_repr(self) -> str:
        return f"T={self.value}"


class Criterion(nn.Module):
    """A distillation loss on logits: ``terms(student_logits, teacher_logits, target)`` -> dict.
    ``default_ce_weight`` is the CE weight the method's reference uses."""

    default_ce_weight = 1.0

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = FixedTemperature(temperature)
        self.epoch = 1

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def terms(self, zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def freeze(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Distiller(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 criterion: Criterion | None = None, ce_weight: float | None = None):
        super().__init__()
        self.student = student
        self.teacher = freeze(teacher) if teacher is not None else None
        self.criterion = criterion
        default = criterion.default_ce_weight if criterion is not None else 1.0
        self.ce_weight = default if ce_weight is None else float(ce_weight)

    # -- the static teacher never trains ---------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def use_cached_teacher_logits(self, logits: torch.Tensor | None) -> None:
        """Serve the next :meth:`teacher_logits` call from ``logits`` (the engine's opt-in
        teacher-logit cache, valid for unaugmented inputs only)."""
        self._cached_teacher_logits = logits

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        cached = getattr(self, "_cached_teacher_logits", None)
        if cached is not None:
            self._cached_teacher_logits = None
            return cached
        with torch.no_grad():
            return self.teacher(x)

    def loss_terms(self, z: torch.Tensor, zt: torch.Tensor | None, y: torch.Tensor) -> dict:
        """CE plus the criterion's terms for one set of logits."""
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(z, y)}
        if self.criterion is not None and zt is not None:
            losses.update(self.criterion.terms(z, zt, y))
        return losses

    # -- the training forward --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor):
        zs = self.student(x)
        return zs, self.loss_terms(zs, self.teacher_logits(x), y)

    # -- what the engine asks of every method ----------------------------------------------------
    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Warm-ups and curricula (DKD warm-up, CTKD lambda) read the 1-based epoch here."""
        for m in self.modules():
            if m is not self and hasattr(m, "set_epoch"):
                m.set_epoch(epoch, epochs)

    def eval_models(self, trained: nn.Module | None = None) -> dict[str, nn.Module]:
        """Plain callable models to evaluate, by role (see ``engine.callbacks.ROLES``), read
        from ``trained`` (default: the live ``trained_module()``; the engine passes its EMA copy)."""
        models = {"student": self.deployable_student(trained)}
        if self.teacher is not None and trained is None:
            models["teacher"] = self.teacher
        return models

    def deployable_student(self, trained: nn.Module | None = None) -> nn.Module:
        """The plain student model (saved as the checkpoint's ``model`` entry), read from
        ``trained`` (default: the live ``trained_module()``)."""
        return self.student if trained is None else trained

    def trained_module(self) -> nn.Module:
        """The module whose parameters are optimised (and wrapped by DDP)."""
        return self.student

    def sync_bn_modules(self) -> list[nn.Module]:
        """Modules whose BatchNorms are synchronised across processes with ``sync_bn=true``."""
        return [self.trained_module()]

    def param_groups(self, lr: float, extra_lr: float | None = None) -> list[dict]:
        groups = [{"params": [p for p in self.trained_module().parameters() if p.requires_grad], "lr": lr}]
        extra = [p for n, p in self.named_parameters()
                 if p.requires_grad and n.startswith("criterion.")]
        if extra:
            groups.append({"params": extra, "lr": extra_lr or lr})
        return groups

    def state(self) -> dict:
        """Trainable state for checkpoints (no static teacher: it is never changed)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_state(self, state: dict) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise ValueError(f"method state does not fit this {type(self).__name__}: "
                             f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}")

    def scalars(self) -> dict[str, float]:
        """Extra per-epoch scalars for the train record (e.g. CTKD's temperature)."""
        out = {}
        if self.criterion is not None:
            t = self.criterion.temperature()
            out["temperature"] = float(t.detach()) if torch.is_tensor(t) else float(t)
        return out
