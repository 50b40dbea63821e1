"""Run integrity (issue 11): no lost runs, no silently wrong numbers, one clear line for every
failure. One test (or a few) per case of the issue, numbered as there; each failed on the code
before the fix. Tiny digits / fake-folder runs, seconds each.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from workbench import data, models
from workbench.config import ConfigError, RunConfig
from workbench.engine import CheckpointError, NonFiniteLossError, read_metrics
from workbench.engine.checkpoint import BEST, LAST, load_checkpoint
from workbench.engine.lock import LOCK_FILE, RunLock, RunLockedError
from workbench.engine.metrics import METRICS_FILE, MetricsError
from workbench.experiment import prepare, run, teacher_config

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"time", "images_per_s"}
QUIET = dict(log=lambda *_: None)
SUBPROCESS_TIMEOUT = 300


def strip(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def _env():
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT delivered and handled as a terminal's Ctrl-C would be. An
    ignored or blocked signal is inherited across fork and exec, and the test process may carry
    one from an earlier test's libraries; the CLI's own Ctrl-C handling is what is tested here."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "train", *[f"{k}={v}" for k, v in args.items()]],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_as_from_a_terminal)


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock (until killed)."""
    code = ("import sys, time; from workbench.engine.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = SUBPROCESS_TIMEOUT) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended too early:\n" + proc.stdout.read()


def _records_on_disk(run_dir: Path) -> list[dict]:
    try:
        return read_metrics(run_dir)
    except (MetricsError, FileNotFoundError):
        return []


# ------------------------------------------------------------------ 1. one run per folder
def test_1_a_second_run_in_a_locked_folder_is_refused_naming_the_holder(fast_cfg):
    """A live holder of the run folder -> the second run stops with one line naming its pid,
    before any teacher training or file writing; once the holder is killed (kill -9 leaves its
    lock file behind) the same command runs."""
    cfg = dict(fast_cfg, method="kd", epochs=1, name="shared")
    run_dir = Path(fast_cfg["out_dir"]) / "shared"
    holder = _hold_lock(run_dir)
    try:
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid}\b"):
            run(cfg, **QUIET)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # nothing written
        assert not (Path(fast_cfg["out_dir"]) / "teachers").exists()  # refused before the teacher phase
    finally:
        _kill(holder)
    assert (run_dir / LOCK_FILE).read_text().strip() == str(holder.pid)  # stale: its process is dead
    res = run(cfg, **QUIET)
    assert res.summary["student"]["last_top1"] >= 0 and not (run_dir / LOCK_FILE).exists()


def test_1_two_identical_commands_at_once_one_runs_one_is_refused(tmp_path):
    """Two CLI runs of one folder started together: exactly one trains (every record logged
    once), the other exits 2 with one line naming the first one's pid."""
    args = dict(method="kd", dataset="digits", train_per_class=10, teacher="resnet8", student="resnet8",
                epochs=2, teacher_epochs=1, batch_size=32, progress="false", probe_samples=50,
                out_dir=tmp_path, name="twice")
    procs = [_cli(args), _cli(args)]
    outs = [p.communicate(timeout=SUBPROCESS_TIMEOUT)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert f"in use by process {procs[winner].pid}" in outs[loser] and "Traceback" not in outs[loser], outs[loser]
    keys = [(r["kind"], r["epoch"], r.get("role"), r.get("pair"), r.get("metric"), r.get("probe"))
            for r in read_metrics(tmp_path / "twice")]
    assert len(keys) == len(set(keys))


def test_1_a_teacher_being_trained_into_the_cache_is_locked_too(fast_cfg):
    """The cached teacher's folder is locked while it trains: a second student run that needs
    the same teacher is refused naming the trainer's pid instead of training it twice."""
    cfg = RunConfig.from_dict(dict(fast_cfg, method="kd", epochs=1))
    teacher_dir = teacher_config(cfg, "resnet8").run_dir()
    holder = _hold_lock(teacher_dir)
    try:
        with pytest.raises(RunLockedError, match=rf"{teacher_dir.name} is in use by process {holder.pid}"):
            run(cfg, **QUIET)
    finally:
        _kill(holder)


def test_1_under_ddp_rank_0_holds_the_lock_and_every_rank_stops_on_refusal(tmp_path):
    """torchrun with 2 processes on a folder held by this process: rank 0 finds the lock taken,
    broadcasts the refusal, both ranks exit with the one line (no rank waits forever)."""
    run_dir = tmp_path / "ddp"
    args = [f"{k}={v}" for k, v in dict(method="ce", dataset="digits", train_per_class=4, student="resnet8",
                                       epochs=1, batch_size=20, progress="false", probe_every=0,
                                       out_dir=tmp_path, name="ddp").items()]
    with RunLock(run_dir):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "workbench", "train", *args], cwd=ROOT, env=_env(), capture_output=True,
                              text=True, timeout=SUBPROCESS_TIMEOUT)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # nothing written by either rank
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and out.count(f"in use by process {os.getpid()}") == 2, out[-3000:]


