"""Peak resident memory (ru_maxrss) of whole runs per method, each in a fresh subprocess.

    python bench/bench_memory.py                        # digits, kd vs gpd (base=kd)
    python bench/bench_memory.py --methods kd,gpd --epochs 2 key=value ...

Each config runs ``workbench.experiment.run`` in its own ``python -c`` child (so peaks do not
mix); the child prints ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux) after the
run. A baseline child that only imports the workbench and torch is measured too, so the figures
can be read as "import + run". Memory figures are not timing-sensitive, but the machine's other
load does not change them either.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys
import torch
from workbench.experiment import run
cfg = json.loads(sys.argv[1])
if cfg:
    run(cfg, log=lambda *a, **k: None)
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak(cfg: dict) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                         check=True).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("MAXRSS"))) / 1024**2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="kd,gpd")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in a.overrides)
    base = dict(dataset="digits", teacher="resnet8", student="resnet8", epochs=a.epochs, teacher_epochs=2,
                batch_size=64, progress=False, out_dir=tempfile.mkdtemp(), **extra)
    print(f"import only: {peak({}):.2f} GB")
    for m in a.methods.split(","):
        print(f"{m:10s} peak RSS {peak(dict(base, method=m)):.2f} GB")


if __name__ == "__main__":
    main()
