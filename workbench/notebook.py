"""Helpers that keep the notebooks' cells short: parameter checking, running, figures, tables.

Guarantees:
- :func:`setup` validates every notebook parameter before any expensive work. Problems raise
  :class:`ParameterError` (a ``ValueError``) whose message names the parameter, the bad value
  and what is allowed; in Jupyter/papermill it renders as that one line instead of a deep
  traceback (IPython's ``_render_traceback_`` protocol).
- Config keys are converted and checked by :class:`workbench.config.RunConfig` (one place);
  notebook-only parameters (``nproc``, ``embed_method``, ``embed_points``, ``methods``,
  ``seeds``, ``live``) are checked here with the package's wording
  (:func:`workbench.registry.unknown_choice`).
- ``preset="auto"`` on ``dataset="digits"``: every parameter still at its notebook default takes
  the measured CPU demo value (:mod:`workbench.presets`, ``digits/demo/...``); parameters the
  caller changed always win. Other presets are applied the same way.
- A name passed with ``papermill -p`` that is not a parameter of the notebook stops the
  validation cell with one line and a did-you-mean (:func:`params_from` reads the names of
  papermill's injected-parameters cell from the kernel's input history).
- Failures while training (a run folder in use, a refused resume, divergence, Ctrl-C) are
  shown as one line too (:class:`RunError`).
"""
from __future__ import annotations

import ast
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import experiment, presets
from .config import ConfigError, RunConfig, fields_by_name
from .data import DatasetNotFoundError
from .engine.callbacks import PAIRS, Callback
from .registry import Registry, unknown_choice

AUTO = "auto"
DIGITS_BASE_PRESET = "digits/demo/ce"  # the digits demo data/optimisation settings (method-free)
METHOD_KEYS = ("method", "base", "dot", "ctkd", "grad_clip")
# Values that go with the digits presets in the notebooks: ~600 points keep t-SNE at a few
# seconds; source digits 0-4 leave digits 5-9 as the transferability target, so the
# discriminability-vs-transferability figure has both curves offline.
DIGITS_EXTRAS = {"embed_points": 600, "source_classes": "0,1,2,3,4"}
EMBED_METHODS = ("tsne", "pca", "umap")
MIN_EMBED_POINTS = 10
ROLE_LABELS = {"student": "S", "dynamic_teacher": "T_d", "teacher": "T_s"}

# Methods compare.ipynb knows, by short name -> the presets' method entries (one definition).
COMPARE_METHODS = Registry("compare method")
for _name, _key in (("ce", "ce"), ("kd", "kd"), ("dkd", "dkd"), ("kd+dot", "kd_dot"), ("kd+ctkd", "kd_ctkd"),
                    ("gpd+kd", "gpd_kd"), ("gpd+dkd", "gpd_dkd"), ("gpd-scratch", "gpd_scratch")):
    COMPARE_METHODS.register(_name, presets.CIFAR_METHODS[_key])


class OneLine:
    """Mixin: IPython shows the exception as one line ``<class name>: <message>`` (no traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ParameterError(OneLine, ConfigError):
    """A bad notebook parameter. Shown by IPython as one clear line (no traceback)."""


class RunError(OneLine, RuntimeError):
    """A run that stopped for a reason its message states (shown as one line)."""


# ------------------------------------------------------------------------- notebook-only checks
def _int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())
                                       or (isinstance(value, float) and value.is_integer())):
        raise ParameterError(f"{name}: expected an integer >= {low}, got {value!r}")
    out = int(value)
    if out < low:
        raise ParameterError(f"{name}: value {out!r} is outside the allowed range [{low}, inf]")
    return out


def _choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ParameterError(f"{name}: " + unknown_choice(name, value, list(choices)))
    return value


def _list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [s.strip() for s in str(value).split(",") if s.strip()]


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ParameterError(f"{name}: expected a boolean (True/False), got {value!r}")


NOTEBOOK_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "nproc": lambda k, v: _int(k, v, 1),
    "embed_method": lambda k, v: _choice(k, v, EMBED_METHODS),
    "embed_points": lambda k, v: _int(k, v, MIN_EMBED_POINTS),
    "methods": lambda k, v: [_choice(k, m, COMPARE_METHODS.names()) for m in _list(v)] or _empty(k, v),
    "seeds": lambda k, v: [_int(k, s, 0) for s in _list(v)] or _empty(k, v),
    "live": _bool,
    "live_epochs": lambda k, v: _int(k, v, 1),
}


def _empty(name: str, value):
    raise ParameterError(f"{name}: expected a non-empty comma-separated list, got {value!r}")


# ------------------------------------------------------------------------------ presets
def preset_name(params: dict) -> str:
    """The digits demo preset matching the parameters' method (``""`` if there is none)."""
    method, base = params.get("method", "kd"), params.get("base", AUTO)
    if method == "gpd":
        key = {"none": "gpd_scratch", "kd": "gpd_kd"}.get(base, "gpd_dkd")
    elif method == "ctkd":
        key = "kd_ctkd"
    else:
        key = f"{method}_dot" if _truthy(params.get("dot")) else method
    name = f"digits/demo/{key}"
    return name if name in presets.PRESETS else DIGITS_BASE_PRESET


