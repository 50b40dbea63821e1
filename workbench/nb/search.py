"""The compare notebook's distiller-search section: Optuna's plotly figures (optimisation
history, parameter importance, parallel coordinates) of every search under a runs folder."""
from __future__ import annotations

from pathlib import Path

from .. import paths
from ..presets import SEARCHES_DIR
from ..search.study import STUDY_FILE


def search_root(cfg=None) -> Path:
    """``<out_dir or runs/>/searches``."""
    root = Path(cfg.out_dir) if cfg is not None and cfg.out_dir else paths.runs_root()
    return root / SEARCHES_DIR


def search_folders(root) -> list[Path]:
    return sorted(p.parent for p in Path(root).glob(f"*/{STUDY_FILE}"))


def search_figures(root, show=None) -> list:
    """Each search's figures, displayed (``show``: IPython's display by default); returns them.
    No search: one line saying how to run one."""
    from ..search.figures import figures

    if show is None:
        from IPython.display import display as show
    folders = search_folders(root)
    if not folders:
        print(f"no search under {paths.shown(root)}: run `python -m workbench search bench/search_fashion.yaml`")
        return []
    out = []
    for folder in folders:
        for fig in figures(folder).values():
            show(fig)
            out.append(fig)
    return out
