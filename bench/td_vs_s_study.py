"""Why does GPD's dynamic teacher T_d end below its student S on the demo? A study on the
embedded Fashion-MNIST subset (the demo's settings: shipped resnet20 teacher, resnet8 student,
100 training images per class, 20 epochs, cosine lr 0.05, batch 64), seeds 0, 1, 2.

    nice -n 10 python bench/td_vs_s_study.py [--rows a,b] [--seeds 0,1,2] [--json docs/td_vs_s.json]
    python bench/td_vs_s_study.py --collect      # no training: the JSON from the finished runs' records

Rows (every row: the demo preset plus the overrides named; EMA decay 0.99 per step as the demo
preset, so every row has a raw and an EMA model):

- ``s_ce``: the student architecture alone, CE (``fashion/demo/ce``);
- ``wide_ce``: a plain 2x-wide resnet8 (every width doubled: T_d's architecture folded to one
  conv per layer), CE alone;
- ``td_ce``: T_d exactly as GPD builds it (``gpd.expand(resnet8, ratio=2)``: reference branches and
  scales, reference widening, as a standalone network), CE alone -- its parametrization without
  the student; ``td_full_ce``: the same with ``widening=full_scale``;
- ``gpd``: the demo (``fashion/demo/gpd_dkd``); ``gpd_e60``: 60 epochs; ``gpd_r3``: ratio 3;
  ``gpd_full``: ``widening=full_scale``; ``gpd_comp``: ``student_grad=compensated`` (the student's
  shared slice steps as a standalone student's instead of x4); ``gpd_lam0``: ``gpd_lambda=0``
  (no SCE pull of S towards T_d).

Per run it keeps, from the run's eval records, best- and last-epoch top-1 of S and T_d, raw and
EMA, the epochs in which T_d (raw) is ahead of S (raw), and T_d - S over the last 5 epochs. Every
finished run is appended to ``runs/td_vs_s/results.jsonl`` at once (row, seed, numbers), so a
killed study continues where it stopped and ``--collect`` needs no run folder names. The two
"alone" rows register their models in this process only (``models.MODELS``); nothing in the
package changes. A study script, not a timed test; docs/render_readme.py renders the README table
from its JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from workbench.engine.metrics import read_metrics
from workbench.experiment import run
from workbench.models._registry import register
from workbench.presets import get_preset

OUT_DIR = Path("runs/td_vs_s")
RESULTS = "results.jsonl"
WIDE = "resnet8_w2"  # resnet8 with every width doubled (registered below)
TD = "gpd_td_resnet8_r2"  # T_d = gpd.expand(resnet8, ratio=2) as a standalone network (registered below)
TD_FULL = "gpd_td_full_resnet8_r2"  # the same with widening=full_scale (copies, the other step sizes)
DEMO_EMA = dict(ema_decay=0.99)  # the demo preset's EMA on the CE rows too: raw and EMA for every row
LAST_K = 5  # epochs at the end over which the mean T_d - S gap is taken
ROWS = {  # in the order they train: the cheap and the central ones first
    "s_ce": ("fashion/demo/ce", DEMO_EMA, "S alone (resnet8), CE"),
    "td_ce": ("fashion/demo/ce", dict(DEMO_EMA, student=TD), "T_d net alone (expand(resnet8, r=2): branches, reference widening), CE"),
    "td_full_ce": ("fashion/demo/ce", dict(DEMO_EMA, student=TD_FULL), "T_d net alone, widening=full_scale, CE"),
    "gpd": ("fashion/demo/gpd_dkd", {}, "GPD demo (DKD, r=2, widening=reference), 20 epochs"),
    "gpd_full": ("fashion/demo/gpd_dkd", dict(widening="full_scale"), "GPD, widening=full_scale"),
    "gpd_comp": ("fashion/demo/gpd_dkd", dict(student_grad="compensated"), "GPD, student_grad=compensated"),
    "wide_ce": ("fashion/demo/ce", dict(DEMO_EMA, student=WIDE), "plain 2x-wide resnet8 alone, CE"),
    "gpd_r3": ("fashion/demo/gpd_dkd", dict(ratio=3.0), "GPD, ratio 3"),
    "gpd_e60": ("fashion/demo/gpd_dkd", dict(epochs=60), "GPD, 60 epochs"),
    "gpd_lam0": ("fashion/demo/gpd_dkd", dict(gpd_lambda=0.0), "GPD, gpd_lambda=0 (no SCE)"),
}
ALONE = {"s_ce": "S", "wide_ce": "T_d", "td_ce": "T_d", "td_full_ce": "T_d"}


def _register_models() -> None:
    from workbench import gpd, models
    from workbench.models.cifar_resnet import THIN_WIDTHS

    if WIDE in models.MODELS:
        return

    @register(WIDE, family="cifar")
    def wide(num_classes, in_channels=3, image_size=None):
        return models.build("resnet8", num_classes, in_channels, widths=tuple(2 * w for w in THIN_WIDTHS))

    def expanded(convention):
        def factory(num_classes, in_channels=3, image_size=None):
            side = image_size or 28
            student = models.build("resnet8", num_classes, in_channels)
            example = torch.randn(2, in_channels, side, side)
            return gpd.expand(student, ratio=2.0, scale_init="reference", convention=convention,
                              example_input=example).wide
        return factory

    register(TD, family="cifar")(expanded("reference"))
    register(TD_FULL, family="cifar")(expanded("full_scale"))


def _values(row: str, overrides: dict) -> dict:
    preset, extra, _ = ROWS[row]
    return {**get_preset(preset), **extra, **overrides}


def numbers(run_dir: Path, alone: str | None) -> dict:
    """Best/last top-1 of S and T_d, raw and EMA, from one run's eval records."""
    evals = [r for r in read_metrics(run_dir) if r.get("kind") == "eval" and r["epoch"] > 0]
    roles = {"S": "student", "T_d": "dynamic_teacher"} if alone is None else {alone: "student"}
    out = {}
    for who, role in roles.items():
        for suffix, tag in (("", "raw"), ("_ema", "ema")):
            curve = {r["epoch"]: r["top1"] for r in evals if r["role"] == role + suffix}
            if curve:
                out[f"{who}_{tag}_best"] = max(curve.values())
                out[f"{who}_{tag}_last"] = curve[max(curve)]
    if alone is None:
        s = {r["epoch"]: r["top1"] for r in evals if r["role"] == "student"}
        d = {r["epoch"]: r["top1"] for r in evals if r["role"] == "dynamic_teacher"}
        epochs = sorted(set(s) & set(d))
        out["td_ahead_epochs"] = sum(d[e] > s[e] for e in epochs)
        out["epochs"] = len(epochs)
        out["gap_curve"] = [d[e] - s[e] for e in epochs]  # T_d - S at epochs 1..E
        out[f"gap_last{LAST_K}"] = statistics.mean(d[e] - s[e] for e in epochs[-LAST_K:])
    return out