def _truthy(v) -> bool:
    return v is True or (isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "on"))


def apply_preset(params: dict, defaults: dict) -> tuple[dict, str]:
    """``params`` with the preset's values replacing those still at ``defaults``; the method
    keys (method, base, dot, ctkd, grad_clip) never come from the preset. Returns
    ``(params, preset name or "")``."""
    params = dict(params)
    name = params.pop("preset", "")
    if name == AUTO:
        name = preset_name(params) if params.get("dataset") == "digits" else ""
    if not name:
        return params, ""
    try:
        values = presets.get_preset(str(name))
    except ValueError as e:
        raise ParameterError(f"preset: {e}") from None
    if str(name).startswith("digits/"):
        values = dict(DIGITS_EXTRAS, **values)
    for k, v in values.items():
        if k in METHOD_KEYS:
            continue
        if k not in params or (k in defaults and params[k] == defaults[k]):
            params[k] = v
    return params, name


# ------------------------------------------------------------------------------ setup
@dataclass
class Setup:
    """What :func:`setup` returns: the run config, the notebook-only options, the preset used."""

    cfg: RunConfig
    options: dict = field(default_factory=dict)
    preset: str = ""

    def show(self) -> "Table":
        rows = [(k, v) for k, v in self.cfg.to_dict().items()] + [(k, v) for k, v in self.options.items()]
        return Table(["parameter", "value"], rows, title=f"configuration (preset: {self.preset or 'none'})",
                     float_format="g")


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
    except (ValueError, DatasetNotFoundError) as e:  # ConfigError, missing data, registry errors
        raise ParameterError(str(e)) from None
    return Setup(cfg, options, name)


def setup_many(params: dict, defaults: Optional[dict] = None) -> tuple[Setup, list[tuple[str, int, RunConfig]]]:
    """compare.ipynb: one validated config per (method, seed); ``params`` holds the ``methods``
    and ``seeds`` lists. Each config is checked like :func:`setup` (with its own digits preset);
    returns the first setup (for display) and ``[(method label, seed, config), ...]``."""
    params = dict(params)
    methods = NOTEBOOK_CHECKS["methods"]("methods", params.pop("methods"))
    seeds = NOTEBOOK_CHECKS["seeds"]("seeds", params.pop("seeds"))
    first, runs = None, []
    for m in methods:
        for s in seeds:
            su = setup(dict(params, **COMPARE_METHODS.get(m), seed=s), defaults, check_files=True)
            first = first or su
            runs.append((m, s, su.cfg))
    first.options.update(methods=methods, seeds=seeds)
    return first, runs


# ------------------------------------------------------------------------------ running
class CaptureModels(Callback):
    """Keeps the trained models (``{role: module}``, CPU/eval untouched) at the end of a fit so the
    notebook can draw feature maps of S, T_d and T_s without re-building the method."""

    def __init__(self):
        self.models: dict = {}

    def on_fit_end(self, state) -> None:
        self.models = dict(state.eval_models())


