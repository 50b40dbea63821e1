"""Command line: ``python -m workbench <command> key=value ...``

Commands
  train     train one run: ``python -m workbench train method=kd teacher=resnet32x4 student=resnet8x4 dataset=cifar100``
            (under ``torchrun --nproc_per_node=N -m workbench train ...`` it runs on N GPUs with DDP)
  presets   list the named presets (use with ``preset=<name>``)
  methods   list the methods (one line each)
  models    list the model zoo
  keys      list every config key with its default, choices and help (same as ``train --help``)
  sweep     train a grid of runs on submitit: ``python -m workbench sweep preset=cifar100/r32x4_r8x4/{kd,dkd} seed=0:5``
            (``sweep --help`` for the grid syntax and the executor keys; ``sweep status <dir>`` per cell)
  search    a distiller search on Optuna (after Auto-KD): ``python -m workbench search <spec.yaml> [--dry-run]``
            (``search --help``; the winner becomes ``preset=search/<name>/best``)
  table     one results table of run folders or sweeps: ``python -m workbench table runs/sweeps/<name> [--format md|csv|latex]``
  export    export a run's student for use without the workbench: ``python -m workbench export
            <run folder | student.pt> [--format torchscript|onnx] [--ema] [--out FILE]``

Exit codes and what ``train`` prints (always one line on stderr):
  0    done
  2    bad keys or values, missing/damaged data or files, a refused resume, a failed write (disk
       full, file-size limit): stopped before any work where it can be checked up front
  3    the run diverged (the last good checkpoint is named)
  4    multi-process run: a rank stopped answering for dist_timeout seconds (the line names it);
       rerun the same command to resume from the last checkpoint
  75   preempted (EX_TEMPFAIL): SIGTERM, SIGUSR1 or SIGUSR2 stopped the run at its next safe point
       -- after the current optimizer step, with a mid-epoch checkpoint, or after the epoch's
       checkpoint if the signal came during evaluation, probes or a checkpoint write. The line
       names the signal and where it stopped; rerun the same command to resume (bit-identical
       to an uninterrupted run). Under torchrun every rank stops at the same step, rank 0 writes.
  130  Ctrl-C (SIGINT): rerun the same command to resume from the last checkpoint

Preemption contract (what schedulers and sweep launchers may rely on): while a run is active,
SIGTERM/SIGUSR1/SIGUSR2 only set a flag; the checkpoint is written at the next safe point, then
``workbench.engine.Preempted`` is raised (attributes ``signal``, ``epoch``, ``step`` -- None when it
stopped at an epoch end --, ``steps``, ``checkpoint``), which this command turns into the one line
and exit code 75 (``PREEMPTED``). The handlers that were installed before the run (another
program's, e.g. submitit's) are restored when it ends. Under torchrun the workers exit 75 and
torchrun reports a failed child itself.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, help_text, parse_overrides
from .engine.roles import role_label, teachers
from .registry import unknown_choice

SWEEP_USAGE = """``python -m workbench sweep [--dry-run] [--no-wait] key=values ... [sweep keys]``
``python -m workbench sweep status <sweep folder>``

Every ``key=`` of ``train`` takes several values; the cells are their product (the last key
varies fastest). Each cell is an ordinary run folder (the one ``train`` would make with that
config), so rerunning a sweep skips finished cells and resumes killed ones.

Values
  {a,b}      braces expand in place and nest: preset=cifar100/{r32x4_r8x4,r56_r20}/{kd,dkd} (4 values)
  a,b,c      a comma list: seed=0,1,2
  0:5        a range, end excluded as in Python's range: seed=0:5 is 0..4; 0:10:2 steps by 2 (integer keys)
  x;y        list-valued keys (milestones, source_classes, branches, vit_eval_heads) separate their
             alternatives with ';': milestones="150,180,210;100,150"

Sweep keys (not run keys)
{options}
  slurm_<key>=v  any other SLURM parameter submitit knows (slurm_qos, slurm_constraint, slurm_setup, ...)

