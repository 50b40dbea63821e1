"""What a method tells the rest of the workbench: one :class:`MethodSpec` per method, registered
in the method's own file, and *extensions* (flags such as ``ctkd=true`` that change another
method's loss).

The config (:mod:`workbench.config`) derives from these registries the ``method`` and ``base``
choices, the method's config keys and their validation, its defaults for core keys left at
None/auto, and whether it needs a static teacher; the engine reads nothing else about a method.

>>> @method("mykd", keys={"mykd_T": opt(4.0, "MyKD temperature", low=1e-6)},
...         criterion=lambda ctx, model: MyKDLoss(ctx.cfg.mykd_T))
... def build(ctx):
...     return Distiller(ctx.student, ctx.teacher, build_criterion("mykd", ctx, ctx.student), ctx.cfg.ce_weight)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ..keys import NO_BASE  # noqa: F401  (re-exported)
from ..registry import Registry

#: the token in ``MethodSpec.bases`` that stands for every method usable as a base loss
ANY_BASE = "*"
#: ``MethodSpec.teacher`` values
TEACHER_REQUIRED, TEACHER_NONE, TEACHER_BY_BASE = "required", "none", "by_base"


@dataclass(frozen=True)
class BuildContext:
    """What a method's builder gets: the validated config, the student (a fresh or ``init=``
    model), the frozen static teacher (or None) and one example input batch (for model surgery
    and for sizing modules that read features)."""

    cfg: Any
    student: Any
    teacher: Any = None
    example_input: Any = None
    #: how to run a model that cannot run on its own, ``{id(model): (owner, call)}``: GPD's
    #: student view runs its parameter-less template through the dynamic teacher
    calls: Mapping[int, Any] = field(default_factory=dict)
    #: the training set's labels in dataset order (N,), for methods that keep one entry per
    #: training image (CTC's memory banks); None when the caller did not give them
    train_labels: Any = None


@dataclass(frozen=True)
class MethodSpec:
    """Everything the engine and the config need to know about one method.

    - ``build(ctx) -> Distiller``;
    - ``teacher``: ``"required"``, ``"none"`` or ``"by_base"`` (needed unless ``base=none``);
    - ``bases``: the valid ``base`` values, the first being what ``base=auto`` means; ``"*"``
      expands to every method that has a ``criterion``; empty = the method is its own base (or
      ``none`` when it has no loss);
    - ``criterion(ctx, model) -> Criterion``: makes the method usable as another method's base
      (``model`` is the network whose features the loss reads: the student, or a view of GPD's);
    - ``keys``: the method's own config keys (``config.opt`` fields);
    - ``defaults``: the method's values for core keys left at None/auto (``grad_clip``, ``amp``,
      ``ema_decay``; ``ce_weight``: the weight its loss uses, also as another method's base);
    - ``implies``: keys the method always sets (``method=ctkd`` is ``ctkd=true``), applied when
      the config is made;
    - ``validate(cfg)``: extra checks, raising ``ValueError`` with one clear line;
    - ``check_teacher(cfg, arch)``: a check of the static teacher's architecture, called once the
      ``teacher=`` value is resolved (:mod:`workbench.references`: a file's architecture is read from it);
    - ``check_build(cfg, student, example_input, train_size)``: checks that need the built student
      (with a random batch shaped like the dataset's inputs) or the training set's size
      (``train_size()``, built on demand), run before any folder is made (GPD: the student can be
      widened by ``ratio``; CTC: its memory banks fit); ``ValueError``, one line;
    - ``size_factor(cfg)``: how many times the student's parameters a checkpoint holds (disk check);
    - ``student_options(cfg)``: keyword options for building the student (e.g. which heads a
      distillation-token ViT averages at inference), applied wherever the student is built or
      loaded, so ``student.pt`` reloads as the run evaluated it;
    - ``not_a_base``: why the method cannot be another method's ``base`` (shown when asked for);
    - ``early_build``: :func:`workbench.experiment.prepare` builds the method (or, as a base, its
      wrapper) once on fresh models and a blank batch, so errors that depend on the pair (a stage
      it lacks, widths, feature shapes) are one line before any training, a teacher's included;
    - ``resolve(cfg) -> dict``: the effective values of the method's own keys whose value means
      "the method decides" (e.g. gpd's ``scale_init=auto``); recorded in ``config.json`` and
      hashed into the run name (:meth:`workbench.config.RunConfigBase.effective`);
    - ``summary``: one line for listings.
    """

    name: str
    build: Callable[[BuildContext], Any]
    summary: str = ""
    teacher: str = TEACHER_REQUIRED
    bases: tuple[str, ...] = ()
    criterion: Optional[Callable[[BuildContext, Any], Any]] = None
    keys: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    implies: Mapping[str, Any] = field(default_factory=dict)
    validate: Optional[Callable[[Any], None]] = None
    check_teacher: Optional[Callable[[Any, str], None]] = None
    check_build: Optional[Callable[[Any, Any, Any, Callable[[], int]], None]] = None
    size_factor: Optional[Callable[[Any], float]] = None
    student_options: Optional[Callable[[Any], dict]] = None
    not_a_base: str = ""
    early_build: bool = False
    resolve: Optional[Callable[[Any], dict]] = None

    def valid_bases(self) -> tuple[str, ...]:
        if not self.bases:
            return (self.name,) if self.criterion is not None else (NO_BASE,)
        out: list[str] = []
        for b in self.bases:
            for name in (base_methods() if b == ANY_BASE else [b]):
                if name not in out and name != self.name:
                    out.append(name)
        return tuple(out)

    def needs_teacher(self, base: str) -> bool:
        if self.teacher == TEACHER_BY_BASE:
            return base != NO_BASE
        return self.teacher == TEACHER_REQUIRED

    def distills(self, base: str) -> bool:
        """Whether the loss has distillation terms besides CE (what DOT needs)."""
        return self.needs_teacher(base) or self.teacher == TEACHER_BY_BASE


@dataclass(frozen=True)
class Extension:
    """A flag that changes another method's loss (e.g. ``ctkd=true``): its config keys, when it
    is on (``active(cfg)``), a check, and ``apply(method, cfg, ctx)`` run after the method is
    built (``ctx``: the method's :class:`BuildContext`)."""

    name: str
    keys: Mapping[str, Any]
    active: Callable[[Any], bool]
    apply: Callable[[Any, Any], None]
    validate: Optional[Callable[[Any], None]] = None
    check_build: Optional[Callable[[Any, Any, Any, Callable[[], int]], None]] = None  # as MethodSpec's, when active


METHODS = Registry("method")
EXTENSIONS = Registry("method extension")


def method(name: str, **spec) -> Callable:
    """Decorator registering ``build`` as method ``name`` with the :class:`MethodSpec` fields."""
    def add(build):
        METHODS.register(name, MethodSpec(name, build, **spec))
        return build
    return add


def register_extension(ext: Extension) -> Extension:
    EXTENSIONS.register(ext.name, ext)
    return ext


def base_methods() -> list[str]:
    """Methods usable as a base loss (they declare a ``criterion``), in registration order."""
    return [n for n in METHODS._items if METHODS._items[n].criterion is not None]


def declared_keys():
    """``(owner, key, field)`` for every method's and extension's config keys."""
    for name in METHODS._items:
        for key, fld in METHODS._items[name].keys.items():
            yield name, key, fld
    for name in EXTENSIONS._items:
        for key, fld in EXTENSIONS._items[name].keys.items():
            yield name, key, fld


def config_checks(cfg) -> list[Callable[[Any], None]]:
    """The checks that apply to ``cfg``: the chosen method's, its base loss's (``method=gpd
    base=composed`` checks the composed terms) and every extension's."""
    checks = [ext.validate for ext in EXTENSIONS._items.values() if ext.validate is not None]
    names = [cfg.method]
    base = cfg.resolved_base
    if base != cfg.method and base in METHODS._items:
        names.append(base)
    return checks + [METHODS.get(n).validate for n in names if METHODS.get(n).validate is not None]


def build_checks(cfg) -> list[Callable[[Any, Any, Any, Callable[[], int]], None]]:
    """The ``check_build`` hooks that apply to ``cfg``: the chosen method's and every active extension's."""
    checks = [ext.check_build for ext in EXTENSIONS._items.values() if ext.check_build is not None and ext.active(cfg)]
    spec = METHODS.get(cfg.method)
    return checks + ([spec.check_build] if spec.check_build is not None else [])


def build_criterion(base: str, ctx: BuildContext, model) -> Any:
    """Base method ``base``'s loss on ``model`` (None for ``base=none``)."""
    if base == NO_BASE:
        return None
    return METHODS.get(base).criterion(ctx, model)