def train(cfg: RunConfig, nproc: int = 1, extra_callbacks: Sequence = (), echo=print):
    """Run (or resume) ``cfg``: in this process for ``nproc == 1`` (models captured for feature
    maps), under torchrun otherwise. Returns ``(RunResult, {role: module})`` -- the dict is
    empty for multi-process runs (the models live in the torchrun workers)."""
    from .engine import CheckpointError, NonFiniteLossError

    try:
        if nproc > 1:
            from .launch import run_distributed

            return run_distributed(cfg, nproc, echo=echo), {}
        cap = CaptureModels()
        result = experiment.run(cfg, extra_callbacks=[cap, *extra_callbacks], log=echo)
        return result, cap.models
    except (ConfigError, CheckpointError, DatasetNotFoundError, NonFiniteLossError) as e:
        raise RunError(str(e)) from None
    except KeyboardInterrupt:
        raise RunError("interrupted; rerun the same command to resume") from None


def test_set(cfg: RunConfig):
    from . import data

    return data.build(cfg.dataset, "test", **cfg.dataset_options())


def feature_map_figure(models: dict, cfg: RunConfig, points: int, method: str = "tsne",
                       roles: Sequence[str] = ("student", "dynamic_teacher", "teacher"), title: str = ""):
    """Side-by-side penultimate-feature maps of the given roles on the first ``points`` test
    examples (shared PCA init, aligned panels); ``None`` if no model of those roles is given."""
    from .probes import extract_many, feature_maps, figures

    chosen = {ROLE_LABELS.get(r, r): models[r] for r in roles if r in models}
    if not chosen:
        return None
    sets = extract_many(chosen, test_set(cfg), max_samples=points, cache_dir=False)
    fig = figures.feature_map_panels(feature_maps(sets, method=method, seed=cfg.seed))
    if title:
        fig.update_layout(title=title)
    return fig


# ------------------------------------------------------------------------------ tables
class Table:
    """A small table: rich HTML in Jupyter, aligned text in a terminal / papermill log."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence], title: str = "", float_format: str = ".2f"):
        self.columns, self.rows, self.title = list(columns), [list(r) for r in rows], title
        self.float_format = float_format

    def _fmt(self, v) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else format(v, self.float_format)
        return "" if v is None else str(v)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self._fmt(v))}</td>" for v in r) + "</tr>" for r in self.rows)
        cap = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        cells = [self.columns] + [[self._fmt(v) for v in r] for r in self.rows]
        w = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in cells]
        return "\n".join(([self.title] if self.title else []) + lines[:1] + ["-" * len(lines[0])] + lines[1:])

    __repr__ = __str__

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]


def final_table(records: list[dict]) -> Table:
    """Per role: best top-1 (epoch) and last top-1 from the ``summary`` records, plus the last
    epoch's gaps (accuracy gap, KL) of each pair."""
    summ = [r for r in records if r.get("kind") == "summary"]
    rows = [(ROLE_LABELS.get(r["role"], r["role"]), r["best_top1"], r["best_epoch"], r["last_top1"]) for r in summ]
    gaps = [r for r in records if r.get("kind") == "gap"]
    last = max((r["epoch"] for r in gaps), default=None)
    for pair in PAIRS:
        vals = {r["metric"]: r["value"] for r in gaps if r["epoch"] == last and r["pair"] == pair}
        if vals:
            rows.append((f"gap {pair}", vals.get("acc_gap"), last, vals.get("kl")))
    return Table(["model / pair", "best top-1 (gap: acc gap)", "epoch", "last top-1 (gap: KL)"], rows,
                 title="final results")


def compare_table(results: dict) -> Table:
    """``{method label: [records of each seed]}`` -> student best/last top-1 as mean +- std."""
    import numpy as np

    rows = []
    for label, runs in results.items():
        best, last = [], []
        for recs in runs:
            s = [r for r in recs if r.get("kind") == "summary" and r.get("role") == "student"]
            if s:
                best.append(s[0]["best_top1"])
                last.append(s[0]["last_top1"])
        pm = lambda v: f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.2f}" if v else "n/a"  # noqa: E731
        rows.append((label, len(best), pm(best), pm(last)))
    return Table(["method", "seeds", "best top-1 (mean ± std)", "last top-1 (mean ± std)"], rows,
                 title="student top-1 over seeds")


