"""A ViT student from a CNN teacher on the embedded `fashion_mnist` subset: CE vs DeiT's hard
distillation vs CSKD (mean +- std over seeds).

    python bench/fashion_vit.py [--seeds 0,1,2] [--json docs/fashion_vit.json] [key=value ...]
    python bench/fashion_vit.py --collect runs/fashion_vit --json docs/fashion_vit.json

Rows are the presets ``fashion/vit/{ce,deit,cskd}``: vit_nano (CE) or vit_nano_dist (DeiT, CSKD),
patch 4 (a 7x7 grid, the shipped resnet20 teacher's last map), the demo's 100 training images
per class and 20 epochs, AdamW with weight-decay exemptions, cosine with 2 warm-up epochs;
key=value overrides go on top of every row. Prints a markdown table of the student's best- and
last-epoch top-1 on the 1000 test images, the teacher's top-1 and the wall time per run with the
load average (the box may be shared). A study script, not a timed test; the README table is
rendered from its JSON by docs/render_readme.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study_runs import collect, load, markdown_row, row_values, train_row, write_json

from workbench.config import parse_overrides

ROWS = {"ce": "fashion/vit/ce", "deit": "fashion/vit/deit", "cskd": "fashion/vit/cskd"}
LABELS = {"ce": "CE (vit_nano)", "deit": "DeiT hard (vit_nano_dist)", "cskd": "CSKD (vit_nano_dist)"}
KEYS = ("best", "last", "T_s")
OUT_DIR = "runs/fashion_vit"


def main(argv) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of rows ({', '.join(ROWS)})")
    p.add_argument("--json", default="", help="also write the per-seed numbers to this JSON file")
    p.add_argument("--collect", default="", help="do not train: read the finished runs under this out_dir")
    args, rest = p.parse_known_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = parse_overrides(rest)
    out_dir = overrides.pop("out_dir", OUT_DIR)
    names = [n for n in args.rows.split(",") if n]
    values = {n: row_values(ROWS[n], overrides) for n in names}
    print(f"rows: {values}\nseeds: {seeds}; load average at start: {load()}\n", flush=True)
    print("| student (teacher resnet20) | best epoch | last epoch | T_s | s/run |\n|---|---|---|---|---|", flush=True)
    if args.collect:
        rows = collect(Path(args.collect), values, seeds)
    else:
        rows = {}
        for n in names:
            rows[n] = train_row(values[n], seeds, out_dir)
            print(markdown_row(LABELS[n], rows[n], KEYS), flush=True)
    print(f"\nload average at end: {load()}; runs under {args.collect or out_dir}")
    if args.json:
        common = {k: v for k, v in values[names[0]].items() if k not in ("method", "student")}
        write_json(args.json, rows, {**common, **overrides}, seeds)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
