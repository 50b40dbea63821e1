"""Sweeps that train: a local sweep (submitit LocalExecutor) of 2 methods x 2 seeds on the embedded
Fashion-MNIST subset, one cell killed with kill -9 and another with SIGTERM in epoch 2; the
SIGTERM'd cell is requeued by submitit and resumes, the killed one fails with its one line, a
rerun of the sweep resumes it and skips the others; every run folder then holds the same records
(timing fields aside) and the same student.pt tensors as an uninterrupted sweep's. Also: a
failing cell never stops the others, teachers trained first, and ``sweep status``."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.engine.metrics import read_metrics
from workbench.sweep import folder as sf
from workbench.sweep import launch, plan, status

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"time", "images_per_s"}  # wall-clock fields: the only ones allowed to differ
# 2 epochs; 200 training images; no probes: seconds per cell (evaluation on the 1000 test images dominates)
TINY = ["epochs=2", "train_per_class=20", "probe_every=0", "progress=false"]
KILL_TIMEOUT_S = 600


def cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def records(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def assert_same_runs(a: Path, b: Path) -> None:
    assert records(a) == records(b), (a, b)
    sa, sb = torch.load(a / "student.pt", weights_only=True), torch.load(b / "student.pt", weights_only=True)
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), (a, k)  # bit-identical: same threads, same seeds


def wait_for(predicate, timeout=KILL_TIMEOUT_S, what=""):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_in_epoch_2(sweep_dir: Path, cell: dict, sig) -> None:
    """``sig`` to the cell's training process once its epoch-1 checkpoint is on disk (epoch 2 running)."""
    last = Path(cell["run_dir"]) / "last.pt"
    wait_for(lambda: last.exists() and sf.read_state(sweep_dir, cell["id"]).get("child_pid"), what=f"{last}")
    os.kill(int(sf.read_state(sweep_dir, cell["id"])["child_pid"]), sig)


def run_killed_sweep(tmp_path, methods: str):
    grid = [f"preset=fashion/demo/{{{methods}}}", "seed=0:2", *TINY]
    ref = plan(grid + [f"out_dir={tmp_path / 'ref'}"], executor="debug", name="ref")  # uninterrupted, in-process
    launch(ref, monitor=lambda: None)
    assert [s.status for s in status(ref.dir)] == ["done"] * 4

    out = tmp_path / "sweep"
    args = ["sweep", *grid, f"out_dir={out}", "executor=local", "parallel=2", "cpus_per_cell=1", "name=s"]
    proc = cli(*args)  # cpus_per_cell=1: one torch thread per cell, as the reference (conftest: 1 thread)
    sweep_dir = out / "sweeps" / "s"
    wait_for(lambda: (sweep_dir / "sweep.json").exists(), what="sweep.json")
    cells = sf.read_record(sweep_dir)["cells"]
    kill_in_epoch_2(sweep_dir, cells[0], signal.SIGKILL)  # cells 0 and 1 run side by side (parallel=2)
    kill_in_epoch_2(sweep_dir, cells[1], signal.SIGTERM)
    output, _ = proc.communicate(timeout=KILL_TIMEOUT_S)
    assert proc.returncode == 1, output  # a failed cell
    first = {s.id: s for s in status(sweep_dir)}
    assert first["c0"].status == "failed" and "killed by SIGKILL" in first["c0"].error, first["c0"]
    assert first["c1"].status == "done" and first["c1"].state["attempt"] == 2  # SIGTERM: requeued by submitit, resumed
    assert first["c2"].status == first["c3"].status == "done"  # a failing cell never stops the others
    assert "resuming from epoch 2" in (sweep_dir / "logs" / "c1.log").read_text()

    st = cli("sweep", "status", str(sweep_dir))
    text, _ = st.communicate(timeout=120)
    assert st.returncode == 1, text  # non-zero while a cell failed
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("c0 "))
    assert "failed" in line and "killed by SIGKILL" in line and str(sweep_dir / "logs" / "c0.log") in line

    again = cli(*args)
    output, _ = again.communicate(timeout=KILL_TIMEOUT_S)
    assert again.returncode == 0, output
    final = {s.id: s for s in status(sweep_dir)}
    assert all(s.status == "done" for s in final.values()), final
    assert final["c0"].state["attempt"] == 2 and final["c2"].state["attempt"] == 1  # finished cells were skipped
    assert "resuming from epoch 2" in (sweep_dir / "logs" / "c0.log").read_text()
    for mine, theirs in zip(cells, sf.read_record(ref.dir)["cells"]):
        assert Path(mine["run_dir"]).name == Path(theirs["run_dir"]).name
        assert_same_runs(Path(mine["run_dir"]), Path(theirs["run_dir"]))
    return output


def test_local_sweep_resumes_killed_cells_to_the_uninterrupted_result(tmp_path):
    output = run_killed_sweep(tmp_path, "kd,dkd")
    assert "| fashion_mnist | resnet20 -> resnet8 | kd | 2 | 2 | 0,1 |" in output  # the results table at the end


