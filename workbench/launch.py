"""Launch a run on several GPUs from Python (notebooks): ``torchrun`` as a subprocess whose
output is streamed back line by line; results land in the same ``runs/<name>/`` files as a
single-process run, so the notebook reads them the same way afterwards.
"""
from __future__ import annotations

import subprocess
import sys
from typing import Callable

from .config import RunConfig
from .engine.metrics import read_metrics
from .experiment import RunResult


def torchrun_command(cfg: RunConfig, nproc: int) -> list[str]:
    args = [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else ('none' if v is None else v)}"
            for k, v in cfg.to_dict().items() if v != "" and k != "preset"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "workbench", "train", *args]


#: how the workers' one-line endings start (the CLI's errors, a preemption)
WORKER_LINES = ("error: ", "[workbench] stopped by ")


class DistributedRunError(RuntimeError):
    """torchrun ended without finishing the run; the message is the workers' own one line when
    they printed one (a bad value, a preemption, a lost rank)."""


def run_distributed(cfg: RunConfig, nproc: int, echo: Callable[[str], None] = print) -> RunResult:
    """Run ``cfg`` under torchrun with ``nproc`` processes; stream its output through ``echo``."""
    if nproc < 2:
        raise ValueError(f"run_distributed needs nproc >= 2 (got {nproc}); call experiment.run for one process")
    proc = subprocess.Popen(torchrun_command(cfg, nproc), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    said = None
    for line in proc.stdout:
        echo(line.rstrip("\n"))
        if said is None and line.startswith(WORKER_LINES):
            said = line.strip().removeprefix("error: ").removeprefix("[workbench] ")
    if proc.wait() != 0:
        raise DistributedRunError(said or f"torchrun exited with code {proc.returncode} (see the output above)")
    run_dir = cfg.run_dir()
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    return RunResult(run_dir, summary, read_metrics(run_dir))
