"""From grid arguments to a validated plan: sweep options, cells (one run config each), the
teachers to train first -- every check done, nothing created or submitted.

Each cell is checked as ``train`` checks one run: :meth:`RunConfig.from_dict` (keys, values,
method rules) and :func:`workbench.experiment.prepare` (models, dataset files, teacher and init
files, tracker package, output folder, whether an existing run folder may be continued). The
first bad cell stops the plan with one line naming it. Two cells that would write one run
folder are refused too.

A static teacher named by architecture is trained on the fly and cached (``runs/teachers/``);
cells that share one must not each train it (the second would find its folder locked), so the
plan lists the distinct teacher runs not cached yet: the sweep trains them first, then the cells.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .. import paths
from ..keys import ConfigError
from . import folder as sf
from .grid import GridError, cells as grid_cells, fields_by_name, parse_grid, varying

if TYPE_CHECKING:  # the assembled config imports every method (and torch): not in a job process
    from ..config import RunConfig

EXECUTORS = ("local", "slurm", "debug")
MINUTES_PER_HOUR, MINUTES_PER_DAY = 60, 1440
#: SLURM time limit when none is given (minutes; submitit's own default is 5)
DEFAULT_SLURM_MINUTES = 3 * MINUTES_PER_DAY
#: the local executor's time limit when none is given: none, in practice (a year of minutes)
NO_LIMIT_MINUTES = 365 * MINUTES_PER_DAY
SWEEP_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$")


@dataclass
class SweepOptions:
    """The sweep's own keys (every other ``key=`` is a run-config key of the grid)."""

    name: str = ""  # folder under <runs>/sweeps/ ('' = derived from the grid)
    executor: str = "local"  # local | slurm | debug
    parallel: int = 0  # cells at once (local: 0 = one per GPU group, else one per core; slurm: the array's %N)
    gpus_per_cell: int = -1  # -1 = 1 on a GPU machine / SLURM, 0 on CPU
    cpus_per_cell: int = 0  # slurm --cpus-per-task (0 = SLURM's default); local: torch threads (0 = cores / parallel)
    nproc: int = 0  # training processes per cell (torchrun; 0 = gpus_per_cell, at least 1)
    partition: str = ""
    account: str = ""
    time: str = ""  # limit per cell: minutes, H:MM:SS or D-HH:MM:SS ('' = 3 days on SLURM, none locally)
    mem: str = ""  # e.g. 32G, 500M ('' = SLURM's default)
    signal_delay_s: int = 90  # seconds between the checkpoint signal and the time limit
    slurm: dict = field(default_factory=dict)  # slurm_<key>=value passed to submitit as is (e.g. slurm_qos)

    HELP = {
        "name": "sweep name: the folder runs/sweeps/<name>/ (default: derived from the grid, so the same command "
                "finds the same sweep)",
        "executor": "local (this machine, cells in parallel), slurm (one job array) or debug (in this process, "
                    "one cell after the other)",
        "parallel": "cells at once (local: 0 = one per GPU, or one per CPU core without GPUs; slurm: the "
                    "array's %N, 0 = all)",
        "gpus_per_cell": "GPUs per cell (-1 = 1 where there are GPUs, else 0)",
        "cpus_per_cell": "slurm: --cpus-per-task; local: torch threads per cell (0 = cores / parallel)",
        "nproc": "training processes per cell under torchrun (0 = gpus_per_cell, at least 1)",
        "partition": "slurm --partition", "account": "slurm --account",
        "time": "time limit per cell: minutes, H:MM:SS or D-HH:MM:SS (slurm default 3 days; local: none)",
        "mem": "slurm --mem per cell, e.g. 32G",
        "signal_delay_s": "seconds between the checkpoint signal (USR2) and the time limit",
    }

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.HELP)

    def minutes(self) -> int:
        return parse_minutes(self.time) if self.time else 0

    def mem_gb(self) -> Optional[float]:
        return parse_mem_gb(self.mem) if self.mem else None


