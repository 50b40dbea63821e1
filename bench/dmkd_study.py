"""DM-KD's protocol on the embedded Fashion-MNIST data, and KD + RecursiveMix, several seeds.

    python bench/dmkd_study.py [--rows kd,kd_rm,...] [--seeds 0,1,2] [--fashion-full DIR] [key=value ...]

DM-KD (Li et al. 2023) distils on images that are *not* the training set (diffusion samples) with
the KD loss alone (CE off), evaluating on the real test set; it finds low-fidelity samples and
relatively weak teachers work better. Here, at the demo budget of preset ``fashion/demo/kd``
(resnet8 student, 20 epochs, 100 training images per class, the 1000 embedded test images):

- ``real``: the student's own training images (the embedded subset's 100 per class);
- ``other``: as many *other* real images -- 100 per class of the full Fashion-MNIST training file
  outside the embedded subset (Debian's ``dataset-fashion-mnist``), picked with a seeded permutation
  per class -- written as a class-folder tree and given as ``train_data=<folder>``;
- ``other_lowfi``: the same images degraded by a documented low-fidelity transform standing in for
  DM-KD's few-step samples: down-sampled to ``--degrade-size`` (14) pixels (bilinear, antialiased)
  and back up to 28 (bilinear), rounded to uint8 PNGs;
- teachers: the shipped resnet20 (``embedded:fashion_resnet20``, 90.9 %) and a weaker one, a resnet8
  trained by the workbench on all 5000 subset images for ``WEAK_EPOCHS`` epochs (cached, seed 0).

Rows: ``kd`` (the preset: CE 0.1 + KD 0.9 on the real images), ``kd_rm`` (the same with
``mix=recursivemix``: the RecursiveMix row of the combined table), and the DM-KD rows
``dmkd_<data>_<teacher>`` (``ce_weight=0``, KD 0.9 at T 4). Per run: the student's best-epoch and
last-epoch top-1 and the train record's top-1 (on the labels of the images it trains on). Writes the
per-seed numbers to ``--json`` (``docs/dmkd_study.json``, rendered into the README by
``docs/render_readme.py``) after every run; the run folders (``<row>_s<seed>`` under ``--out-dir``)
are ordinary runs that ``python -m workbench table`` reads. Skips the ``other*`` rows with one line
when the full Fashion-MNIST files are absent. A study, not a timed test: wall times depend on the
shared machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.config import parse_overrides  # noqa: E402
from workbench.data import fashion_files  # noqa: E402
from workbench.data.fashion_mnist import CLASS_NAMES  # noqa: E402
from workbench.experiment import run  # noqa: E402
from workbench.presets import get_preset  # noqa: E402

PRESET = "fashion/demo/kd"
PER_CLASS = 100  # as many other images as the student's real ones
PICK_SEED = 0
DEGRADE_SIZE = 14
WEAK_TEACHER = dict(teacher="resnet8", teacher_epochs=5, teacher_data="all")
STRONG = "strong"
ROWS = {
    "kd": dict(),
    "kd_rm": dict(mix="recursivemix"),
    "dmkd_real_strong": dict(ce_weight=0.0),
    "dmkd_other_strong": dict(ce_weight=0.0, _data="other"),
    "dmkd_lowfi_strong": dict(ce_weight=0.0, _data="other_lowfi"),
    "dmkd_real_weak": dict(ce_weight=0.0, **WEAK_TEACHER),
    "dmkd_lowfi_weak": dict(ce_weight=0.0, _data="other_lowfi", **WEAK_TEACHER),
}
LABELS = {
    "kd": "kd (CE 0.1 + KD 0.9), real images",
    "kd_rm": "kd + recursivemix, real images",
    "dmkd_real_strong": "DM-KD loss (KD only), real images, strong teacher",
    "dmkd_other_strong": "DM-KD loss, other images, strong teacher",
    "dmkd_lowfi_strong": "DM-KD loss, other images low-fidelity, strong teacher",
    "dmkd_real_weak": "DM-KD loss, real images, weak teacher",
    "dmkd_lowfi_weak": "DM-KD loss, other images low-fidelity, weak teacher",
}
SEEDS = "0,1,2"
OUT_DIR = ROOT / "runs" / "dmkd_study"
JSON = ROOT / "docs" / "dmkd_study.json"


def other_images(full_root) -> tuple[np.ndarray, np.ndarray] | None:
    """``PER_CLASS`` images per class of the full training file outside the embedded subset, or None."""
    folder = fashion_files.find_full(full_root)
    if folder is None:
        return None
    images, labels = fashion_files.load_full(folder)["train"]
    used = set(np.load(fashion_files.EMBEDDED_FILE)["train_index"].tolist())
    rng = np.random.default_rng(PICK_SEED)
    picked = []
    for c in range(len(CLASS_NAMES)):
        members = [i for i in rng.permutation(np.flatnonzero(labels == c)) if i not in used]
        picked += sorted(members[:PER_CLASS])
    picked = np.array(sorted(picked))
    return images[picked], labels[picked]


def degrade(images: np.ndarray, size: int) -> np.ndarray:
    """The low-fidelity transform: down to ``size`` px (bilinear, antialiased), back up (bilinear)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).float()[:, None]
    small = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    back = F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return back.round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()