def test_1_lock_is_exclusive_within_a_process_and_released():
    """Two holders of one folder never coexist, even in one process; release frees it."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        first = RunLock(d).acquire()
        with pytest.raises(RunLockedError, match=str(os.getpid())):
            RunLock(d).acquire()
        first.release()
        RunLock(d).acquire().release()


# ------------------------------------------------------------------ 2. divergence
def test_2_lr_1e6_divergence_is_stopped_before_any_save_and_before_the_probes(fast_cfg):
    """lr=1e6 with grad_clip=5: every training loss is finite, the weights are not, the
    evaluation is NaN. The run stops after epoch 1 with no checkpoint written (there is no good
    one) and the probes (scikit-learn) never see the NaN features."""
    cfg = dict(fast_cfg, method="ce", lr=1e6, grad_clip=5, epochs=2, name="diverged")
    with pytest.raises(NonFiniteLossError, match=r"after epoch 1 non-finite.*no checkpoint was written yet"):
        run(cfg, **QUIET)
    run_dir = Path(fast_cfg["out_dir"]) / "diverged"
    assert not (run_dir / LAST).exists() and not (run_dir / BEST).exists()
    assert all(r["epoch"] == 0 or r["kind"] == "train" for r in read_metrics(run_dir))  # no NaN eval logged


def _blow_up_after(trainer, epoch: int, scale: float):
    """Weights x ``scale`` (finite) right after ``epoch``'s training, as a diverging lr would."""
    original = trainer.train_epoch

    def train_epoch(e):
        record = original(e)
        if e == epoch:
            with torch.no_grad():
                for p in trainer.method.parameters():
                    if p.requires_grad:
                        p.mul_(scale)
        return record
    trainer.train_epoch = train_epoch