def parse_minutes(text: str) -> int:
    """``90`` (minutes), ``1:30:00``, ``2-00:00:00`` -> minutes (rounded up)."""
    text = str(text).strip()
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        return days * MINUTES_PER_DAY + parts[0]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return days * MINUTES_PER_DAY + h * MINUTES_PER_HOUR + m + (1 if s else 0)


MEM_UNITS = {"K": 1 / 2**20, "M": 1 / 2**10, "G": 1.0, "T": 2**10}


def parse_mem_gb(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"expected a size such as 32G or 500M, got {text!r}")
    return float(m[1]) * MEM_UNITS[(m[2] or "G").upper()]


def split_options(args: list[str] | dict) -> tuple[SweepOptions, list[str] | dict]:
    """Sweep keys out of the arguments; the rest is the grid. ``name`` is the sweep's name (one
    run name for every cell would make them share a folder)."""
    items = list(args.items()) if isinstance(args, dict) else [a.split("=", 1) if "=" in a else (a, None) for a in args]
    opts, grid = SweepOptions(), ({} if isinstance(args, dict) else [])
    fields_ = {f for f in SweepOptions.keys()}
    for k, v in items:
        key = str(k).strip().lstrip("-").replace("-", "_")
        if v is None:
            raise GridError(f"expected key=value, got {k!r} (see `python -m workbench sweep --help`)")
        if key in fields_:
            opts = _set_option(opts, key, v)
        elif key.startswith("slurm_"):
            opts.slurm[key] = _plain(v)
        elif isinstance(grid, dict):
            grid[key] = v
        else:
            grid.append(f"{key}={v}")
    return opts, grid


def _plain(value):
    """A slurm_ passthrough value: numbers as numbers, true/false as booleans."""
    if not isinstance(value, str):
        return value
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return {"true": True, "false": False}.get(value.lower(), value)


def _set_option(opts: SweepOptions, key: str, value) -> SweepOptions:
    default = getattr(SweepOptions(), key)
    if isinstance(default, int):
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise GridError(f"{key}: expected an integer, got {value!r}") from None
        low = -1 if key == "gpus_per_cell" else 0
        if value < low:
            raise GridError(f"{key}: value {value} is outside the allowed range [{low}, inf]")
    else:
        value = str(value)
    if key == "executor" and value not in EXECUTORS:
        raise GridError(f"executor: unknown executor {value!r}; valid choices: {', '.join(EXECUTORS)}")
    if key == "name" and value and not SWEEP_NAME.match(value):
        raise GridError(f"name: {value!r} is not a plain folder name; use letters, digits and . _ - +")
    if key == "time" and value:
        try:
            parse_minutes(value)
        except ValueError:
            raise GridError(f"time: expected minutes, H:MM:SS or D-HH:MM:SS, got {value!r}") from None
    if key == "mem" and value:
        try:
            parse_mem_gb(value)
        except ValueError as e:
            raise GridError(f"mem: {e}") from None
    setattr(opts, key, value)
    return opts


@dataclass
class Cell:
    """One run of the sweep: its grid values, validated config and run folder."""

    id: str  # c0, c1, ... (teachers: t0, ...)
    label: str  # the values that tell it apart, e.g. "preset=fashion/demo/kd seed=1"
    values: dict
    cfg: RunConfig
    role: str = "cell"  # cell | teacher
    users: list = field(default_factory=list)  # teacher: the indices of the cells it teaches

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir()

    def complete(self) -> bool:
        return sf.run_complete(self.run_dir, self.cfg.epochs)

    def record(self) -> dict:
        out = {"id": self.id, "label": self.label, "role": self.role, "values": _jsonable(self.values),
               "config": self.cfg.to_dict(), "run_dir": str(self.run_dir.absolute())}
        return out | ({"users": self.users} if self.role == "teacher" else {})