def write_folder(images: np.ndarray, labels: np.ndarray, folder: Path) -> Path:
    """A class-folder tree of PNGs (folders named by label), written once."""
    from PIL import Image

    done = folder / ".complete"
    if done.exists():
        return folder
    for i, (img, y) in enumerate(zip(images, labels)):
        (folder / str(int(y))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / str(int(y)) / f"{i:05d}.png")
    done.write_text(f"{len(images)} images\n")
    return folder


def prepare_sets(full_root, out_dir: Path, size: int) -> dict[str, Path]:
    found = other_images(full_root)
    if found is None:
        return {}
    images, labels = found
    return {"other": write_folder(images, labels, out_dir / "data" / "other"),
            "other_lowfi": write_folder(degrade(images, size), labels, out_dir / "data" / f"other_lowfi{size}")}


def one_run(row: str, seed: int, sets: dict, out_dir: Path, overrides: dict) -> dict:
    entry = dict(ROWS[row])
    data = entry.pop("_data", None)
    cfg = dict(get_preset(PRESET), **entry, seed=seed, out_dir=str(out_dir), name=f"{row}_s{seed}",
               probe_every=0, progress=False, **overrides)
    if data is not None:
        cfg["train_data"] = str(sets[data])
    t0 = time.time()
    res = run(cfg, log=lambda *a, **k: None)
    train = [r for r in res.records if r.get("kind") == "train"]
    return {"seed": seed, "best": res.summary["student"]["best_top1"], "last": res.summary["student"]["last_top1"],
            "train_top1_last": train[-1]["top1"] if train else None,
            "T_s": res.summary.get("teacher", {}).get("last_top1"), "seconds": round(time.time() - t0, 1)}


def fmt(xs) -> str:
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


def main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of rows ({', '.join(ROWS)})")
    p.add_argument("--seeds", default=SEEDS)
    p.add_argument("--fashion-full", default=None, help="folder of the full Fashion-MNIST IDX files (default: the "
                   "workbench's look-up: datasets/, $WORKBENCH_DATA, /usr/share/datasets/fashion-mnist)")
    p.add_argument("--degrade-size", type=int, default=DEGRADE_SIZE)
    p.add_argument("--out-dir", default=str(OUT_DIR))
    p.add_argument("--json", default=str(JSON))
    p.add_argument("--by-seed", action="store_true", help="seed by seed (every row's seed 0 first): a study cut "
                   "short still has paired rows")
    p.add_argument("--merge", default="", help="do not train: add the rows of these JSON files (comma list, e.g. "
                   "of two halves run side by side) to --json")
    args, rest = p.parse_known_args(argv)
    overrides = parse_overrides(rest)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row {unknown[0]!r}; valid: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out_dir = Path(args.out_dir)
    if args.merge:
        path = Path(args.json)
        doc = json.loads(path.read_text()) if path.exists() else {}
        for other in args.merge.split(","):
            part = json.loads(Path(other).read_text())
            doc.update({k: v for k, v in part.items() if k != "rows"})
            doc.setdefault("rows", {}).update(part.get("rows", {}))
        doc["rows"] = {r: doc["rows"][r] for r in ROWS if r in doc["rows"]}  # table order
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"[dmkd_study] wrote {path} ({', '.join(doc['rows'])})")
        return 0
    sets = prepare_sets(args.fashion_full, out_dir, args.degrade_size)
    if not sets:
        skipped = [r for r in rows if "_data" in ROWS[r]]
        print(f"[dmkd_study] the full Fashion-MNIST files are not found (install Debian's dataset-fashion-mnist or "
              f"pass --fashion-full): skipping rows {', '.join(skipped)}")
        rows = [r for r in rows if r not in skipped]
    path = Path(args.json)
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.update(preset=PRESET, per_class=PER_CLASS, degrade_size=args.degrade_size, weak_teacher=WEAK_TEACHER,
               overrides={k: str(v) for k, v in overrides.items()}, labels=LABELS)
    doc.setdefault("rows", {})
    order = [(row, seed) for seed in seeds for row in rows] if args.by_seed else \
        [(row, seed) for row in rows for seed in seeds]
    for row, seed in order:
        r = one_run(row, seed, sets, out_dir, overrides)
        kept = [x for x in doc["rows"].get(row, []) if x["seed"] != seed]
        doc["rows"][row] = sorted(kept + [r], key=lambda x: x["seed"])
        doc["load_average"] = f"{os.getloadavg()[0]:.1f}"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"[dmkd_study] {row} seed {seed}: best {r['best']:.2f} last {r['last']:.2f} ({r['seconds']:.0f} s)",
              flush=True)
    for row, rs in doc["rows"].items():
        print(f"| {LABELS.get(row, row)} | {fmt([r['best'] for r in rs])} | {fmt([r['last'] for r in rs])} | "
              f"{len(rs)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
