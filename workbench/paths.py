"""Default locations, resolved once: nothing else in the package hard-codes a path.

Environment variables override the defaults: ``WORKBENCH_DATA`` (dataset root) and
``WORKBENCH_RUNS`` (where runs are written). Without them, a source checkout uses its own
``datasets/`` and ``runs/`` folders (so notebooks started from ``notebooks/`` and commands started
from the repo root write to the same place); an installed package uses the current directory.
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def data_root() -> Path:
    return Path(os.environ.get("WORKBENCH_DATA", project_root() / "datasets"))


def runs_root() -> Path:
    return Path(os.environ.get("WORKBENCH_RUNS", project_root() / "runs"))


def shown(path) -> str:
    """``path`` as messages show it: relative to the current folder when it lies under it or
    under the checkout (``datasets/cifar-100-python``, ``../datasets/...`` from notebooks/),
    else as given."""
    p = Path(path)
    try:
        absolute = p.resolve()
        for base in (Path.cwd().resolve(), project_root().resolve()):
            if absolute == base or base in absolute.parents:
                return os.path.relpath(absolute, Path.cwd().resolve())
    except (OSError, ValueError):
        pass
    return str(p)
