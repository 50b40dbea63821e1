"""The search spec: a small YAML file of keys and ranges, checked whole before any trial.

    name: fashion-r20-r8            # the folder <runs>/searches/<name>/ (and the preset search/<name>/best)
    base:                           # fixed keys of every trial, kept in the best preset
      preset: fashion/demo/kd
    proxy:                          # the cheap trial settings, dropped from the best preset
      epochs: 3
      val_per_class: 10             # the validation split the trials score on (required, >= 1)
      augment: false
      cache_teacher: true           # kept only where the trial's method can use it
    space:                          # searched run-config keys
      method: [kd, dkd, composed]   # a list: one of these values
      gpd: [false, true]            # on: method=gpd with the chosen method as its base
      kd_T: {float: [1, 8], log: true}
      dkd_beta: {float: [0.5, 8], log: true}
      ratio: {float: [1.5, 3]}      # {float|int: [low, high], log: true|false, step: s}
    composed:                       # the composed distiller's parts (when method is composed)
      terms: [1, 2]                 # how many terms (an int range: 1 or 2)
      tap: [logits, stage1, stage2, stage3]
      transform: [none, sattn, cattn, mask, pool]
      distance: [kl, mse, cosine, pearson, cka]
      weight: {float: [0.1, 1000], log: true}
    gpd_keys: {grad_clip: 5.0}      # set on trials with gpd on
    objective: {top1: 1.0, loss: 0.0, gap: 0.1}
    study: {trials: 30, sampler: tpe, pruner: median, seed: 0, parallel: 2, executor: local}

**Conditional keys.** A key a method owns (``kd_T`` is ``kd``'s, ``composed_T`` ``composed``'s,
``ratio`` ``gpd``'s, ``ctkd_*`` the ``ctkd`` flag's) is sampled only on trials where that method
(as ``method`` or as GPD's base) or flag is in use: the study never spends trials on keys the run
ignores. Composed terms are sampled tap first, then a transform the tap allows (logits and the
penultimate vector take ``none`` only): every sampled term is valid for the pair by construction.

**Checked before any trial** (one line each, :class:`SpecError`): an unknown section or config
key, an empty range (low > high, an empty list), a value the key refuses, an unknown part, a
``stage<N>`` tap the pair lacks (:func:`pair_taps` lists the valid ones), objective weights
that need the probes while ``probe_every=0``, and every method choice's base config
(``RunConfig`` + :func:`workbench.experiment.prepare`: files, pair, method rules).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..keys import ConfigError, unknown_key
from ..registry import unknown_choice

SECTIONS = ("name", "base", "proxy", "space", "composed", "gpd_keys", "objective", "study")
GPD, GPD_KEY = "gpd", "gpd"  # the virtual key: gpd on/off
COMPOSED = "composed"
COMPOSED_PARTS = ("terms", "tap", "transform", "distance", "weight")
#: the objective's weights: student validation top-1 (fraction), validation loss, representation
#: gap 1 - CKA(T_s, S) from the probes' gap records
OBJECTIVE_TERMS = {"top1": 1.0, "loss": 0.0, "gap": 0.1}
STUDY_KEYS = {"trials": 30, "sampler": "tpe", "pruner": "median", "seed": 0, "parallel": 0, "executor": "local",
              "startup_trials": 5, "warmup_epochs": 1}
SAMPLERS, PRUNERS = ("tpe", "random"), ("median", "halving", "none")
#: keys a search sets on every trial itself
SEARCH_SET = ("eval_on", "name", "out_dir", "preset", "seed", "resume", "progress")
DEFAULT_GPD_KEYS = {"grad_clip": 5.0}


class SpecError(ConfigError):
    """A spec the search refuses (one line, before any trial)."""


@dataclass(frozen=True)
class Range:
    """A searched key: ``choices`` (categorical) or ``low``..``high`` (float/int, optionally log)."""

    key: str
    kind: str  # categorical | float | int
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: Optional[float] = None

    def suggest(self, trial, name: Optional[str] = None):
        name = name or self.key
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log, step=self.step)

    def text(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"{self.kind} [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")


@dataclass
class Spec:
    name: str
    base: dict
    proxy: dict
    space: dict[str, Range]
    composed: dict[str, Range]
    gpd_keys: dict
    objective: dict
    study: dict
    path: Optional[Path] = None
    taps: list = field(default_factory=list)  # the pair's valid taps (filled by check)

    def describe(self) -> str:
        lines = [f"search {self.name}: {self.study['trials']} trials, sampler {self.study['sampler']}, "
                 f"pruner {self.study['pruner']}, objective " + " ".join(f"{k}={v:g}" for k, v in self.objective.items())]
        lines += [f"  {k} = {r.text()}" for k, r in self.space.items()]
        lines += [f"  composed.{k} = {r.text()}" for k, r in self.composed.items()]
        return "\n".join(lines)


def _range(key: str, value: Any, where: str) -> Range:
    if isinstance(value, (list, tuple)):
        if not value:
            raise SpecError(f"{where}: {key}: the list of values is empty; give at least one value")
        return Range(key, "categorical", tuple(value))
    if isinstance(value, dict):
        kinds = [k for k in ("float", "int") if k in value]
        extra = sorted(set(value) - {"float", "int", "log", "step"})
        if len(kinds) != 1 or extra:
            raise SpecError(f"{where}: {key}: a range is {{float: [low, high]}} or {{int: [low, high]}} with optional "
                            f"log: true and step: s; got {value!r}")
        bounds = value[kinds[0]]
        if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)):
            raise SpecError(f"{where}: {key}: {kinds[0]}: expected [low, high] numbers, got {bounds!r}")
        low, high = bounds
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise SpecError(f"{where}: {key}: the range [{low}, {high}] is empty (low > high)")
        log = bool(value.get("log", False))
        if log and low <= 0:
            raise SpecError(f"{where}: {key}: a log range needs low > 0, got [{low}, {high}]")
        return Range(key, kinds[0], low=low, high=high, log=log, step=value.get("step"))
    return Range(key, "categorical", (value,))  # a single value: fixed (still recorded as a parameter)


def parse(data: dict, path: Optional[Path] = None) -> Spec:
    """A spec from its YAML mapping: structure and ranges (no config knowledge yet)."""
    if not isinstance(data, dict):
        raise SpecError(f"search spec{f' {path}' if path else ''}: expected a mapping of sections "
                        f"({', '.join(SECTIONS)}), got {type(data).__name__}")
    for k in data:
        if k not in SECTIONS:
            raise SpecError("search spec: " + unknown_choice("section", k, list(SECTIONS)))
    name = str(data.get("name") or (path.stem if path else ""))
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise SpecError(f"name: {name!r} is not a plain folder name; use letters, digits and . _ - +")

    def mapping(section):
        v = data.get(section) or {}
        if not isinstance(v, dict):
            raise SpecError(f"{section}: expected a mapping of key: value, got {v!r}")
        return dict(v)

    space = {k: _range(k, v, "space") for k, v in mapping("space").items()}
    composed = {k: _range(k, v, "composed") for k, v in mapping("composed").items()}
    for k in composed:
        if k not in COMPOSED_PARTS:
            raise SpecError("composed: " + unknown_choice("part", k, list(COMPOSED_PARTS)))
    objective = mapping("objective") or dict(OBJECTIVE_TERMS)
    for k, v in objective.items():
        if k not in OBJECTIVE_TERMS:
            raise SpecError("objective: " + unknown_choice("term", k, list(OBJECTIVE_TERMS)))
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise SpecError(f"objective: {k}: weight {v!r} is not a finite number >= 0")
    if not any(objective.values()):
        raise SpecError("objective: every weight is 0; give top1, loss or gap a positive weight")
    study = dict(STUDY_KEYS)
    for k, v in mapping("study").items():
        if k not in STUDY_KEYS:
            raise SpecError("study: " + unknown_choice("key", k, list(STUDY_KEYS)))
        study[k] = v
    for k in ("trials", "parallel", "seed", "startup_trials", "warmup_epochs"):
        if not isinstance(study[k], int) or isinstance(study[k], bool) or study[k] < (1 if k == "trials" else 0):
            raise SpecError(f"study: {k}: expected an integer >= {1 if k == 'trials' else 0}, got {study[k]!r}")
    if study["sampler"] not in SAMPLERS:
        raise SpecError("study: " + unknown_choice("sampler", study["sampler"], list(SAMPLERS)))
    if study["pruner"] not in PRUNERS:
        raise SpecError("study: " + unknown_choice("pruner", study["pruner"], list(PRUNERS)))
    from ..sweep.plan import EXECUTORS

    if study["executor"] not in EXECUTORS:
        raise SpecError("study: " + unknown_choice("executor", study["executor"], list(EXECUTORS)))
    gpd_keys = mapping("gpd_keys") if "gpd_keys" in data else dict(DEFAULT_GPD_KEYS)
    return Spec(name, mapping("base"), mapping("proxy"), space, composed, gpd_keys, objective, study, path)


def load(path) -> Spec:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError(f"search spec {path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise SpecError(f"search spec {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse(data, path)


# -- what a key belongs to ---------------------------------------------------------------------------

def key_owners() -> dict[str, str]:
    """config key -> the method or extension that declares it (core keys are absent)."""
    from ..methods.spec import declared_keys

    return {key: owner for owner, key, _ in declared_keys()}


def active_owners(values: dict) -> set:
    """The methods and flags a trial's config uses (its method, its base, extensions switched on)."""
    out = {values.get("method"), values.get("base")}
    out |= {k for k, v in values.items() if v is True}
    return {o for o in out if o}