--dry-run prints the cells (and whether each is new, resumable or finished) after validating them
all; nothing is created. Every cell is validated as ``train`` would (config, files, resume) before
anything is submitted: a bad cell is one line naming it (exit code 2). The sweep folder
runs/sweeps/<name>/ records the grid, each cell's config and run folder, states and logs.
executor=local and debug wait for the cells; executor=slurm submits one job array and returns
(--wait: waits). Exit code 1 when a cell failed (``sweep status`` names its error and log).
"""

USAGE = __doc__
BAD_INPUT = 2
DIVERGED = 3
RANK_LOST = 4  # a rank of a multi-process run stopped answering (dist_timeout)
PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): stopped by a scheduler's signal, checkpoint written; rerun to resume
INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


def _train(args: list[str]) -> int:
    from .data import DatasetNotFoundError
    from .engine import CheckpointError, NonFiniteLossError, Preempted
    from .engine import distributed as dist
    from .experiment import run

    try:
        cfg = RunConfig.from_dict(parse_overrides(args))
        result = run(cfg)
    except (ConfigError, DatasetNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return DIVERGED
    except dist.RankLostError as e:  # the process group is broken: no barrier, just the line and out
        if e.report:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return RANK_LOST
    except Preempted as e:
        if dist.rank() == 0:  # before the ranks part: under torchrun the first rank to exit ends the others
            print(f"[workbench] {e}", file=sys.stderr, flush=True)
        _leave_process_group()
        return PREEMPTED
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    rank = dist.rank()
    _leave_process_group()
    if rank != 0:
        return 0
    print(done_line(result.summary, result.run_dir))
    return 0


def _sweep_usage() -> str:
    from .sweep import SweepOptions

    return SWEEP_USAGE.replace("{options}", "\n".join(f"  {k:14s} {h}" for k, h in SweepOptions.HELP.items()))


def _sweep(args: list[str]) -> int:
    from .sweep import GridError, launch, plan
    from .sweep.monitor import counts, status_line

    if not args or "-h" in args or "--help" in args:
        print(plain(_sweep_usage()))
        return 0
    if args[0] == "status":
        return _sweep_status(args[1:])
    flags = {a for a in args if a.startswith("--")}
    unknown = flags - {"--dry-run", "--no-wait", "--wait"}
    if unknown:
        print(f"error: unknown flag {sorted(unknown)[0]}; valid: --dry-run, --no-wait, --wait", file=sys.stderr)
        return 2
    try:
        p = plan([a for a in args if not a.startswith("--")])
    except (GridError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "--dry-run" in flags:
        for c in p.all_cells():
            state = "finished" if c.complete() else ("resumes" if (c.run_dir / "last.pt").exists() else "new")
            print(f"{c.id:>4} {c.label}  [{state}]  {c.run_dir}")
        print(f"{len(p.cells)} cells" + (f" + {len(p.teachers)} teacher run(s) first" if p.teachers else "")
              + f"; sweep folder {p.dir} (executor={p.options.executor}); nothing was created")
        return 0
    wait = p.options.executor != "slurm" or "--wait" in flags
    try:
        statuses = launch(p, wait=wait)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same sweep to resume (`python -m workbench sweep status {p.dir}`)",
              file=sys.stderr)
        return INTERRUPTED
    print("\n".join(status_line(s) for s in statuses))
    print(f"{counts(statuses)} -- {p.dir}")
    if wait:
        from .table import build

        done = [s.run_dir for s in statuses if s.status == "done" and s.role == "cell"]
        if done:
            print("\n" + build(done).markdown())
    else:
        print(f"submitted; follow it with `python -m workbench sweep status {p.dir}`")
    return 1 if any(s.status == "failed" for s in statuses) else 0


def _sweep_status(args: list[str]) -> int:
    from .sweep.monitor import status_report

    if len(args) != 1:
        print("error: usage: python -m workbench sweep status <sweep folder>", file=sys.stderr)
        return 2
    try:
        report, statuses = status_report(Path(args[0]))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    return 1 if any(s.status == "failed" for s in statuses) else 0


SEARCH_USAGE = """``python -m workbench search <spec.yaml> [--dry-run] [study.<key>=value ...]``

A distiller search on Optuna over the workbench's parts (the composed distiller's taps, transforms,
distances and weights; methods and their keys; GPD on/off and its ratio). The spec is a small YAML
file of fixed keys (base), proxy keys (cheap trial settings: epochs, images per class, a cached
teacher, val_per_class), searched keys with their ranges, the objective's weights and the study
settings (see workbench/search/space.py and bench/search_fashion.yaml). Every problem with it is
one line before any trial (exit code 2); --dry-run stops there and prints the space.

