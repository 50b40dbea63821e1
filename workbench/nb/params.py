"""Notebook parameters: what each notebook's ``parameters`` cell holds, their checks, and how
the values papermill injected are read back.

Defaults of run-config keys are *derived* from :class:`workbench.config.RunConfig` (one place);
a notebook states only its deliberate differences (:data:`OVERRIDES`, each with a reason) and
its notebook-only parameters (:data:`NOTEBOOK_ONLY`). ``notebooks/_build.py`` renders the
parameters cells from :data:`PARAMETERS`; tests check the committed notebooks against it.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Callable, Sequence

from .. import presets
from ..config import ConfigError, RunConfig, fields_by_name, parse_bool
from ..registry import Registry, unknown_among_many, unknown_choice
from .errors import ParameterError

AUTO = "auto"
EMBED_METHODS = ("tsne", "pca", "umap")
MIN_EMBED_POINTS = 10

# Methods compare.ipynb knows, by short name -> the presets' method entries (one definition).
COMPARE_METHODS = Registry("compare method")
for _name, _key in (("ce", "ce"), ("kd", "kd"), ("dkd", "dkd"), ("kd+dot", "kd_dot"), ("kd+ctkd", "kd_ctkd"),
                    ("gpd+kd", "gpd_kd"), ("gpd+dkd", "gpd_dkd"), ("gpd-scratch", "gpd_scratch"), ("embed", "embed"),
                    ("gpd+embed", "gpd_embed"), ("dml", "dml"), ("orc", "orc")):
    COMPARE_METHODS.register(_name, presets.CIFAR_METHODS[_key])
COMPARE_METHODS.register("ctc", dict(method="ctc"))  # no teacher; the paper's transferability setting by default


# ------------------------------------------------------------------------- notebook-only checks
def _int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())
                                       or (isinstance(value, float) and value.is_integer())):
        raise ParameterError(f"{name}: expected an integer >= {low}, got {value!r}")
    out = int(value)
    if out < low:
        raise ParameterError(f"{name}: value {out!r} is outside the allowed range [{low}, inf]")
    return out


def _float(name: str, value, low: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected a number >= {low}, got {value!r}") from None
    if isinstance(value, bool) or not out >= low:
        raise ParameterError(f"{name}: value {value!r} is outside the allowed range [{low}, inf]")
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
    """The config's one boolean parser, raising the notebook's one-line error."""
    try:
        return parse_bool(name, value)
    except ConfigError as e:
        raise ParameterError(str(e)) from None


def _empty(name: str, value):
    raise ParameterError(f"{name}: expected a non-empty comma-separated list, got {value!r}")


NOTEBOOK_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "nproc": lambda k, v: _int(k, v, 1),
    "embed_method": lambda k, v: _choice(k, v, EMBED_METHODS),
    "embed_points": lambda k, v: _int(k, v, MIN_EMBED_POINTS),
    "methods": lambda k, v: [_choice(k, m, COMPARE_METHODS.names()) for m in _list(v)] or _empty(k, v),
    "seeds": lambda k, v: [_int(k, s, 0) for s in _list(v)] or _empty(k, v),
    "live": _bool,
    "live_epochs": lambda k, v: _int(k, v, 1),
    "surgery_ratio": lambda k, v: _float(k, v, 1.0),
    "surgery_branches": lambda k, v: _int(k, v, 0),
    "executor": lambda k, v: _choice(k, v, ("local", "slurm", "debug")),
    "parallel": lambda k, v: _int(k, v, 0),
    "sweep_name": lambda k, v: str(v),
    "partition": lambda k, v: str(v),
    "account": lambda k, v: str(v),
    "time_limit": lambda k, v: str(v),
    "gpus_per_cell": lambda k, v: _int(k, v, -1),
    "cpus_per_cell": lambda k, v: _int(k, v, 0),
    "mem": lambda k, v: str(v),
}

# ------------------------------------------------------------------------------ parameter specs
# A spec entry is (name, help) for a run-config key -- its default is RunConfig's -- or
# (name, default, help) for a notebook-only parameter. The help becomes the inline comment
# papermill shows with --help-notebook.
NOTEBOOK_ONLY: dict[str, Any] = {
    "nproc": 1, "embed_method": "tsne", "embed_points": 2000,
    "methods": "ce,kd,dkd,kd+dot,kd+ctkd,gpd+kd,gpd+dkd,gpd-scratch", "seeds": "0,1,2",
    "live": False, "live_epochs": 15, "surgery_ratio": 1.5, "surgery_branches": 2,
    # compare.ipynb's sweep (workbench.sweep): where and how its cells run
    "executor": "local", "parallel": 0, "sweep_name": "", "partition": "", "account": "", "time_limit": "",
    "gpus_per_cell": -1, "cpus_per_cell": 0, "mem": "",
}
#: the only run-config defaults a notebook changes, and why
OVERRIDES: dict[str, dict[str, Any]] = {
    # gpd/compare: on the embedded data, keys left at their default take the measured demo preset
    "gpd": {"preset": AUTO, "method": "gpd"},  # this notebook's subject
    "compare": {"preset": AUTO},
    # explore's live run: no progress bars between the widgets
    "explore": {"progress": False},
    # teaching: a few-minute walk-through on a laptop (the fashion demo preset, shorter)
    "teaching": {"epochs": 8},
}

CONFIG_HELP = None  # a spec entry's help: the config key's own help (one text, never a stale copy)

_RUN = [  # shared by gpd.ipynb and compare.ipynb; CIFAR-100 protocol defaults for a GPU run
    ("dataset", "dataset: cifar100 (downloaded into datasets/), fashion_mnist or digits (embedded, offline CPU demos)"),
    ("data_root", "dataset folder ('' means $WORKBENCH_DATA, else datasets/ of the checkout)"),
    ("preset", "auto: on fashion_mnist and digits, parameters left at their default take the measured CPU demo values; '' turns this off; or a preset name"),
    ("teacher", "static teacher: a zoo architecture (trained once and cached under runs/teachers/), a checkpoint path, or snapshot@E (the student's frozen copy from epoch E)"),
    ("teacher_arch", "architecture of a teacher checkpoint file when neither the file nor its folder name tells it"),
    ("teacher_epochs", "epochs when the teacher is trained here (0: same as epochs)"),
    ("student", "student architecture (zoo name)"),
]
_OPTIM = [
    ("epochs", "training epochs (CIFAR protocol: 240, lr x0.1 at 150/180/210)"),
    ("batch_size", "global batch size (split across GPUs)"),
    ("lr", "base learning rate (SGD, momentum 0.9, wd 5e-4)"),
]
_RUNTIME = [
    ("device", "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps"),
    ("nproc", NOTEBOOK_ONLY["nproc"], "number of GPUs: 1 runs in this kernel, more runs a torchrun subprocess"),
    ("probe_every", "gap / discriminability / transferability probes every N epochs (0: off)"),
    ("out_dir", "where runs are written ('' means runs/ of the checkout)"),
    ("train_per_class", CONFIG_HELP),
    ("source_classes", CONFIG_HELP),
    ("progress", "show progress bars"),
]
_EMBED = [
    ("embed_method", NOTEBOOK_ONLY["embed_method"], "feature-map embedding: tsne (openTSNE), pca (instant), umap (~20 s JIT first call)"),
    ("embed_points", NOTEBOOK_ONLY["embed_points"], "test examples shown in the feature maps"),
]
_GPD = _RUN + [
    ("method", "method: gpd (this notebook's subject); ce, kd, dkd or ctkd run without a dynamic teacher"),
    ("base", "base distiller: auto (follows the method; for gpd: dkd), dkd, kd, or none (GPD from scratch, no static teacher)"),
] + _OPTIM + [
    ("ratio", "GPD: channel expansion ratio r of the dynamic teacher (any r, at least 1)"),
    ("branches", "GPD: extra conv branches: default, a count (0: channel-only) or a comma list of kinds"),
    ("gpd_lambda", "GPD: weight of SCE(student, stop-grad(dynamic teacher))"),
    ("grad_clip", "gradient-norm clip (None: the method's default; GPD 5 as its reference code, others off)"),
    ("seed", "training seed"),
    ("name", "run folder under out_dir ('' means derived: teacher-student, method, seed and a hash of the settings)"),
] + _RUNTIME + _EMBED
_SPECS: dict[str, list[tuple]] = {
    "gpd": _GPD,
    "compare": _RUN + [
        ("methods", NOTEBOOK_ONLY["methods"], "comma list of: " + ", ".join(COMPARE_METHODS.names())),
        ("seeds", NOTEBOOK_ONLY["seeds"], "comma list of training seeds"),
    ] + _OPTIM + _RUNTIME[:1] + _RUNTIME[2:] + _EMBED + [
        ("executor", NOTEBOOK_ONLY["executor"], "where the runs train: local (this machine, runs in parallel), slurm (one job array; waits), debug (in this kernel, one after the other)"),
        ("parallel", NOTEBOOK_ONLY["parallel"], "runs at once (0: one per GPU, or one per CPU core; slurm: the array's limit, 0 means all)"),
        ("sweep_name", NOTEBOOK_ONLY["sweep_name"], "sweep folder name under out_dir/sweeps ('' means derived from the runs)"),
        ("partition", NOTEBOOK_ONLY["partition"], "slurm partition"),
        ("account", NOTEBOOK_ONLY["account"], "slurm account"),
        ("time_limit", NOTEBOOK_ONLY["time_limit"], "time limit per run: minutes or H:MM:SS ('' means 3 days on slurm, none locally)"),
        ("gpus_per_cell", NOTEBOOK_ONLY["gpus_per_cell"], "GPUs per run (-1: one where there are GPUs)"),
        ("cpus_per_cell", NOTEBOOK_ONLY["cpus_per_cell"], "slurm: CPUs per run; local: torch threads per run (0: cores / parallel)"),
        ("mem", NOTEBOOK_ONLY["mem"], "slurm memory per run, e.g. 32G ('' means the partition's default)"),
    ],
    "explore": [
        ("out_dir", "runs folder to explore ('' means runs/ of the checkout)"),
        ("live", NOTEBOOK_ONLY["live"], "train a small digits run now and update the curves as epochs finish"),
        ("live_epochs", NOTEBOOK_ONLY["live_epochs"], "epochs of the live run"),
        ("progress", "show progress bars in the live run"),
    ],
    "teaching": [
        ("epochs", "epochs of the short GPD run on the embedded Fashion-MNIST subset (the shipped teacher: none is trained)"),
        ("surgery_ratio", NOTEBOOK_ONLY["surgery_ratio"], "expansion ratio of the surgery demo only (the GPD run uses the preset's ratio 2)"),
        ("surgery_branches", NOTEBOOK_ONLY["surgery_branches"], "extra branches per conv in the surgery demo only (the GPD run uses the default branches)"),
        ("out_dir", "where the run is written ('' means runs/ of the checkout)"),
        ("progress", "show progress"),
    ],
}
#: notebooks that list every other run key too (every key the CLI accepts is a parameter)
ALL_RUN_KEYS = ("gpd",)


def papermill_help(text: str) -> str:
    """A help text papermill can show: it drops any parameter line holding a second '='."""
    return re.sub(r"\s*=\s*", ": ", text)


def config_default(notebook: str, key: str):
    """A run-config key's default in ``notebook``: its override, else RunConfig's."""
    return OVERRIDES.get(notebook, {}).get(key, RunConfig.default(key))


def _resolve(notebook: str, entry: tuple) -> tuple[str, Any, str]:
    if len(entry) == 3:
        return entry
    key, text = entry
    if key not in RunConfig.keys():
        raise ValueError(f"{notebook}: {key!r} is neither a run-config key nor given a notebook default")
    if text is CONFIG_HELP:
        text = papermill_help(fields_by_name()[key].metadata["help"])
    return key, config_default(notebook, key), text


def every_other_run_key(notebook: str, listed: list[tuple[str, Any, str]]) -> list[tuple[str, Any, str]]:
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
            out.append((name, config_default(notebook, name), papermill_help(text)))
    return out


def _parameters(notebook: str) -> list[tuple[str, Any, str]]:
    listed = [_resolve(notebook, e) for e in _SPECS[notebook]]
    return listed + (every_other_run_key(notebook, listed) if notebook in ALL_RUN_KEYS else [])


PARAMETERS: dict[str, list[tuple[str, Any, str]]] = {nb: _parameters(nb) for nb in _SPECS}


def defaults(notebook: str) -> dict:
    """``{parameter: default}`` of one notebook's parameters cell."""
    if notebook not in PARAMETERS:
        raise ValueError(unknown_choice("notebook", notebook, list(PARAMETERS)))
    return {k: v for k, v, _ in PARAMETERS[notebook]}


