"""One cell as a submitit job: what runs inside the job process, on this box or a SLURM node.

The job trains the cell as a *subprocess*, ``python -m workbench train <the cell's full config>``
(``torchrun --nproc_per_node=N -m workbench train ...`` for ``nproc > 1``): the same command a
user types, so a cell's run folder is the one ``train`` would make (same name and hash), and
the training process owns its signals. Why not train inside the job process: submitit installs
its own handlers there (SIGUSR2 = checkpoint and requeue, SIGTERM ignored), the run installs its
own for the duration of training (issue 28: SIGTERM/SIGUSR1/SIGUSR2 -> a consistent checkpoint,
``Preempted``, exit code 75), and several GPUs need torchrun anyway. Two processes keep both
sets of handlers intact:

- **Timeout / preemption signal to the job** (SLURM's ``--signal=USR2@90``, or the local
  executor's timeout): submitit calls :meth:`CellJob.checkpoint`, which passes SIGTERM on to the
  training's process group (torchrun forwards SIGTERM to its workers; it would die of SIGUSR2
  itself), waits for it to save and exit, and returns a ``DelayedSubmission`` of the same cell;
  submitit requeues it (``scontrol requeue`` / the local controller's restart) and the requeued
  job resumes from the run folder.
- **SIGTERM to the training itself** (SLURM preemption signals every process of the job; a user;
  the OOM killer's gentler cousins): the training checkpoints and exits 75 (issue 28; before it,
  SIGTERM kills it and the last epoch checkpoint stays). Exit 75 or death by SIGTERM is
  *preempted*, not failed: inside a submitit job the job asks submitit to requeue it (it raises
  submitit's own checkpoint signal on itself); outside one (``executor=debug``) the cell is left
  pending and a rerun of the sweep resumes it.
- **kill -9** of the training, a crash or a bad exit code: *failed*, with the error line and log
  path; a rerun resumes it. If the job process itself is killed, the training receives SIGTERM
  (``PR_SET_PDEATHSIG`` on Linux) and ends at its next safe point instead of training on, orphaned.

``executor=debug`` trains in-process instead (:meth:`CellJob.run_inprocess`; submitit's
DebugExecutor runs the job in the caller, for tests and notebooks, and drops into pdb on an
exception -- so a cell never raises: every outcome is a state).

This module imports no torch: the job process only waits on its child.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from . import folder as sf

try:  # submitit is a dependency; the class below derives from its Checkpointable
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover -- an environment without it gets the one-line error in executors
    Checkpointable, DelayedSubmission = object, None

#: the CLI's exit code for a run stopped at a safe point by a preemption signal (issue 28)
PREEMPTED_EXIT = 75
INTERRUPTED_EXIT = 130  # workbench.cli.INTERRUPTED: Ctrl-C
#: exit codes and deaths that mean "stopped, resumable" rather than "failed"
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
#: seconds the training gets to write its checkpoint after a forwarded signal (SLURM's default
#: warning is 90 s before the kill; submitit's signal_delay_s)
STOP_GRACE_S = 60.0
#: seconds a preempted job waits for the scheduler's own checkpoint signal before requeueing itself
REQUEUE_GRACE_S = 2.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover -- runs in the child between fork and exec
    """Linux: SIGTERM to this process when the job process dies (no orphaned training); SIGINT
    back to its default, so the training's Ctrl-C stop works (a distiller search stops a pruned
    trial with it) even when the sweep or search was started as a background job, whose shell
    ignores SIGINT -- an ignored signal stays ignored across fork and exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass


def train_args(config: dict) -> list[str]:
    """``key=value`` arguments that rebuild ``config`` exactly (the preset already applied)."""
    out = []
    for k, v in config.items():
        if k == "preset" or v == "":
            continue
        if isinstance(v, (list, tuple)):
            v = ",".join(map(str, v))
        out.append(f"{k}={'none' if v is None else v}")
    return out


