"""Weight inheritance as the student's start, resnet20 -> resnet8 on the embedded `fashion_mnist`
subset: random init vs inheritance vs inheritance + GPD (mean +- std over seeds), with the
epoch-0 numbers (before any training step).

    python bench/fashion_inherit.py [--seeds 0,1,2] [--json docs/fashion_inherit.json] [key=value ...]
    python bench/fashion_inherit.py --collect runs/fashion_inherit --json docs/fashion_inherit.json

Rows: KD from random init (preset ``fashion/demo/kd``), KD from the inherited student
(``fashion/inherit/kd``: block 0 of each of resnet20's stages, BatchNorm re-estimated on the
training images), GPD on KD from random init and from the inherited student (``fashion/demo/gpd_kd``,
``fashion/inherit/gpd_kd``: inherit, then expand). The shipped resnet20 is both the static
teacher and the inheritance source; the demo's 100 images per class, 20 epochs. key=value
overrides go on top of every row. Prints the student's epoch-0 top-1 and T_s-S gap, its best and
last top-1, T_d's last top-1, and the wall time per run with the load average. A study script,
not a timed test; the README table is rendered from its JSON by docs/render_readme.py.
"""
from __future__ import annotations

import sys

from study_runs import study_main

ROWS = {"kd": "fashion/demo/kd", "kd_inherit": "fashion/inherit/kd", "gpd_kd": "fashion/demo/gpd_kd",
        "gpd_kd_inherit": "fashion/inherit/gpd_kd"}
LABELS = {"kd": "kd, random init", "kd_inherit": "kd, inherited", "gpd_kd": "gpd (base=kd), random init",
          "gpd_kd_inherit": "gpd (base=kd), inherited"}
KEYS = ("epoch0", "epoch0_gap", "best", "last", "T_d_last")
OUT_DIR = "runs/fashion_inherit"


def main(argv) -> dict:
    header = ("| student resnet8 (teacher resnet20) | epoch 0 | T_s-S gap at epoch 0 | best epoch | last epoch | "
              "T_d last | s/run |\n|---|---|---|---|---|---|---|")
    return study_main(argv, __doc__.split("\n\n")[0], ROWS, LABELS, KEYS, OUT_DIR, header)


if __name__ == "__main__":
    main(sys.argv[1:])