def done(out_dir: Path, reread: bool = False) -> dict[tuple[str, int], dict]:
    """The finished (row, seed) entries of ``results.jsonl``; ``reread``: their numbers recomputed
    from the run folders' records where the folders exist (what ``--collect`` writes)."""
    path = out_dir / RESULTS
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if reread:
        for r in rows:
            if (out_dir / r["run"] / "metrics.jsonl").exists():
                r["numbers"] = numbers(out_dir / r["run"], ALONE.get(r["row"]))
    return {(r["row"], r["seed"]): r for r in rows}


def fmt(xs) -> str:
    return f"{statistics.mean(xs):.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}" if xs else ""


COLUMNS = ("S_raw_best", "S_raw_last", "S_ema_last", "T_d_raw_best", "T_d_raw_last", "T_d_ema_last",
           f"gap_last{LAST_K}", "td_ahead_epochs")


def markdown(results: dict, rows: list[str], seeds: list[int]) -> str:
    lines = ["| row | " + " | ".join(COLUMNS) + " | s/run |", "|---" * (len(COLUMNS) + 2) + "|"]
    for row in rows:
        per = [results[(row, s)] for s in seeds if (row, s) in results]
        if not per:
            continue
        cells = [fmt([p["numbers"][c] for p in per if c in p["numbers"]]) for c in COLUMNS]
        secs = statistics.mean(p["seconds"] for p in per)
        lines.append(f"| {ROWS[row][2]} ({len(per)} seeds) | " + " | ".join(cells) + f" | {secs:.0f} |")
    return "\n".join(lines)


