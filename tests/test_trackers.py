"""Trackers (log=tensorboard | wandb): they receive the records of metrics.jsonl (the source of
truth), a resumed run shows each epoch once, a missing package is one line naming the pip extra
before any work, and ``log`` is a runtime key (same run folder)."""
import builtins
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.config import RunConfig
from workbench.engine import trackers
from workbench.engine.metrics import MetricsLog, read_metrics
from workbench.experiment import run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset="digits", method="ce", teacher="none", student="resnet8", epochs=2, train_per_class=5,
            probe_every=0, progress=False)


def test_scalar_names():
    assert trackers.scalars({"kind": "train", "epoch": 1, "split": "train", "role": "student", "loss": 2.5,
                             "lr": 0.1, "memory_format": "channels_last", "top1": 10.0}) == \
        {"train/loss": 2.5, "train/lr": 0.1, "train/top1": 10.0}
    assert trackers.scalars({"kind": "eval", "epoch": 1, "role": "dynamic_teacher", "top1": 50.0, "n": 100,
                             "logits_from": "cls"}) == {"eval/dynamic_teacher/top1": 50.0}
    assert trackers.scalars({"kind": "gap", "epoch": 1, "pair": "T_s-S", "metric": "kl", "value": 0.5}) == \
        {"gap/T_s-S/kl": 0.5}
    assert trackers.scalars({"kind": "init", "epoch": 0, "blocks": [1]}) == {}
    assert trackers.scalars({"kind": "eval", "epoch": 1, "role": "s", "top1": None, "loss": float("nan")}) == {}


def test_log_is_a_runtime_key():
    assert RunConfig.from_dict(dict(TINY, log="tensorboard")).run_dir() == RunConfig.from_dict(TINY).run_dir()


class Recorder(trackers.Tracker):
    name = "recorder"

    def __init__(self):
        self.records, self.truncated = [], []

    def log(self, records):
        self.records += records

    def truncate_after(self, epoch):
        self.truncated.append(epoch)


def test_metrics_log_sends_every_appended_record_and_drops_a_failing_tracker(tmp_path):
    rec, notes = Recorder(), []

    class Broken(trackers.Tracker):
        name = "broken"

        def log(self, records):
            raise OSError("disk full")

    log = MetricsLog(tmp_path, trackers=[rec, Broken()], note=notes.append)
    log.append([{"kind": "train", "epoch": 1, "loss": 1.0}])
    log.append(r for r in [{"kind": "eval", "epoch": 1, "role": "student", "top1": 5.0}])  # generators too
    assert rec.records == read_metrics(tmp_path)
    assert len(notes) == 1 and "log=broken switched off" in notes[0] and len(log.trackers) == 1
    log.truncate_after(0)
    assert rec.truncated == [0] and read_metrics(tmp_path) == []


def test_tensorboard_holds_the_records_of_a_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = dict(TINY, out_dir=str(tmp_path), log="tensorboard", epochs=3)
    res = run(cfg, log=lambda *_: None)
    recs = read_metrics(res.run_dir)
    acc = EventAccumulator(str(res.run_dir / "tensorboard"))
    acc.Reload()
    for r in recs:
        for tag, value in trackers.scalars(r).items():
            events = [e for e in acc.Scalars(tag) if e.step == r["epoch"]]
            assert len(events) == 1 and events[0].value == pytest.approx(value, rel=1e-6), tag  # float32 events


def test_tensorboard_purges_the_epochs_a_resumed_run_repeats(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, trackers=trackers.build("tensorboard", tmp_path))
    log.append([{"kind": "train", "epoch": e, "loss": float(e)} for e in (1, 2, 3)])
    log.close()
    again = MetricsLog(tmp_path, trackers=trackers.build("tensorboard", tmp_path))
    again.truncate_after(1)  # resume from the epoch-1 checkpoint: epochs 2 and 3 are re-run
    again.append([{"kind": "train", "epoch": e, "loss": 10.0 * e} for e in (2, 3)])
    again.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_wandb_gets_the_records_by_epoch(tmp_path, monkeypatch):
    """With a stand-in wandb module: init offline in the run folder, scalars against ``epoch``."""
    calls = {"init": [], "log": [], "define": []}

    class FakeRun:
        def define_metric(self, *a, **k):
            calls["define"].append((a, k))

        def log(self, values):
            calls["log"].append(values)

        def finish(self):
            calls["finish"] = True

    class FakeWandb:
        @staticmethod
        def init(**kw):
            calls["init"].append(kw)
            return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    res = run(dict(TINY, out_dir=str(tmp_path), log="wandb"), log=lambda *_: None)
    (kw,) = calls["init"]
    assert kw["mode"] == "offline" and kw["dir"] == str(res.run_dir) and kw["resume"] == "allow"
    assert calls["define"][1] == (("*",), {"step_metric": "epoch"}) and calls["finish"]
    sent = {}
    for values in calls["log"]:
        sent.setdefault(values["epoch"], {}).update(values)
    for r in read_metrics(res.run_dir):
        for tag, value in trackers.scalars(r).items():
            assert sent[r["epoch"]][tag] == value, tag
    monkeypatch.setenv("WANDB_API_KEY", "x")
    assert trackers.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert trackers.wandb_mode() == "disabled"


def test_wandb_offline_for_real(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    res = run(dict(TINY, out_dir=str(tmp_path), log="wandb", epochs=1), log=lambda *_: None)
    assert list((res.run_dir / "wandb").glob("offline-run-*")), list((res.run_dir / "wandb").iterdir())


@pytest.mark.parametrize("kind, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, kind, module):
    real_import = builtins.__import__

    def no_tracker(name, *args, **kwargs):
        if name == module or name.startswith(module + ".") or name in ("tensorboard", "wandb"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(builtins, "__import__", no_tracker)
    from workbench.config import ConfigError
    from workbench.experiment import prepare

    with pytest.raises(ConfigError) as e:
        prepare(RunConfig.from_dict(dict(TINY, out_dir=str(tmp_path), log=kind)))
    msg = str(e.value)
    assert msg.startswith(f"log={kind}: the {kind} package is not installed") and "pip install -e '.[track]'" in msg
    assert "\n" not in msg and not any(tmp_path.iterdir())


def test_cli_missing_tracker_exits_2_before_any_work(tmp_path):
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def imp(n, *a, **k):\n"
            "    if n.split('.')[0] == 'wandb': raise ImportError('No module named wandb')\n"
            "    return real(n, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "from workbench.cli import main; sys.exit(main(sys.argv[1:]))")
    args = [f"{k}={v}" for k, v in dict(TINY, out_dir=str(tmp_path), log="wandb").items()]
    r = subprocess.run([sys.executable, "-c", code, "train", *args], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        r.stderr.strip()] and "pip install -e '.[track]'" in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())
