"""A cell's job: how the training's end is read (preempted is not failed), the exact train
command, and that the job process stays light (no torch)."""
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.config import RunConfig
from workbench.sweep import folder as sf
from workbench.sweep.job import PREEMPTED_EXIT, CellJob, classify, describe_exit, train_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("code, signalled, outcome", [
    (0, False, "done"), (PREEMPTED_EXIT, False, "preempted"), (-signal.SIGTERM, False, "preempted"),
    (-signal.SIGUSR2, False, "preempted"), (1, True, "preempted"),  # torchrun's code after a forwarded signal
    (-signal.SIGKILL, False, "failed"), (2, False, "failed"), (3, False, "failed"), (130, False, "interrupted"),
])
def test_exit_codes(code, signalled, outcome):
    assert classify(code, signalled) == outcome


def test_describe_exit():
    assert describe_exit(-9) == "the training was killed by SIGKILL (kill -9, or the out-of-memory killer)"
    assert describe_exit(3) == "the training exited with code 3"


def test_train_args_rebuild_the_config_exactly(tmp_path):
    cfg = RunConfig.from_dict({"preset": "fashion/demo/gpd_dkd", "seed": 3, "milestones": "5,9", "lr": 0.1 + 0.2,
                               "out_dir": str(tmp_path), "train_per_class": None})
    from workbench.config import parse_overrides

    again = RunConfig.from_dict(parse_overrides(train_args(cfg.to_dict())))
    assert again.to_dict() == dict(cfg.to_dict(), preset="") and again.run_dir() == cfg.run_dir()


def test_job_process_imports_no_torch():
    code = "import sys, workbench.sweep.job, workbench.sweep.folder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)},
                         cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_error_line_is_the_clis_error_of_the_last_attempt(tmp_path):
    log = tmp_path / "c0.log"
    log.write_text("==== attempt 1 ====\nerror: old problem\n")
    since = log.stat().st_size
    with open(log, "a") as f:
        f.write("==== attempt 2 ====\nepoch 1/2 ...\nerror: training diverged: after epoch 1 non-finite loss\n")
    assert sf.error_line(log, since) == "training diverged: after epoch 1 non-finite loss"
    with open(log, "a") as f:
        f.write("Traceback (most recent call last):\n  File x\nRuntimeError: boom\n")
    assert sf.error_line(log, log.stat().st_size - 20) == "RuntimeError: boom"
    job = CellJob(str(tmp_path), "c0", {"epochs": 1}, str(tmp_path / "run"), threads=3, gpus="2,5")
    env = job.environment()
    assert env["OMP_NUM_THREADS"] == "3" and env["CUDA_VISIBLE_DEVICES"] == "2,5"