# -- the checks before any trial ----------------------------------------------------------------------

def check(spec: Spec, runs_root: Optional[Path] = None) -> Spec:
    """Every check the spec can have before a trial: raises :class:`SpecError` (one line)."""
    from ..config import RunConfig, fields_by_name

    known = fields_by_name()
    for section, keys in (("base", spec.base), ("proxy", spec.proxy), ("space", spec.space), ("gpd_keys", spec.gpd_keys)):
        for k in keys:
            if section == "space" and k == GPD_KEY:
                continue
            if k not in known:
                raise SpecError(f"{section}: " + unknown_key(k, list(known)))
            if k in SEARCH_SET and not (section == "base" and k == "preset"):
                raise SpecError(f"{section}: {k} is set by the search itself (trials: eval_on=val, their own "
                                f"folders and seed); remove it")
    if "val_per_class" not in spec.proxy and "val_per_class" not in spec.base:
        raise SpecError("proxy: val_per_class is missing: trials score on a validation split carved from the "
                        "training data (e.g. val_per_class: 10); the test set is never used by a search")
    gpd = spec.space.get(GPD_KEY)
    if gpd is not None and not (gpd.kind == "categorical" and set(gpd.choices) <= {True, False}):
        raise SpecError(f"space: gpd: expected a list of true/false, got {gpd.text()}")
    base = dict(spec.base, **spec.proxy)
    try:
        base_cfg = RunConfig.from_dict(base)
    except (ConfigError, ValueError) as e:
        raise SpecError(f"base/proxy: {e}") from None
    methods = list(spec.space["method"].choices) if "method" in spec.space else [base_cfg.method]
    from ..methods import METHODS

    for m in methods:
        if m not in METHODS:
            raise SpecError("space: " + unknown_choice("method", m, METHODS.names()))
    owners = key_owners()
    for k, r in spec.space.items():  # every searched value must be one its key accepts
        if k in (GPD_KEY, "method"):
            continue
        owner = owners.get(k)
        with_method = {"method": owner} if owner in methods or owner == GPD else {}
        for v in (list(r.choices) if r.kind == "categorical" else [r.low, r.high]):
            try:
                RunConfig.from_dict(dict(base, **with_method, **{k: v}))
            except (ConfigError, ValueError) as e:
                raise SpecError(f"space: {k}={v!r}: {e}") from None
    if spec.objective.get("gap") and int(base.get("probe_every", 1)) == 0:
        raise SpecError("objective: gap reads the probes' gap records, and probe_every=0 switches them off; set "
                        "probe_every >= 1 or the gap weight to 0")
    for m in methods:
        for g in (list(gpd.choices) if gpd is not None else [False]):
            values = trial_config(spec, {"method": m}, gpd=bool(g), terms=None)
            _check_cell(values, f"method={m}" + (" gpd=true" if g else ""))
    if COMPOSED in methods:
        _check_composed(spec, base)
    return spec