# ------------------------------------------------------------------------------ student check
def check_student(cfg: RunConfig, run_dir, records: list[dict]) -> Table:
    """Load the saved plain student (``student.pt``) into the ordinary architecture (strict) and
    re-evaluate it on the test set; its top-1 must equal the logged last-epoch student top-1."""
    import torch

    from . import data, models
    from .engine.checkpoint import STUDENT

    info = data.info(cfg.dataset, **cfg.dataset_options())
    path = Path(run_dir) / STUDENT
    student = models.load(cfg.student, path, info.num_classes, info.in_channels, image_size=info.image_size).eval()
    correct = total = 0
    loader = torch.utils.data.DataLoader(test_set(cfg), batch_size=cfg.eval_batch_size)
    with torch.no_grad():
        for x, y in loader:
            correct += (student(x).argmax(1) == y).sum().item()
            total += len(y)
    logged = [r for r in records if r.get("kind") == "summary" and r.get("role") == "student"]
    params = sum(p.numel() for p in student.parameters())
    return Table(["file", "architecture", "parameters", "re-evaluated top-1", "logged last top-1"],
                 [(str(path), cfg.student, params, 100.0 * correct / max(1, total),
                   logged[0]["last_top1"] if logged else None)], title="extracted plain student")


# ------------------------------------------------------------------------------ live curves
class LiveCurves(Callback):
    """Updates a plotly ``FigureWidget`` after every epoch from the run's ``metrics.jsonl``: one
    trace per (pair) of ``metric`` gaps plus the student's top-1 (when ``top1=True``)."""

    def __init__(self, widget, metric: str = "acc_gap", pairs: Sequence[str] = tuple(PAIRS)):
        self.widget, self.metric, self.pairs = widget, metric, list(pairs)
        self.updates = 0

    def on_epoch_end(self, state, epoch: int) -> list[dict]:
        from .engine.metrics import read_metrics

        recs = read_metrics(state.metrics_path) if Path(state.metrics_path).exists() else []
        self.update(recs)
        return []

    def update(self, recs: list[dict]) -> None:
        series = {p: sorted((r["epoch"], r["value"]) for r in recs if r.get("kind") == "gap"
                            and r.get("metric") == self.metric and r.get("pair") == p) for p in self.pairs}
        with self.widget.batch_update():
            for tr in self.widget.data:
                pts = series.get(tr.name, [])
                tr.x = [e for e, _ in pts]
                tr.y = [v for _, v in pts]
        self.updates += 1


# ------------------------------------------------------------------------------ parameters
# Each notebook's parameters cell is generated from these specs by notebooks/_build.py (the one
# place the defaults live); :func:`setup` uses them to tell untouched defaults from user values.
# (name, default, help) -- the help becomes the inline comment papermill shows with --help-notebook.
_RUN = [  # shared by gpd.ipynb and compare.ipynb; CIFAR-100 protocol defaults for a GPU run
    ("dataset", "cifar100", "dataset: cifar100 (downloaded into datasets/) or digits (embedded, offline CPU demo)"),
    ("data_root", "", "dataset folder ('' means $WORKBENCH_DATA, else datasets/ of the checkout)"),
    ("preset", AUTO, "auto: on digits, parameters left at their default take the measured CPU demo values; '' turns this off; or a preset name"),
    ("teacher", "resnet32x4", "static teacher: a zoo architecture (trained once and cached under runs/teachers/) or a checkpoint path"),
    ("teacher_arch", "", "architecture of a teacher checkpoint file when neither the file nor its folder name tells it"),
    ("teacher_epochs", 0, "epochs when the teacher is trained here (0: same as epochs)"),
    ("student", "resnet8x4", "student architecture (zoo name)"),
]
_OPTIM = [
    ("epochs", 240, "training epochs (CIFAR protocol: 240, lr x0.1 at 150/180/210)"),
    ("batch_size", 64, "global batch size (split across GPUs)"),
    ("lr", 0.05, "base learning rate (SGD, momentum 0.9, wd 5e-4)"),
]
_RUNTIME = [
    ("device", AUTO, "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps"),
    ("nproc", 1, "number of GPUs: 1 runs in this kernel, more runs a torchrun subprocess"),
    ("probe_every", 1, "gap / discriminability / transferability probes every N epochs (0: off)"),
    ("out_dir", "", "where runs are written ('' means runs/ of the checkout)"),
    ("train_per_class", None, "digits only: training images per class (None: 70/30 split)"),
    ("source_classes", "", "digits only: source classes, e.g. 0,1,2,3,4 (the rest is the transferability target)"),
    ("progress", True, "show progress bars"),
]
_EMBED = [
    ("embed_method", "tsne", "feature-map embedding: tsne (openTSNE), pca (instant), umap (~20 s JIT first call)"),
    ("embed_points", 2000, "test examples shown in the feature maps"),
]