@pytest.mark.slow
def test_local_sweep_with_gpd_resumes_killed_cells_to_the_uninterrupted_result(tmp_path):
    """The same with GPD on DKD (dynamic teacher, EMA twins, their optimizer state): slower."""
    run_killed_sweep(tmp_path, "kd,gpd_dkd")


def test_failing_cell_never_stops_the_others_and_teachers_train_first(tmp_path):
    """digits with a resnet8 teacher trained on the fly: the teacher run goes first (once, for
    both cells); a cell that diverges (kd_weight 1e38) fails with the CLI's one error line while the
    other finishes; a rerun skips the finished cell and re-tries the failed one."""
    p = plan(["kd_weight=0.9,1e38", "dataset=digits", "teacher=resnet8", "student=resnet8", "teacher_epochs=1",
              "epochs=1", "train_per_class=5", "probe_every=0", "progress=false", f"out_dir={tmp_path}"],
             executor="debug", name="d")
    assert [t.label for t in p.teachers] == ["teacher resnet8 on digits (for cells 0, 1)"]
    statuses = {s.id: s for s in launch(p, monitor=lambda: None)}
    assert statuses["t0"].status == "done" and statuses["c0"].status == "done"
    assert statuses["c1"].status == "failed" and "diverged" in statuses["c1"].error, statuses["c1"]
    assert "\n" not in statuses["c1"].error
    again = plan(["kd_weight=0.9,1e38", "dataset=digits", "teacher=resnet8", "student=resnet8", "teacher_epochs=1",
                  "epochs=1", "train_per_class=5", "probe_every=0", "progress=false", f"out_dir={tmp_path}"],
                 executor="debug", name="d")
    assert again.teachers == []  # cached now
    statuses = {s.id: s for s in launch(again, monitor=lambda: None)}
    assert statuses["c0"].state["attempt"] == 1 and statuses["c1"].state["attempt"] == 2
    record = json.loads((p.dir / "sweep.json").read_text())
    assert [c["config"]["kd_weight"] for c in record["cells"]] == [0.9, 1e38] and record["grid"]["kd_weight"] == ["0.9", "1e38"]


def test_a_sweep_folder_is_never_shared_by_two_grids(tmp_path):
    from workbench.sweep import GridError

    base = ["dataset=digits", "method=ce", "teacher=none", "student=resnet8", "epochs=1", "train_per_class=5",
            "probe_every=0", f"out_dir={tmp_path}"]
    launch(plan(base + ["seed=0"], executor="debug", name="x"), monitor=lambda: None)
    with pytest.raises(GridError, match="was recorded with other cells"):
        launch(plan(base + ["seed=1"], executor="debug", name="x"), monitor=lambda: None)


def test_a_job_that_cannot_start_fails_its_cell_with_submitits_line(tmp_path, monkeypatch):
    """The job process cannot even load the cell (here: workbench not importable there): the cell
    is failed with the line submitit logged, not left pending forever."""
    p = plan(["dataset=digits", "method=ce", "teacher=none", "student=resnet8", "epochs=1", "train_per_class=5",
              "probe_every=0", f"out_dir={tmp_path}"], executor="local", name="broken", parallel=1)
    # A package of the same name first on the job's path shadows the real one (PYTHONPATH comes before
    # site-packages, where an installed or editable workbench would otherwise be found).
    shadow = tmp_path / "shadow" / "workbench"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('workbench is broken on this node')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    monkeypatch.chdir(tmp_path)  # not the checkout either (python -m puts the working directory on the path)
    (s,) = launch(p, monitor=lambda: None)
    assert s.status == "failed" and "ended before the cell started" in s.error and "workbench" in s.error, s.error


def test_the_checkpoint_signal_to_a_job_stops_its_training_and_requeues_it(tmp_path):
    """The time-limit path: submitit's checkpoint signal (USR2) to the job process calls
    CellJob.checkpoint, which stops the training at its next safe point; submitit requeues the
    cell (the local controller restarts it) and it resumes from its run folder."""
    p = plan(["dataset=digits", "method=ce", "teacher=none", "student=resnet8", "epochs=3", "train_per_class=20",
              "probe_every=0", "progress=false", f"out_dir={tmp_path}"], executor="local", name="usr2", parallel=1)
    import threading

    done = threading.Event()

    def signal_once():
        wait_for(lambda: (p.dir / "sweep.json").exists() and (p.cells[0].run_dir / "last.pt").exists()
                 and sf.read_state(p.dir, "c0").get("child_pid"), what="epoch 1 of the cell")
        os.kill(int(sf.read_state(p.dir, "c0")["pid"]), signal.SIGUSR2)
        done.set()

    t = threading.Thread(target=signal_once, daemon=True)
    t.start()
    (s,) = launch(p, monitor=lambda: None)
    assert done.is_set() and s.status == "done" and s.state["attempt"] == 2, (s.status, s.error, s.state)
    log = (p.dir / "logs" / "c0.log").read_text()
    assert "resuming from epoch 2" in log