def _jsonable(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@dataclass
class Plan:
    """A validated sweep (nothing written yet): :func:`workbench.sweep.launch` runs it."""

    name: str
    dir: Path
    options: SweepOptions
    grid: dict
    cells: list[Cell]
    teachers: list[Cell]
    args: list[str]

    def all_cells(self) -> list[Cell]:
        return self.teachers + self.cells

    def record(self) -> dict:
        return {"name": self.name, "args": self.args,
                "grid": {k: [list(x) if isinstance(x, tuple) else x for x in v] for k, v in self.grid.items()},
                "options": {k: getattr(self.options, k) for k in SweepOptions.keys()} | {"slurm": self.options.slurm},
                "teachers": [c.record() for c in self.teachers], "cells": [c.record() for c in self.cells]}


def cell_label(values: dict, keys: list[str]) -> str:
    shown = {k: values[k] for k in keys} if keys else {k: v for k, v in values.items() if k in ("preset", "method")}
    return " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                    for k, v in shown.items()) or "defaults"


def default_name(args: list[str]) -> str:
    """``sweep-<hash of the grid arguments>``: the same command finds the same sweep folder."""
    return "sweep-" + hashlib.sha256(json.dumps(sorted(args)).encode()).hexdigest()[:8]


def plan(args: list[str] | dict, check_files: bool = True, **options) -> Plan:
    """Expand and validate a sweep; raises :class:`GridError` (a ConfigError: one line) on the
    first problem. ``args``: ``key=value`` strings (the CLI) or a dict of values (notebooks);
    ``options``: sweep keys given as Python values (override those in ``args``)."""
    opts, grid_args = split_options(args)
    for k, v in options.items():
        if k.startswith("slurm_"):
            opts.slurm[k] = v
        elif k in SweepOptions.keys():
            opts = _set_option(opts, k, v)
        else:
            raise GridError(f"unknown sweep option {k!r}; valid: {', '.join(SweepOptions.keys())}, slurm_<key>")
    grid = parse_grid(grid_args)
    arg_text = [f"{k}={v}" for k, v in grid_args.items()] if isinstance(grid_args, dict) else list(grid_args)
    return plan_cells(grid_cells(grid), opts, grid, arg_text, check_files)


def plan_cells(values_list: list[dict], opts: SweepOptions, grid: Optional[dict] = None, args: Optional[list] = None,
               check_files: bool = True, labels: Optional[list[str]] = None) -> Plan:
    """Validate given cells (``values_list``: one dict of run-config values each), e.g. the
    notebooks' own (method, seed) runs; see :func:`plan`."""
    from .. import experiment, references
    from ..config import RunConfig
    from ..data import DatasetNotFoundError
    from ..engine import CheckpointError

    grid = grid if grid is not None else _grid_of(values_list)
    args = args if args is not None else [json.dumps(_jsonable(v), sort_keys=True, default=str) for v in values_list]
    keys = varying(grid)
    cells, teachers, seen = [], {}, {}
    for i, values in enumerate(values_list):
        label = labels[i] if labels else cell_label(values, keys)
        where = f"cell {i} ({label})"
        if "name" in values and values["name"]:
            raise GridError(f"{where}: name= names the sweep, not a run: every cell of a sweep has its own "
                            f"run folder (a readable prefix plus the hash of its config)")
        try:
            cfg = RunConfig.from_dict(values)
            prep = experiment.prepare(cfg) if check_files else None
        except (ConfigError, DatasetNotFoundError, CheckpointError, ValueError) as e:
            raise GridError(f"{where}: {e}") from None
        cell = Cell(f"c{i}", label, dict(values), cfg)
        if str(cell.run_dir) in seen:
            raise GridError(f"{where} and cell {seen[str(cell.run_dir)]} are the same run (run folder "
                            f"{cell.run_dir}): the grid repeats a setting")
        seen[str(cell.run_dir)] = i
        cells.append(cell)
        if prep is not None and prep.teacher.kind == references.ARCH:
            tcfg = experiment.teacher_config(cfg, prep.teacher_arch)
            if experiment.cached_teacher(tcfg) is None and str(tcfg.run_dir()) not in teachers:
                teachers[str(tcfg.run_dir())] = (tcfg, prep.teacher_arch, [])
            if str(tcfg.run_dir()) in teachers:
                teachers[str(tcfg.run_dir())][2].append(i)
    teacher_cells = [Cell(f"t{j}", f"teacher {arch} on {tcfg.dataset} (for cells {', '.join(map(str, users))})",
                          {}, tcfg, role="teacher", users=users) for j, (tcfg, arch, users) in enumerate(teachers.values())]
    root = _runs_root(cells)
    name = opts.name or default_name(args)
    _check_executor(opts)
    p = Plan(name, root / sf.SWEEPS_DIR / name, opts, grid, cells, teacher_cells, args)
    if opts.executor == "slurm":
        check_slurm_keys(opts, p.dir / sf.SUBMITIT_DIR)
    return p


def _grid_of(values_list: list[dict]) -> dict:
    grid: dict = {}
    for values in values_list:
        for k, v in values.items():
            if v not in grid.setdefault(k, []):
                grid[k].append(v)
    return grid


def _runs_root(cells: list[Cell]) -> Path:
    """The cells' common ``out_dir`` (the runs root when they differ or set none)."""
    dirs = {c.cfg.out_dir for c in cells}
    return Path(dirs.pop()) if len(dirs) == 1 and "" not in dirs else paths.runs_root()


def _check_executor(opts: SweepOptions) -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise GridError("executor: the submitit package is not installed; pip install submitit (a dependency of "
                        "the workbench: pip install -e .)") from None
    if opts.executor == "slurm" and shutil.which("srun") is None:
        raise GridError("executor=slurm: no `srun` on PATH -- submit from a SLURM login node (or use executor=local)")


@dataclass
class Layout:
    """How cells share this machine (local) or what each asks for (slurm)."""

    parallel: int
    gpus_per_cell: int
    nproc: int
    threads: int
    slots: list  # local: the CUDA_VISIBLE_DEVICES value of each slot (None on CPU)


def slurm_layout(opts: SweepOptions, n_cells: int) -> Layout:
    per = opts.gpus_per_cell if opts.gpus_per_cell >= 0 else 1
    nproc = opts.nproc or max(1, per)
    threads = opts.cpus_per_cell // nproc if opts.cpus_per_cell else 0
    return Layout(min(opts.parallel or n_cells, n_cells), per, nproc, threads, [])


def slurm_parameters(opts: SweepOptions, n_cells: int, name: str = "workbench-sweep") -> dict:
    """submitit ``AutoExecutor`` parameters of one cell (and the array's parallelism)."""
    layout = slurm_layout(opts, max(1, n_cells))
    p = dict(name=name, timeout_min=opts.minutes() or DEFAULT_SLURM_MINUTES, nodes=1, tasks_per_node=1,
             gpus_per_node=layout.gpus_per_cell, slurm_signal_delay_s=opts.signal_delay_s,
             slurm_array_parallelism=layout.parallel)
    if opts.cpus_per_cell:
        p["cpus_per_task"] = opts.cpus_per_cell
    if opts.mem:
        p["mem_gb"] = opts.mem_gb()
    if opts.partition:
        p["slurm_partition"] = opts.partition
    if opts.account:
        p["slurm_account"] = opts.account
    p.update(opts.slurm)
    return p


def check_slurm_keys(opts: SweepOptions, folder: Path) -> None:
    """submitit's own check of the slurm_<key> values, before anything is submitted."""
    import submitit

    from submitit.slurm.slurm import SlurmExecutor

    valid = sorted(SlurmExecutor._valid_parameters())
    for key in opts.slurm:
        if key[len("slurm_"):] not in valid:
            import difflib

            close = difflib.get_close_matches(key[len("slurm_"):], valid, n=1)
            hint = f" (did you mean slurm_{close[0]}?)" if close else ""
            raise GridError(f"slurm options: unknown SLURM parameter {key}{hint}; submitit knows: "
                            f"{', '.join('slurm_' + v for v in valid)}")
    try:
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        ex.update_parameters(**slurm_parameters(opts, 1))
    except (ValueError, TypeError, NameError, AssertionError) as e:
        first = str(e).splitlines()[0]
        raise GridError(f"slurm options: {first}") from None


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def field_names() -> set[str]:
    return set(fields_by_name())