def papermill_help(text: str) -> str:
    """A help text papermill can show: it drops any parameter line holding a second '='."""
    return re.sub(r"\s*=\s*", ": ", text)


def every_other_run_key(listed: list[tuple[str, Any, str]]) -> list[tuple[str, Any, str]]:
    """``(key, default, help)`` of every run config key not in ``listed``, with the CLI's
    default and help: every key ``python -m workbench train`` accepts is a notebook parameter."""
    have = {k for k, _, _ in listed}
    out = []
    for name, f in fields_by_name().items():
        if name not in have:
            choices = f.metadata.get("choices")
            text = f.metadata["help"]
            if choices and not all(c in text for c in choices):
                text += f" ({', '.join(choices)})"
            out.append((name, RunConfig.default(name), papermill_help(text)))
    return out


_GPD = _RUN + [
    ("method", "gpd", "method: gpd (this notebook's subject); ce, kd, dkd or ctkd run without a dynamic teacher"),
    ("base", AUTO, "base distiller: auto (follows the method; for gpd: dkd), dkd, kd, or none (GPD from scratch, no static teacher)"),
] + _OPTIM + [
    ("ratio", 2.0, "GPD: channel expansion ratio r of the dynamic teacher (any r, at least 1)"),
    ("branches", "default", "GPD: extra conv branches: default, a count (0: channel-only) or a comma list of kinds"),
    ("gpd_lambda", 3.0, "GPD: weight of SCE(student, stop-grad(dynamic teacher))"),
    ("grad_clip", 5.0, "gradient-norm clip (GPD reference: 5)"),
    ("seed", 0, "training seed"),
    ("name", "", "run folder under out_dir ('' means derived: teacher-student, method, seed and a hash of the settings)"),
] + _RUNTIME + _EMBED
PARAMETERS: dict[str, list[tuple[str, Any, str]]] = {
    "gpd": _GPD + every_other_run_key(_GPD),
    "compare": _RUN + [
        ("methods", "ce,kd,dkd,kd+dot,kd+ctkd,gpd+kd,gpd+dkd,gpd-scratch", "comma list of: "
         + ", ".join(COMPARE_METHODS.names())),
        ("seeds", "0,1,2", "comma list of training seeds"),
    ] + _OPTIM + _RUNTIME[:1] + _RUNTIME[2:] + _EMBED,
    "explore": [
        ("out_dir", "", "runs folder to explore ('' means runs/ of the checkout)"),
        ("live", False, "train a small digits run now and update the curves as epochs finish"),
        ("live_epochs", 15, "epochs of the live run"),
        ("progress", False, "show progress bars in the live run"),
    ],
    "teaching": [
        ("epochs", 12, "epochs of the tiny digits GPD run"),
        ("teacher_epochs", 20, "epochs of the digits static teacher (trained once, cached)"),
        ("ratio", 1.5, "expansion ratio used in the surgery demo (any r, at least 1)"),
        ("branches", 2, "extra branches per conv in the surgery demo"),
        ("out_dir", "", "where the tiny runs are written ('' means runs/ of the checkout)"),
        ("progress", False, "show progress bars"),
    ],
}


def defaults(notebook: str) -> dict:
    """``{parameter: default}`` of one notebook's parameters cell."""
    if notebook not in PARAMETERS:
        raise ValueError(unknown_choice("notebook", notebook, list(PARAMETERS)))
    return {k: v for k, v, _ in PARAMETERS[notebook]}


INJECTED_HEADER = "# Parameters\n"  # first line of the cell papermill injects after the parameters cell


def injected_names(namespace: dict) -> list[str]:
    """Names assigned by papermill's injected-parameters cell, from IPython's input history
    (``In``) in ``namespace``: the latest executed cell that starts like papermill's. Empty
    outside papermill (nothing was injected)."""
    for source in reversed(list(namespace.get("In", []))):
        if isinstance(source, str) and source.startswith(INJECTED_HEADER):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return []
            return [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)]
    return []


