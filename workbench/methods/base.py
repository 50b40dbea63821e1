"""The one base class every method builds on (mdistiller-style), and its seams.

A :class:`Distiller` holds the trained network(s), an optional static teacher (always in eval
mode, never receiving gradients) and a *criterion*: the distillation loss on top of
cross-entropy (``KDLoss``, ``DKDLoss``, a feature loss, or None for plain CE). Its
``forward(x, y)`` is the training forward and returns ``(student_logits, {"loss_ce": ...,
"loss_kd": ...})``; the trainer sums the dict. Loss keys starting with ``loss_ce`` are task
losses, all others are distillation losses (DOT treats the two groups separately).

Seams:
- *features*: a criterion names the layers it reads (``student_features``, ``teacher_features``:
  module paths, ``"penultimate"``, ``"<path>:input"``, or ``"stages"`` for the model's stage
  outputs) and receives them in ``terms(s, t, y)`` as ``s.features`` / ``t.features`` -- tapped
  with forward hooks during the ordinary forward, models are never rewritten;
- *extra trainable modules*: anything a method owns besides the teacher (projectors, regressors,
  CTKD's temperature) is a submodule, so it is optimised (:meth:`Distiller.param_groups`, with a
  module's own ``group_lr`` if it sets one) and checkpointed, and never part of ``student.pt``;
- *targets*: ``y`` is either class indices (N,) or class probabilities (N, K) (a mixing batch
  transform); cross-entropy takes both, :func:`hard_labels` gives indices where a loss needs them;
- *own terms* (:class:`AuxTerm`, :meth:`Distiller.add_term`): loss terms on the trained model's own
  outputs that need no static teacher (CTC's contrastive terms), on the student of any method
  (GPD: its student view);
- *sample indices*: when a term sets ``needs_index`` (the method's ``needs().index``), the trainer
  feeds each batch's dataset indices (``forward(x, y, index)``; memory banks keep one row per
  training image) and the builder's ``BuildContext.train_labels`` gives the training labels;
- *snapshot* (:meth:`Distiller.enable_snapshot`): a frozen copy of the deployable student taken
  at the end of epoch E (:meth:`Distiller.end_epoch`), checkpointed with the method state, never
  trained; usable as the static teacher (``teacher=snapshot@E``, :meth:`use_snapshot_teacher`:
  no distillation terms before it is taken) or read by own terms (``needs_snapshot``);
- *data pass*: after an epoch a term may ask for one no-grad pass over the training data
  (``wants_data_pass`` / ``observe``; CTC refreshes its memory banks from the snapshot):
  :meth:`Distiller.end_epoch` returns it (:class:`own_terms.DataPass`) and the trainer runs it;
- *schedule* (:attr:`Distiller.schedule`): a method may rescale lr and weight decay per epoch
  (:class:`workbench.engine.schedule.TwoStageSchedule`: CTC's restart at its stage boundary);
- *evaluation*: :attr:`Distiller.eval_context` wraps every evaluation pass (GPD folds its
  multi-branch kernels once per pass);
- *DDP*: a method whose parameters are not all used in every step (stage-dependent heads, a
  criterion before a snapshot teacher exists) reports ``needs().find_unused_parameters``; own
  terms all-gather features before they update any state shared by the ranks
  (``engine.distributed.gather_rows``).

What the engine uses of a method is :class:`workbench.engine.method.TrainedMethod` (eleven
members); everything else here serves the method files. The own terms and the snapshot are their
own objects (``own_terms.py``, ``snapshot.py``); what a loss reads from a model, ``outputs.py``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.method import TASK_PREFIX, MethodNeeds, no_context  # noqa: F401  (TASK_PREFIX re-exported)
from ..losses import hard_labels  # noqa: F401  (re-exported)
from ..models.params import exempt_parameter_ids
from .outputs import STAGES, Outputs, feature_names, feature_shapes, freeze, run_with_features  # noqa: F401
from .own_terms import AuxTerm, DataPass, OwnTerms  # noqa: F401  (AuxTerm re-exported)
from .snapshot import Snapshot
from .spec import METHODS  # noqa: F401  (re-exported: the one method registry)


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
    """A distillation loss: ``terms(s, t, y)`` -> dict of loss terms, where ``s`` and ``t`` are
    the student's and the teacher's :class:`Outputs`. ``default_ce_weight`` is the CE weight
    the method's reference uses; ``student_features`` / ``teacher_features`` the layers it reads."""

    default_ce_weight = 1.0
    student_features: tuple[str, ...] = ()
    teacher_features: tuple[str, ...] = ()

    def __init__(self, temperature: float | None = None):
        super().__init__()
        self.temperature = FixedTemperature(temperature) if temperature is not None else None
        self.epoch = 1

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def temperature_owner(self) -> "Criterion":
        """The criterion whose ``temperature`` the loss uses (a wrapping loss names its inner one)."""
        return self

    def terms(self, s: Outputs, t: Outputs, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Distiller(nn.Module):
    """A method: the trained network, the frozen static teacher (or None), the criterion, the CE
    weight, its own terms and snapshot. The trainer uses the members listed in
    :class:`workbench.engine.method.TrainedMethod` and nothing else."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 criterion: Criterion | None = None, ce_weight: float | None = None):
        super().__init__()
        self.student = student
        self.teacher = freeze(teacher) if teacher is not None else None
        self.criterion = criterion
        default = criterion.default_ce_weight if criterion is not None else 1.0
        self.ce_weight = default if ce_weight is None else float(ce_weight)
        self.aux_terms = OwnTerms()
        self.snapshot: Snapshot | None = None
        #: per-epoch lr / weight-decay rescaling (None: the run's schedule as configured)
        self.schedule = None
        #: a stateful batch transform shared with an own term (RecursiveMix), or None
        self.batch_transform = None

    # -- the static teacher never trains ---------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- what builders use: own terms, the snapshot ----------------------------------------------
    def add_term(self, term: AuxTerm) -> AuxTerm:
        """Attach a loss term on the student's own outputs (see :class:`AuxTerm`)."""
        self.aux_terms.append(term)
        return term

    def enable_snapshot(self, epoch: int, model: nn.Module | None = None) -> Snapshot:
        """A frozen copy of the deployable student taken at the end of ``epoch`` (one per method:
        a second request must name the same epoch)."""
        if self.snapshot is not None:
            if self.snapshot.epoch != epoch:
                raise ValueError(f"two snapshots requested, at the end of epoch {self.snapshot.epoch} and of "
                                 f"epoch {epoch}; a method keeps one (use the same epoch)")
            return self.snapshot
        self.snapshot = Snapshot(model if model is not None else copy.deepcopy(self.deployable_student()), epoch)
        return self.snapshot

    def use_snapshot_teacher(self, epoch: int) -> None:
        """``teacher=snapshot@E``: the static teacher is the snapshot taken at the end of epoch E
        (the placeholder teacher the method was built with becomes the snapshot's module); before
        it is taken the criterion's terms are left out (CE only) and no teacher is evaluated."""
        if self.teacher is None:
            raise ValueError("teacher=snapshot@E: this method was built without a teacher")
        self.enable_snapshot(epoch, self.teacher)
        if self.snapshot.model is not self.teacher:
            raise ValueError("teacher=snapshot@E: the method already keeps another snapshot")

    @property
    def snapshot_teacher(self) -> bool:
        return self.snapshot is not None and self.teacher is not None and self.snapshot.model is self.teacher

    def teacher_ready(self) -> bool:
        """A static teacher exists (a snapshot teacher once it is taken)."""
        return self.teacher is not None and not (self.snapshot_teacher and not self.snapshot.ready)

    # -- the loss --------------------------------------------------------------------------------
    def criteria(self) -> list[Criterion]:
        """Every criterion this method evaluates (GPD: one per view)."""
        return [self.criterion] if self.criterion is not None else []

    def teacher_outputs(self, x: torch.Tensor, cached_logits: torch.Tensor | None = None) -> Outputs | None:
        """The static teacher's logits and every feature the criteria read (no grad); from
        ``cached_logits`` when the engine serves them (its opt-in teacher-logit cache, valid for
        unaugmented inputs and logit-only criteria)."""
        if not self.teacher_ready():
            return None
        if cached_logits is not None:
            return Outputs(cached_logits)
        names = [n for c in self.criteria() for n in c.teacher_features]
        with torch.no_grad():
            return run_with_features(self.teacher, x, dict.fromkeys(names), detach=True)

    def loss_terms(self, s: Outputs, t: Outputs | None, y: torch.Tensor, criterion: Criterion | None = None) -> dict:
        """CE plus a criterion's terms (default: this method's) for one model's outputs."""
        criterion = self.criterion if criterion is None else criterion
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(s.logits, y)}
        if criterion is not None and t is not None:
            losses.update(criterion.terms(s, t, y))
        return losses

    def own_losses(self, s: Outputs, x: torch.Tensor, y: torch.Tensor, index) -> dict:
        """The own terms' losses on the student's outputs ``s`` for batch ``(x, y, index)``."""
        return self.aux_terms.losses(s, x, y, index, self.snapshot)

    # -- the engine's interface (engine.method.TrainedMethod) -----------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None,
                teacher_logits: torch.Tensor | None = None):
        """The training forward: ``(student logits, {loss name: loss})``."""
        t = self.teacher_outputs(x, teacher_logits)
        names = self.criterion.student_features if self.criterion is not None else ()
        s = run_with_features(self.student, x, dict.fromkeys((*names, *self.aux_terms.features())))
        losses = self.loss_terms(s, t, y)
        losses.update(self.own_losses(s, x, y, index))
        return s.logits, losses

    def needs(self) -> MethodNeeds:
        """What the engine must provide or respect for this method (fixed once it is built)."""
        return MethodNeeds(index=self.aux_terms.needs_index,
                           find_unused_parameters=self.aux_terms.intermittent or self.snapshot_teacher,
                           schedule=self.schedule, sync_bn_modules=tuple(self.sync_bn_modules()),
                           eval_context=self.eval_context, batch_transform=self.batch_transform,
                           static_teacher=self.teacher if self.teacher is not None and not self.snapshot_teacher
                           else None,
                           settled={} if self.ce_weight is None else {"ce_weight": float(self.ce_weight)})

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Warm-ups and curricula (DKD warm-up, CTKD lambda) read the 1-based epoch here."""
        for m in self.modules():
            if m is not self and hasattr(m, "set_epoch"):
                m.set_epoch(epoch, epochs)

    def end_epoch(self, epoch: int, epochs: int) -> DataPass | None:
        """After training epoch ``epoch`` (before its evaluation and checkpoint): take the snapshot
        when due; returns the pass over the training data an own term wants now, or None."""
        if self.snapshot is not None and epoch == self.snapshot.epoch:
            self.snapshot.take(self.deployable_student())
        return self.aux_terms.data_pass(epoch, self.snapshot)

    def eval_models(self, trained: nn.Module | None = None) -> dict[str, nn.Module]:
        """Plain callable models to evaluate, by role (``engine.roles``), read from ``trained``
        (default: the live ``trained_module()``; the engine passes its EMA copy)."""
        models = {"student": self.deployable_student(trained)}
        if self.teacher_ready() and trained is None:
            models["teacher"] = self.teacher
        return models

    def deployable_student(self, trained: nn.Module | None = None) -> nn.Module:
        """The plain student model (saved as the checkpoint's ``model`` entry), read from
        ``trained`` (default: the live ``trained_module()``)."""
        return self.student if trained is None else trained

    def trained_module(self) -> nn.Module:
        """The module whose parameters are optimised (and wrapped by DDP)."""
        return self.student

    def param_groups(self, lr: float, weight_decay: float, wd_exempt: bool = False) -> list[dict]:
        """Every trainable parameter the method owns except the static teacher's: the trained
        module's, then every other submodule's (projectors, regressors, temperatures) -- a module
        with a ``group_lr`` attribute gets its own group at that lr. With ``wd_exempt`` each group
        is split into a decayed part and a part without weight decay: norm layers' parameters,
        biases, and the tokens / position embeddings a module declares in
        ``no_weight_decay_names`` (:func:`workbench.models.params.exempt_parameter_ids`, the
        DeiT/timm rule, decided by module type rather than by name patterns)."""
        seen = {id(p) for p in self.teacher.parameters()} if self.teacher is not None else set()
        named: list[tuple[str, nn.Parameter, float]] = []

        def take(module: nn.Module, group_lr: float) -> None:
            for name, p in module.named_parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    named.append((name, p, group_lr))

        take(self.trained_module(), lr)
        for m in self.modules():
            if getattr(m, "group_lr", None):
                take(m, m.group_lr)
        take(self, lr)
        out, exempt = [], exempt_parameter_ids(self) if wd_exempt else set()
        for group_lr in dict.fromkeys(g for _, _, g in named):
            members = [(n, p) for n, p, g in named if g == group_lr]
            if wd_exempt:
                decay = [p for n, p in members if id(p) not in exempt]
                flat = [p for n, p in members if id(p) in exempt]
                out += [{"params": decay, "lr": group_lr, "weight_decay": weight_decay}] if decay else []
                out += [{"params": flat, "lr": group_lr, "weight_decay": 0.0}] if flat else []
            else:
                out.append({"params": [p for _, p in members], "lr": group_lr, "weight_decay": weight_decay})
        return out

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
        for c in self.criteria()[:1]:
            c = c.temperature_owner()
            if c.temperature is not None:
                t = c.temperature()
                out["temperature"] = float(t.detach()) if torch.is_tensor(t) else float(t)
        return out

    # -- hooks a method overrides for what ``needs`` reports -----------------------------------
    def sync_bn_modules(self) -> list[nn.Module]:
        """Modules whose BatchNorms are synchronised across processes with ``sync_bn=true``."""
        return [self.trained_module()]

    eval_context = staticmethod(no_context)  # wraps every evaluation pass over the models (GPD: fold once)