def _check_cell(values: dict, what: str) -> None:
    from .. import experiment
    from ..config import RunConfig
    from ..data import DatasetNotFoundError
    from ..engine import CheckpointError

    try:
        experiment.prepare(RunConfig.from_dict(values))
    except (ConfigError, DatasetNotFoundError, CheckpointError, ValueError) as e:
        raise SpecError(f"{what}: {e}") from None


def pair_taps(values: dict) -> list[str]:
    """The composed taps valid for a config's teacher-student pair: ``logits``, ``penultimate``,
    ``stage1``..``stageN`` (stages both models have) and ``stages`` when the counts are equal."""
    from .. import experiment, models
    from ..config import RunConfig
    from ..methods.composed import pair_taps as taps_of

    cfg = RunConfig.from_dict(dict(values, method=COMPOSED))
    prep = experiment.prepare(cfg)
    info = prep.info
    student = experiment.new_student(cfg, info)
    teacher = models.build(prep.teacher_arch, info.num_classes, info.in_channels, image_size=info.image_size)
    return taps_of(student, teacher)


def _check_composed(spec: Spec, base: dict) -> None:
    from ..methods.composed import DISTANCES, TRANSFORMS

    parts = spec.composed
    for k in ("tap", "transform", "distance", "weight"):
        if k not in parts:
            raise SpecError(f"composed: {k} is missing: method composed is searched, so its parts need ranges "
                            f"(tap, transform, distance, weight; terms optional, default 1)")
    spec.taps = pair_taps(base)
    for part, valid in (("tap", spec.taps), ("transform", TRANSFORMS), ("distance", DISTANCES)):
        r = parts[part]
        if r.kind != "categorical":
            raise SpecError(f"composed: {part}: expected a list of values, got {r.text()}")
        for v in r.choices:
            if v not in valid:
                pair = f" for this pair ({base.get('teacher', 'the teacher')} -> {base.get('student', 'the student')})" \
                    if part == "tap" else ""
                raise SpecError(f"composed: {part}: {v!r} is not valid{pair}; valid: {', '.join(valid)}")
    if "none" not in parts["transform"].choices and not _feature_taps(parts["tap"].choices):
        raise SpecError(f"composed: transform: {parts['transform'].text()} all need a feature map and no tap is "
                        f"one ({parts['tap'].text()}); add none or a stage tap")
    w = parts["weight"]
    if w.kind == "categorical" and any(not isinstance(x, (int, float)) or x < 0 for x in w.choices):
        raise SpecError(f"composed: weight: values must be numbers >= 0, got {w.text()}")
    if w.kind != "categorical" and w.low < 0:
        raise SpecError(f"composed: weight: the range must be >= 0, got {w.text()}")
    n = parts.get("terms")
    if n is not None:
        lo = min(n.choices) if n.kind == "categorical" else n.low
        if not (isinstance(lo, (int, float)) and lo >= 1):
            raise SpecError(f"composed: terms: the number of terms must be >= 1, got {n.text()}")


