"""DDP on PyTorch's own engine: a 2-process ``torchrun`` run (gloo, CPU) ends with the same
weights and the same metrics as one process with the same global batch.

Constraints of the CPU check (documented in the README): SyncBatchNorm has no CPU kernel and
per-rank BN statistics differ from full-batch ones, so the equality is checked with a BN-free
student (the small ViT), and augmentation is off (each rank draws its own random crops).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.engine.checkpoint import load_checkpoint
from workbench.engine.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(teacher="resnet8", teacher_epochs=1, student="vit_nano", dataset="digits", train_per_class=4,
              epochs=2, batch_size=20, lr=0.01, augment="false", progress="false", probe_samples=40,
              eval_batch_size=128, grad_clip=5, probe_every=1, image_size=8)
METHODS = {
    "gpd_kd_dot": dict(method="gpd", base="kd", dot="true"),
    "ce": dict(method="ce"),
    "kd": dict(method="kd"),
    "dkd_ctkd": dict(method="dkd", ctkd="true"),
    "gpd_none": dict(method="gpd", base="none"),
    # a distillation-token ViT from a frozen CNN teacher (eval-mode BN): 4x4 patch grid pooled
    # onto resnet8's 2x2 map, every CSKD term on
    "cskd": dict(method="cskd", student="vit_nano_dist"),
    # 2 epochs: stage 1 (instance memory) in epoch 1, snapshot + refresh at its end, stage 2 in epoch 2;
    # exact InfoNCE over all negatives (no per-rank sampling), features all-gathered before every update
    "ctc": dict(method="ctc"),
    # online group distillation: two vit_nano trained together, one optimizer over both, DDP
    # around the whole group; every network's weights and records must match one process
    "dml": dict(method="dml"),
}
# float32: DDP sums each gradient as two 10-example halves plus an all-reduce instead of one
# 20-example sum (another order); over 2 epochs of steps the weights drift by ~1e-7 (measured
# 2e-8..3e-7 for every method); 1e-5 leaves ~100x headroom. Metrics are means over the eval set
# and losses of those weights: the same drift, amplified by at most the loss's slope.
WEIGHT_TOL = 1e-5
METRIC_TOL = 1e-4
IGNORED = {"time", "seconds", "images_per_s", "lr"}


def _train(out_dir: Path, name: str, method: dict, nproc: int) -> Path:
    args = [f"{k}={v}" for k, v in {**COMMON, **method, "out_dir": out_dir, "name": name}.items()]
    launcher = [sys.executable, "-m", "workbench"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "workbench"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    proc = subprocess.run([*launcher, "train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out_dir / name


def _numeric(records):
    out = {}
    for r in records:
        key = tuple(sorted((k, str(v)) for k, v in r.items() if not isinstance(v, float) or k in ("epoch",)))
        out[key] = {k: v for k, v in r.items() if isinstance(v, float) and k not in IGNORED}
    return out


def _check_equal(single: Path, multi: Path):
    a = load_checkpoint(single / "last.pt")["method"]
    b = load_checkpoint(multi / "last.pt")["method"]
    assert a.keys() == b.keys()
    tensors = [k for k in a if torch.is_tensor(a[k]) and a[k].is_floating_point()]
    assert tensors
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in tensors)
    assert worst < WEIGHT_TOL, f"max weight difference {worst:.3g}"
    ra, rb = _numeric(read_metrics(single)), _numeric(read_metrics(multi))
    assert ra.keys() == rb.keys()
    for key in ra:
        for metric, value in ra[key].items():
            assert rb[key][metric] == pytest.approx(value, abs=METRIC_TOL, rel=METRIC_TOL), (key, metric)


def _case(tmp_path, name):
    single = _train(tmp_path, f"{name}_1", METHODS[name], 1)
    multi = _train(tmp_path, f"{name}_2", METHODS[name], 2)
    _check_equal(single, multi)


def test_gpd_with_dot_under_two_process_ddp_equals_one_process(tmp_path):
    _case(tmp_path, "gpd_kd_dot")


@pytest.mark.parametrize("name", ["ce", "kd", "dkd_ctkd", "gpd_none", "cskd", "ctc", "dml"])  # ~20 s each on 2 idle cores
def test_method_under_two_process_ddp_equals_one_process(tmp_path, name):
    _case(tmp_path, name)


def test_notebook_launches_torchrun_and_reads_the_same_run_files(tmp_path):
    """``nproc > 1`` in the notebooks: torchrun as a subprocess (teacher trained inside it, by
    both ranks under DDP), output streamed back, results read from the same run folder."""
    from workbench import notebook
    from workbench.config import RunConfig

    values = {k: (v == "true" if v in ("true", "false") else v) for k, v in COMMON.items()}
    cfg = RunConfig.from_dict(dict(values, **METHODS["gpd_kd_dot"], out_dir=str(tmp_path), name="nb"))
    lines = []
    result, models = notebook.train(cfg, nproc=2, echo=lines.append)
    assert models == {}  # the models live in the torchrun workers
    assert any("training teacher" in line for line in lines) and any("done" in line for line in lines)
    assert result.run_dir == tmp_path / "nb" and (result.run_dir / "student.pt").is_file()
    assert result.summary["student"]["last_top1"] == [r["top1"] for r in result.records
                                                      if r["kind"] == "eval" and r["role"] == "student"][-1]
    assert {r["epoch"] for r in result.records if r["kind"] == "train"} == {1, 2}
