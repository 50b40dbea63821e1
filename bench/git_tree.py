"""The ``workbench`` package of an older commit, for benchmarks that compare versions side by side."""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(rev: str, dest: Path) -> Path:
    """``git archive`` ``rev``'s ``workbench/`` into ``dest/tree``; returns that folder (put it on
    PYTHONPATH to import the old code)."""
    archive = dest / "tree.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), rev, "workbench"], cwd=ROOT, check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest / "tree", filter="data")
    return dest / "tree"