def classify(returncode: int, signalled: bool) -> str:
    """done / preempted / interrupted / failed from the training's exit (``signalled``: this job
    passed a preemption signal on to it, so its death is the expected end)."""
    if returncode == 0:
        return sf.DONE
    if signalled or returncode == PREEMPTED_EXIT or -returncode in [int(s) for s in PREEMPT_SIGNALS]:
        return sf.PREEMPTED
    if returncode in (INTERRUPTED_EXIT, -int(signal.SIGINT)):
        return sf.INTERRUPTED
    return sf.FAILED


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (kill -9, or the out-of-memory killer)" if -returncode == signal.SIGKILL else ""
        return f"the training was killed by {name}{hint}"
    return f"the training exited with code {returncode}"


class CellJob(Checkpointable):
    """Run one cell (see the module docstring). Picklable: submitit ships it to the job."""

    def __init__(self, sweep_dir: str, cell_id: str, config: dict, run_dir: str, nproc: int = 1,
                 threads: int = 0, gpus: Optional[str] = None, python: str = sys.executable):
        self.sweep_dir, self.cell_id, self.config, self.run_dir = str(sweep_dir), cell_id, dict(config), str(run_dir)
        self.nproc, self.threads, self.gpus, self.python = int(nproc), int(threads), gpus, python
        self._child: Optional[subprocess.Popen] = None
        self._signalled = False

    # -- what submitit pickles -------------------------------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_child"], state["_signalled"] = None, False
        return state

    # -- the job ---------------------------------------------------------------------------------
    def command(self) -> list[str]:
        args = train_args(self.config)
        if self.nproc > 1:
            return [self.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                    "-m", "workbench", "train", *args]
        return [self.python, "-m", "workbench", "train", *args]

    def environment(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.threads > 0:  # torch reads it at start: threads per cell = cores / cells at once
            env["OMP_NUM_THREADS"] = str(self.threads)
        if self.gpus is not None:  # the local executor's pinning (SLURM sets it from the allocation)
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        return env

    def _begin(self) -> int:
        """State 'running' and a header in the log; returns the log's size before this attempt."""
        sweep_dir = Path(self.sweep_dir)
        log = sf.log_path(sweep_dir, self.cell_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        since = log.stat().st_size if log.exists() else 0
        state = sf.read_state(sweep_dir, self.cell_id)
        attempt = int(state.get("attempt", 0)) + 1
        with open(log, "a") as f:
            f.write(f"\n==== attempt {attempt} on {socket.gethostname()} at {time.strftime('%Y-%m-%d %H:%M:%S')} "
                    f"(job {_job_id()}) ====\n")
        sf.update_state(sweep_dir, self.cell_id, state=sf.RUNNING, attempt=attempt, host=socket.gethostname(),
                        pid=os.getpid(), child_pid=None, job_id=_job_id(), started=time.time(), error="",
                        returncode=None)
        return since

    def __call__(self) -> dict:
        since = self._begin()
        if sf.run_complete(Path(self.run_dir), int(self.config["epochs"])):
            return self._end(sf.DONE, 0, since)
        log = sf.log_path(Path(self.sweep_dir), self.cell_id)
        try:
            with open(log, "ab") as out:
                self._child = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                               env=self.environment(), start_new_session=True,
                                               preexec_fn=_die_with_parent if sys.platform == "linux" else None)
                sf.update_state(Path(self.sweep_dir), self.cell_id, child_pid=self._child.pid)
                returncode = self._wait_child()
        except KeyboardInterrupt:
            self._stop_child(signal.SIGINT)
            self._end(sf.INTERRUPTED, self._child.returncode if self._child else None, since)
            raise
        outcome = classify(returncode, self._signalled)
        result = self._end(outcome, returncode, since)
        if outcome == sf.PREEMPTED and not self._signalled:
            self._requeue()
        return result

    def _wait_child(self) -> int:
        while True:  # short waits: a signal handler (submitit's checkpoint) runs between them
            try:
                return self._child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue

    def _stop_child(self, sig=signal.SIGTERM, grace: float = STOP_GRACE_S) -> None:
        """Pass ``sig`` to the training's process group and wait for it to save and exit."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        self._signalled = sig != signal.SIGINT
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    def _end(self, outcome: str, returncode, since: int) -> dict:
        sweep_dir = Path(self.sweep_dir)
        log = sf.log_path(sweep_dir, self.cell_id)
        error = ""
        if outcome == sf.FAILED:  # a death by signal says so; otherwise the CLI's own error line
            error = describe_exit(returncode) if returncode < 0 else (sf.error_line(log, since)
                                                                     or describe_exit(returncode))
        sf.update_state(sweep_dir, self.cell_id, state=outcome, returncode=returncode, error=error,
                        ended=time.time(), child_pid=None)
        return {"cell": self.cell_id, "state": outcome, "returncode": returncode, "error": error,
                "run_dir": self.run_dir}

    # -- submitit's requeue ----------------------------------------------------------------------
    def checkpoint(self, *args, **kwargs):
        """submitit's hook on its checkpoint signal (timeout, preemption): stop the training at
        its next safe point, then resubmit this cell; the requeued job resumes the run folder."""
        self._stop_child(signal.SIGTERM)
        sf.update_state(Path(self.sweep_dir), self.cell_id, state=sf.PREEMPTED, child_pid=None)
        return DelayedSubmission(CellJob(self.sweep_dir, self.cell_id, self.config, self.run_dir, self.nproc,
                                         self.threads, self.gpus, self.python))

    def _requeue(self) -> None:
        """The training was preempted without this job being signalled: give the scheduler a moment
        to send its own checkpoint signal, then raise it ourselves -- submitit's handler then calls
        :meth:`checkpoint` and requeues (outside a submitit job nothing happens: the cell stays
        pending for a rerun)."""
        sig = _submitit_signal()
        if sig is None:
            return
        time.sleep(REQUEUE_GRACE_S)
        try:
            signal.raise_signal(sig)
        except Exception as e:  # noqa: BLE001 -- e.g. `scontrol requeue` refused: SLURM requeues preempted jobs itself
            sf.update_state(Path(self.sweep_dir), self.cell_id, note=f"requeue failed: {type(e).__name__}: {e}")

    # -- executor=debug --------------------------------------------------------------------------
    def run_inprocess(self, extra_callbacks=()) -> dict:
        """Train in this process (``executor=debug``); every outcome is a state, never an exception
        (submitit's DebugJob would open pdb), except Ctrl-C, which stops the sweep."""
        since = self._begin()
        if sf.run_complete(Path(self.run_dir), int(self.config["epochs"])):
            return self._end(sf.DONE, 0, since)
        log = sf.log_path(Path(self.sweep_dir), self.cell_id)
        import traceback

        from .. import experiment
        from ..engine.progress import Progress

        with open(log, "a") as out:
            def note(msg):
                out.write(f"{msg}\n")
                out.flush()

            try:
                experiment.run(dict(self.config, progress=False), log=note, progress=Progress(),
                               extra_callbacks=list(extra_callbacks))
                code = 0
            except KeyboardInterrupt:
                note("interrupted; rerun the sweep to resume")
                self._end(sf.INTERRUPTED, INTERRUPTED_EXIT, since)
                raise
            except Exception as e:  # noqa: BLE001 -- a failing cell never stops the others
                if type(e).__name__ == "Preempted":  # issue 28's workbench.engine.Preempted
                    note(f"preempted: {e}")
                    code = PREEMPTED_EXIT
                else:
                    out.write(traceback.format_exc())
                    note(f"error: {type(e).__name__}: {e}".splitlines()[0])
                    code = 1
        return self._end(classify(code, False), code, since)


def _job_id() -> str:
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID", "SUBMITIT_DEBUG_JOB_ID"):
        if os.environ.get(var):
            if var == "SLURM_ARRAY_JOB_ID":
                return f"{os.environ[var]}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
            return os.environ[var]
    return ""


def _submitit_signal():
    """submitit's checkpoint signal when this process is a submitit local/SLURM job, else None."""
    if os.environ.get("SUBMITIT_EXECUTOR") not in ("local", "slurm"):
        return None
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()