# ------------------------------------------------------------------------------ papermill values
INJECTED_HEADER = "# Parameters\n"  # first line of the cell papermill injects after the parameters cell


def _assigned(source: str) -> list[str] | None:
    """The names a cell made only of ``name = value`` lines (comments allowed) assigns, in order;
    None for any other cell (imports, calls, attribute targets) or a syntax error."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            return None
        if not all(isinstance(t, ast.Name) for t in targets):
            return None
        names += [t.id for t in targets]
    return names


def _history(namespace: dict) -> list[str]:
    return [s for s in namespace.get("In", []) if isinstance(s, str)]


def injected_names(namespace: dict) -> list[str]:
    """Names assigned by papermill's injected-parameters cell, from IPython's input history
    (``In``) in ``namespace``: the latest executed cell that starts like papermill's. Empty
    outside papermill (nothing was injected)."""
    for source in reversed(_history(namespace)):
        if source.startswith(INJECTED_HEADER):
            return _assigned(source) or []
    return []


def parameters_cell_names(namespace: dict) -> list[str]:
    """Names assigned by the cells run just before the current one (the last history entry) that
    hold nothing but ``name = value`` lines: the parameters cell as typed in JupyterLab (and a
    cell added under it), papermill's injected cell. Empty when the cell before is anything else."""
    history = _history(namespace)[:-1]  # the last entry is the cell calling this
    names = []
    for source in reversed(history):
        if not source.strip():
            continue
        assigned = _assigned(source)
        if assigned is None:
            break
        names = assigned + names
    return names


MAX_LISTED = 12  # more parameters than this: the error names the closest, not all of them


def _unknown(where: str, notebook: str, name: str, known: list[str]) -> ParameterError:
    kind = f"{notebook}.ipynb parameter"
    text = (unknown_choice(kind, name, known) if len(known) <= MAX_LISTED
            else unknown_among_many(kind, name, known, "the parameters cell"))
    return ParameterError(f"{where}: {text}")


def params_from(namespace: dict, notebook: str) -> dict:
    """The current values of ``notebook``'s parameters from a namespace (``globals()``). A name
    that is not one of them -- injected with ``papermill -p`` or typed in the parameters cell
    (``epoch = 5``, which would otherwise be ignored) -- raises :class:`ParameterError` with a
    did-you-mean."""
    known = defaults(notebook)
    injected = injected_names(namespace)
    for name in injected:
        if name not in known:
            raise _unknown(f"papermill -p {name}", notebook, name, list(known))
    for name in parameters_cell_names(namespace):
        if name not in known and name not in injected:
            raise _unknown(f"parameters cell: {name} = ...", notebook, name, list(known))
    return {k: namespace[k] for k in known}
