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

import sys

from study_runs import study_main

ROWS = {"ce": "fashion/vit/ce", "deit": "fashion/vit/deit", "cskd": "fashion/vit/cskd"}
LABELS = {"ce": "CE (vit_nano)", "deit": "DeiT hard (vit_nano_dist)", "cskd": "CSKD (vit_nano_dist)"}
KEYS = ("best", "last", "T_s")
OUT_DIR = "runs/fashion_vit"


def settings(values: dict, names: list[str]) -> dict:
    """What the rows share (everything but method and student), recorded in the JSON."""
    return {k: v for k, v in values[names[0]].items() if k not in ("method", "student")}


def main(argv) -> dict:
    header = "| student (teacher resnet20) | best epoch | last epoch | T_s | s/run |\n|---|---|---|---|---|"
    return study_main(argv, __doc__.split("\n\n")[0], ROWS, LABELS, KEYS, OUT_DIR, header, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
