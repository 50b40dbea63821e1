"""executor=slurm through submitit, against stand-in ``sbatch``/``srun``/``sacct``/``scontrol``
(tests/slurm_standin: they run the submitted array on this machine): the sbatch script submitit
generates (array size and %parallelism, resources, signal, the srun command), the cells trained
by the array, and a preempted cell (SIGTERM to its training) requeued through ``scontrol
requeue`` and resumed to the same result as a cell that was never interrupted."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.sweep import folder as sf
from workbench.sweep import GridError, launch, plan, status
from workbench.sweep.job import CellJob

from test_sweep_runs import assert_same_runs

ROOT = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "slurm_standin"
TINY = ["preset=fashion/demo/kd", "epochs=2", "train_per_class=20", "probe_every=0", "progress=false"]
TIMEOUT_S = 600


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The stand-in commands first on PATH, their state under tmp_path."""
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_SLURM_DIR", str(tmp_path / "slurmctld"))
    monkeypatch.setenv("STANDIN_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return tmp_path / "slurmctld"


def test_the_job_array_submitit_writes_and_runs(slurm, tmp_path):
    p = plan([*TINY, "seed=0:3", f"out_dir={tmp_path / 'runs'}"], executor="slurm", name="arr", parallel=2,
             partition="gpu", account="lab", time="0:30:00", gpus_per_cell=1, cpus_per_cell=4, mem="8G",
             slurm_qos="high")
    statuses = launch(p, wait=False, monitor=lambda: None)
    assert {s.status for s in statuses} <= {"pending", "running", "done"}
    scripts = sorted((p.dir / "submitit").glob("*_submission.sh"))
    assert len(scripts) == 1  # one job array for the three cells
    text = scripts[0].read_text()
    flags = dict(re.findall(r"^#SBATCH --([a-z-]+)(?:=(.*))?$", text, re.M))
    assert flags["array"] == "0-2%2"  # 3 cells, 2 at once
    assert flags["partition"] == "gpu" and flags["account"] == "lab" and flags["qos"] == "high"
    assert flags["time"] == "30" and flags["gpus-per-node"] == "1" and flags["cpus-per-task"] == "4"
    assert flags["mem"] == "8GB" and flags["nodes"] == "1" and flags["ntasks-per-node"] == "1"
    assert flags["signal"] == "USR2@90"  # the checkpoint signal, 90 s before the time limit
    assert flags["job-name"] == "wb-arr"
    command = text.strip().splitlines()[-1]
    assert command.startswith("srun --unbuffered --output") and "-m submitit.core._submit" in command
    # the stand-in runs the array; the sweep's --wait is `wait=True`
    t0 = time.monotonic()
    while any(s.status != "done" for s in status(p.dir)):
        assert time.monotonic() - t0 < TIMEOUT_S, [(s.id, s.status, s.error) for s in status(p.dir)]
        assert not any(s.status == "failed" for s in status(p.dir)), [(s.id, s.error) for s in status(p.dir)]
        time.sleep(0.5)
    jobs = {sf.read_state(p.dir, f"c{i}")["job_id"] for i in range(3)}
    assert len(jobs) == 3 and all(re.fullmatch(r"\d+_[0-2]", j) for j in jobs)  # array tasks
    # rerun: every cell finished, nothing is submitted again
    again = launch(plan([*TINY, "seed=0:3", f"out_dir={tmp_path / 'runs'}"], executor="slurm", name="arr"),
                   wait=False, monitor=lambda: None)
    assert [s.status for s in again] == ["done"] * 3
    assert len(list((p.dir / "submitit").glob("*_submission.sh"))) == 1


def test_a_preempted_cell_is_requeued_and_resumes(slurm, tmp_path):
    """SLURM preemption signals every process of the job with SIGTERM: the training stops (today:
    killed, its epoch checkpoint kept; after issue 28: a mid-epoch checkpoint and exit 75), the job
    asks submitit to requeue it (``scontrol requeue``), and the requeued job resumes the run."""
    out = tmp_path / "runs"
    p = plan([*TINY, f"out_dir={out}"], executor="slurm", name="pre", parallel=1, cpus_per_cell=1)  # 1 thread, as ref
    ref = plan([*TINY, f"out_dir={tmp_path / 'ref'}"], executor="debug", name="ref")
    launch(p, wait=False, monitor=lambda: None)
    cell = p.cells[0]
    t0 = time.monotonic()
    while not ((cell.run_dir / "last.pt").exists() and sf.read_state(p.dir, "c0").get("child_pid")):
        assert time.monotonic() - t0 < TIMEOUT_S
        time.sleep(0.05)
    os.kill(int(sf.read_state(p.dir, "c0")["child_pid"]), signal.SIGTERM)
    launch(ref, monitor=lambda: None)  # meanwhile: the same cell, uninterrupted, in this process
    while status(p.dir)[0].status != "done":
        assert time.monotonic() - t0 < TIMEOUT_S, status(p.dir)[0]
        assert status(p.dir)[0].status != "failed", status(p.dir)[0].error
        time.sleep(0.5)
    state = sf.read_state(p.dir, "c0")
    assert state["attempt"] == 2
    assert list((slurm / "requeue").glob("*")) == [] and (slurm / "requeue").is_dir()  # requeued via scontrol
    assert_same_runs(cell.run_dir, ref.cells[0].run_dir)


def test_torchrun_inside_the_allocation_and_bad_slurm_keys(slurm, tmp_path):
    job = CellJob(str(tmp_path), "c0", {"epochs": 1, "method": "kd", "milestones": [1, 2], "preset": "x", "name": ""},
                  str(tmp_path / "r"), nproc=4)
    cmd = job.command()
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:8] == ["-m", "workbench", "train"] and "milestones=1,2" in cmd and not any(
        a.startswith(("preset=", "name=")) for a in cmd)
    with pytest.raises(GridError, match=r"^slurm options: unknown SLURM parameter slurm_partitionn \(did you mean slurm_partition\?\)"):
        plan([*TINY, f"out_dir={tmp_path / 'runs'}"], executor="slurm", name="bad", slurm_partitionn="x")
    assert not (tmp_path / "runs").exists()


def test_slurm_without_srun_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(GridError, match=r"^executor=slurm: no `srun` on PATH"):
        plan([*TINY, f"out_dir={tmp_path}"], executor="slurm")
    assert list(tmp_path.iterdir()) == []


def test_a_running_cell_whose_slurm_job_is_gone_is_failed(slurm, tmp_path):
    """A state file saying 'running' on another host is checked with sacct: a job that ended
    (node failure, scancel) without its cell reporting is a failure to resume, not a live cell."""
    sweep_dir = tmp_path / "sw"
    cell = {"id": "c0", "label": "x", "run_dir": str(tmp_path / "run"), "config": {"epochs": 2}}
    sf.write_json(sweep_dir / "sweep.json", {"teachers": [], "cells": [cell]})
    sf.update_state(sweep_dir, "c0", state="running", host="node-17", job_id="1234_0", pid=1)
    (slurm / "state").mkdir(parents=True)
    (slurm / "state" / "1234_0").write_text("RUNNING")
    assert sf.cell_status(sweep_dir, cell).status == "running"
    (slurm / "state" / "1234_0").write_text("NODE_FAIL")
    s = sf.cell_status(sweep_dir, cell)
    assert s.status == "failed" and "its SLURM job 1234_0 ended (NODE_FAIL)" in s.error
