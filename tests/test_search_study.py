"""A distiller search end to end (issue 27): trials on the validation split only (the test set is
never built, the split is disjoint from the test set), the best trial as a preset, and a search
killed with kill -9 resumes to the same number of trials."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from workbench import data, search
from workbench.config import RunConfig
from workbench.data.base import DatasetEntry
from workbench.experiment import data_options

from conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
BASE = {k: v for k, v in FAST.items() if k not in ("epochs", "progress")}


def spec(name: str, trials: int, executor: str, **study) -> dict:
    return dict(name=name, base=dict(BASE, epochs=5), proxy=dict(epochs=2, val_per_class=2, val_seed=3, probe_samples=20),
                space=dict(method=["kd", "composed"], kd_T={"float": [1, 8], "log": True}),
                composed=dict(tap=["logits", "stage2"], transform=["none", "sattn"], distance=["kl", "mse"],
                              weight={"float": [0.1, 10], "log": True}),
                study=dict(trials=trials, executor=executor, startup_trials=1, **study))


def contents(ds) -> set:
    return {ds[i][0].numpy().tobytes() for i in range(len(ds))}


def test_a_search_scores_on_validation_only_and_writes_the_best_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    built = []
    original = DatasetEntry.build

    def spy(self, split, **options):
        built.append((self.name, split))
        return original(self, split, **options)

    monkeypatch.setattr(DatasetEntry, "build", spy)
    s = search.check(search.parse(spec("val-only", 2, "debug")))
    study = search.run(s, checked=True, log=lambda *_: None)
    assert search.counted(study) == 2
    assert built and {split for _, split in built} == {"train"}  # the test set was never built
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert trials
    for t in trials:  # every score came from validation records (epoch_scores refuses any other split)
        recs = search.read_records(Path(t.user_attrs["run_dir"]))
        assert {r["split"] for r in recs if r["kind"] == "eval"} == {"val"}
        assert t.value == pytest.approx(search.epoch_scores(recs, s.objective)[2], abs=0)
    best = max(trials, key=lambda t: t.value)
    cfg = RunConfig.from_dict({"preset": "search/val-only/best"})
    assert cfg.epochs == 5 and cfg.eval_on == "test" and cfg.val_per_class == 0  # full budget
    assert cfg.method == best.params["method"]
    # the validation split a trial scored on is disjoint from the test set (content-level)
    monkeypatch.setattr(DatasetEntry, "build", original)
    tcfg = RunConfig.from_dict(best.user_attrs["config"])
    opts = dict(data_options(tcfg), augment=False)
    _, val = data.splits(tcfg.dataset, opts, tcfg.val_per_class, tcfg.val_seed, eval_on="val")
    test = data.build(tcfg.dataset, "test", **{k: v for k, v in opts.items() if k != "augment"})
    v, t = contents(val), contents(test)
    assert len(v) == tcfg.val_per_class * 10 and not v & t


def _journal_states(folder: Path) -> list:
    if not (folder / "study.journal").exists():
        return []
    try:
        return [t.state for t in search.load_study(folder).get_trials(deepcopy=False)]
    except Exception:  # noqa: BLE001 -- the file is being created
        return []


@pytest.mark.slow
def test_a_search_killed_with_kill_9_resumes_to_the_same_number_of_trials(tmp_path):
    """The search process runs trials as local submitit jobs; it is killed with SIGKILL while a
    trial runs; the same command then ends with exactly ``trials`` counted trials, the interrupted
    one run again with its parameters."""
    trials = 3
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec("killed", trials, "local", parallel=1, pruner="none")))
    env = dict(os.environ, WORKBENCH_RUNS=str(tmp_path / "runs"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "workbench", "search", str(path)]
    folder = tmp_path / "runs" / "searches" / "killed"
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # one trial done and the next running: kill -9 then
        states = _journal_states(folder)
        if TrialState.COMPLETE in states and states[-1] == TrialState.RUNNING:
            break
        assert first.poll() is None, first.stdout.read().decode()
        time.sleep(0.5)
    else:
        first.kill()
        pytest.fail("the search never reached its second trial")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = search.load_study(folder).trials
    running = [t for t in killed_at if t.state == TrialState.RUNNING]
    assert running  # the journal holds a trial the dead process never finished
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming: 1 trial(s) left running by the killed search" in again.stdout
    study = search.load_study(folder)
    assert search.counted(study) == trials  # the same number of trials as an uninterrupted search
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert [t.number for t in interrupted] == [t.number for t in running]
    rerun = [t for t in study.trials if t.user_attrs.get("resumes") == running[0].number]
    assert len(rerun) == 1 and rerun[0].params == running[0].params and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].user_attrs["run_dir"] == running[0].user_attrs["run_dir"]  # the same run folder, resumed
    assert (folder / "best.json").exists()


def test_a_pruned_trial_on_the_local_executor_stops_its_training(tmp_path, monkeypatch):
    """Pruning must save the time it claims: the training of a pruned cell stops at its next safe
    point (interrupted, resumable), long before its last epoch."""
    from workbench.search.space import trial_config
    from workbench.search.study import Executor, prepare_folder, stop_cell, trial_plan
    from workbench.sweep import folder as sf

    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    s = search.parse(dict(spec("stop", 1, "local", parallel=1), proxy=dict(epochs=40, val_per_class=2,
                                                                             probe_samples=20)))
    folder = prepare_folder(s)
    plan = trial_plan(folder, 0, trial_config(s, {"method": "kd"}, gpd=False, terms=None), s)
    run_dir = plan.cells[0].run_dir
    # as a search started in the background (`... &`): its shell ignores SIGINT, and an ignored
    # signal is inherited by every process it starts
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        job, _ = Executor(folder, s).start(plan)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 300
    while sf.epochs_done(run_dir) < 1:
        assert time.monotonic() < deadline and not job.done(), "the trial never finished an epoch"
        time.sleep(0.2)
    stop_cell(plan, job)
    while not job.done():
        assert time.monotonic() < deadline, "the pruned trial's job did not end"
        time.sleep(0.2)
    assert sf.epochs_done(run_dir) < 40 // 2  # stopped, not trained to the end
    assert sf.read_state(plan.dir, "c0")["state"] == sf.INTERRUPTED  # not failed, not requeued
