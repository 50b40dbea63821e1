"""Running a search: Optuna's ask/tell loop over trials that are sweep cells.

**Where things live** -- ``<runs>/searches/<name>/``: ``spec.yaml`` (the spec as given; a rerun
with another spec is refused), ``study.journal`` (Optuna's ``JournalStorage`` file: every trial,
parameter, intermediate value and state, appended and fsync'd as it happens), ``trials/`` (each
trial's run folder, and its one-cell sweep folder ``trials/sweeps/t<NNNN>/`` with state and log),
``best.json`` (the best trial as a preset, see :func:`write_best`), ``.run.lock`` (one search
process per folder).

**Trials are sweep cells.** A trial's config is validated and run exactly as a cell of
``python -m workbench sweep`` (:func:`workbench.sweep.plan_cells`, then the sweep's
:class:`~workbench.sweep.job.CellJob` on submitit's local or SLURM executor): a subprocess
``python -m workbench train <config>`` in its own run folder, the search process never importing
a method's internals. ``study.parallel`` trials run at once (0 = the sweep's local default: one
per GPU, else one per core); ``executor=debug`` runs them one after the other in this process.

**Pruning: the search process polls the trials' records.** Every ``POLL_S`` seconds it reads each
running trial's ``metrics.jsonl`` (the run's own tidy records, already written per epoch) and
reports each new epoch's score (:mod:`.objective`) with ``trial.report(score, epoch)``; when
Optuna's pruner (median or successive halving) says so, the cell is stopped the way a sweep stops
one on Ctrl-C -- SIGINT to the training's process group (:func:`stop_cell`: a checkpoint at the
next safe point, exit 130, the cell *interrupted*) -- and the trial is told PRUNED; its slot is
free once the training has exited. Why poll instead of reporting from
inside the training: the cell stays an ordinary ``train`` process on any executor (local, SLURM
node) with no Optuna in it and no storage shared with a compute node; the pruner only needs the
per-epoch records the run writes anyway; the cost is up to ``POLL_S`` of extra training. With
``executor=debug`` (in-process) a callback reads the same records at each epoch's end and stops
the run by raising :class:`TrialPruned` (same decisions, no polling).

**Resume.** A killed search (kill -9 included) leaves trials RUNNING in the journal. A rerun takes
the folder's lock (the kernel dropped the dead process's), tells every such trial FAIL (marked
``interrupted``, not counted) and enqueues its parameters again: the same parameters make the
same config, hence the same run folder, so the re-asked trial resumes the cell from its last
checkpoint -- or, if the orphaned cell is still training (its job outlived the search), waits for
it -- and is scored from its records. Trials count toward ``study.trials`` when COMPLETE, PRUNED or
FAIL (a failure of the trial itself, e.g. a diverged run), never when interrupted, so a resumed
search ends with exactly ``study.trials`` counted trials.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .. import paths
from ..presets import SEARCH_BEST_FILE as BEST_FILE, SEARCHES_DIR
from ..keys import ConfigError
from . import objective
from .space import SpecError, Spec, best_config, check, sample

SPEC_FILE, STUDY_FILE, TRIALS_DIR, SUBMITIT_DIR = "spec.yaml", "study.journal", "trials", "submitit"
POLL_S = 2.0
INTERRUPTED_ATTR, RESUMES_ATTR = "interrupted", "resumes"


class TrialPruned(Exception):
    """Raised by the in-process pruning callback (``executor=debug``) to stop a trial's training."""


def search_dir(name: str, root: Optional[Path] = None) -> Path:
    return Path(root or paths.runs_root()) / SEARCHES_DIR / name


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SpecError("the optuna package is not installed; pip install optuna (a dependency of the workbench: "
                        "pip install -e .)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage(folder: Path):
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(Path(folder) / STUDY_FILE)))


