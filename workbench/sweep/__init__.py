"""Sweeps: many runs as one study, on submitit (``python -m workbench sweep ...``).

Sweeps sit beside the CLI, above the engine: a sweep composes ordinary runs -- each cell is the
run ``python -m workbench train <its config>`` would make, in the same run folder -- and never
reaches into a running method.

    from workbench import sweep
    p = sweep.plan(["preset=fashion/demo/{kd,gpd_dkd}", "seed=0:2", "epochs=2"], executor="local")
    for c in p.cells: print(c.id, c.label, c.run_dir)      # what --dry-run prints
    statuses = sweep.launch(p)                              # train (skipping finished cells), wait
    sweep.status(p.dir)                                     # done / running / pending / failed per cell

- :mod:`.grid`: the grid syntax (braces, comma lists, ranges);
- :mod:`.plan`: sweep options, cells, validation of every cell before anything is created;
- :mod:`.folder`: the sweep folder (``runs/sweeps/<name>/``) and each cell's status;
- :mod:`.job`: one cell as a submitit job (the training subprocess, signals, requeue);
- :mod:`.executors`: local / slurm / debug on submitit;
- :mod:`.monitor`: progress lines and ``sweep status``.
The results table of a sweep's (or any) run folders is :mod:`workbench.table`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from . import folder as sf
from .folder import CellStatus, read_record, sweep_statuses
from .grid import GridError, parse_grid
from .plan import Cell, Plan, SweepOptions, plan, plan_cells

__all__ = ["plan", "plan_cells", "launch", "status", "Plan", "Cell", "CellStatus", "SweepOptions", "GridError",
           "parse_grid", "read_record", "sweep_statuses", "run_dirs"]


def write_folder(p: Plan) -> None:
    """Create the sweep folder and record the plan; a folder recorded with other cells is refused
    (two grids never share a sweep folder silently)."""
    record = p.record()
    old = sf.read_json(p.dir / sf.SWEEP_FILE)
    if old is not None:
        was = [c["run_dir"] for c in old.get("cells", [])]
        now = [c["run_dir"] for c in record["cells"]]
        if was != now:
            gone = sorted(set(was) - set(now))[:1] or sorted(set(now) - set(was))[:1] or ["the order of the cells"]
            raise GridError(f"sweep {p.name!r} ({p.dir}) was recorded with other cells (e.g. {gone[0]}); "
                            f"choose another name= or delete that folder")
    for sub in (sf.STATE_DIR, sf.LOG_DIR, sf.SUBMITIT_DIR):
        (p.dir / sub).mkdir(parents=True, exist_ok=True)
    sf.write_json(p.dir / sf.SWEEP_FILE, record)


def _needs_run(p: Plan, cell: Cell) -> bool:
    """Not complete and no live job on it (a rerun never doubles a running cell)."""
    if cell.complete():
        return False
    return sf.cell_status(p.dir, cell.record()).status != sf.RUNNING


def launch(p: Plan, wait: bool = True, monitor: Optional[Callable[[], list]] = None,
           extra_callbacks=()) -> list[CellStatus]:
    """Write the sweep folder, run every cell that is not complete (finished cells are skipped,
    killed ones resume from their run folder) on the plan's executor, and -- for local and debug
    always, for slurm with ``wait`` -- wait until they end. Returns the cells' statuses.
    ``monitor()`` is called as states change (default: :class:`.monitor.TerminalMonitor`);
    ``extra_callbacks`` go to in-process runs (``executor=debug``)."""
    from . import executors
    from .monitor import TerminalMonitor

    write_folder(p)
    refresh = monitor or TerminalMonitor(p.dir)
    teachers = [c for c in p.teachers if _needs_run(p, c)]
    cells = [c for c in p.cells if _needs_run(p, c)]
    kind = p.options.executor
    if kind == "slurm":
        jobs = executors.submit_slurm(p, teachers, cells)
        if wait and jobs:
            executors.wait_slurm(p, jobs, refresh)
        else:
            refresh()
        return sweep_statuses(p.dir)
    run = (lambda cs: executors.run_debug(p, cs, refresh, extra_callbacks)) if kind == "debug" else \
        (lambda cs: executors.run_local(p, cs, refresh))
    if teachers:
        run(teachers)
        failed = {c.id for c in teachers if not c.complete()}
        if failed:  # their cells would each try to train the teacher: leave them pending, say why
            users = {i for c in p.teachers if c.id in failed for i in c.users}
            for i in sorted(users):
                sf.update_state(p.dir, p.cells[i].id, state=sf.FAILED,
                                error=f"its teacher run failed ({', '.join(sorted(failed))}: see its line)")
            cells = [c for c in cells if int(c.id[1:]) not in users]
    run(cells)
    return sweep_statuses(p.dir)


def status(sweep_dir) -> list[CellStatus]:
    """done / running / pending / failed per cell of a sweep folder."""
    return sweep_statuses(Path(sweep_dir))


def run_dirs(sweep_dir, role: str = "cell") -> list[Path]:
    """The run folders of a sweep's cells (as recorded)."""
    record = read_record(Path(sweep_dir))
    return [Path(c["run_dir"]) for c in record["teachers" if role == "teacher" else "cells"]]
