"""Student top-1 on the embedded `fashion_mnist` subset for several methods x seeds (mean +- std).

    python bench/fashion_methods.py [--methods ce,kd] [--seeds 0,1,2] [key=value ...]
    python bench/fashion_methods.py --methods ce,kd,dkd,gpd_kd,gpd_dkd,gpd_scratch preset=fashion/demo/kd

Methods are the presets' method entries (``workbench.presets.CIFAR_METHODS``: ce, kd, dkd,
gpd_kd, gpd_dkd, gpd_scratch, ...). Every method uses the same teacher (an architecture name:
trained once with seed 0 and cached; or a checkpoint path), student, data and epochs; key=value
overrides go on top of ``DEFAULTS`` (or of a ``preset=``). Prints a markdown table: student
best-epoch and last-epoch top-1 (mean +- std over seeds, and per seed), T_d for GPD, the static
teacher's top-1, and the wall time per run with the load average, since the box may be shared.
Not a timed test: a study script whose output goes into the README / closing notes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from workbench.config import parse_overrides
from workbench.experiment import run
from workbench.presets import CIFAR_METHODS, PRESETS, get_preset

DEFAULTS = dict(dataset="fashion_mnist", data_source="embedded", train_per_class=100, teacher="resnet20",
                student="resnet8", epochs=20, teacher_epochs=30, lr=0.05, schedule="cosine", batch_size=64,
                eval_batch_size=500, probe_every=0, progress=False)
SEEDS = "0,1,2"
FAMILY = "fashion/demo"


def fmt(xs) -> str:
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def teacher_top1(results) -> str:
    for res in results:
        if "teacher" in res.summary:
            return f"{res.summary['teacher']['last_top1']:.2f}"
    return ""


def row(name: str, results, seconds) -> str:
    best = [r.summary["student"]["best_top1"] for r in results]
    last = [r.summary["student"]["last_top1"] for r in results]
    t_d = ""
    if "dynamic_teacher" in results[0].summary:
        t_d = fmt([r.summary["dynamic_teacher"]["last_top1"] for r in results])
    seeds = " / ".join(f"{b:.1f}, {v:.1f}" for b, v in zip(best, last))
    return (f"| {name} | {fmt(best)} | {fmt(last)} | {seeds} | {t_d} | {teacher_top1(results)} "
            f"| {statistics.mean(seconds):.0f} |")


def main(argv) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="ce,kd", help="comma list of preset method entries "
                   f"({', '.join(CIFAR_METHODS)})")
    p.add_argument("--seeds", default=SEEDS, help="comma list of training seeds")
    p.add_argument("--family", default=FAMILY, help="preset family: each method runs its own '<family>/<method>' "
                   "preset when there is one ('' = the DEFAULTS below plus the method entry)")
    p.add_argument("--json", default="", help="also write the per-seed numbers to this JSON file")
    p.add_argument("--collect", default="", help="do not train: read the finished runs under this out_dir "
                   "(e.g. of an interrupted bench) and write --json from them")
    args, rest = p.parse_known_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CIFAR_METHODS]
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]!r}; valid: {', '.join(CIFAR_METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.collect:
        rows = collect(Path(args.collect), methods, seeds)
        if args.json:
            write_json(args.json, rows, {"collected_from": args.collect}, seeds)
        return rows
    overrides = parse_overrides(rest)
    base = {} if ("preset" in overrides or args.family) else dict(DEFAULTS)
    base.update(overrides)
    base.setdefault("probe_every", 0)  # final numbers only: no probes
    base.setdefault("out_dir", tempfile.mkdtemp(prefix="fashion_methods_"))
    base.setdefault("progress", False)
    print(f"settings: {base}\nseeds: {seeds}; load average at start: {load()}\n", flush=True)
    print("| method | best epoch | last epoch | per seed (best, last) | T_d last | T_s | s/run |")
    print("|---|---|---|---|---|---|---|", flush=True)
    rows = {}
    for name in methods:
        results, seconds = [], []
        for s in seeds:
            t0 = time.perf_counter()
            results.append(run({**method_base(args.family, name), **base, "seed": s}, log=lambda *_: None))
            seconds.append(time.perf_counter() - t0)  # the first distillation run includes teacher training
        rows[name] = results
        print(row(name, results, seconds), flush=True)
    print(f"\nload average at end: {load()}; results under {base['out_dir']}")
    if args.json:
        write_json(args.json, rows, base, seeds)
    return rows


class Collected:
    """A finished run read back from its folder (what ``run`` returns, as far as the table needs)."""

    def __init__(self, run_dir: Path):
        import json

        self.summary = json.loads((run_dir / "summary.json").read_text())


def collect(out_dir: Path, methods: list[str], seeds: list[int]) -> dict:
    """``{method: [Collected per seed]}`` of the finished runs under ``out_dir`` (methods with
    every seed finished only), matched by the method keys and seed of each run's config."""
    import json

    rows = {}
    for name in methods:
        want = CIFAR_METHODS[name]
        found = {}
        for cfg_path in out_dir.glob("*/config.json"):
            cfg = json.loads(cfg_path.read_text())
            if (cfg_path.parent / "summary.json").exists() and all(cfg.get(k) == v or str(cfg.get(k)) == str(v)
                                                                  for k, v in want.items() if k != "grad_clip"):
                if "base" in want or cfg.get("method") != "gpd":
                    found[cfg["seed"]] = Collected(cfg_path.parent)
        if all(s in found for s in seeds):
            rows[name] = [found[s] for s in seeds]
        else:
            print(f"{name}: finished seeds {sorted(found)} of {seeds}: left out", file=sys.stderr)
    return rows


def method_base(family: str, name: str) -> dict:
    """The method's own preset of ``family`` (its per-method settings included), else the
    family's CE preset plus the method entry; ``{}``-based DEFAULTS when no family is given."""
    if not family:
        return dict(CIFAR_METHODS[name])
    own = f"{family}/{name}"
    if own in PRESETS:
        return dict(get_preset(own))
    return {**get_preset(f"{family}/ce"), **CIFAR_METHODS[name]}


def write_json(path: str, rows: dict, settings: dict, seeds: list[int]) -> None:
    import json

    out = {"settings": {k: str(v) for k, v in settings.items() if k != "out_dir"}, "seeds": seeds, "methods": {}}
    for name, results in rows.items():
        roles = results[0].summary
        out["methods"][name] = {
            "best": [r.summary["student"]["best_top1"] for r in results],
            "last": [r.summary["student"]["last_top1"] for r in results],
            **({"T_d_last": [r.summary["dynamic_teacher"]["last_top1"] for r in results]}
               if "dynamic_teacher" in roles else {}),
            **({"T_s": roles["teacher"]["last_top1"]} if "teacher" in roles else {}),
        }
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