Trials are sweep cells (local processes in parallel, a SLURM array, or executor=debug in this
process) trained with eval_on=val: they score on a validation split carved from the training data,
never on the test set. Pruning (median or successive halving) reads each trial's per-epoch
records. The study is Optuna's journal in <runs>/searches/<name>/: rerun the same command after a
kill to resume to the same number of trials. The best trial is written as the preset
search/<name>/best (the full budget: the proxy keys dropped); `python -m workbench sweep
preset=search/<name>/best seed=0:3` re-runs it. study.<key>=value overrides the spec's study
settings (trials, parallel, executor, sampler, pruner, seed)."""


TABLE_USAGE = """``python -m workbench table <sweep folder | run folder | folder of runs> ... [--format md|csv|latex]``

One row per dataset, teacher -> student pair, method and setting (runs differing in anything but
the seed are never averaged together): n seeds, the student's best- and last-epoch top-1 as mean
+- sample std, the reported max(raw, EMA) top-1 (GPD), T_s, T_d and the final gaps; a published
number and the difference where a row follows a published protocol exactly."""


def _table(args: list[str]) -> int:
    from .table import FORMATS, build

    if not args or "-h" in args or "--help" in args:
        print(plain(TABLE_USAGE))
        return 0
    fmt, paths, it = "md", [], iter(args)
    for a in it:
        if a == "--format" or a.startswith("--format="):
            fmt = a.split("=", 1)[1] if "=" in a else next(it, "")
        elif a.startswith("--"):
            print(f"error: unknown flag {a}; valid: --format md|csv|latex", file=sys.stderr)
            return 2
        else:
            paths.append(a)
    if fmt not in FORMATS:
        print(f"error: --format: unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    result = build(paths)
    if not result.rows:
        print(f"error: no finished runs under {', '.join(paths) or '(no path given)'}"
              + (f" ({'; '.join(result.notes)})" if result.notes else ""), file=sys.stderr)
        return 2
    print(result.render(fmt), end="" if fmt == "csv" else "\n")
    return 0


def _search(args: list[str]) -> int:
    if not args or "-h" in args or "--help" in args:
        print(plain(SEARCH_USAGE))
        return 0
    from . import search

    flags = [a for a in args if a.startswith("--")]
    rest = [a for a in args if not a.startswith("--")]
    bad = [f for f in flags if f != "--dry-run"]
    if bad:
        print(f"error: unknown flag {bad[0]}; valid: --dry-run", file=sys.stderr)
        return 2
    if len([a for a in rest if "=" not in a]) != 1:
        print("error: usage: python -m workbench search <spec.yaml> [--dry-run] [study.<key>=value ...]", file=sys.stderr)
        return 2
    try:
        spec = search.load(next(a for a in rest if "=" not in a))
        for a in rest:
            if "=" in a:
                key, value = a.split("=", 1)
                if not key.startswith("study.") or key[len("study."):] not in spec.study:
                    raise search.SpecError(f"{key}: only study.<key>=value overrides are taken here "
                                           f"(study keys: {', '.join(spec.study)}); put run keys in the spec")
                k = key[len("study."):]
                spec.study[k] = int(value) if isinstance(spec.study[k], int) and value.lstrip("-").isdigit() else value
        spec = search.parse(search.space_data(spec), spec.path)  # re-check the overridden study keys
        search.check(spec)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(spec.describe())
    if "--dry-run" in flags:
        print(f"spec checked; search folder {search.search_dir(spec.name)}; nothing was run")
        return 0
    try:
        study = search.run(spec, checked=True)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume ({search.search_dir(spec.name)})", file=sys.stderr)
        return INTERRUPTED
    counts = search.summary(study)
    print(f"[search] {search.counted(study)} trials counted ({', '.join(f'{v} {k}' for k, v in counts.items())}) "
          f"-- {search.search_dir(spec.name)}")
    return 0


def _top1(summary: dict, role: str, which: str) -> float | None:
    """The reported top-1 (max of raw and EMA where an EMA was evaluated, else raw) of a role."""
    s = summary.get(role)
    return None if s is None else s.get(f"{which}_top1_reported", s.get(f"{which}_top1"))


def done_line(summary: dict, run_dir) -> str:
    """The run's last line: S (last, best and its epoch), T_d and T_s where the run has them, and
    their gaps to S in points."""
    s_last, s_best = _top1(summary, "student", "last"), _top1(summary, "student", "best")
    if s_last is None:
        return f"[workbench] done; results in {run_dir}"
    s = summary["student"]
    parts = [f"S {s_last:.2f} (best {s_best:.2f} at epoch {s.get('best_epoch_reported', s.get('best_epoch'))})"]
    gaps = []
    for role in reversed(teachers()):  # T_d, then T_s
        t, label = _top1(summary, role, "last"), role_label(role)
        if t is not None:
            parts.append(f"{label} {t:.2f}")
            gaps.append(f"{label}-S {t - s_last:+.2f}")
    gap_text = f"; gaps {', '.join(gaps)} points" if gaps else ""
    return f"[workbench] done: last top-1 {', '.join(parts)}{gap_text}; results in {run_dir}"


def _leave_process_group() -> None:
    """Every rank together, before exit: a process group left to interpreter teardown could abort
    (gloo: "terminate called without an active exception", seen on a loaded CPU)."""
    import torch.distributed as tdist

    from .engine import distributed as dist

    if dist.is_dist():
        tdist.barrier()
        dist.shutdown()


def _export(args: list[str]) -> int:
    import argparse

    from .export import FORMATS, ExportError, export

    p = argparse.ArgumentParser(prog="python -m workbench export", description="export a run's plain student")
    p.add_argument("source", help="a run folder (its student.pt) or a student file")
    p.add_argument("--format", default=FORMATS[0], help=f"{' | '.join(FORMATS)} (default {FORMATS[0]})")
    p.add_argument("--ema", action="store_true", help="the run's EMA student (student_ema.pt)")
    p.add_argument("--out", default="", help="output file (default: beside the student file)")
    a = p.parse_args(args)
    try:
        out = export(a.source, a.format, a.out or None, a.ema)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[workbench] exported {a.format}: {out}")
    return 0


def plain(text: str) -> str:
    """Terminal text: reST literals ``x`` shown as x."""
    return text.replace("``", "")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `... --help | head`: the reader left; exit quietly
        sys.stderr.close()
        return 0


def _presets(args: list[str]) -> int:
    """One line per preset (name, teacher -> student, method); ``presets <name>`` shows its values."""
    from .presets import PRESETS, get_preset

    if args:
        try:
            values = get_preset(args[0])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for k, v in values.items():
            print(f"  {k}={','.join(map(str, v)) if isinstance(v, tuple) else v}")
        return 0
    for name, v in sorted(PRESETS.items()):
        method = v.get("method", "") + (f" (base {v['base']})" if v.get("base") else "") + (" +dot" if v.get("dot") else "")
        pair = f"{v.get('teacher', 'none')} -> {v.get('student', '')}" if v.get("teacher", "none") != "none" \
            else v.get("student", "")
        print(f"{name:36s} {pair:36s} {method:22s} {v.get('dataset', '')}, {v.get('epochs', 240)} epochs")
    print(f"\n{len(PRESETS)} presets; `python -m workbench presets <name>` shows one preset's values")
    return 0


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(plain(USAGE))
        return 0
    command, args = argv[0], argv[1:]
    if command in ("keys",) or (command == "train" and ("-h" in args or "--help" in args)):
        print(plain("config keys (key=default {choices}):\n" + help_text()))
        return 0
    if command == "train":
        return _train(args)
    if command == "presets":
        return _presets(args)
    if command == "sweep":
        return _sweep(args)
    if command == "table":
        return _table(args)
    if command == "export":
        return _export(args)
    if command == "search":
        return _search(args)
    if command == "methods":
        from .methods import METHODS

        for name in METHODS.names():
            print(f"{name:10s} {METHODS.get(name).summary}")
        return 0
    if command == "models":
        from . import models

        for name in models.available():
            print(f"{name:14s} {models.family(name)}")
        return 0
    print(f"error: {unknown_choice('command', command, commands())}; `python -m workbench --help` explains them",
          file=sys.stderr)
    return 2


def commands(usage: str = USAGE) -> list[str]:
    """The command names the usage text documents (its ``Commands`` block, one per line): the
    did-you-mean of a mistyped command knows every documented command, new ones included."""
    block = usage.split("\nCommands\n", 1)[1].split("\n\n", 1)[0]
    return [m.group(1) for m in re.finditer(r"^  (\w[\w-]*)\s", block, flags=re.M)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
