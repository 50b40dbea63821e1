"""Command line: ``python -m workbench <command> key=value ...``

Commands
  train     train one run: ``python -m workbench train method=kd teacher=resnet32x4 student=resnet8x4 dataset=cifar100``
            (under ``torchrun --nproc_per_node=N -m workbench train ...`` it runs on N GPUs with DDP)
  presets   list the named presets (use with ``preset=<name>``)
  methods   list the methods (one line each)
  models    list the model zoo
  keys      list every config key with its default, choices and help (same as ``train --help``)

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

import sys

from .config import ConfigError, RunConfig, help_text, parse_overrides

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
    s = result.summary.get("student", {})
    print(f"[workbench] done: student top-1 last {s.get('last_top1', float('nan')):.2f} / best "
          f"{s.get('best_top1', float('nan')):.2f} (epoch {s.get('best_epoch')}); results in {result.run_dir}")
    return 0


def _leave_process_group() -> None:
    """Every rank together, before exit: a process group left to interpreter teardown could abort
    (gloo: "terminate called without an active exception", seen on a loaded CPU)."""
    import torch.distributed as tdist

    from .engine import distributed as dist

    if dist.is_dist():
        tdist.barrier()
        dist.shutdown()


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
    print(f"error: unknown command {command!r}; valid commands: train, presets, methods, models, keys\n\n{plain(USAGE)}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