def open_study(spec: Spec, folder: Path):
    """The study of a search folder (created on first use). The sampler's seed is the spec's plus
    the number of trials the journal already holds: a resumed search draws on (a seeded sampler
    restarted at its first state would propose the killed search's parameters again)."""
    optuna = _optuna()
    st = spec.study
    seed = st["seed"] + _trials_in(folder)
    if st["sampler"] == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=st["startup_trials"])
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    if st["pruner"] == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=st["startup_trials"], n_warmup_steps=st["warmup_epochs"])
    elif st["pruner"] == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, st["warmup_epochs"]))
    else:
        pruner = optuna.pruners.NopPruner()
    return optuna.create_study(study_name=spec.name, storage=storage(folder), direction="maximize",
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def _trials_in(folder: Path) -> int:
    if not (Path(folder) / STUDY_FILE).exists():
        return 0
    try:
        return len(load_study(folder).get_trials(deepcopy=False))
    except (ValueError, KeyError, IndexError):
        return 0


def load_study(folder):
    """A search folder's study, read-only use (figures, tables)."""
    optuna = _optuna()
    folder = Path(folder)
    if not (folder / STUDY_FILE).exists():
        raise ValueError(f"{folder} is not a search folder (no {STUDY_FILE}); searches live under "
                         f"<runs>/{SEARCHES_DIR}/<name>/")
    st = storage(folder)
    names = [s.study_name for s in optuna.get_all_study_summaries(st)]
    return optuna.load_study(study_name=names[0], storage=st)


def counted(study) -> int:
    """Trials that count toward ``study.trials``: finished, not interrupted by a killed search."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get(INTERRUPTED_ATTR))


def recover(study, log=print) -> int:
    """Trials left RUNNING by a search that died: FAIL (interrupted) and their parameters enqueued
    again; returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED_ATTR, True)
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={RESUMES_ATTR: t.user_attrs.get(RESUMES_ATTR, t.number)},
                            skip_if_exists=False)
    if stale:
        log(f"[search] resuming: {len(stale)} trial(s) left running by the killed search "
            f"({', '.join(str(t.number) for t in stale)}) are run again with the same parameters")
    return len(stale)


# -- one trial as a sweep cell -------------------------------------------------------------------------

def trial_plan(folder: Path, number: int, values: dict, spec: Spec):
    """The trial's one-cell sweep plan (validated as a sweep cell). A trial re-asked after a killed
    search (``number``: the original trial's) reuses its sweep folder, so a cell still trained by
    the orphaned job is seen running."""
    from ..sweep import SweepOptions, plan_cells

    opts = SweepOptions(name=f"t{number:04d}", executor=spec.study["executor"], parallel=1)
    return plan_cells([dict(values, out_dir=str(folder / TRIALS_DIR))], opts, labels=[f"trial {number}"])


@dataclass
class Running:
    trial: object  # optuna.Trial
    plan: object  # the trial's sweep Plan
    job: object  # submitit job (or AttachedJob)
    reported: int = 0
    pruned: bool = False
    scores: dict = field(default_factory=dict)

    @property
    def cell(self):
        return self.plan.cells[0]


