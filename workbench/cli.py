"""Command line: ``python -m workbench <command> key=value ...``

Commands
  train     train one run: ``python -m workbench train method=kd teacher=resnet32x4 student=resnet8x4 dataset=cifar100``
            (under ``torchrun --nproc_per_node=N -m workbench train ...`` it runs on N GPUs with DDP)
  presets   list the named presets (use with ``preset=<name>``)
  methods   list the methods (one line each)
  models    list the model zoo
  keys      list every config key with its default, choices and help (same as ``train --help``)

Bad keys or values stop with a one-line error (exit code 2) before any work starts; a run that
diverges exits with 3; Ctrl-C stops with one line (exit code 130): rerun the same command to resume.
"""
from __future__ import annotations

import re
import sys

from .config import ConfigError, RunConfig, help_text, parse_overrides
from .registry import unknown_choice

USAGE = __doc__
INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


def _train(args: list[str]) -> int:
    import torch.distributed as tdist

    from .data import DatasetNotFoundError
    from .engine import CheckpointError, NonFiniteLossError
    from .experiment import run

    try:
        cfg = RunConfig.from_dict(parse_overrides(args))
        result = run(cfg)
    except (ConfigError, DatasetNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    from .engine import distributed as dist

    rank = dist.rank()
    if dist.is_dist():  # together, before exit: a process group left to interpreter teardown could abort
        tdist.barrier()  # (gloo: "terminate called without an active exception", seen on a loaded CPU)
        dist.shutdown()
    if rank != 0:
        return 0
    print(done_line(result.summary, result.run_dir))
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
    for role, label in (("dynamic_teacher", "T_d"), ("teacher", "T_s")):
        t = _top1(summary, role, "last")
        if t is not None:
            parts.append(f"{label} {t:.2f}")
            gaps.append(f"{label}-S {t - s_last:+.2f}")
    gap_text = f"; gaps {', '.join(gaps)} points" if gaps else ""
    return f"[workbench] done: last top-1 {', '.join(parts)}{gap_text}; results in {run_dir}"


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
