"""Rebuild the shipped teachers (``workbench/embedded_teachers.py``) and print their SHA-256.

    python scripts/make_teachers.py [--out-dir runs/make_teachers]

Each teacher is the teacher phase of the preset named in its entry, with the architecture as
``teacher=`` (trained once, seed 0, then cached by the workbench); the finished weights file is
copied into the package (``workbench/data/embedded/teachers/``). On 2 CPU cores fashion_resnet20 takes ~8 minutes. Training is deterministic on one
machine; another CPU or library version may give other bits, hence the printed checksums.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from workbench.embedded_teachers import FOLDER, TEACHERS, sha256
from workbench.experiment import cached_teacher, load_teacher, prepare, teacher_config
from workbench.presets import get_preset
from workbench.config import RunConfig


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="runs/make_teachers")
    args = ap.parse_args(argv)
    for name, e in TEACHERS.items():
        cfg = RunConfig.from_dict(dict(get_preset(e.made_by), teacher=e.arch, out_dir=args.out_dir))
        prep = prepare(cfg)
        load_teacher(prep)  # trains it into the cache unless it is there
        src = cached_teacher(teacher_config(cfg, e.arch))
        dst = FOLDER / e.file
        shutil.copyfile(src, dst)
        print(f"{name}: {dst} sha256 {sha256(dst)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
