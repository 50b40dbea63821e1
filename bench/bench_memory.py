"""Peak resident memory (ru_maxrss) of whole runs per method, each in a fresh subprocess.

    python bench/bench_memory.py                        # digits runs, kd vs gpd (base=kd)
    python bench/bench_memory.py --cifar                # CIFAR-shaped: resnet32x4 -> resnet8x4, batch 64
    python bench/bench_memory.py --cifar --where        # + where GPD's extra memory goes
    python bench/bench_memory.py --cifar --rev 60f683a  # the same, measured on an older commit's code
    python bench/bench_memory.py --methods kd,gpd --epochs 2 key=value ...

Each measurement runs in its own ``python -c`` child (so peaks do not mix), which prints
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux) at the end; a child that only
imports the workbench and torch gives the baseline. Memory figures do not depend on the
machine's load.

* default: ``workbench.experiment.run`` on digits (teacher resnet8 trained first, 2 epochs);
* ``--cifar``: the configuration where GPD's extra memory shows: CIFAR-shaped random images
  (3x32x32, 100 classes; 256 train / 256 test), random-weight resnet32x4 teacher -> resnet8x4,
  batch 64, eval batch 256, the presets' methods (``kd``, ``gpd_kd``), default probes, a
  ``Trainer`` running epoch 0's evaluation and ``--epochs`` epochs (train + eval + probes +
  checkpoint), with the resident memory after each phase;
* ``--where`` (with ``--cifar``): one training step's autograd-saved tensor bytes by kind and
  the peak of live tensor bytes (profiler allocation events) of a training epoch and of an
  evaluation pass -- what the process holds beyond its tensors is the allocator's;
* ``--rev REV``: children import the ``workbench`` of ``git archive REV`` (before/after).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from git_tree import export  # bench/git_tree.py (this folder is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]

RUN_CHILD = """
import json, resource, sys
import torch
from workbench.experiment import run
cfg = json.loads(sys.argv[1])
if cfg:
    run(cfg, log=lambda *a, **k: None)
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

# the CIFAR-shaped run: phase by phase, resident memory now and the process peak so far
CIFAR_CHILD = r"""
import json, resource, sys, tempfile
import torch
from torch.utils.data import TensorDataset
from workbench import data, models
from workbench.config import RunConfig
from workbench.engine import Trainer
from workbench.experiment import default_callbacks
from workbench.methods import build_method
from workbench.presets import CIFAR_METHODS
a = json.loads(sys.argv[1])
torch.set_num_threads(1)
def rss(): return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**30
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
def mark(phase): print("PHASE", json.dumps([phase, round(rss(), 3), round(peak(), 3)]), flush=True)
g = torch.Generator().manual_seed(0)
def fake(n): return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 100, (n,), generator=g))
train, test = fake(a["train"]), fake(a["test"])
out = tempfile.mkdtemp()
cfg = RunConfig.from_dict({"dataset": "synthetic", "teacher": "resnet32x4", "student": "resnet8x4", "batch_size": 64,
                           "eval_batch_size": 256, "epochs": a["epochs"], "progress": False, "transfer": "none",
                           "out_dir": out, "workers": 0, **CIFAR_METHODS[a["method"]], **a["extra"]})
torch.manual_seed(0)
teacher = models.build("resnet32x4", 100).eval()
method = build_method(cfg, models.build("resnet8x4", 100), teacher, example_input=train.tensors[0][:2])
mark("method built")
info = data.DatasetInfo("synthetic", 100, 3, 32)
tr = Trainer(cfg, method, train, test, run_dir=out + "/run", callbacks=default_callbacks(cfg, info), log=lambda *a, **k: None)
mark("trainer built")
orig_train, orig_eval = tr.train_epoch, tr._eval_and_callbacks
def train_epoch(epoch):
    r = orig_train(epoch); mark(f"train epoch {epoch}"); return r
def eval_and_callbacks(epoch):
    r = orig_eval(epoch); mark(f"eval+probes {epoch}"); return r
tr.train_epoch, tr._eval_and_callbacks = train_epoch, eval_and_callbacks
tr.fit()
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

# where the memory goes: saved tensors of one step, live-tensor peaks of an epoch and an eval pass
WHERE_CHILD = r"""
import collections, json, sys, tempfile
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import TensorDataset
from workbench import data, models
from workbench.config import RunConfig
from workbench.engine import Trainer
from workbench.experiment import default_callbacks
from workbench.methods import build_method
from workbench.presets import CIFAR_METHODS
a = json.loads(sys.argv[1])
torch.set_num_threads(1)
MiB = 2**20
g = torch.Generator().manual_seed(0)
def fake(n): return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 100, (n,), generator=g))
train, test = fake(128), fake(256)
out = tempfile.mkdtemp()
cfg = RunConfig.from_dict({"dataset": "synthetic", "teacher": "resnet32x4", "student": "resnet8x4", "batch_size": 64,
                           "eval_batch_size": 256, "epochs": 2, "progress": False, "transfer": "none",
                           "out_dir": out, "workers": 0, **CIFAR_METHODS[a["method"]], **a["extra"]})
