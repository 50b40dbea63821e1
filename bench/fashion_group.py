"""Online group distillation on the embedded `fashion_mnist` subset: CE, KD, DML and ORC at the
demo budget (mean +- std over seeds).

    python bench/fashion_group.py [--seeds 0,1,2] [--rows ce,kd,dml,orc] [--json docs/fashion_group.json]
    python bench/fashion_group.py --collect runs/fashion_group --json docs/fashion_group.json

Rows are the presets ``fashion/demo/{ce,kd,dml,orc}``: the shipped resnet20 teacher, a resnet8
student on 100 training images per class, 20 epochs (DML: two resnet8 trained together, no
teacher; ORC: two resnet8 students and the shipped teacher as pivot, fine-tuned online). The
student is the group's first network (the one saved as ``student.pt``); the table also gives the
other networks' and the pivot teacher's last top-1. key=value overrides go on top of every row.
A study script, not a timed test; the README table is rendered from its JSON by
docs/render_readme.py.
"""
from __future__ import annotations

import sys

from study_runs import study_main

ROWS = {"ce": "fashion/demo/ce", "kd": "fashion/demo/kd", "dml": "fashion/demo/dml", "orc": "fashion/demo/orc"}
LABELS = {"ce": "CE", "kd": "KD (T_s resnet20)", "dml": "DML (2 x resnet8)",
          "orc": "ORC (2 x resnet8, pivot resnet20)"}
KEYS = ("best", "last", "peer_last", "T_p_last", "T_s")
OUT_DIR = "runs/fashion_group"


def settings(values: dict, names: list[str]) -> dict:
    """What the rows share (everything but the method's keys), recorded in the JSON."""
    return {k: v for k, v in values[names[0]].items() if k not in ("method", "ce_weight")}


def main(argv) -> dict:
    header = ("| method (student resnet8) | best epoch | last epoch | P1 (other network), last | T_p (pivot), last "
              "| T_s | s/run |\n|---|---|---|---|---|---|---|")
    return study_main(argv, __doc__.split("\n\n")[0], ROWS, LABELS, KEYS, OUT_DIR, header, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
