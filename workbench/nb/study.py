"""Reading a multi-seed study's run folders in a notebook (``bench/ctc_embed_study.py`` writes
``<out_dir>/ctc_embed_study/<method>_s<seed>/``): runs grouped by method, per-epoch curves
averaged over seeds, and the discriminability vs transferability figure of all methods side by
side."""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Optional

from .. import paths
from ..engine.metrics import read_metrics

STUDY_FOLDER = "ctc_embed_study"  # bench/ctc_embed_study.py's default --out-dir under runs/
RUN_NAME = re.compile(r"^(?P<method>.+)_s(?P<seed>\d+)$")
TRANSFER = ("transferability", "linear_top1")


def study_root(cfg=None, folder: str = STUDY_FOLDER) -> Path:
    """``<out_dir or runs/>/<folder>``."""
    root = Path(cfg.out_dir) if cfg is not None and cfg.out_dir else paths.runs_root()
    return root / folder


def study_runs(root) -> dict[str, list[Path]]:
    """Finished runs under ``root`` named ``<method>_s<seed>``, by method (seeds in order)."""
    found: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for d in sorted(Path(root).glob("*/summary.json")):
        m = RUN_NAME.match(d.parent.name)
        if m:
            found[m["method"]].append((int(m["seed"]), d.parent))
    return {k: [p for _, p in sorted(v)] for k, v in found.items()}


def mean_curves(run_dirs) -> list[dict]:
    """Records of the student's test top-1 (``eval``) and transfer-probe top-1 (``probe``)
    averaged over the runs, epoch by epoch (epochs every run has), with ``n`` the runs averaged."""
    series: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    target = None
    run_dirs = list(run_dirs)  # read twice: the records, then the count
    for d in run_dirs:
        for r in read_metrics(d):
            if r["kind"] == "eval" and r["role"] == "student":
                series[("eval", None)][r["epoch"]].append(r["top1"])
            elif r["kind"] == "probe" and r.get("probe") == TRANSFER[0] and r.get("metric") == TRANSFER[1] \
                    and r.get("role") == "student":
                series[("probe", TRANSFER)][r["epoch"]].append(r["value"])
                target = r.get("target")
    n = len(run_dirs)
    out = []
    for (kind, _), by_epoch in series.items():
        for epoch, values in sorted(by_epoch.items()):
            if len(values) != n:
                continue
            mean = statistics.mean(values)
            if kind == "eval":
                out.append({"kind": "eval", "role": "student", "epoch": epoch, "top1": mean, "n": n})
            else:
                out.append({"kind": "probe", "probe": TRANSFER[0], "metric": TRANSFER[1], "role": "student",
                            "epoch": epoch, "value": mean, "target": target, "n": n})
    return out


def study_disc_transfer(runs: dict[str, list[Path]], title: Optional[str] = None):
    """Discriminability (source test top-1) and transferability (linear probe on the held-out
    classes) per epoch, one colour per method, mean over its seeds; two panels sharing the epoch axis."""
    from ..probes import figures

    curves = {f"{method} (mean of {len(dirs)})": mean_curves(dirs) for method, dirs in runs.items()}
    fig = figures.disc_transfer_curves(curves, mode="panels")
    fig.update_layout(title=title or "Discriminability vs transferability per method (student, mean over seeds)",
                      height=700)
    fig.update_yaxes(title_text="source test top-1 (%)", row=1, col=1)
    fig.update_yaxes(title_text="linear probe on held-out classes (%)", row=2, col=1)
    return fig