def _feature_taps(taps) -> list[str]:
    from ..methods.composed import LOGITS
    from ..models.hooks import PENULTIMATE

    return [t for t in taps if t not in (LOGITS, PENULTIMATE)]


# -- a trial's config ---------------------------------------------------------------------------------

def sample(spec: Spec, trial) -> dict:
    """The trial's run-config values (define-by-run: conditional keys only where used)."""
    from ..methods.composed import LOGITS, MAP_TRANSFORMS
    from ..models.hooks import PENULTIMATE

    chosen: dict = {}
    if "method" in spec.space:
        chosen["method"] = spec.space["method"].suggest(trial)
    gpd = bool(spec.space[GPD_KEY].suggest(trial)) if GPD_KEY in spec.space else False
    terms = None
    method = chosen.get("method") or dict(spec.base, **spec.proxy).get("method")
    if method == COMPOSED:
        parts = spec.composed
        n = parts["terms"].suggest(trial, "composed.terms") if "terms" in parts else 1
        terms = []
        for i in range(1, int(n) + 1):
            tap = parts["tap"].suggest(trial, f"composed.{i}.tap")
            vector = tap in (LOGITS, PENULTIMATE)
            allowed = [t for t in parts["transform"].choices if not (vector and t in MAP_TRANSFORMS)]
            if vector:  # a vector takes 'none' only: a separate parameter, so each is one fixed distribution
                transform = "none"
            else:
                transform = Range("transform", "categorical", tuple(allowed)).suggest(trial, f"composed.{i}.transform")
            distance = parts["distance"].suggest(trial, f"composed.{i}.distance")
            weight = parts["weight"].suggest(trial, f"composed.{i}.weight")
            terms.append(f"{tap}:{transform}:{distance}:{weight!r}")
    owners = key_owners()
    active = active_owners(dict(chosen, base=method if gpd else None)) | ({GPD} if gpd else set())
    active |= {k for k, v in dict(spec.base, **spec.proxy).items() if v is True}
    for k, r in spec.space.items():
        if k in ("method", GPD_KEY):
            continue
        owner = owners.get(k)
        if owner is not None and owner not in active and owner != method:
            continue  # a key of a method this trial does not use
        chosen[k] = r.suggest(trial)
        if r.kind == "categorical" and chosen[k] is True and k in owners.values():
            active.add(k)
    return trial_config(spec, chosen, gpd, terms)


