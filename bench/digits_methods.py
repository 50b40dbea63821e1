"""Student top-1 on the embedded `digits` dataset for several methods x seeds (mean +- std).

    python bench/digits_methods.py [key=value ...]      # e.g. train_per_class=15 epochs=60

Every method uses the same cached teacher, student, split and epochs; prints one table row per
method with best and last epoch top-1 (mean +- std over seeds) and the teacher's accuracy.
Not a timed test: a study script whose output goes into the README / closing notes.
"""
from __future__ import annotations

import statistics
import sys
import tempfile

from workbench.config import parse_overrides
from workbench.experiment import run
from workbench.presets import CIFAR_METHODS

METHODS = {label: CIFAR_METHODS[key] for label, key in (  # the presets' method entries
    ("ce", "ce"), ("kd", "kd"), ("gpd(base=kd)", "gpd_kd"), ("gpd(base=none)", "gpd_scratch"))}
DEFAULTS = dict(dataset="digits", train_per_class=15, teacher="resnet8x4", student="resnet8", epochs=60,
                teacher_epochs=60, lr=0.05, schedule="cosine", eval_batch_size=512, probe_every=0, progress=False)
SEEDS = (0, 1, 2)


def fmt(xs):
    return f"{statistics.mean(xs):6.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:4.2f}"


def main(argv):
    overrides = parse_overrides(argv)
    seeds = tuple(int(s) for s in overrides.pop("seeds", "0,1,2").split(",")) if "seeds" in overrides else SEEDS
    out = overrides.pop("out_dir", None) or tempfile.mkdtemp(prefix="digits_methods_")
    base = {**DEFAULTS, **overrides, "out_dir": out}
    print(f"settings: {base}")
    rows = {}
    for name, m in METHODS.items():
        res = [run({**base, **m, "seed": s}, log=lambda *_: None) for s in seeds]
        rows[name] = res
        best = [r.summary["student"]["best_top1"] for r in res]
        last = [r.summary["student"]["last_top1"] for r in res]
        extra = ""
        if "dynamic_teacher" in res[0].summary:
            extra = "  T_d last " + fmt([r.summary["dynamic_teacher"]["last_top1"] for r in res])
        if "teacher" in res[0].summary:
            extra += f"  T_s {res[0].summary['teacher']['last_top1']:.2f}"
        print(f"{name:16s} best {fmt(best)}  last {fmt(last)}{extra}", flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