def write_json(path: str, results: dict, rows: list[str], seeds: list[int], overrides: dict) -> None:
    out = {"settings": {"base": "the demo preset of each row (fashion/demo/ce, fashion/demo/gpd_dkd): "
                        "embedded Fashion-MNIST, 100 images/class, resnet8 student, shipped resnet20 teacher, "
                        "20 epochs, cosine lr 0.05, batch 64, EMA decay 0.99/step; 1 torch thread per run "
                        "(--threads), several low-priority runs at once on the shared 2-core machine",
                        **{k: str(v) for k, v in overrides.items()}},
           "seeds": seeds, "rows": {}}
    for row in rows:
        per = [results[(row, s)] for s in seeds if (row, s) in results]
        if len(per) != len(seeds):
            print(f"{row}: {len(per)} of {len(seeds)} seeds finished: left out of {path}")
            continue
        keys = sorted({k for p in per for k in p["numbers"]})
        out["rows"][row] = {"label": ROWS[row][2], "overrides": {k: str(v) for k, v in ROWS[row][1].items()},
                            "preset": ROWS[row][0], "seconds": [round(p["seconds"]) for p in per],
                            **{k: [p["numbers"][k] for p in per] for k in keys}}
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


def main(argv) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of rows ({', '.join(ROWS)})")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", default="", help="train only these row:seed pairs, in this order (e.g. gpd:0,gpd_full:0): "
                   "several processes, each with its own pairs, share one --out-dir")
    p.add_argument("--json", default="docs/td_vs_s.json")
    p.add_argument("--out-dir", default=str(OUT_DIR))
    p.add_argument("--collect", action="store_true", help="do not train: write the JSON from the finished runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine a second "
                   "thread mostly spins; every row runs with the same count, so rows compare)")
    args, rest = p.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    from workbench.config import parse_overrides

    overrides = parse_overrides(rest)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row {unknown[0]!r}; valid: {', '.join(ROWS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = done(out_dir)
    pairs = [(r, s) for r in rows for s in seeds]
    if args.runs:
        pairs = [(p.split(":")[0], int(p.split(":")[1])) for p in args.runs.split(",") if p]
        bad = [r for r, _ in pairs if r not in ROWS]
        if bad:
            raise SystemExit(f"unknown row {bad[0]!r}; valid: {', '.join(ROWS)}")
    if not args.collect:
        _register_models()
        print(f"torch threads {torch.get_num_threads()}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
        for row, s in pairs:
            if (row, s) in done(out_dir):  # another process may have finished it
                continue
            t0 = time.perf_counter()
            res = run({**_values(row, overrides), "seed": s, "out_dir": str(out_dir), "progress": False,
                       "probe_every": 0}, log=lambda *_: None)
            entry = {"row": row, "seed": s, "run": res.run_dir.name, "seconds": time.perf_counter() - t0,
                     "numbers": numbers(res.run_dir, ALONE.get(row)), "load": os.getloadavg()[0]}
            with open(out_dir / RESULTS, "a") as f:
                f.write(json.dumps(entry) + "\n")
            results[(row, s)] = entry
            print(f"{row} seed {s}: {entry['numbers']} ({entry['seconds']:.0f} s, load {entry['load']:.1f})",
                  flush=True)
    results = done(out_dir, reread=args.collect)
    print(markdown(results, rows, seeds))
    if args.json:
        write_json(args.json, results, rows, seeds, overrides)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
