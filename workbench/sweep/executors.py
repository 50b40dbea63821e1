"""Running a plan's cells on submitit: ``executor=local | slurm | debug``.

- **local** (submitit's ``LocalExecutor``): each cell is a submitit job on this machine. With
  GPUs, a cell gets its own ``gpus_per_cell`` GPUs (``CUDA_VISIBLE_DEVICES`` of its training)
  and ``parallel`` defaults to the number of such GPU groups; on CPU, ``parallel`` defaults to
  the number of cores and each cell's torch uses cores / parallel threads. submitit's local
  executor starts every job it is given at once and leaves the GPUs to the caller, so the sweep
  hands it a cell whenever one of the ``parallel`` slots is free and tells that cell which GPUs
  are its slot's. That is the whole of the scheduling done here: processes, logs, results,
  timeouts and requeues are submitit's.
- **slurm** (submitit's ``AutoExecutor``): one job array (``executor.batch()``) for the cells,
  ``%parallel`` at once, one task per cell with ``gpus_per_cell`` GPUs, ``cpus_per_cell`` CPUs,
  ``mem``, ``time``, ``partition``, ``account`` and any ``slurm_<key>`` submitit knows; a cell
  with ``nproc > 1`` runs torchrun inside its allocation. Teachers to train first go in a
  first array the cells' array depends on (``afterok``). Timeouts and preemptions checkpoint and
  requeue (:mod:`workbench.sweep.job`).
- **debug** (submitit's ``DebugExecutor``): in this process, one cell after the other (tests,
  notebooks, pdb).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

from . import folder as sf
from .job import CellJob
from .plan import NO_LIMIT_MINUTES, Cell, Layout, Plan, SweepOptions, cpu_count, slurm_layout, slurm_parameters  # noqa: F401

LOCAL_POLL_S = 0.5
SLURM_POLL_S = 30.0


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 -- no torch/CUDA: no GPUs
        n = 0
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [g.strip() for g in given.split(",") if g.strip()] if given else [str(i) for i in range(n)]
    return names[:n]


def local_layout(opts: SweepOptions, gpus: Optional[list[str]] = None, cores: Optional[int] = None) -> Layout:
    gpus = visible_gpus() if gpus is None else gpus
    cores = cores or cpu_count()
    per = opts.gpus_per_cell if opts.gpus_per_cell >= 0 else (1 if gpus else 0)
    if per > 0:
        if per > len(gpus):
            from .grid import GridError

            raise GridError(f"gpus_per_cell={per}: this machine shows {len(gpus)} GPU(s)")
        groups = len(gpus) // per
        parallel = min(opts.parallel or groups, groups)
        slots = [",".join(gpus[i * per:(i + 1) * per]) for i in range(parallel)]
    else:
        parallel = opts.parallel or cores
        slots = [None] * parallel
    threads = opts.cpus_per_cell or max(1, cores // parallel)
    return Layout(parallel, per, opts.nproc or max(1, per), threads, slots)


def cell_job(plan: Plan, cell: Cell, layout: Layout, gpus: Optional[str] = None) -> CellJob:
    return CellJob(str(plan.dir), cell.id, cell.cfg.to_dict(), str(cell.run_dir), nproc=layout.nproc,
                   threads=layout.threads, gpus=gpus)


Refresh = Callable[[], None]


def run_debug(plan: Plan, cells: list[Cell], refresh: Refresh, extra_callbacks=()) -> None:
    """In this process, one cell after the other."""
    import submitit

    executor = submitit.DebugExecutor(folder=str(plan.dir / sf.SUBMITIT_DIR))
    layout = Layout(1, 0, 1, 0, [None])
    for cell in cells:
        job = executor.submit(cell_job(plan, cell, layout).run_inprocess, list(extra_callbacks))
        sf.update_state(plan.dir, cell.id, state=sf.SUBMITTED, job_id=job.job_id)
        refresh()
        job.result()
        refresh()


def run_local(plan: Plan, cells: list[Cell], refresh: Refresh, layout: Optional[Layout] = None) -> None:
    """submitit local jobs, at most ``layout.parallel`` at once, each on its slot's GPUs."""
    import submitit

    layout = layout or local_layout(plan.options)
    executor = submitit.LocalExecutor(folder=str(plan.dir / sf.SUBMITIT_DIR))
    executor.update_parameters(timeout_min=plan.options.minutes() or NO_LIMIT_MINUTES,
                               signal_delay_s=plan.options.signal_delay_s, gpus_per_node=0)
    queue, running = list(cells), {}  # slot -> (cell, job)
    try:
        while queue or running:
            for slot in range(layout.parallel):
                if slot not in running and queue:
                    cell = queue.pop(0)
                    job = executor.submit(cell_job(plan, cell, layout, layout.slots[slot]))
                    sf.update_state(plan.dir, cell.id, state=sf.SUBMITTED, job_id=job.job_id)
                    running[slot] = (cell, job)
            refresh()
            time.sleep(LOCAL_POLL_S)
            for slot, (cell, job) in list(running.items()):
                if job.done():
                    del running[slot]
                    job_ended(plan, cell, job)
        refresh()
    except KeyboardInterrupt:
        for _, job in running.values():  # the jobs pass it on to their training, which stops cleanly
            job.cancel(check=False)
        raise


def job_ended(plan: Plan, cell: Cell, job) -> None:
    """A job that ended before its cell said anything (the job process failed to start: a broken
    environment, a missing module on the node) leaves the cell failed with submitit's last line."""
    if sf.read_state(plan.dir, cell.id).get("state") != sf.SUBMITTED:
        return
    line = sf.error_line(job.paths.stderr) or sf.error_line(job.paths.stdout) or "no output"
    sf.update_state(plan.dir, cell.id, state=sf.FAILED,
                    error=f"its submitit job {job.job_id} ended before the cell started: {line} "
                          f"(submitit log: {job.paths.stderr})")


def submit_slurm(plan: Plan, teachers: list[Cell], cells: list[Cell]) -> list:
    """One job array for the teachers to train first (if any), one for the cells (depending on
    the first); returns ``(cell, submitit job)`` pairs."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(plan.dir / sf.SUBMITIT_DIR), cluster="slurm")
    layout = slurm_layout(plan.options, max(1, len(cells)))
    jobs = []
    dependency = None
    for group in (teachers, cells):
        if not group:
            continue
        params = slurm_parameters(plan.options, len(group), name=f"wb-{plan.name}")
        if dependency:
            params["slurm_dependency"] = f"afterok:{dependency}"
        executor.update_parameters(**params)
        with executor.batch():
            submitted = [executor.submit(cell_job(plan, c, layout)) for c in group]
        for c, job in zip(group, submitted):
            sf.update_state(plan.dir, c.id, state=sf.SUBMITTED, job_id=job.job_id)
        jobs += list(zip(group, submitted))
        if group is teachers:
            dependency = submitted[0].job_id.split("_")[0]
    return jobs


def wait_slurm(plan: Plan, jobs: list, refresh: Refresh, poll_s: float = SLURM_POLL_S) -> None:
    """Until every submitted job has ended (requeued jobs included); ``jobs``: (cell, job) pairs."""
    while True:
        refresh()
        if all(job.done(force_check=True) for _, job in jobs):
            break
        time.sleep(poll_s)
    for cell, job in jobs:
        job_ended(plan, cell, job)
    refresh()
