"""What a sweep costs on top of its runs, and what running cells side by side buys, measured side
by side in one process on this machine (a benchmark, not a timed test):

    python bench/bench_sweep.py [--repeat 1] [key=value ...]

The same 4 cells (``preset=fashion/demo/{kd,dkd} seed=0:2`` with short settings, overridable
with key=value) are trained, each time into a fresh folder:

1. **direct**: one after the other with ``experiment.run`` in this process, torch on all cores
   -- the runs themselves, no sweep;
2. **sweep, parallel 1**: ``executor=local parallel=1`` (one cell at a time, all cores each);
3. **sweep, parallel 2**: ``executor=local parallel=2`` (two cells at once, cores / 2 threads each).

Overhead per cell = (wall of 2 - wall of 1) / cells: planning and validating every cell, submitit's
job and controller processes, the training subprocess's start (Python + torch import) and the
polling; the ratio 2 / 3 is what parallel cells buy on this many cores. With ``--repeat N`` the
three are run N times in turn (ABCABC...) and each figure is the median. The load average is
printed before and after: the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from workbench.experiment import run
from workbench.sweep import launch, plan
from workbench.sweep.plan import cpu_count

GRID = ["preset=fashion/demo/{kd,dkd}", "seed=0:2", "epochs=2", "train_per_class=30", "probe_every=0",
        "progress=false"]


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def direct(cells, out: Path) -> float:
    torch.set_num_threads(cpu_count())  # what a parallel=1 cell gets
    t0 = time.perf_counter()
    for c in cells:
        run(dict(c.cfg.to_dict(), out_dir=str(out), preset=""), log=lambda *_: None)
    return time.perf_counter() - t0


def swept(grid, out: Path, parallel: int) -> float:
    t0 = time.perf_counter()  # planning (validation of every cell) included
    p = plan(grid + [f"out_dir={out}"], executor="local", parallel=parallel, name=f"p{parallel}")
    statuses = launch(p, monitor=lambda: None)
    wall = time.perf_counter() - t0
    bad = [s for s in statuses if s.status != "done"]
    if bad:
        raise SystemExit(f"cell {bad[0].id} {bad[0].status}: {bad[0].error} ({bad[0].log})")
    return wall


def main(argv) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", default="", help="also write the measured figures here (docs/sweep_bench.json: "
                    "the README block is rendered from it by docs/render_readme.py)")
    args, rest = ap.parse_known_args(argv)
    given = {a.split("=", 1)[0] for a in rest}
    grid = [a for a in GRID if a.split("=", 1)[0] not in given] + rest  # key=value replaces the default
    root = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    cells = plan(grid + [f"out_dir={root / 'plan'}"], executor="debug").cells
    print(f"{len(cells)} cells: {', '.join(c.label for c in cells)}; {cpu_count()} cores; torch {torch.__version__}")
    start_load = load()
    print(f"load average at start: {start_load}", flush=True)
    times: dict[str, list[float]] = {"direct": [], "parallel 1": [], "parallel 2": []}
    for i in range(args.repeat):
        times["direct"].append(direct(cells, root / f"direct{i}"))
        times["parallel 1"].append(swept(grid, root / f"p1_{i}", 1))
        times["parallel 2"].append(swept(grid, root / f"p2_{i}", 2))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(cells)
    print(f"\nload average at end: {load()}")
    print(f"| measure | wall (s) | per cell (s) |\n|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {v / n:.1f} |")
    over = (med["parallel 1"] - med["direct"]) / n
    print(f"\nsweep overhead per cell: {over:.1f} s = {100 * over / (med['direct'] / n):.0f} % of a run "
          f"({med['direct'] / n:.1f} s in-process)")
    print(f"4 cells, parallel 1 / parallel 2 wall: {med['parallel 1'] / med['parallel 2']:.2f}x")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "grid": grid, "cells": n, "cores": cpu_count(), "repeat": args.repeat, "load_start": start_load,
            "load_end": load(), "seconds": times}, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main(sys.argv[1:])
