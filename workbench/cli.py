"""Command line: ``python -m workbench <command> key=value ...``

Commands
  train     train one run: ``python -m workbench train method=kd teacher=resnet32x4 student=resnet8x4 dataset=cifar100``
            (under ``torchrun --nproc_per_node=N -m workbench train ...`` it runs on N GPUs with DDP)
  presets   list the named presets (use with ``preset=<name>``)
  models    list the model zoo
  keys      list every config key with its default, choices and help (same as ``train --help``)

Bad keys or values stop with a one-line error (exit code 2) before any work starts; a run that
diverges exits with 3; Ctrl-C stops with one line (exit code 130): rerun the same command to resume.
"""
from __future__ import annotations

import sys

from .config import ConfigError, RunConfig, help_text, parse_overrides

USAGE = __doc__
INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


def _train(args: list[str]) -> int:
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

    if dist.rank() != 0:
        return 0
    s = result.summary.get("student", {})
    print(f"[workbench] done: student top-1 last {s.get('last_top1', float('nan')):.2f} / best "
          f"{s.get('best_top1', float('nan')):.2f} (epoch {s.get('best_epoch')}); results in {result.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, args = argv[0], argv[1:]
    if command in ("keys",) or (command == "train" and ("-h" in args or "--help" in args)):
        print("config keys (key=default {choices}):\n" + help_text())
        return 0
    if command == "train":
        return _train(args)
    if command == "presets":
        from .presets import PRESETS

        for name, values in sorted(PRESETS.items()):
            print(f"{name:34s} " + " ".join(f"{k}={v}" for k, v in values.items()))
        return 0
    if command == "models":
        from . import models

        for name in models.available():
            print(f"{name:14s} {models.family(name)}")
        return 0
    print(f"error: unknown command {command!r}; valid commands: train, presets, models, keys\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
