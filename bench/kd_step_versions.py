"""A KD training step of this checkout vs an older commit, side by side in ONE run.

    python bench/kd_step_versions.py [--old 784b04b] [--rounds 7] [--steps 20] [--new-layout channels_last]

784b04b is the last commit before the method-seam redesign (MethodSpec registry, hook-tapped
features, complete parameter groups, batch-transform and callback seams). The old tree is
exported with ``git archive`` into a temporary folder; each round runs one subprocess per tree
(order alternating) that builds ``method=kd`` through ``workbench.methods.build_method``
(teacher resnet32x4 -> student resnet8x4, 100 classes, batch 64 of 3x32x32, SGD) and times
``steps`` forward+backward+step after one warm-up step. Ratio per round = new / old seconds per
step (< 1: faster now); median and min..max over rounds. Not a timed test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from git_tree import export  # bench/git_tree.py (this folder is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
WORKER = r'''
import sys, time, torch
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[2]))
from workbench import models
from workbench.config import RunConfig
from workbench.methods import build_method
cfg = RunConfig.from_dict(dict(method="kd", teacher="resnet32x4", student="resnet8x4", dataset="cifar100"))
teacher = models.build("resnet32x4", 100).eval()
m = build_method(cfg, models.build("resnet8x4", 100), teacher)
opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 100, (64,))
if sys.argv[3] == "channels_last":  # what the Trainer does when channels_last resolves on
    m.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
def step():
    opt.zero_grad(set_to_none=True)
    _, losses = m(x, y)
    sum(losses.values()).backward()
    opt.step()
step()
steps = int(sys.argv[1]); t0 = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - t0) / steps)
'''


def time_tree(tree: Path, steps: int, threads: int, layout: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", WORKER, str(steps), str(threads), layout], cwd=tree, env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="784b04b", help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-layout", choices=("contiguous", "channels_last"), default="contiguous",
                    help="memory format of this checkout's step (channels_last: what channels_last=auto now "
                         "picks on CPU for 32x32 inputs; the old commit's step stays contiguous, its CPU default)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = export(args.old, Path(tmp))
        ratios, new_s, old_s = [], [], []
        for r in range(args.rounds):
            order = [("new", ROOT), ("old", old)] if r % 2 == 0 else [("old", old), ("new", ROOT)]
            got = {name: time_tree(tree, args.steps, args.threads, args.new_layout if name == "new" else "contiguous")
                   for name, tree in order}
            new_s.append(got["new"]); old_s.append(got["old"]); ratios.append(got["new"] / got["old"])
            print(f"round {r + 1}: new {got['new'] * 1e3:.1f} ms/step, old {got['old'] * 1e3:.1f} ms/step, "
                  f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"\nKD step (resnet32x4 -> resnet8x4, batch 64, {args.threads} threads, new in {args.new_layout}): new / {args.old} = "
          f"{statistics.median(ratios):.3f} (median of {args.rounds} rounds, min {min(ratios):.3f}, max {max(ratios):.3f}); "
          f"medians {statistics.median(new_s) * 1e3:.1f} vs {statistics.median(old_s) * 1e3:.1f} ms/step; "
          f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
