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
- *sample indices*: when a term sets ``needs_index`` (:attr:`Distiller.needs_index`), the trainer
  feeds each batch's dataset indices (``forward(x, y, index)``; memory banks keep one row per
  training image) and the builder's ``BuildContext.train_labels`` gives the training labels;
- *snapshot* (:meth:`Distiller.enable_snapshot`): a frozen copy of the deployable student taken
  at the end of epoch E (:meth:`Distiller.end_epoch`), checkpointed with the method state, never
  trained; usable as the static teacher (``teacher=snapshot@E``, :meth:`use_snapshot_teacher`:
  no distillation terms before it is taken) or read by own terms (``needs_snapshot``);
- *data pass*: after an epoch a term may ask for one no-grad pass over the training data
  (``wants_data_pass`` / ``observe``; CTC refreshes its memory banks from the snapshot);
- *schedule* (:attr:`Distiller.schedule`): a method may rescale lr and weight decay per epoch
  (:class:`workbench.engine.schedule.TwoStageSchedule`: CTC's restart at its stage boundary);
- *DDP*: a method whose parameters are not all used in every step (stage-dependent heads) sets
  :attr:`Distiller.find_unused_parameters`; own terms all-gather features before they update
  any state shared by the ranks (``engine.distributed.gather_rows``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.method import TASK_PREFIX  # noqa: F401  (re-exported)
from ..losses import hard_labels  # noqa: F401  (re-exported)
from ..models.hooks import FeatureTap, stage_paths
from ..models.params import exempt_parameter_ids
from .spec import METHODS  # noqa: F401  (re-exported: the one method registry)

#: feature name that stands for all of a model's stage outputs
STAGES = "stages"


@dataclass
class Outputs:
    """One model's forward on a batch: logits and the features a criterion asked for."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


def feature_names(model: nn.Module, names) -> list[str]:
    """``names`` with ``"stages"`` expanded to the model's stage paths."""
    out: list[str] = []
    for name in names:
        out += stage_paths(model) if name == STAGES else [name]
    return out


def run_with_features(model: nn.Module, x: torch.Tensor, names, detach: bool = False, call=None) -> Outputs:
    """``model(x)`` (or ``call(x)``: e.g. a view of GPD's teacher running ``model``'s modules)
    with the named features tapped by forward hooks."""
    call = call or model
    paths = feature_names(model, names)
    if not paths:
        return Outputs(call(x))
    with FeatureTap(model, paths, detach=detach) as tap:
        logits = call(x)
    return Outputs(logits, {p: tap[p] for p in paths})


def feature_shapes(ctx, model: nn.Module, names) -> dict[str, torch.Size]:
    """Shapes of ``model``'s named features on the build context's example batch (for sizing
    projectors, regressors, fusion modules), from one forward in eval mode without gradients, so
    no BatchNorm statistics change. Raises a clear error when no example batch is available."""
    if ctx.example_input is None:
        raise ValueError("this method sizes its modules from the features: build it with an example input batch")
    owner, call = ctx.calls.get(id(model), (model, None))
    was = owner.training
    owner.eval()
    try:
        with torch.no_grad():
            out = run_with_features(model, ctx.example_input, names, detach=True, call=call)
    finally:
        owner.train(was)
    return {n: f.shape for n, f in out.features.items()}


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


class AuxTerm(nn.Module):
    """A loss term on the trained model's own outputs, without a static teacher (attached with
    :meth:`Distiller.add_term`). ``terms(s, y, index, snap)`` gets the student's :class:`Outputs`
    (with ``student_features`` tapped), the targets, the batch's dataset indices (when
    ``needs_index``) and the snapshot's :class:`Outputs` on the same batch (with
    ``snapshot_features``; None until the snapshot is taken or when ``needs_snapshot`` is off).
    ``intermittent``: some of its parameters are unused in some steps (DDP must know).
    ``set_epoch`` is called at every epoch start like a criterion's."""

    student_features: tuple[str, ...] = ()
    snapshot_features: tuple[str, ...] = ()
    needs_index = False
    needs_snapshot = False
    intermittent = False

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def terms(self, s: Outputs, y: torch.Tensor, index, snap: Outputs | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def wants_data_pass(self, epoch: int) -> bool:
        """Whether the trainer should run :meth:`observe` over the training data after ``epoch``."""
        return False

    def observe(self, snap: Outputs | None, y: torch.Tensor, index: torch.Tensor) -> None:
        """One batch of that no-grad pass (``snap``: the snapshot's outputs, if it is taken)."""


class Snapshot(nn.Module):
    """A frozen copy of the deployable student, filled at the end of epoch ``epoch`` (1-based)
    by :meth:`take` and unchanged afterwards. The module exists from the start (so checkpoints
    before and after the boundary have the same keys); ``taken`` says whether it holds the
    snapshot yet."""

    def __init__(self, model: nn.Module, epoch: int):
        super().__init__()
        self.model = freeze(model)
        self.epoch = int(epoch)
        self.register_buffer("taken", torch.zeros((), dtype=torch.bool))

    @property
    def ready(self) -> bool:
        return bool(self.taken)

    @torch.no_grad()
    def take(self, source: nn.Module) -> None:
        self.model.load_state_dict(source.state_dict())
        self.taken.fill_(True)

    def train(self, mode: bool = True):
        super().train(False)  # always in eval mode
        return self

    def outputs(self, x: torch.Tensor, names) -> Outputs:
        with torch.no_grad():
            return run_with_features(self.model, x, dict.fromkeys(names), detach=True)


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
        self.aux_terms = nn.ModuleList()
        self.snapshot: Snapshot | None = None
        #: per-epoch lr / weight-decay rescaling (None: the run's schedule as configured)
        self.schedule = None

    # -- the static teacher never trains ---------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- own terms, sample indices, the snapshot -------------------------------------------------
    def add_term(self, term: AuxTerm) -> AuxTerm:
        """Attach a loss term on the student's own outputs (see :class:`AuxTerm`)."""
        self.aux_terms.append(term)
        return term

    @property
    def needs_index(self) -> bool:
        """Whether ``forward`` wants the batch's dataset indices (the trainer then feeds them)."""
        return any(t.needs_index for t in self.aux_terms)

    @property
    def find_unused_parameters(self) -> bool:
        """Some trained parameters sit out some steps (stage-dependent heads, a criterion before a
        snapshot teacher exists): DDP must look for unused parameters."""
        return any(t.intermittent for t in self.aux_terms) or self.snapshot_teacher

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

    def end_epoch(self, epoch: int, epochs: int) -> bool:
        """After training epoch ``epoch`` (before its evaluation and checkpoint): take the snapshot
        when due. Returns whether an own term wants a data pass (:meth:`observe_batch`) now."""
        if self.snapshot is not None and epoch == self.snapshot.epoch:
            self.snapshot.take(self.deployable_student())
        return any(t.wants_data_pass(epoch) for t in self.aux_terms)

    def _snapshot_outputs(self, x: torch.Tensor, terms) -> Outputs | None:
        wanted = [t for t in terms if t.needs_snapshot]
        if not wanted or self.snapshot is None or not self.snapshot.ready:
            return None
        return self.snapshot.outputs(x, [n for t in wanted for n in t.snapshot_features])

    @torch.no_grad()
    def observe_batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int) -> None:
        """One batch of the data pass :meth:`end_epoch` asked for."""
        terms = [t for t in self.aux_terms if t.wants_data_pass(epoch)]
        snap = self._snapshot_outputs(x, terms)
        for t in terms:
            t.observe(snap, y, index)

    def aux_features(self) -> tuple[str, ...]:
        """Student features the own terms read."""
        return tuple(n for t in self.aux_terms for n in t.student_features)

    def aux_losses(self, s: Outputs, x: torch.Tensor, y: torch.Tensor, index) -> dict:
        """The own terms' losses on the student's outputs ``s`` for batch ``(x, y, index)``."""
        losses: dict[str, torch.Tensor] = {}
        if not len(self.aux_terms):
            return losses
        if index is None and self.needs_index:
            raise ValueError(f"{type(self).__name__}: an own loss term needs the batch's dataset indices "
                             "(forward(x, y, index))")
        snap = self._snapshot_outputs(x, self.aux_terms)
        for t in self.aux_terms:
            losses.update(t.terms(s, y, index, snap))
        return losses

    def use_cached_teacher_logits(self, logits: torch.Tensor | None) -> None:
        """Serve the next teacher forward from ``logits`` (the engine's opt-in teacher-logit
        cache, valid for unaugmented inputs and logit-only criteria)."""
        self._cached_teacher_logits = logits

    def criteria(self) -> list[Criterion]:
        """Every criterion this method evaluates (GPD: one per view)."""
        return [self.criterion] if self.criterion is not None else []

    def teacher_outputs(self, x: torch.Tensor) -> Outputs | None:
        """The static teacher's logits and every feature the criteria read (no grad)."""
        if self.teacher is None or (self.snapshot_teacher and not self.snapshot.ready):
            return None
        cached = getattr(self, "_cached_teacher_logits", None)
        if cached is not None:
            self._cached_teacher_logits = None
            return Outputs(cached)
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

    # -- the training forward --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None):
        t = self.teacher_outputs(x)
        names = self.criterion.student_features if self.criterion is not None else ()
        s = run_with_features(self.student, x, dict.fromkeys((*names, *self.aux_features())))
        losses = self.loss_terms(s, t, y)
        losses.update(self.aux_losses(s, x, y, index))
        return s.logits, losses

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
        if self.teacher_ready() and trained is None:
            models["teacher"] = self.teacher
        return models

    def teacher_ready(self) -> bool:
        """A static teacher exists (a snapshot teacher once it is taken)."""
        return self.teacher is not None and not (self.snapshot_teacher and not self.snapshot.ready)

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
