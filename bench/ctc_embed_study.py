"""Representation-level methods on the embedded Fashion-MNIST subset with a transfer target:
CE vs CTC (both paper presets) vs KD vs DisCo-style embedding distillation at three
``embed_hidden`` widths, several seeds.

    python bench/ctc_embed_study.py [--seeds 0,1,2] [--methods ce,ctc_transfer,...] [key=value ...]
    python bench/ctc_embed_study.py --collect            # no training: rebuild the JSON from finished runs

Source task: classes 0-4 (``source_classes``), 100 training images per class, the 500 source
test images. Transfer target: the held-out classes 5-9 (the transferability probe: a linear
probe on the frozen penultimate features, trained on their 500 training images, tested on their
500 test images, every epoch). Teacher (KD, embed): a resnet20 trained on all 2500 training
images of the source classes (trained once with seed 0 and cached). Student: resnet8.

Per run it reports the final source top-1, the transfer probe's peak (over epochs 1..E) and last
value, and the linear CKA between the final student's and the teacher's penultimate features on
the first ``probe_samples`` source test images (computed after training for every method, so
the teacher-free methods CE and CTC get it too). Prints a markdown table (mean +- std over seeds)
and writes the per-seed numbers to ``--json`` (``docs/ctc_embed_study.json``; the README table is
rendered from it by ``docs/render_readme.py``). Runs are named ``<method>_s<seed>`` under
``--out-dir`` (default ``runs/ctc_embed_study``), which the compare notebook's
discriminability/transferability section reads. A study, not a timed test; the wall time per
run and the load average are printed because the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.config import RunConfig, parse_overrides  # noqa: E402
from workbench.methods.ctc import PRESETS as CTC_PRESETS  # noqa: E402

DEFAULTS = dict(dataset="fashion_mnist", data_source="embedded", source_classes="0,1,2,3,4", train_per_class=100,
                teacher="resnet20", teacher_data="all", teacher_epochs=30, student="resnet8", epochs=20,
                batch_size=64, lr=0.05, schedule="cosine", eval_batch_size=500, probe_samples=500, probe_every=1,
                progress=False)
#: DisCo's bottleneck sweep: narrower than both widths, d_s = d_t (64 for resnet8 / resnet20), DisCo's 2048
EMBED_WIDTHS = (16, 64, 2048)
METHODS = {
    "ce": dict(method="ce"),
    "ctc_transfer": dict(method="ctc", **CTC_PRESETS["transferability"]),
    "ctc_disc": dict(method="ctc", **CTC_PRESETS["discriminability"]),
    "kd": dict(method="kd"),
    **{f"embed_h{h}": dict(method="embed", embed_hidden=h) for h in EMBED_WIDTHS},
}
LABELS = {"ce": "ce", "ctc_transfer": "ctc (transferability preset)", "ctc_disc": "ctc (discriminability preset)",
          "kd": "kd", **{f"embed_h{h}": f"embed, embed_hidden={h}" for h in EMBED_WIDTHS}}
SEEDS = "0,1,2"
OUT_DIR = ROOT / "runs" / "ctc_embed_study"
JSON = ROOT / "docs" / "ctc_embed_study.json"
TRANSFER = ("transferability", "linear_top1")
WALL_FILE = "study_wall_s.txt"  # wall seconds of the run (this script's own note beside the run files)


def run_name(method: str, seed: int) -> str:
    return f"{method}_s{seed}"


def fmt(xs) -> str:
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def teacher_file(cfg: RunConfig) -> Path:
    """The cached teacher every distilling run of these settings uses (trained if missing)."""
    from workbench.experiment import load_teacher, prepare, teacher_config, cached_teacher

    kd = cfg.replace(method="kd")
    prep = prepare(kd)
    load_teacher(prep, log=print)
    return cached_teacher(teacher_config(kd, prep.teacher_arch))


def base_teacher_arch(cfg: RunConfig) -> str:
    return cfg.teacher  # an architecture name here (trained and cached by teacher_file)


def cka_to_teacher(run_dir: Path, cfg: RunConfig, teacher: Path) -> float:
    """Linear CKA of the final student's and the teacher's penultimate features on the first
    ``probe_samples`` source test images (what the gap probe's ``cka`` uses during training)."""
    from workbench import data, models
    from workbench.probes.features import collect_outputs
    from workbench.probes.metrics import linear_cka

    opts = cfg.dataset_options()
    info = data.info(cfg.dataset, **opts)
    test = data.build(cfg.dataset, "test", **opts)

    def load(arch: str, path: Path):
        return models.load(arch, path, info.num_classes, info.in_channels, image_size=info.image_size)

    out = collect_outputs({"teacher": load(base_teacher_arch(cfg), teacher), "student": load(cfg.student, run_dir / "student.pt")},
                          test, probe_samples=cfg.probe_samples, cache_dir=False)
    return float(linear_cka(out["teacher"].features, out["student"].features))


def summarise(run_dir: Path, cfg: RunConfig, teacher: Path) -> dict:
    """The numbers of one finished run."""
    from workbench.engine.metrics import read_metrics

    recs = read_metrics(run_dir)
    evals = [r for r in recs if r["kind"] == "eval" and r["role"] == "student" and r["epoch"] > 0]
    transfer = sorted((r["epoch"], r["value"]) for r in recs if r["kind"] == "probe" and r.get("probe") == TRANSFER[0]
                      and r.get("metric") == TRANSFER[1] and r.get("role") == "student" and r["epoch"] > 0)
    if not transfer:
        raise SystemExit(f"{run_dir}: no transferability records (is the target missing?)")
    peak_epoch, peak = max(transfer, key=lambda p: (p[1], -p[0]))
    teacher_top1 = next((r["top1"] for r in reversed(recs) if r["kind"] == "eval" and r["role"] == "teacher"), None)
    in_run_cka = next((r["value"] for r in reversed(recs) if r["kind"] == "gap" and r["pair"] == "T_s-S"
                       and r["metric"] == "cka"), None)
    return {"source_top1": evals[-1]["top1"], "transfer_peak": peak, "transfer_peak_epoch": peak_epoch,
            "transfer_last": transfer[-1][1], "cka_teacher": cka_to_teacher(run_dir, cfg, teacher),
            "cka_in_run": in_run_cka, "teacher_top1": teacher_top1, "target": next(
                r["target"] for r in recs if r["kind"] == "probe" and r.get("probe") == TRANSFER[0])}


KEYS = ("source_top1", "transfer_peak", "transfer_last", "cka_teacher")


def row(name: str, per_seed: list[dict], seconds: list[float]) -> str:
    cells = [fmt([r[k] for r in per_seed]) for k in KEYS]
    peaks = "/".join(str(r["transfer_peak_epoch"]) for r in per_seed)
    wall = f"{statistics.mean(seconds):.0f}" if seconds else ""
    return f"| {LABELS.get(name, name)} | {cells[0]} | {cells[1]} (epochs {peaks}) | {cells[2]} | {cells[3]} | {wall} |"


HEADER = ("| method (student resnet8) | source top-1, last epoch (%) | transfer probe, peak (%) | transfer probe, "
          "last epoch (%) | linear CKA to the teacher | s/run |\n|---|---|---|---|---|---|")


def main(argv) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--seeds", default=SEEDS, help="comma list of training seeds")
    p.add_argument("--out-dir", default=str(OUT_DIR), help="where the runs are written (and read by --collect)")
    p.add_argument("--json", default=str(JSON), help="per-seed numbers are written here ('' = not written)")
    p.add_argument("--collect", action="store_true", help="do not train: summarise the finished runs in --out-dir")
    args, rest = p.parse_known_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {**DEFAULTS, **parse_overrides(rest), "out_dir": args.out_dir}
    base = RunConfig.from_dict(settings)
    print(f"settings: {settings}\nseeds: {seeds}; load average at start: {load()}", flush=True)
    teacher = teacher_file(base)
    print(f"teacher: {teacher}\n\n{HEADER}", flush=True)
    from workbench.experiment import run

    results, walls = {}, {}
    for name in methods:
        per_seed, seconds = [], []
        for s in seeds:
            cfg = RunConfig.from_dict({**settings, **METHODS[name], "seed": s, "name": run_name(name, s)})
            wall = cfg.run_dir() / WALL_FILE
            if not args.collect:
                finished = (cfg.run_dir() / "summary.json").exists()
                t0 = time.perf_counter()
                run(cfg, log=lambda *_: None)
                if not finished or not wall.exists():  # a finished run is only re-read: keep its wall time
                    wall.write_text(f"{time.perf_counter() - t0:.1f}\n")
            elif not (cfg.run_dir() / "summary.json").exists():
                print(f"{name} seed {s}: not finished in {args.out_dir}: left out", file=sys.stderr)
                continue
            if wall.exists():
                seconds.append(float(wall.read_text()))
            per_seed.append({"seed": s, **summarise(cfg.run_dir(), cfg, teacher)})
        if per_seed:
            results[name], walls[name] = per_seed, seconds
            print(row(name, per_seed, seconds), flush=True)
    print(f"\nload average at end: {load()}; runs under {args.out_dir}")
    if args.json:
        out = {"settings": {k: str(v) for k, v in settings.items() if k not in ("out_dir", "progress")},
               "seeds": sorted({r["seed"] for rs in results.values() for r in rs}), "labels": {k: LABELS[k] for k in results}, "teacher_top1": next((r["teacher_top1"] for rs in results.values() for r in rs
                                                     if r["teacher_top1"] is not None), None),
               "target": next(r["target"] for rs in results.values() for r in rs),
               "seconds_per_run": {k: v for k, v in walls.items() if v}, "load_average_end": load(),
               "methods": results}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
