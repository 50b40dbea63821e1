"""Behaviour before and after a change that should not change behaviour (a refactor): a fixed set
of tiny runs, one per method family, trained by two versions of ``workbench/`` side by side, and
their metrics records and ``student.pt`` tensors compared bit for bit.

    python bench/behaviour_check.py --base <git rev>      # that commit's workbench/ vs the checkout's
    python bench/behaviour_check.py --only gpd_dkd,ctc    # a subset

Each run is a fresh process (``PYTHONPATH`` = the version's tree), on the embedded Fashion-MNIST
subset with the shipped teacher, a few images per class and 2-3 epochs, probes on. Records are
compared without their timing fields (:data:`TIMING`); every float must be equal, not close: a
refactor that changes a summation order shows up here. Exit code 1 if anything differs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from git_tree import export  # noqa: E402

ROOT = HERE.parent
#: fields of a record that measure time, not behaviour
TIMING = frozenset({"time", "images_per_s", "eta", "elapsed", "wall"})

COMMON = {"dataset": "fashion_mnist", "data_source": "embedded", "train_per_class": 6, "student": "resnet8",
          "teacher": "embedded:fashion_resnet20", "epochs": 2, "batch_size": 16, "lr": 0.05,
          "schedule": "cosine", "eval_batch_size": 250, "probe_every": 1, "probe_samples": 60,
          "transfer": "none", "progress": False, "seed": 3, "device": "cpu"}

#: the fixed set (issue 25): ce, kd, dkd+dot, ctkd, gpd on dkd, gpd from scratch, reviewkd,
#: ctc across its stage boundary, cskd, inheritance
RUNS = {
    "ce": {"method": "ce", "teacher": "none"},
    "kd": {"method": "kd"},
    "dkd_dot": {"method": "dkd", "dot": True, "dkd_warmup": 1.0},
    "ctkd": {"method": "ctkd", "base": "kd"},
    "gpd_dkd": {"method": "gpd", "base": "dkd", "ema_decay": 0.9},
    "gpd_scratch": {"method": "gpd", "base": "none", "teacher": "none"},
    "reviewkd": {"method": "reviewkd"},
    "ctc": {"method": "ctc", "teacher": "none", "epochs": 3, "ctc_stage_epoch": 2},
    "cskd": {"method": "cskd", "student": "vit_nano_dist", "patch_size": 4, "lr": 0.001, "optimizer": "adamw"},
    "inherit_kd": {"method": "kd", "init": "inherit", "init_bn_batches": 2},
}

RUNNER = """
import json, sys
from workbench.experiment import run
run(json.loads(sys.argv[1]), log=lambda *a, **k: None)
"""


def train(tree: Path, label: str, out: Path) -> Path:
    cfg = {**COMMON, **RUNS[label], "out_dir": str(out), "name": label}
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cfg)], env=env, cwd=str(out),
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{label} under {tree}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return out / label


def fingerprint(run_dir: Path) -> dict:
    """Records without timing fields, and a digest of every tensor of ``student.pt``."""
    import torch

    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        records.append({k: v for k, v in r.items() if k not in TIMING})
    state = torch.load(run_dir / "student.pt", map_location="cpu", weights_only=True)["model"]
    tensors = {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()[:16] for k, v in state.items()}
    return {"records": records, "tensors": tensors}


def differences(a: dict, b: dict) -> list[str]:
    out = []
    if len(a["records"]) != len(b["records"]):
        out.append(f"{len(a['records'])} vs {len(b['records'])} records")
    for i, (ra, rb) in enumerate(zip(a["records"], b["records"])):
        if ra != rb:
            keys = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
            out.append(f"record {i} ({ra.get('kind')} {ra.get('role')} epoch {ra.get('epoch')}): {keys}")
    if a["tensors"] != b["tensors"]:
        diff = sorted(k for k in set(a["tensors"]) | set(b["tensors"]) if a["tensors"].get(k) != b["tensors"].get(k))
        out.append(f"student.pt tensors differ: {diff[:5]}{' ...' if len(diff) > 5 else ''}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision whose workbench/ is the reference")
    ap.add_argument("--only", default="", help="comma list of run labels (default: all)")
    args = ap.parse_args()
    labels = [s for s in args.only.split(",") if s] or list(RUNS)
    bad = [s for s in labels if s not in RUNS]
    if bad:
        raise SystemExit(f"unknown run label(s) {bad}; valid: {', '.join(RUNS)}")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tree").mkdir()
        base_tree = export(args.base, tmp / "tree")
        for label in labels:
            outs = {}
            for side, tree in (("base", base_tree), ("head", ROOT)):
                (tmp / side).mkdir(exist_ok=True)
                outs[side] = fingerprint(train(tree, label, tmp / side))
            diff = differences(outs["base"], outs["head"])
            failed += bool(diff)
            n = len(outs["head"]["records"])
            print(f"{label:12s} {'SAME' if not diff else 'DIFFERENT'}  ({n} records, "
                  f"{len(outs['head']['tensors'])} student tensors)" + "".join(f"\n    {d}" for d in diff), flush=True)
    print(f"{len(labels) - failed}/{len(labels)} runs identical to {args.base}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