def test_2_divergence_after_a_good_epoch_keeps_that_checkpoint_and_names_it(fast_cfg, tmp_path):
    """Finite but huge weights after epoch 2's training -> non-finite evaluation: the error names
    last.pt (epoch 1), which holds finite weights; best.pt too."""
    from workbench.engine import Trainer
    from workbench.methods import build_method

    cfg = RunConfig.from_dict(dict(fast_cfg, method="ce", epochs=3))
    opts = cfg.dataset_options()
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_method(cfg, models.build("resnet8", 10, 1)), data.build("digits", "train", **opts),
                      data.build("digits", "test", **opts), tmp_path / "run")
    _blow_up_after(trainer, epoch=2, scale=1e37)
    with pytest.raises(NonFiniteLossError, match=r"after epoch 2 .*last good checkpoint is .*last\.pt \(epoch 1\)"):
        trainer.fit()
    for name in (LAST, BEST):
        ckpt = load_checkpoint(tmp_path / "run" / name)
        assert ckpt["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ckpt["method"].values() if v.is_floating_point())


# ------------------------------------------------------------------ 3. imagefolder labels
def _image_folder(root: Path, splits: dict[str, list[str]], per_class: int = 3, seed: int = 0) -> Path:
    """ImageNet-style folders of tiny PNGs: ``{split dir: [class folders]}``."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split, classes in splits.items():
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_3_imagefolder_val_missing_a_class_is_an_error_naming_it(tmp_path):
    root = _image_folder(tmp_path / "imgs", {"train": ["ant", "bee", "cat"], "val": ["ant", "cat", "dog"]})
    with pytest.raises(ValueError, match=r"missing \['bee'\], extra \['dog'\]"):
        data.check_available("imagefolder", root=str(root))
    with pytest.raises(ConfigError, match=r"dataset: .*missing \['bee'\]"):
        prepare(RunConfig.from_dict(dict(dataset="imagefolder", data_root=str(root), method="ce",
                                         student="resnet8", image_size=8, out_dir=str(tmp_path / "runs"))))


def test_3_imagefolder_splits_share_one_class_index_from_train(tmp_path):
    root = _image_folder(tmp_path / "imgs", {"train": ["ant", "bee", "cat"], "val": ["ant", "bee", "cat"]})
    shutil.rmtree(root / "val" / "bee")
    (root / "val" / "bee").mkdir()  # present but empty: the index must still come from train
    (root / "val" / "bee" / "x.png").write_bytes((root / "train" / "bee" / "0.png").read_bytes())
    train, test = (data.build("imagefolder", split, root=str(root), image_size=8) for split in ("train", "test"))
    assert train.class_to_idx == test.class_to_idx == {"ant": 0, "bee": 1, "cat": 2}
    assert {Path(p).parent.name: y for p, y in test.samples} == {"ant": 0, "bee": 1, "cat": 2}


# ------------------------------------------------------------------ 4. stale cached teacher
def test_4_a_teacher_cached_for_another_data_root_is_not_reused(tmp_path):
    """Same command on another data folder: the cached teacher of the first folder is not used
    (a second teacher is trained and cached separately)."""
    base = dict(dataset="imagefolder", method="kd", teacher="resnet8", student="resnet8", image_size=8, epochs=1,
                teacher_epochs=1, batch_size=8, probe_every=0, progress=False, out_dir=str(tmp_path / "runs"))
    logs = []
    for i, classes in enumerate((["a", "b"], ["c", "d"])):
        root = _image_folder(tmp_path / f"data{i}", {"train": classes, "val": classes}, seed=i)
        run(dict(base, data_root=str(root)), log=logs.append)
    assert sum("training teacher" in m for m in logs) == 2, logs
    assert len(list((tmp_path / "runs" / "teachers").iterdir())) == 2


def test_4_a_cached_teacher_whose_recorded_config_differs_is_refused(fast_cfg):
    cfg = RunConfig.from_dict(dict(fast_cfg, method="kd", epochs=1))
    run(cfg, **QUIET)
    recorded = teacher_config(cfg, "resnet8").run_dir() / "config.json"
    saved = json.loads(recorded.read_text())
    recorded.write_text(json.dumps(dict(saved, lr=0.5)))
    with pytest.raises(ConfigError, match=r"cached teacher .* trained with other settings \(lr: saved 0.5 vs now 0.05"):
        prepare(cfg.replace(seed=1))


def test_4_students_differing_only_in_method_settings_share_the_teacher(fast_cfg):
    logs = []
    run(dict(fast_cfg, method="kd", kd_T=2.0, epochs=1, probe_every=0), log=logs.append)
    run(dict(fast_cfg, method="gpd", base="kd", ratio=1.5, grad_clip=0, epochs=1, probe_every=0), log=logs.append)
    assert sum("training teacher" in m for m in logs) == 1, logs


# ------------------------------------------------------------------ 5. metrics writes
def _enospc_on_metrics(monkeypatch, when):
    """os.write on metrics.jsonl writes half its bytes, then fails with ENOSPC, while ``when(data)``."""
    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(METRICS_FILE) and when(bytes(data)):
            real(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)


def test_5_disk_full_while_logging_is_all_or_nothing_and_resumes_exactly(fast_cfg, monkeypatch):
    """ENOSPC in the middle of epoch 2's eval records: a clean 'free space, then rerun' error
    naming metrics.jsonl, no torn line left; the rerun ends exactly like an uninterrupted run."""
    cfg = dict(fast_cfg, method="ce", epochs=2, probe_every=0)
    _enospc_on_metrics(monkeypatch, lambda b: b'"kind": "eval", "epoch": 2' in b)
    with pytest.raises(CheckpointError, match=rf"could not write .*{METRICS_FILE}.*No space left.*Free disk space"):
        run(dict(cfg, name="full"), **QUIET)
    monkeypatch.undo()
    path = Path(cfg["out_dir"]) / "full" / METRICS_FILE
    assert path.read_bytes().endswith(b"\n")
    assert all(json.loads(line) for line in path.read_text().splitlines())
    resumed = run(dict(cfg, name="full"), **QUIET)
    ref = run(dict(cfg, name="ref"), **QUIET)
    assert strip(resumed.records) == strip(ref.records)


def test_5_failed_metrics_write_is_a_one_line_cli_error(fast_cfg, monkeypatch, capsys):
    from workbench import cli

    _enospc_on_metrics(monkeypatch, lambda b: True)
    argv = ["train"] + [f"{k}={v}" for k, v in dict(fast_cfg, method="ce", epochs=1, probe_every=0).items()]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert METRICS_FILE in err and "Free disk space" in err and len(err.strip().splitlines()) == 1


def _crashed_run(fast_cfg, name: str):
    """A ce run killed inside epoch 2 (its epoch-1 checkpoint written)."""
    from workbench import experiment

    cfg = dict(fast_cfg, method="ce", epochs=2, probe_every=0, name=name)
    original = experiment.Trainer.train_epoch

    def crash(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, epoch)
    experiment.Trainer.train_epoch = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            run(cfg, **QUIET)
    finally:
        experiment.Trainer.train_epoch = original
    return cfg, Path(fast_cfg["out_dir"]) / name


def test_5_a_torn_last_line_from_a_crash_is_dropped_on_resume_with_a_note(fast_cfg):
    cfg, run_dir = _crashed_run(fast_cfg, "torn")
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write('{"kind": "train", "epoch": 2, "split": "tr')  # the write a kill -9 cut short
    notes = []
    resumed = run(cfg, log=notes.append)
    assert any("dropped an incomplete last line" in n and METRICS_FILE in n for n in notes), notes
    ref = run(dict(cfg, name="ref"), **QUIET)
    assert strip(resumed.records) == strip(ref.records)


def test_5_damaged_or_missing_metrics_of_an_existing_run_is_one_line_naming_file_and_line(fast_cfg):
    cfg, run_dir = _crashed_run(fast_cfg, "damaged")
    path = run_dir / METRICS_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + ['{"kind": "eval", "ep\n'] + lines[1:]))
    with pytest.raises(MetricsError, match=rf"{METRICS_FILE} line 2 is damaged"):
        prepare(RunConfig.from_dict(cfg))  # up front: before any teacher or training
    path.unlink()
    with pytest.raises(MetricsError, match=rf"{METRICS_FILE} is missing although .*last\.pt exists"):
        run(cfg, **QUIET)


# ------------------------------------------------------------------ 6. CIFAR folder contents
@pytest.mark.parametrize("content, problem", [
    (None, r"missing train, test, meta"),
    (b"not cifar", r"wrong checksum .*: train, test, meta"),
])
def test_6_wrong_cifar_folder_fails_the_up_front_check_saying_what_and_where(tmp_path, monkeypatch, content, problem):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    if content is not None:
        for name in ("train", "test", "meta"):
            (folder / name).write_bytes(content)
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.check_available("cifar100", download=False)
    msg = str(err.value)
    assert re.search(problem, msg), msg
    assert str(tmp_path / "data") in msg and "data_root=" in msg and "WORKBENCH_DATA" in msg
    assert "You can use download=True" not in msg  # torchvision's advice, wrong for a folder that exists


def test_6_a_cifar_folder_with_the_expected_checksums_passes(tmp_path, monkeypatch):
    import hashlib

    from workbench.data import cifar

    folder = tmp_path / cifar.FOLDER["cifar10"]
    folder.mkdir()
    expected = []
    for name, _ in cifar._expected_files("cifar10"):
        (folder / name).write_bytes(name.encode())
        expected.append((name, hashlib.md5(name.encode()).hexdigest()))
    monkeypatch.setattr(cifar, "_expected_files", lambda _name: expected)
    data.check_available("cifar10", root=str(tmp_path), download=False)
    (folder / expected[0][0]).write_bytes(b"changed")
    with pytest.raises(data.DatasetNotFoundError, match=rf"wrong checksum .*{expected[0][0]}"):
        data.check_available("cifar10", root=str(tmp_path), download=False)


# ------------------------------------------------------------------ 7. changed config, early
def test_7_a_changed_config_is_refused_before_any_teacher_work(fast_cfg):
    cfg = dict(fast_cfg, method="kd", epochs=1, name="mine")
    run(cfg, **QUIET)
    shutil.rmtree(Path(fast_cfg["out_dir"]) / "teachers")
    with pytest.raises(CheckpointError, match=r"different config \(lr: saved 0.05 vs now 0.1"):
        run(dict(cfg, lr=0.1), **QUIET)
    with pytest.raises(CheckpointError, match="resume=true"):
        run(dict(cfg, resume=False), **QUIET)
    assert not (Path(fast_cfg["out_dir"]) / "teachers").exists()  # no teacher was trained first


# ------------------------------------------------------------------ 10. run names
def _teacher_file(path: Path, arch: str = "resnet8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": models.build(arch, 10, 1).state_dict()}, path)
    return path


def test_10_default_names_never_share_a_folder_between_settings(tmp_path, monkeypatch):
    base = dict(dataset="digits", method="gpd", base="kd", teacher="resnet8x4", student="resnet8",
                source_classes="0,1,2,3,4", out_dir=str(tmp_path))
    variants = [{}, dict(epochs=60), dict(ratio=1.5), dict(source_classes="0,1,2"), dict(train_per_class=15),
                dict(lr=0.01), dict(base="dkd"), dict(teacher="resnet8")]
    dirs = [RunConfig.from_dict(dict(base, **v)).run_dir() for v in variants]
    assert len(set(dirs)) == len(dirs)
    same = RunConfig.from_dict(dict(base, progress=False, device="cpu", probe_every=3))  # runtime keys only
    assert same.run_dir() == dirs[0]
    assert RunConfig.from_dict(dict(base, base="auto", method="gpd")).run_dir() != dirs[0]  # auto = dkd here
    assert RunConfig.from_dict(dict(base, base="dkd")).run_dir() == RunConfig.from_dict(dict(base, base="auto")).run_dir()
    cifar = dict(dataset="cifar100", method="ce", student="resnet8")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "a"))
    in_a = RunConfig.from_dict(cifar).run_dir()
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "b"))
    assert RunConfig.from_dict(cifar).run_dir() != in_a


def test_10_a_key_added_later_at_its_default_keeps_every_run_name(tmp_path):
    """A later version that adds a config key (a new method's option) must name the same command's
    run folder -- and its cached teacher -- as before, so an upgrade resumes instead of silently
    starting over; the new key at another value is another run."""
    import dataclasses

    from workbench.experiment import teacher_config
    from workbench.naming import config_hash

    values = dict(dataset="digits", method="gpd", base="kd", teacher="resnet8x4", student="resnet8", epochs=7,
                  out_dir=str(tmp_path))
    now = RunConfig.from_dict(values)
    Later = dataclasses.make_dataclass("Later", [("some_new_key", int, dataclasses.field(default=3))], bases=(RunConfig,))
    later = Later(**{f.name: getattr(now, f.name) for f in dataclasses.fields(RunConfig)})
    assert config_hash(later) == config_hash(now)
    assert config_hash(teacher_config(later, "resnet8x4")) == config_hash(teacher_config(now, "resnet8x4"))
    assert config_hash(dataclasses.replace(later, some_new_key=4)) != config_hash(now)
    # an explicit default is the same run as an implicit one
    assert RunConfig.from_dict(dict(values, lr=RunConfig().lr)).run_dir() == now.run_dir()


def test_10_default_names_carry_the_resolved_teacher_architecture(tmp_path):
    a = _teacher_file(tmp_path / "save" / "models" / "resnet8_vanilla" / "ckpt_epoch_240.pth")
    b = _teacher_file(tmp_path / "save" / "models" / "resnet14_vanilla" / "ckpt_epoch_240.pth", "resnet14")
    ours = tmp_path / "teachers" / "x" / "student.pt"
    ours.parent.mkdir(parents=True)
    torch.save({"model": models.build("resnet8x4", 10, 1).state_dict(), "arch": "resnet8x4"}, ours)
    names = [RunConfig.from_dict(dict(dataset="digits", method="kd", teacher=str(t), student="resnet8")).default_name()
             for t in (a, b, ours)]
    assert [n.split("_")[1] for n in names] == ["resnet8-resnet8", "resnet14-resnet8", "resnet8x4-resnet8"]


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "/abs", ".hidden", ""])
def test_10_name_must_stay_inside_out_dir(tmp_path, name):
    if name == "":
        assert RunConfig.from_dict(dict(name=name, out_dir=str(tmp_path))).run_dir().parent == tmp_path
        return
    with pytest.raises(ConfigError, match=r"name: .* not a plain folder name"):
        RunConfig.from_dict(dict(name=name, out_dir=str(tmp_path)))


# ------------------------------------------------------------------ 11. minor
def test_11_ctrl_c_prints_one_line_and_the_rerun_resumes(tmp_path):
    # enough epochs that the signal sent after the first evaluation lands before the run ends
    args = dict(method="ce", dataset="digits", train_per_class=40, student="resnet8", epochs=8, batch_size=16,
                progress="false", probe_every=0, out_dir=tmp_path, name="ctrlc")
    proc = _cli(args)
    _wait_for(lambda: any(r["kind"] == "eval" for r in _records_on_disk(tmp_path / "ctrlc")), proc)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=SUBPROCESS_TIMEOUT)[0]
    assert proc.returncode == 130 and "interrupted; rerun the same command to resume" in out, out
    assert "Traceback" not in out, out
    again = _cli(args)
    out = again.communicate(timeout=SUBPROCESS_TIMEOUT)[0]
    assert again.returncode == 0 and (tmp_path / "ctrlc" / "summary.json").exists(), out


def test_11_stale_checkpoint_temp_files_are_removed_on_resume(fast_cfg):
    cfg, run_dir = _crashed_run(fast_cfg, "tmpfiles")
    stale = [run_dir / ".last.pt.tmp99999", run_dir / ".metrics.jsonl.tmp4242"]
    for p in stale:
        p.write_bytes(b"\0" * 100)
    keep = run_dir / "notes.tmp1"  # not a temp file of ours
    keep.write_text("mine")
    run(cfg, **QUIET)
    assert not any(p.exists() for p in stale) and keep.exists()


def test_11_corrupt_last_pt_advice_mentions_an_intact_best_pt(fast_cfg):
    cfg, run_dir = _crashed_run(fast_cfg, "corrupt")
    (run_dir / LAST).write_bytes((run_dir / LAST).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"corrupt or truncated.*{BEST} is intact \(epoch 1\): copy it over {LAST}"):
        run(cfg, **QUIET)
    shutil.copy(run_dir / BEST, run_dir / LAST)  # following the advice resumes
    assert run(cfg, **QUIET).summary["student"]["last_top1"] >= 0


def test_11_garbage_cached_teacher_is_one_line_without_weights_only_advice(fast_cfg):
    cfg = RunConfig.from_dict(dict(fast_cfg, method="kd", epochs=1, probe_every=0))
    run(cfg, **QUIET)
    cached = teacher_config(cfg, "resnet8").run_dir() / "student.pt"
    cached.write_bytes(b"garbage" * 100)
    with pytest.raises(ConfigError) as err:
        run(cfg.replace(seed=1), **QUIET)
    msg = str(err.value)
    assert str(cached) in msg and "corrupt" in msg and "delete" in msg and "weights_only" not in msg, msg


def test_11_negative_branch_count_is_a_sensible_message():
    with pytest.raises(ConfigError, match=r"branches: '-1' is a negative count; use 'default', a count >= 0"):
        RunConfig.from_dict(dict(method="gpd", branches="-1"))


def test_11_runs_refused_up_front_leave_no_folders(fast_cfg, monkeypatch):
    DiskUsage = namedtuple("DiskUsage", "total used free")
    out = Path(fast_cfg["out_dir"]) / "deep" / "er"
    monkeypatch.setattr(shutil, "disk_usage", lambda p: DiskUsage(10**12, 10**12 - 1024, 1024))
    with pytest.raises(ConfigError, match="free"):
        run(dict(fast_cfg, method="ce", out_dir=str(out)), **QUIET)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="does not exist"):
        run(dict(fast_cfg, method="kd", teacher=str(out / "t.pth"), out_dir=str(out)), **QUIET)
    assert not Path(fast_cfg["out_dir"]).exists()