def params_from(namespace: dict, notebook: str) -> dict:
    """The current values of ``notebook``'s parameters from a namespace (``globals()``); a name
    injected with ``papermill -p`` that is not one of them raises :class:`ParameterError`."""
    known = defaults(notebook)
    for name in injected_names(namespace):
        if name not in known:
            raise ParameterError(f"papermill -p {name}: " + unknown_choice(f"{notebook}.ipynb parameter", name, list(known)))
    return {k: namespace[k] for k in known}


def init_plotly() -> None:
    """Figures that render in JupyterLab (mimetype) *and* in nbconvert HTML (embedded plotly.js,
    works offline)."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"


# ------------------------------------------------------------------------------ teaching helpers
def max_logit_diff(a, b, x) -> float:
    """``max |a(x) - b(x)| / max |a(x)|`` in eval mode (the spec's equality measure; <= 1e-5
    means "equal logits")."""
    import torch

    with torch.no_grad():
        za, zb = a(x), b(x)
    return float((za - zb).abs().max() / za.abs().max().clamp_min(1e-12))


def surgery_table(dt, student) -> Table:
    """One row per widened layer of T_d: student vs T_d shape and the number of conv branches."""
    from .gpd import MultiBranchConv2d

    rows = []
    s_mods = dict(student.named_modules())
    for path, m in dt.wide.named_modules():
        w = getattr(m, "weight", None)
        if w is None or not hasattr(w, "shape") or path not in s_mods or not hasattr(s_mods[path], "weight"):
            continue
        n_branches = len(m.branches) if isinstance(m, MultiBranchConv2d) else 0
        rows.append((path, type(s_mods[path]).__name__, tuple(s_mods[path].weight.shape), tuple(w.shape), n_branches))
    return Table(["layer", "type", "student weight", "T_d weight", "extra branches"], rows,
                 title=f"IR: ratio {dt.plan.ratio}, {len(dt.branched_paths)} multi-branch convs")


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def method_feature_maps(models_by_panel: dict, cfg: RunConfig, points: int, method: str = "tsne"):
    """compare.ipynb: one feature-map panel per method (e.g. each method's student), same test
    examples, shared PCA init, aligned panels."""
    from .probes import extract_many, feature_maps, figures

    if not models_by_panel:
        return None
    sets = extract_many(dict(models_by_panel), test_set(cfg), max_samples=points, cache_dir=False)
    cols = min(4, len(sets))
    fig = figures.feature_map_panels(feature_maps(sets, method=method, seed=cfg.seed), cols=cols)
    fig.update_layout(title="Student feature maps per method")
    return fig


# ------------------------------------------------------------------------------ explorer
TOP1 = "top1"  # pseudo-metric of the explorer: test top-1 of S, T_d, T_s


def find_runs(root) -> dict[str, Path]:
    """``{name relative to root: run dir}`` of every folder under ``root`` with a metrics log."""
    from .engine.metrics import METRICS_FILE

    root = Path(root)
    if not root.is_dir():
        return {}
    return {str(p.parent.relative_to(root)): p.parent for p in sorted(root.rglob(METRICS_FILE))}


def runs_table(root) -> Table:
    from .engine.metrics import read_metrics

    rows = []
    for name, path in find_runs(root).items():
        recs = read_metrics(path)
        s = [r for r in recs if r.get("kind") == "summary" and r.get("role") == "student"]
        epochs = max((r["epoch"] for r in recs if r.get("kind") == "train"), default=0)
        rows.append((name, epochs, s[0]["best_top1"] if s else None, s[0]["last_top1"] if s else None))
    return Table(["run", "epochs done", "best S top-1", "last S top-1"], rows, title=f"runs under {root}")


class Explorer:
    """Interactive run explorer (ipywidgets + plotly FigureWidget): pick runs and a metric, toggle
    the pairs T_s-S / T_d-S / T_s-T_d, scrub epochs with a slider (a marker line and a readout
    of the values at that epoch). All state changes go through :meth:`redraw` (testable headless)."""

    def __init__(self, root, selected: Optional[Sequence[str]] = None):
        import ipywidgets as W
        import plotly.graph_objects as go

        from .engine.metrics import read_metrics

        self.root = Path(root)
        self.runs = find_runs(self.root)
        self.records = {name: read_metrics(p) for name, p in self.runs.items()}
        gap_metrics = sorted({r["metric"] for recs in self.records.values() for r in recs if r.get("kind") == "gap"})
        first = [n for n in self.runs if any(r.get("kind") == "gap" for r in self.records[n])][:1] or list(self.runs)[:1]
        self.run_select = W.SelectMultiple(options=list(self.runs), value=tuple(selected or first),
                                           description="runs", rows=min(8, max(2, len(self.runs))),
                                           layout=W.Layout(width="60%"))
        options = gap_metrics + [TOP1]
        self.metric = W.Dropdown(options=options, value="acc_gap" if "acc_gap" in options else options[0],
                                 description="metric")
        self.pairs = {p: W.ToggleButton(value=True, description=p) for p in PAIRS}
        top = max((r["epoch"] for recs in self.records.values() for r in recs), default=0)
        self.epoch = W.IntSlider(value=top, min=0, max=max(1, top), description="epoch", continuous_update=True)
        self.readout = W.HTML()
        self.fig = go.FigureWidget(layout=dict(height=420, xaxis_title="epoch", margin=dict(t=40)))
        for w in (self.run_select, self.metric, self.epoch, *self.pairs.values()):
            w.observe(lambda _change: self.redraw(), names="value")
        self.redraw()

    def series(self) -> dict[str, tuple[list, list]]:
        """``{trace name: (epochs, values)}`` for the current selection."""
        out = {}
        several = len(self.run_select.value) > 1
        for run in self.run_select.value:
            recs = self.records[run]
            if self.metric.value == TOP1:
                for role, label in ROLE_LABELS.items():
                    pts = sorted((r["epoch"], r["top1"]) for r in recs if r.get("kind") == "eval" and r.get("role") == role)
                    if pts:
                        out[f"{label} ({run})" if several else label] = ([e for e, _ in pts], [v for _, v in pts])
                continue
            for pair, button in self.pairs.items():
                if not button.value:
                    continue
                pts = sorted((r["epoch"], r["value"]) for r in recs if r.get("kind") == "gap"
                             and r.get("pair") == pair and r.get("metric") == self.metric.value and r.get("value") is not None)
                if pts:
                    out[f"{pair} ({run})" if several else pair] = ([e for e, _ in pts], [v for _, v in pts])
        return out

    def redraw(self) -> None:
        if getattr(self, "_busy", False):
            return
        self._busy = True
        try:
            self._fit_slider()
            self._redraw()
        finally:
            self._busy = False

    def _fit_slider(self) -> None:
        """Slider range = epochs of the selected runs (value kept inside it)."""
        top = max((r["epoch"] for run in self.run_select.value for r in self.records[run]), default=0)
        at_end = self.epoch.value >= self.epoch.max
        self.epoch.max = max(1, top)
        if at_end or self.epoch.value > top:
            self.epoch.value = top

    def _redraw(self) -> None:
        series = self.series()
        with self.fig.batch_update():
            self.fig.data = ()
            for name, (x, y) in series.items():
                self.fig.add_scatter(x=x, y=y, mode="lines+markers", name=name)
            e = self.epoch.value
            self.fig.layout.shapes = [dict(type="line", x0=e, x1=e, xref="x", y0=0, y1=1, yref="paper",
                                           line=dict(dash="dot", color="gray"))]
            self.fig.layout.yaxis.title = self.metric.value
            self.fig.layout.title = f"{self.metric.value} vs epoch"
        rows = []
        for name, (x, y) in series.items():
            at = dict(zip(x, y))
            rows.append((name, at.get(self.epoch.value)))
        self.readout.value = Table(["curve", f"value at epoch {self.epoch.value}"], rows, float_format=".3f")._repr_html_()

    def widget(self):
        import ipywidgets as W

        controls = W.HBox([self.run_select, W.VBox([self.metric, W.HBox(list(self.pairs.values())), self.epoch])])
        return W.VBox([controls, self.fig, self.readout])


def live_figure(title: str = "live: gaps as epochs finish", metric: str = "acc_gap"):
    """An empty FigureWidget with one trace per pair, for :class:`LiveCurves`."""
    import plotly.graph_objects as go

    fig = go.FigureWidget(layout=dict(title=title, xaxis_title="epoch", yaxis_title=metric, height=380))
    for p in PAIRS:
        fig.add_scatter(x=[], y=[], mode="lines+markers", name=p)
    return fig