class AttachedJob:
    """A cell still trained by a job the killed search left behind: watched, not resubmitted."""

    def __init__(self, plan):
        self.plan, self.cell = plan, plan.cells[0]

    def _status(self):
        from ..sweep import folder as sf

        return sf.cell_status(self.plan.dir, self.cell.record())

    def done(self, force_check: bool = False) -> bool:
        return self._status().status != "running"

    def cancel(self, check: bool = False) -> None:
        pid = self._status().state.get("child_pid")
        if pid:
            try:
                os.killpg(int(pid), signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass


def stop_cell(plan, job) -> None:
    """Stop a pruned trial's training at its next safe point: SIGINT to the training's process
    group (``python -m workbench train``'s Ctrl-C: a checkpoint, exit 130, the cell left
    *interrupted* -- not SIGTERM, which a sweep job treats as a preemption and requeues). The
    training is found by the pid its cell state records when it runs on this host; elsewhere
    (a SLURM node) the job is cancelled (``scancel``). submitit's local ``cancel`` alone is not
    enough: it signals the job's controller process, which does not pass SIGINT on."""
    import socket

    from ..sweep import folder as sf

    cell = plan.cells[0]
    state = sf.read_state(plan.dir, cell.id)
    pid = state.get("child_pid")
    if pid and state.get("host") == socket.gethostname():
        try:
            os.killpg(int(pid), signal.SIGINT)
            return
        except (ProcessLookupError, PermissionError):
            pass
    job.cancel(check=False)


class SharedJob:
    """A trial whose config is one another running trial trains: it follows that trial's job."""

    def __init__(self, other: "Running"):
        self.other = other

    def done(self, force_check: bool = False) -> bool:
        return self.other.job.done()

    def cancel(self, check: bool = False) -> None:
        if self.other.pruned:
            self.other.job.cancel(check=False)


class Executor:
    """Starts trial cells on the search's executor (the sweep's machinery)."""

    def __init__(self, folder: Path, spec: Spec):
        from ..sweep import SweepOptions
        from ..sweep.executors import local_layout

        self.kind = spec.study["executor"]
        self.folder = folder
        self.layout = local_layout(SweepOptions(parallel=spec.study["parallel"])) if self.kind == "local" else None
        self.parallel = self.layout.parallel if self.layout else max(1, spec.study["parallel"] or 1)
        self.free_slots = list(range(self.parallel))
        self._local = None

    def start(self, plan):
        """Submit the plan's cell (its teachers first, trained here and waited for); returns the job."""
        from .. import sweep
        from ..sweep import executors, folder as sf

        sweep.write_folder(plan)
        cell = plan.cells[0]
        if sf.cell_status(plan.dir, cell.record()).status == sf.RUNNING:
            return AttachedJob(plan), None
        teachers = [t for t in plan.teachers if not t.complete()]
        if teachers:  # a teacher trained on the fly: once, before the trial (later trials find it cached)
            if self.kind == "slurm":
                executors.wait_slurm(plan, executors.submit_slurm(plan, teachers, []), lambda: None)
            else:
                executors.run_local(plan, teachers, lambda: None, layout=self.layout)
        if self.kind == "slurm":
            return executors.submit_slurm(plan, [], [cell])[0][1], None
        import submitit

        if self._local is None:
            self._local = submitit.LocalExecutor(folder=str(self.folder / SUBMITIT_DIR))
            self._local.update_parameters(timeout_min=executors.NO_LIMIT_MINUTES, gpus_per_node=0)
        slot = self.free_slots.pop(0)
        job = self._local.submit(executors.cell_job(plan, cell, self.layout, self.layout.slots[slot]))
        sf.update_state(plan.dir, cell.id, state=sf.SUBMITTED, job_id=job.job_id)
        return job, slot

    def release(self, slot) -> None:
        if slot is not None:
            self.free_slots.append(slot)
            self.free_slots.sort()


# -- the loop --------------------------------------------------------------------------------------------

def prepare_folder(spec: Spec, root: Optional[Path] = None) -> Path:
    """The search folder, its spec recorded; a folder recorded with another spec is refused."""
    import yaml

    folder = search_dir(spec.name, root)
    text = yaml.safe_dump(spec_data(spec), sort_keys=False)
    old = folder / SPEC_FILE
    if old.exists() and yaml.safe_load(old.read_text()) != yaml.safe_load(text):
        raise SpecError(f"search {spec.name!r} ({folder}) was started with another spec ({old}); choose another "
                        f"name or delete that folder")
    folder.mkdir(parents=True, exist_ok=True)
    old.write_text(text)
    return folder


def spec_data(spec: Spec) -> dict:
    def rng(r):
        if r.kind == "categorical":
            return list(r.choices)
        return {r.kind: [r.low, r.high], "log": r.log} | ({"step": r.step} if r.step else {})

    return {"name": spec.name, "base": spec.base, "proxy": spec.proxy,
            "space": {k: rng(r) for k, r in spec.space.items()},
            "composed": {k: rng(r) for k, r in spec.composed.items()}, "gpd_keys": spec.gpd_keys,
            "objective": spec.objective, "study": spec.study}


def run(spec: Spec, root: Optional[Path] = None, log: Callable[[str], None] = print, checked: bool = False):
    """Check the spec, then run trials until ``study.trials`` are counted; returns the study.
    A rerun resumes (see the module docstring)."""
    from ..engine.lock import RunLock, RunLockedError

    if not checked:
        check(spec)
    folder = prepare_folder(spec, root)
    try:
        lock = RunLock(folder, "search folder").acquire()
    except RunLockedError as e:
        raise SpecError(str(e)) from None
    try:
        study = open_study(spec, folder)
        recover(study, log)
        _loop(spec, study, folder, log)
        write_best(spec, study, folder, log)
        return study
    finally:
        lock.release()


def _loop(spec: Spec, study, folder: Path, log) -> None:
    optuna = _optuna()
    from optuna.trial import TrialState

    target = spec.study["trials"]
    if spec.study["executor"] == "debug":
        while counted(study) < target:
            _run_inprocess(spec, study, folder, log)
        return
    ex = Executor(folder, spec)
    running: list[tuple[Running, Optional[int]]] = []
    try:
        while True:
            live = [r for r, _ in running if not r.pruned]
            while len(ex.free_slots) > 0 and counted(study) + len(live) < target:
                trial = study.ask()
                values = sample(spec, trial)
                trial.set_user_attr("config", {k: v for k, v in values.items()})
                try:
                    plan = trial_plan(folder, trial.user_attrs.get(RESUMES_ATTR, trial.number), values, spec)
                except ConfigError as e:  # a combination the run refuses: a failed trial, said once
                    trial.set_user_attr("error", str(e))
                    study.tell(trial, state=TrialState.FAIL)
                    log(f"[search] trial {trial.number}: refused: {e}")
                    continue
                trial.set_user_attr("run_dir", str(plan.cells[0].run_dir))
                twin = next((o for o in live if o.cell.run_dir == plan.cells[0].run_dir), None)
                if twin is not None:  # the sampler proposed a config already training: score the same run
                    running.append((Running(trial, twin.plan, SharedJob(twin)), None))
                    live.append(running[-1][0])
                    continue
                job, slot = ex.start(plan)
                r = Running(trial, plan, job)
                running.append((r, slot))
                live.append(r)
                if slot is None and isinstance(job, AttachedJob):
                    log(f"[search] trial {trial.number}: its cell is still training (left by the killed search): "
                        f"waiting for it")
            if not running:
                break
            time.sleep(POLL_S)
            for item in list(running):
                r, slot = item
                _poll(spec, study, r, log, optuna)
                if r.job.done():
                    running.remove(item)
                    ex.release(slot)
                    if not r.pruned:
                        _finish(spec, study, r, log)
    except KeyboardInterrupt:
        for r, _ in running:
            stop_cell(r.plan, r.job)
        raise


def _poll(spec, study, r: Running, log, optuna) -> None:
    if r.pruned:
        return
    try:
        r.scores = objective.epoch_scores(objective.read_records(r.cell.run_dir), spec.objective)
    except objective.TestSetRecord as e:  # never: trials run with eval_on=val
        raise SpecError(f"trial {r.trial.number}: {e}") from None
    for epoch in sorted(e for e in r.scores if e > r.reported):
        r.trial.report(r.scores[epoch], epoch)
        r.reported = epoch
        if epoch < r.cell.cfg.epochs and r.trial.should_prune():
            stop_cell(r.plan, r.job)
            r.pruned = True
            r.trial.set_user_attr("epochs", epoch)
            study.tell(r.trial, state=optuna.trial.TrialState.PRUNED)
            log(f"[search] trial {r.trial.number}: pruned at epoch {epoch} (score {r.scores[epoch]:.4f}) -- "
                f"{_short(r.trial.params)}")
            return


def _finish(spec, study, r: Running, log) -> None:
    from optuna.trial import TrialState

    from ..sweep import folder as sf

    status = sf.cell_status(r.plan.dir, r.cell.record())
    records = objective.read_records(r.cell.run_dir)
    r.scores = objective.epoch_scores(records, spec.objective)
    for epoch in sorted(e for e in r.scores if e > r.reported):
        r.trial.report(r.scores[epoch], epoch)
    last = r.cell.cfg.epochs
    if status.status == sf.DONE and last in r.scores:
        for k, v in objective.components(records, last).items():
            r.trial.set_user_attr(k, v)
        r.trial.set_user_attr("epochs", last)
        study.tell(r.trial, r.scores[last])
        log(f"[search] trial {r.trial.number}: {r.scores[last]:.4f} ({_numbers(objective.components(records, last))})"
            f" -- {_short(r.trial.params)}  [{counted(study)}/{spec.study['trials']}]")
    else:
        error = status.error or f"the cell ended {status.status} ({status.detail})"
        r.trial.set_user_attr("error", error)
        study.tell(r.trial, state=TrialState.FAIL)
        log(f"[search] trial {r.trial.number}: failed: {error} (log: {status.log})")


def _run_inprocess(spec, study, folder, log) -> None:
    """executor=debug: one trial in this process, pruned by an epoch-end callback."""
    from optuna.trial import TrialState

    from .. import sweep
    from ..engine.callbacks import Callback
    from ..sweep import folder as sf
    from ..sweep.executors import cell_job
    from ..sweep.plan import Layout

    trial = study.ask()
    values = sample(spec, trial)
    trial.set_user_attr("config", dict(values))
    try:
        plan = trial_plan(folder, trial.user_attrs.get(RESUMES_ATTR, trial.number), values, spec)
    except ConfigError as e:
        trial.set_user_attr("error", str(e))
        study.tell(trial, state=TrialState.FAIL)
        log(f"[search] trial {trial.number}: refused: {e}")
        return
    r = Running(trial, plan, None)
    trial.set_user_attr("run_dir", str(r.cell.run_dir))

    class Pruning(Callback):
        def on_epoch_end(self, state, epoch):
            scores = objective.epoch_scores(objective.read_records(state.run_dir), spec.objective)
            for e in sorted(x for x in scores if x > r.reported):
                trial.report(scores[e], e)
                r.reported = e
                if e < state.epochs and trial.should_prune():
                    r.pruned = True
                    raise TrialPruned(f"pruned at epoch {e}")
            return []

    sweep.write_folder(plan)
    cell_job(plan, r.cell, Layout(1, 0, 1, 0, [None])).run_inprocess([Pruning()])
    if r.pruned:
        trial.set_user_attr("epochs", r.reported)
        study.tell(trial, state=TrialState.PRUNED)
        sf.update_state(plan.dir, r.cell.id, state=sf.INTERRUPTED, error="")
        log(f"[search] trial {trial.number}: pruned at epoch {r.reported} -- {_short(trial.params)}")
        return
    _finish(spec, study, r, log)


def _short(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _numbers(c: dict) -> str:
    parts = []
    if c.get("val_top1") is not None:
        parts.append(f"val top-1 {c['val_top1']:.2f}")
    if c.get("val_loss") is not None:
        parts.append(f"loss {c['val_loss']:.3f}")
    if c.get("cka_gap") is not None:
        parts.append(f"gap {c['cka_gap']:.3f}")
    return ", ".join(parts)


# -- the result ----------------------------------------------------------------------------------------

def write_best(spec: Spec, study, folder: Path, log=print) -> Optional[dict]:
    """``best.json``: the best complete trial's config at the full budget (:func:`best_config`),
    which ``preset=search/<name>/best`` loads (:mod:`workbench.presets`)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        log("[search] no trial completed: no best preset written")
        return None
    best = max(done, key=lambda t: t.value)
    config = best_config(spec, best.user_attrs["config"])
    record = {"preset": f"search/{spec.name}/best", "trial": best.number, "value": best.value,
              "params": best.params, "proxy": spec.proxy, "config": config,
              "scores": {k: best.user_attrs.get(k) for k in ("val_top1", "val_loss", "cka_gap")}}
    tmp = folder / f".{BEST_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, folder / BEST_FILE)
    log(f"[search] best: trial {best.number} ({best.value:.4f}: {_short(best.params)}); "
        f"preset=search/{spec.name}/best ({folder / BEST_FILE})")
    return record


def summary(study) -> dict:
    """Trial counts by state (interrupted ones apart)."""
    out: dict = {}
    for t in study.get_trials(deepcopy=False):
        key = "interrupted" if t.user_attrs.get(INTERRUPTED_ATTR) else t.state.name.lower()
        out[key] = out.get(key, 0) + 1
    return out

