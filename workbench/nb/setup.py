"""From notebook parameter values to a validated run config: the auto preset on the embedded
data, notebook-only checks, :class:`workbench.config.RunConfig` conversion and the cheap
pre-flight checks of :func:`workbench.experiment.prepare` -- all before any expensive work."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .. import experiment, naming, presets
from ..config import ConfigError, RunConfig
from ..data import DatasetNotFoundError
from ..registry import unknown_choice
from .errors import ParameterError
from .params import AUTO, COMPARE_METHODS, NOTEBOOK_CHECKS
from .tables import Collapsed, Table

DIGITS_BASE_PRESET = "digits/demo/ce"  # the digits demo data/optimisation settings (method-free)
METHOD_KEYS = ("method", "base", "dot", "ctkd", "grad_clip")
#: datasets with measured CPU demo presets: preset="auto" picks ``<family>/<method>`` for them
DEMO_PRESETS = {"digits": "digits/demo", "fashion_mnist": "fashion/demo"}
# Values that go with the demo presets in the notebooks: ~600 points keep t-SNE at a few
# seconds; on digits, source digits 0-4 leave digits 5-9 as the transferability target, so the
# discriminability-vs-transferability figure has both curves offline.
DIGITS_EXTRAS = {"embed_points": 600, "source_classes": "0,1,2,3,4"}
DEMO_EXTRAS = {"digits": DIGITS_EXTRAS, "fashion_mnist": {"embed_points": 600}}


def _method_of(values: dict) -> tuple[str, str]:
    """(``method``, the run name's method part: method, resolved base, extensions) of the method
    keys among ``values``; ("", "") when they do not form a valid config (setup() reports that)."""
    try:
        cfg = RunConfig.from_dict({k: v for k, v in values.items() if k in METHOD_KEYS})
    except (ConfigError, ValueError, TypeError):
        return "", ""
    return cfg.method, naming.method_part(cfg)


def preset_name(params: dict) -> str:
    """The demo preset of the parameters' dataset that trains what their method keys ask for
    (``""`` if the dataset has no demo presets): the first of the family whose method keys make
    the same method part of a run name (``gpd-dkd``, ``kd+dot``, ``ctkd-kd+ctkd``), else the
    first with the same method, else the method-free CE preset. Read from the presets and the
    method registry: no method is named here."""
    family = DEMO_PRESETS.get(params.get("dataset", "digits"))
    if family is None:
        return ""
    method, part = _method_of(params)
    candidates = [(name, _method_of(values)) for name, values in presets.PRESETS.items()
                  if name.startswith(family + "/") and name.count("/") == family.count("/") + 1]
    for match in (lambda m: m[1] == part, lambda m: m[0] == method):
        found = next((name for name, m in candidates if method and match(m)), None)
        if found:
            return found
    return f"{family}/ce"


def apply_preset(params: dict, defaults: dict) -> tuple[dict, str]:
    """``params`` with the preset's values replacing those still at ``defaults``; the method
    keys (method, base, dot, ctkd, grad_clip) never come from the preset. Returns
    ``(params, preset name or "")``."""
    params = dict(params)
    name = params.pop("preset", "")
    if name == AUTO:
        name = preset_name(params) if params.get("dataset") in DEMO_PRESETS else ""
    if not name:
        return params, ""
    try:
        values = presets.get_preset(str(name))
    except ValueError as e:
        raise ParameterError(f"preset: {e}") from None
    family = next((d for d, f in DEMO_PRESETS.items() if str(name).startswith(f + "/")), None)
    values = dict(DEMO_EXTRAS.get(family, {}), **values)
    for k, v in values.items():
        if k in METHOD_KEYS:
            continue
        if k not in params or (k in defaults and params[k] == defaults[k]):
            params[k] = v
    return params, name


@dataclass
class Setup:
    """What :func:`setup` returns: the run config, the notebook-only options, the preset used."""

    cfg: RunConfig
    options: dict = field(default_factory=dict)
    preset: str = ""

    def show(self) -> Collapsed:
        """The whole configuration, folded under one line in HTML reports (click to expand)."""
        rows = [(k, v) for k, v in self.cfg.to_dict().items()] + [(k, v) for k, v in self.options.items()]
        title = f"configuration (preset: {self.preset or 'none'})"
        return Collapsed(Table(["parameter", "value"], rows, title=title, float_format="g"),
                         f"{title}: {len(rows)} parameters (click to expand)")


def setup(params: dict, defaults: Optional[dict] = None, check_files: bool = True) -> Setup:
    """Split, convert and validate notebook parameters; run the cheap pre-flight checks
    (:func:`workbench.experiment.prepare`: models, dataset files, teacher checkpoint, out_dir)
    unless ``check_files=False``. Raises :class:`ParameterError` on the first problem."""
    params, name = apply_preset(params, defaults or {})
    options = {k: NOTEBOOK_CHECKS[k](k, params.pop(k)) for k in list(params) if k in NOTEBOOK_CHECKS}
    unknown = [k for k in params if k not in RunConfig.keys()]
    if unknown:
        raise ParameterError(unknown_choice("parameter", unknown[0], RunConfig.keys() + list(NOTEBOOK_CHECKS)))
    try:
        cfg = RunConfig.from_dict(params)
        if check_files:
            experiment.prepare(cfg)
    except ParameterError:
        raise
    except DatasetNotFoundError as e:  # missing data: said with the notebook's parameter spelling
        raise ParameterError(e.in_notebook()) from None
    except ValueError as e:  # ConfigError, registry errors
        raise ParameterError(str(e)) from None
    return Setup(cfg, options, name)


def setup_many(params: dict, defaults: Optional[dict] = None,
               check_files: bool = True) -> tuple[Setup, list[tuple[str, int, RunConfig]]]:
    """compare.ipynb: one validated config per (method, seed); ``params`` holds the ``methods``
    and ``seeds`` lists. Each config is checked like :func:`setup` (with its own digits preset;
    ``check_files=False`` leaves the file checks to the sweep plan, which runs them per cell);
    returns the first setup (for display) and ``[(method label, seed, config), ...]``."""
    params = dict(params)
    methods = NOTEBOOK_CHECKS["methods"]("methods", params.pop("methods"))
    seeds = NOTEBOOK_CHECKS["seeds"]("seeds", params.pop("seeds"))
    first, runs = None, []
    for m in methods:
        for s in seeds:
            su = setup(dict(params, **COMPARE_METHODS.get(m), seed=s), defaults, check_files=check_files)
            first = first or su
            runs.append((m, s, su.cfg))
    first.options.update(methods=methods, seeds=seeds)
    return first, runs
