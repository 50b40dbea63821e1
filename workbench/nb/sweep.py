"""compare.ipynb's grid through the sweep API: its (method, seed) runs become a sweep
(:mod:`workbench.sweep`) on the chosen executor, with one table of cells updated in place while
they train, then the results table (:mod:`workbench.table`), each method's records for the curves
and its saved student for the feature maps -- read back from the run folders, whichever
executor (this kernel, local processes, a SLURM array) trained them. A rerun picks up what is
finished and resumes the rest."""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Optional

from ..config import RunConfig
from ..engine.callbacks import Callback
from ..engine.metrics import read_metrics
from ..sweep import GridError, Plan, folder as sf, launch, plan_cells
from ..sweep.monitor import counts
from ..sweep.plan import SweepOptions
from .errors import ParameterError, RunError
from .progress import MIN_UPDATE_S, _display

#: notebook parameters that are sweep options (``papermill -p executor slurm -p partition gpu ...``)
SWEEP_PARAMS = {"executor": "executor", "parallel": "parallel", "sweep_name": "name", "partition": "partition",
                "account": "account", "time_limit": "time", "gpus_per_cell": "gpus_per_cell",
                "cpus_per_cell": "cpus_per_cell", "mem": "mem"}


def plan_compare(runs: list[tuple[str, int, RunConfig]], options: dict) -> Plan:
    """The notebook's runs as a validated sweep (every cell through ``experiment.prepare``)."""
    sweep_opts = SweepOptions()
    try:
        from ..sweep.plan import _set_option

        for param, key in SWEEP_PARAMS.items():
            if param in options and options[param] not in ("", None):
                sweep_opts = _set_option(sweep_opts, key, options[param])
        values = [{k: v for k, v in cfg.to_dict().items() if k != "preset"} for _, _, cfg in runs]
        grid = {"method": sorted({m for m, _, _ in runs}), "seed": sorted({s for _, s, _ in runs})}
        return plan_cells(values, sweep_opts, grid=grid, args=[f"{m} seed={s}" for m, s, _ in runs],
                          labels=[f"{m} seed={s}" for m, s, _ in runs])
    except GridError as e:
        raise ParameterError(str(e)) from None


class NotebookSweepMonitor:
    """One table of cells (state, epoch, numbers or error) redrawn in place as the sweep runs."""

    def __init__(self, sweep_dir: Path, title: str = "sweep"):
        self.dir, self.title = Path(sweep_dir), title
        self.handle, self._shown, self.t0 = None, 0.0, time.perf_counter()

    def __call__(self, force: bool = False) -> list:
        statuses = sf.sweep_statuses(self.dir)
        now = time.perf_counter()
        if force or now - self._shown >= MIN_UPDATE_S or self.handle is None:
            self._shown = now
            self.handle = _display(self.bundle(statuses), self.handle)
        return statuses

    def bundle(self, statuses) -> dict:
        rows = [(s.id, s.label, s.status + (f" ({s.detail})" if s.detail else ""), f"{s.epoch}/{s.epochs}",
                 _numbers(s) if s.status == sf.DONE else (s.error if s.status == sf.FAILED else ""))
                for s in statuses]
        head = f"{self.title}: {counts(statuses)} -- {time.perf_counter() - self.t0:.0f} s"
        cols = ("cell", "runs", "state", "epoch", "student top-1 best / last, or the error")
        text = "\n".join([head] + ["  ".join(map(str, r)) for r in rows])
        table = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        body = (f"<div class='wb-sweep'><b>{html.escape(head)}</b><table><thead><tr>"
                + "".join(f"<th>{c}</th>" for c in cols) + f"</tr></thead><tbody>{table}</tbody></table></div>")
        return {"text/plain": text, "text/html": body}


def _numbers(s) -> str:
    summary = sf.read_json(Path(s.run_dir) / sf.SUMMARY_FILE) or {}
    st = summary.get("student")
    return f"{st['best_top1']:.2f} / {st['last_top1']:.2f}" if st else ""


def run_sweep(p: Plan, monitor: Optional[NotebookSweepMonitor] = None):
    """Run (or pick up) the sweep, showing per-cell progress; a failed cell is one line at the end
    (the others ran)."""
    from .run import in_kernel

    monitor = monitor or (NotebookSweepMonitor(p.dir, f"sweep {p.name} ({p.options.executor})") if in_kernel()
                          else None)
    refresh = (lambda: monitor(force=False)) if monitor else None
    extra = [_EpochRefresh(monitor)] if monitor else []
    try:
        statuses = launch(p, wait=True, monitor=refresh, extra_callbacks=extra)
    except KeyboardInterrupt:
        raise RunError("interrupted; rerun the notebook to resume the sweep") from None
    if monitor:
        monitor(force=True)
    failed = [s for s in statuses if s.status == sf.FAILED]
    if failed:
        raise RunError(f"{len(failed)} of {len(statuses)} cells failed, e.g. {failed[0].label}: {failed[0].error} "
                       f"(log: {failed[0].log}); the others' results are in {p.dir}")
    return statuses


class _EpochRefresh(Callback):
    """executor=debug trains in this kernel: redraw the cell table after every epoch."""

    def __init__(self, monitor):
        self.monitor = monitor

    def on_epoch_end(self, state, epoch):
        self.monitor(force=False)
        return []


def results_table(p: Plan):
    """The results table of the sweep's cells (:mod:`workbench.table`)."""
    from .. import table

    return table.build([p.dir])


def sweep_records(p: Plan, runs: list[tuple[str, int, RunConfig]]) -> dict[str, list[list[dict]]]:
    """``{method label: [records of each seed]}`` of the finished cells."""
    out: dict[str, list] = {}
    for (label, _, _), cell in zip(runs, p.cells):
        if cell.complete():
            out.setdefault(label, []).append(read_metrics(cell.run_dir))
    return out


def first_students(p: Plan, runs: list[tuple[str, int, RunConfig]]) -> dict:
    """Each method's first finished seed's saved student (``student.pt``), for the feature maps."""
    from .. import data, models
    from ..engine.checkpoint import STUDENT
    from ..experiment import student_options

    out = {}
    for (label, _, cfg), cell in zip(runs, p.cells):
        if label in out or not cell.complete():
            continue
        info = data.info(cfg.dataset, **cfg.dataset_options())
        out[label] = models.load(cfg.student, cell.run_dir / STUDENT, info.num_classes, info.in_channels,
                                 image_size=info.image_size, **student_options(cfg)).eval()
    return out
