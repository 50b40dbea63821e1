"""The sweep folder, ``<runs>/sweeps/<name>/``, and what it says about each cell. No torch here:
this module is imported by the job processes that only watch a training subprocess.

    sweep.json           the grid as given, the sweep options, and per cell: its id, label, grid
                         values, full config and run folder (cells are ordinary run folders)
    state/<id>.json      what the cell's job last reported: state (submitted | running | done |
                         failed | preempted | interrupted), attempt, host, pids, job id, exit code,
                         error line, times
    logs/<id>.log        the cell's training output (every attempt appended, each under a header)
    submitit/            submitit's own files (pickled jobs, job logs, sbatch scripts)

A cell's *status* (:func:`cell_status`) combines the run folder (complete = ``summary.json``
written after its last epoch) with the state file: done, running (its process is alive -- checked
by pid on this host, trusted from the file on another one), pending (not started, submitted,
preempted and requeued, or interrupted: a rerun resumes it), failed (with the error line and the
log path; a "running" cell whose processes are gone without a word is failed too).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

SWEEP_FILE = "sweep.json"
STATE_DIR, LOG_DIR, SUBMITIT_DIR = "state", "logs", "submitit"
SWEEPS_DIR = "sweeps"  # under the runs root: <runs>/sweeps/<name>/
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"

DONE, RUNNING, PENDING, FAILED = "done", "running", "pending", "failed"
STATUSES = (DONE, RUNNING, PENDING, FAILED)
#: states a job writes into state/<id>.json
SUBMITTED, PREEMPTED, INTERRUPTED = "submitted", "preempted", "interrupted"


def write_json(path: Path, data: dict) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def state_path(sweep_dir: Path, cell_id: str) -> Path:
    return Path(sweep_dir) / STATE_DIR / f"{cell_id}.json"


def log_path(sweep_dir: Path, cell_id: str) -> Path:
    return Path(sweep_dir) / LOG_DIR / f"{cell_id}.log"


def read_state(sweep_dir: Path, cell_id: str) -> dict:
    return read_json(state_path(sweep_dir, cell_id)) or {}


def update_state(sweep_dir: Path, cell_id: str, **changes) -> dict:
    """Merge ``changes`` into the cell's state file (with the time of the change)."""
    state = read_state(sweep_dir, cell_id)
    state.update(changes, updated=time.time())
    write_json(state_path(sweep_dir, cell_id), state)
    return state


def run_complete(run_dir: Path, epochs: int) -> bool:
    """The run folder holds a finished run: ``summary.json`` written after epoch ``epochs``."""
    summary = read_json(Path(run_dir) / SUMMARY_FILE)
    if not summary:
        return False
    student = summary.get("student") or next(iter(summary.values()), {})
    return isinstance(student, dict) and int(student.get("epoch", -1)) >= epochs


def epochs_done(run_dir: Path) -> int:
    """The last epoch with a train record in ``metrics.jsonl`` (0 if none yet)."""
    path = Path(run_dir) / METRICS_FILE
    last = 0
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if '"kind": "train"' in line:
                with contextlib.suppress(ValueError):
                    last = max(last, int(json.loads(line).get("epoch", 0)))
    return last


def pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class CellStatus:
    id: str
    label: str
    status: str  # done | running | pending | failed
    run_dir: str
    epochs: int
    epoch: int = 0  # epochs finished so far
    detail: str = ""  # why pending/failed, in a few words
    error: str = ""  # the failure's one line
    log: str = ""
    role: str = "cell"
    state: dict = field(default_factory=dict)


def cell_status(sweep_dir: Path, cell: dict) -> CellStatus:
    """The status of one recorded cell (``sweep.json``'s entry)."""
    sweep_dir = Path(sweep_dir)
    run_dir, epochs = Path(cell["run_dir"]), int(cell["config"]["epochs"])
    state = read_state(sweep_dir, cell["id"])
    log = str(log_path(sweep_dir, cell["id"]))
    out = CellStatus(cell["id"], cell["label"], PENDING, str(run_dir), epochs, epochs_done(run_dir),
                     log=log, role=cell.get("role", "cell"), state=state)
    if run_complete(run_dir, epochs):
        out.status, out.epoch = DONE, epochs
        return out
    kind = state.get("state")
    if kind == RUNNING:
        here = state.get("host") == socket.gethostname()
        ended = None if here else slurm_job_ended(state.get("job_id", ""))
        if ended is None and (not here or pid_alive(state.get("pid")) or pid_alive(state.get("child_pid"))):
            out.status = RUNNING
            out.detail = "" if here else f"on {state.get('host')}"
        elif ended:
            out.status, out.detail = FAILED, "stopped without a word"
            out.error = (f"its SLURM job {state.get('job_id')} ended ({ended}) without reporting; rerun the sweep "
                         f"to resume it from its last checkpoint")
        else:
            out.status, out.detail = FAILED, "stopped without a word"
            out.error = (f"the cell's processes ended without reporting (killed, or the machine went down); "
                         f"rerun the sweep to resume it from its last checkpoint")
        return out
    if kind == FAILED:
        out.status, out.error = FAILED, state.get("error") or "failed (no error line: see the log)"
        return out
    if kind == DONE:  # the job said done, but the folder lacks the final summary
        out.status, out.error = FAILED, f"the job ended but {run_dir / SUMMARY_FILE} does not cover epoch {epochs}"
        return out
    out.detail = {SUBMITTED: "submitted", PREEMPTED: "preempted, requeued", INTERRUPTED: "interrupted"}.get(
        kind, "not started" if out.epoch == 0 else "stopped: rerun the sweep to resume")
    return out


def sweep_statuses(sweep_dir: Path) -> list[CellStatus]:
    record = read_record(sweep_dir)
    return [cell_status(sweep_dir, c) for c in record["teachers"] + record["cells"]]


#: sacct states of a job that is over (a requeued job shows PENDING/REQUEUED, not these)
SLURM_ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def slurm_job_ended(job_id: str) -> Optional[str]:
    """The final sacct state of a SLURM job that is over, else None (running, queued, unknown,
    or no sacct here): a cell whose file says "running" on another host is checked this way."""
    import shutil
    import subprocess

    if not job_id or not job_id.replace("_", "").isdigit() or shutil.which("sacct") is None:
        return None
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-o", "JobID,State", "--parsable2", "-n"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) > 1 and fields[0] == job_id:
            state = fields[1].split()[0] if fields[1].strip() else ""  # "CANCELLED by 1234"
            return state if state in SLURM_ENDED else None
    return None


def read_record(sweep_dir: Path) -> dict:
    """``sweep.json`` of a sweep folder (a ValueError naming the folder if there is none)."""
    record = read_json(Path(sweep_dir) / SWEEP_FILE)
    if record is None:
        raise ValueError(f"{sweep_dir} is not a sweep folder (no readable {SWEEP_FILE}); sweeps live under "
                         f"<runs>/{SWEEPS_DIR}/<name>/")
    return record


def error_line(log: Path, since: int = 0) -> str:
    """The error line of a failed attempt: the last ``error: ...`` line the CLI printed after byte
    ``since`` of the log, else the last line of a traceback, else the last non-empty line."""
    try:
        with open(log, "rb") as f:
            f.seek(since)
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln[len("error:"):].strip()
    return lines[-1] if lines else ""
