"""Command line: ``python -m workbench <command> key=value ...``

Commands
  train     train one run: ``python -m workbench train method=kd teacher=resnet32x4 student=resnet8x4 dataset=cifar100``
            (under ``torchrun --nproc_per_node=N -m workbench train ...`` it runs on N GPUs with DDP)
  presets   list the named presets (use with ``preset=<name>``)
  methods   list the methods (one line each)
  models    list the model zoo
  keys      list every config key with its default, choices and help (same as ``train --help``)
  export    export a run's student for use without the workbench: ``python -m workbench export
            <run folder | student.pt> [--format torchscript|onnx] [--ema] [--out FILE]``

Bad keys or values stop with a one-line error (exit code 2) before any work starts; a run that
diverges exits with 3; Ctrl-C stops with one line (exit code 130): rerun the same command to resume.
"""
from __future__ import annotations

import sys

from .config import ConfigError, RunConfig, help_text, parse_overrides

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
    s = result.summary.get("student", {})
    print(f"[workbench] done: student top-1 last {s.get('last_top1', float('nan')):.2f} / best "
          f"{s.get('best_top1', float('nan')):.2f} (epoch {s.get('best_epoch')}); results in {result.run_dir}")
    return 0


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
    if command == "export":
        return _export(args)
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
    print(f"error: unknown command {command!r}; valid commands: train, presets, methods, models, keys, export\n\n{plain(USAGE)}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