torch.manual_seed(0)
teacher = models.build("resnet32x4", 100).eval()
method = build_method(cfg, models.build("resnet8x4", 100), teacher, example_input=train.tensors[0][:2])
tr = Trainer(cfg, method, train, test, run_dir=out + "/run", callbacks=default_callbacks(cfg, data.DatasetInfo("synthetic", 100, 3, 32)),
             log=lambda *a, **k: None)
tr.run_dir.mkdir(parents=True)
def nbytes(ts): return sum(t.numel() * t.element_size() for t in ts if torch.is_tensor(t))
state = {"parameters and buffers": nbytes(tr.method.state().values()),
         "optimizer momentum + gradients": 2 * nbytes(tr._params())}
if tr.ema is not None:
    state["EMA copy"] = nbytes(tr.ema.module.state_dict().values())
x, y = train.tensors[0][:64], train.tensors[1][:64]
tr.model.train()
seen, kinds = set(), collections.Counter()
leaves = {p.untyped_storage().data_ptr() for p in tr.method.parameters()} | {b.untyped_storage().data_ptr() for b in tr.method.buffers()}
def pack(t):
    s = t.untyped_storage()
    if s.data_ptr() not in seen and s.data_ptr() not in leaves:
        seen.add(s.data_ptr())
        act = t.dim() == 4 and t.shape[0] == len(x)
        kinds["activations" if act else "weight-shaped (folds, CBR slices)"] += s.nbytes()
    return t
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    _, losses = tr.model(x, y)
del losses
def live_peak(fn):
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = top = 0
    for e in events:
        live += e.nbytes()
        top = max(top, live)
    return top
for cb in tr.callbacks:
    cb.on_fit_start(tr.state())
tr._eval_and_callbacks(0)
tr._start_epoch(1)
tr.train_epoch(1)
res = {"state": {k: v / MiB for k, v in state.items()}, "saved": {k: v / MiB for k, v in kinds.items()},
       "live train epoch": live_peak(lambda: tr.train_epoch(1)) / MiB,
       "live eval+probes": live_peak(lambda: tr._eval_and_callbacks(1)) / MiB}
print("WHERE", json.dumps(res))
"""


def child(code: str, arg: dict, tree: Path | None) -> list[str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(arg)], capture_output=True, text=True,
                          env=env, cwd=tree or ROOT)
    if done.returncode:
        sys.exit(f"child failed ({arg}):\n{done.stderr[-3000:]}")
    return done.stdout.splitlines()


def maxrss_gb(lines: list[str]) -> float:
    return int(next(line.split()[1] for line in lines if line.startswith("MAXRSS"))) / 1024**2


def cifar(methods: list[str], epochs: int, extra: dict, tree: Path | None, where: bool) -> None:
    print(f"CIFAR-shaped: resnet32x4 -> resnet8x4, 3x32x32, 100 classes, 256 train / 256 test, batch 64, "
          f"eval batch 256, {epochs} epochs, default probes, 1 thread")
    print(f"import only: {maxrss_gb(child(RUN_CHILD, {}, tree)):.2f} GB")
    for m in methods:
        lines = child(CIFAR_CHILD, dict(method=m, epochs=epochs, train=256, test=256, extra=extra), tree)
        phases = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("PHASE")]
        print(f"{m:8s} peak RSS {maxrss_gb(lines):.2f} GB; resident after each phase (peak so far): "
              + ", ".join(f"{p} {r:.2f} ({q:.2f})" for p, r, q in phases))
    if not where:
        return
    for m in methods:
        line = next(line for line in child(WHERE_CHILD, dict(method=m, extra=extra), tree) if line.startswith("WHERE"))
        w = json.loads(line.split(" ", 1)[1])
        state = ", ".join(f"{k} {v:.0f}" for k, v in w["state"].items())
        saved = ", ".join(f"{k} {v:.0f}" for k, v in w["saved"].items())
        print(f"{m:8s} MiB -- state: {state}; saved for backward by one step: {saved}; "
              f"peak live tensors: train epoch {w['live train epoch']:.0f}, eval+probes {w['live eval+probes']:.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=None, help="digits: method names (kd,gpd); --cifar: preset methods (kd,gpd_kd)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cifar", action="store_true")
    ap.add_argument("--where", action="store_true")
    ap.add_argument("--rev", default=None, help="measure the workbench of this git revision")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in a.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tree = export(a.rev, Path(tmp)) if a.rev else None
        print(f"code: {'git ' + a.rev if a.rev else 'this checkout'}")
        if a.cifar:
            cifar((a.methods or "kd,gpd_kd").split(","), a.epochs, extra, tree, a.where)
            return
        base = dict(dataset="digits", teacher="resnet8", student="resnet8", epochs=a.epochs, teacher_epochs=2,
                    batch_size=64, progress=False, out_dir=tempfile.mkdtemp(), **extra)
        print(f"import only: {maxrss_gb(child(RUN_CHILD, {}, tree)):.2f} GB")
        for m in (a.methods or "kd,gpd").split(","):
            print(f"{m:10s} peak RSS {maxrss_gb(child(RUN_CHILD, dict(base, method=m), tree)):.2f} GB")


if __name__ == "__main__":
    main()