def trial_config(spec: Spec, chosen: dict, gpd: bool, terms: Optional[list]) -> dict:
    """base + proxy + the chosen values + gpd wrapping + terms + eval_on=val."""
    values = dict(spec.base, **spec.proxy)
    values.update({k: v for k, v in chosen.items() if k != "method"})
    method = chosen.get("method", values.get("method"))
    if method is None:
        from ..config import RunConfig

        method = RunConfig.from_dict(values).method
    if gpd:
        values.update(spec.gpd_keys)
        values.update(method=GPD, base=method)
    else:
        values["method"] = method
    if terms is not None:
        values["composed_terms"] = "+".join(terms)
    values["eval_on"] = "val"
    values["progress"] = False
    return _drop_cache_if_refused(values)


def _drop_cache_if_refused(values: dict) -> dict:
    """``cache_teacher`` stays where the trial's method can use cached logits, else it is dropped
    (e.g. composed terms that read features, GPD's dynamic teacher)."""
    if not values.get("cache_teacher"):
        return values
    from ..config import RunConfig

    try:
        RunConfig.from_dict(values)
    except (ConfigError, ValueError) as e:
        if "cache_teacher" in str(e).split(":")[0] or str(e).startswith("cache_teacher"):
            return dict(values, cache_teacher=False)
    return values


def best_config(spec: Spec, values: dict) -> dict:
    """A trial's config as a preset at the full budget: the proxy keys and the search's own keys
    removed, the base's preset expanded (a preset file names no other preset)."""
    from ..presets import get_preset

    out = {}
    if spec.base.get("preset"):
        out.update(get_preset(str(spec.base["preset"])))
    for k, v in values.items():
        if k in SEARCH_SET:
            continue
        if k in spec.proxy:  # the full budget: the base's value, else the preset's / the default
            if k in spec.base and k != "preset":
                out[k] = spec.base[k]
            continue
        out[k] = v
    if "base" not in values:  # the preset's base belonged to its own method
        out.pop("base", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
