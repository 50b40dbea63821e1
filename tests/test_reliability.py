"""Reliability: kill -9 of a GPD run at two points, corrupt/truncated/mismatched checkpoints
(fuzzed), disk full before and during training.

What each test proves is in its docstring; the counts of fuzzed cases are module constants.
Nothing may be lost: a resumed run equals the uninterrupted one, a failed write leaves the
previous checkpoint loadable, a bad file always ends in a clear error naming it.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench import models
from workbench.config import ConfigError, RunConfig
from workbench.engine import CheckpointError, read_metrics
from workbench.engine.checkpoint import LAST, STUDENT, load_checkpoint
from workbench.experiment import prepare, run

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"time", "images_per_s"}
TRUNCATION_POINTS = 64  # evenly spaced, plus the first and last bytes
RANDOM_FILES = 60
BYTE_FLIPS = 60
FLIP_SEED = 1234


def strip(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        same = torch.equal(value, b[key]) if torch.is_tensor(value) else value == b[key]
        assert same, key


# ------------------------------------------------------------------------------ kill -9 (GPD)
GPD_RUN = dict(method="gpd", base="kd", dataset="digits", train_per_class=40, teacher="resnet8", student="resnet8",
               epochs=2, teacher_epochs=1, batch_size=16, lr=0.05, schedule="cosine", probe_samples=100,
               progress="false", branches=2, grad_clip=5)


def _cli(args: dict) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "workbench", "train", *[f"{k}={v}" for k, v in args.items()]],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl of a live run, tolerating a half-written last line."""
    path = run_dir / "metrics.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _in_training(run_dir: Path, epoch: int) -> bool:
    """True while epoch ``epoch`` is being trained: epoch-1's evaluation is logged, its train
    record is not yet."""
    recs = _records(run_dir)
    return (any(r.get("kind") == "eval" and r.get("epoch") == epoch - 1 for r in recs)
            and not any(r.get("kind") == "train" and r.get("epoch") == epoch for r in recs))


def _kill_during(proc: subprocess.Popen, run_dir: Path, epoch: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not _in_training(run_dir, epoch):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()
    time.sleep(0.3)  # a few steps into the epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


# ~35 s idle (ref run + two killed starts + resume)
def test_gpd_killed_mid_epoch_twice_resumes_to_identical_weights_and_metrics(tmp_path):
    """kill -9 inside epoch 1 (before any checkpoint exists) and again inside epoch 2 (after the
    epoch-1 checkpoint); the twice-resumed GPD run must end with bit-identical T_d/student
    tensors, optimizer-independent metrics and the same deployable student as an uninterrupted
    run. (tests/test_trainer.py kills a GPD run once, between epochs 1 and 2.)"""
    ref = _cli(dict(GPD_RUN, out_dir=tmp_path, name="ref"))
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    run_dir = tmp_path / "killed"
    kills = []
    for epoch in (1, 2):
        proc = _cli(dict(GPD_RUN, out_dir=tmp_path, name="killed"))
        _kill_during(proc, run_dir, epoch)
        ckpt_epoch = load_checkpoint(run_dir / LAST)["epoch"] if (run_dir / LAST).exists() else 0
        kills.append((epoch, ckpt_epoch, _in_training(run_dir, epoch)))
    assert not (run_dir / "summary.json").exists()
    assert kills[0][1] == 0, f"first kill landed after the epoch-1 checkpoint: {kills}"
    assert any(mid for _, _, mid in kills), f"no kill landed mid-epoch: {kills}"
    resumed = _cli(dict(GPD_RUN, out_dir=tmp_path, name="killed"))
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    a, b = load_checkpoint(tmp_path / "ref" / LAST), load_checkpoint(run_dir / LAST)
    assert a["epoch"] == b["epoch"] == GPD_RUN["epochs"]
    assert_same_state(a["method"], b["method"])
    assert_same_state(a["model"], b["model"])
    assert_same_state(torch.load(tmp_path / "ref" / STUDENT)["model"], torch.load(run_dir / STUDENT)["model"])
    ref_records, got = strip(read_metrics(tmp_path / "ref")), strip(read_metrics(run_dir))
    assert got == ref_records



def _crash_in_epoch(method, epoch: int):
    original = method.on_epoch_start

    def hook(e, epochs):
        original(e, epochs)
        if e == epoch:
            raise KeyboardInterrupt("simulated kill")
    method.on_epoch_start = hook


def test_restart_before_first_checkpoint_logs_every_record_once(fast_cfg):
    """A run that dies inside epoch 1 (no checkpoint yet) and is started again must end with the
    same records as an uninterrupted run (no duplicated epoch-0 evaluation)."""
    from workbench import data
    from workbench.engine import Trainer
    from workbench.methods import build_method

    cfg = RunConfig.from_dict(dict(fast_cfg, method="ce", epochs=1, probe_every=0))
    opts = cfg.dataset_options()
    train, test = data.build("digits", "train", **opts), data.build("digits", "test", **opts)

    def trainer(name, crash=False):
        torch.manual_seed(0)
        method = build_method(cfg, models.build("resnet8", 10, 1))
        if crash:
            _crash_in_epoch(method, 1)
        return Trainer(cfg, method, train, test, Path(fast_cfg["out_dir"]) / name)

    with pytest.raises(KeyboardInterrupt):
        trainer("crashed", crash=True).fit()
    assert not (Path(fast_cfg["out_dir"]) / "crashed" / LAST).exists()
    trainer("crashed").fit()
    trainer("ref").fit()
    assert strip(read_metrics(Path(fast_cfg["out_dir"]) / "crashed")) == strip(read_metrics(Path(fast_cfg["out_dir"]) / "ref"))


# ------------------------------------------------------------------------------ corrupt checkpoints
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny finished CE run: its last.pt (resume checkpoint) and student.pt (weights file)."""
    from conftest import FAST

    out = tmp_path_factory.mktemp("ckpt")
    cfg = dict(FAST, method="ce", epochs=1, probe_every=0, out_dir=str(out / "runs"), name="finished")
    res = run(cfg, log=lambda *_: None)
    return cfg, res.run_dir


def _truncation_points(n: int) -> list[int]:
    step = max(1, n // TRUNCATION_POINTS)
    return sorted(set(range(0, 8)) | set(range(0, n, step)) | set(range(n - 8, n)))


def test_load_checkpoint_truncated_anywhere_is_a_clear_error(finished_run, tmp_path):
    """Every truncation point of a real last.pt -> CheckpointError naming the file."""
    blob = (finished_run[1] / LAST).read_bytes()
    bad = tmp_path / "cut.pt"
    points = _truncation_points(len(blob))
    assert len(points) >= TRUNCATION_POINTS
    for cut in points:
        bad.write_bytes(blob[:cut])
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(bad)
        assert str(bad) in str(err.value), (cut, str(err.value))


def test_models_load_truncated_anywhere_is_a_clear_error(finished_run, tmp_path):
    """Every truncation point of a real student.pt -> ValueError naming the file (models.load)."""
    blob = (finished_run[1] / STUDENT).read_bytes()
    bad = tmp_path / "cut_student.pt"
    for cut in _truncation_points(len(blob)):
        bad.write_bytes(blob[:cut])
        with pytest.raises(ValueError) as err:
            models.load("resnet8", bad, num_classes=10, in_channels=1)
        assert bad.name in str(err.value), (cut, str(err.value))


@settings(max_examples=RANDOM_FILES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(min_size=0, max_size=4096) | st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b))
def test_random_bytes_are_refused_by_both_loaders(tmp_path, blob):
    """Arbitrary bytes (also ones that start like a zip file) -> a clear error naming the file
    from load_checkpoint (CheckpointError) and from models.load (ValueError)."""
    path = tmp_path / "random.pt"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="random"):
        models.load("resnet8", path, num_classes=10, in_channels=1)


def test_flipped_bits_are_detected_or_harmless(finished_run, tmp_path):
    """A single flipped bit anywhere in last.pt -> CheckpointError, or content identical to the
    original (a flip in zip padding). Never silently different weights."""
    src = finished_run[1] / LAST
    blob = src.read_bytes()
    good = load_checkpoint(src)
    rng = random.Random(FLIP_SEED)
    bad, silent = tmp_path / "flip.pt", []
    for _ in range(BYTE_FLIPS):
        pos, bit = rng.randrange(len(blob)), rng.randrange(8)
        data = bytearray(blob)
        data[pos] ^= 1 << bit
        bad.write_bytes(bytes(data))
        try:
            ckpt = load_checkpoint(bad)
        except CheckpointError as e:
            assert str(bad) in str(e)
            continue
        if any(not torch.equal(v, ckpt["model"][k]) for k, v in good["model"].items()):
            silent.append(pos)
    assert not silent, f"{len(silent)}/{BYTE_FLIPS} bit flips loaded silently with changed weights"


def test_resume_from_truncated_or_foreign_checkpoint_fails_and_keeps_the_file(finished_run, tmp_path):
    """Resume (through experiment.run) from a truncated last.pt at several offsets, or from a
    checkpoint whose method state belongs to another architecture under the same config ->
    CheckpointError naming the file; the file is left untouched (no silent fresh start)."""
    cfg, run_dir = finished_run
    cfg = dict(cfg, epochs=2)  # one more epoch: resume must read last.pt
    last = run_dir / LAST
    blob = last.read_bytes()
    try:
        for frac in (0.0, 0.1, 0.5, 0.9, 0.999):
            cut = blob[: int(len(blob) * frac)]
            last.write_bytes(cut)
            with pytest.raises(CheckpointError, match=str(last).replace(".", r"\.")):
                run(cfg, log=lambda *_: None)
            assert last.read_bytes() == cut
        # A checkpoint of resnet8x4 that carries this run's config: passes the config check,
        # then its method state does not fit resnet8.
        foreign = torch.load(io_bytes(blob), weights_only=True)
        foreign["config"] = RunConfig.from_dict(cfg).to_dict()
        foreign["effective"] = RunConfig.from_dict(cfg).effective()  # recorded beside it since effective values exist
        foreign["method"] = {f"student.{k}": v for k, v in models.build("resnet8x4", 10, 1).state_dict().items()}
        torch.save(foreign, last)
        before = last.read_bytes()
        with pytest.raises(CheckpointError, match=r"does not match this model/method"):
            run(cfg, log=lambda *_: None)
        assert last.read_bytes() == before
    finally:
        last.write_bytes(blob)


def io_bytes(blob: bytes):
    import io

    return io.BytesIO(blob)


# ------------------------------------------------------------------------------ disk full
DiskUsage = namedtuple("DiskUsage", "total used free")


def test_disk_full_is_refused_before_any_work(fast_cfg, monkeypatch):
    """~0 free bytes -> ConfigError about free space from prepare(), and run() trains nothing
    (not even the static teacher)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda p: DiskUsage(10**12, 10**12 - 1024, 1024))
    cfg = RunConfig.from_dict(dict(fast_cfg, method="kd"))
    with pytest.raises(ConfigError, match="free space"):
        prepare(cfg)
    with pytest.raises(ConfigError, match="out_dir: only .* MiB free"):
        run(cfg, log=lambda *_: None)
    assert not any(Path(fast_cfg["out_dir"]).rglob("*.pt"))


def _failing_save(real_save, fail_epoch: int):
    """torch.save that writes part of last.pt for ``fail_epoch`` and then hits ENOSPC."""
    def save(obj, f, *args, **kwargs):
        name = os.path.basename(getattr(f, "name", str(f)))
        if isinstance(obj, dict) and obj.get("epoch") == fail_epoch and name.startswith(f".{LAST}.tmp"):
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)
    return save


def test_disk_full_while_checkpointing_keeps_previous_checkpoint_and_loses_nothing(fast_cfg, monkeypatch):
    """ENOSPC while writing the epoch-2 last.pt: the run stops with an error naming last.pt, which is still
    the intact epoch-1 checkpoint, no temp file is left; once space is back, resuming ends
    exactly where an uninterrupted run ends (weights and records)."""
    cfg = dict(fast_cfg, method="ce", epochs=2, probe_every=0)
    monkeypatch.setattr(torch, "save", _failing_save(torch.save, fail_epoch=2))
    with pytest.raises((OSError, CheckpointError)) as err:
        run(dict(cfg, name="full"), log=lambda *_: None)
    run_dir = Path(cfg["out_dir"]) / "full"
    assert "No space left" in str(err.value) and str(run_dir / LAST) in str(err.value), str(err.value)
    assert load_checkpoint(run_dir / LAST)["epoch"] == 1
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]
    monkeypatch.undo()
    resumed = run(dict(cfg, name="full"), log=lambda *_: None)
    ref = run(dict(cfg, name="ref"), log=lambda *_: None)
    assert_same_state(load_checkpoint(ref.run_dir / LAST)["method"], load_checkpoint(run_dir / LAST)["method"])
    assert strip(ref.records) == strip(resumed.records)


def test_disk_full_while_checkpointing_is_a_clear_cli_error(fast_cfg, monkeypatch, capsys):
    """The CLI reports a failed checkpoint write in one line naming the checkpoint path, exit != 0."""
    from workbench import cli

    monkeypatch.setattr(torch, "save", _failing_save(torch.save, fail_epoch=1))
    argv = ["train"] + [f"{k}={v}" for k, v in dict(fast_cfg, method="ce", epochs=1, probe_every=0).items()]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code not in (0, None) and LAST in err and "No space left" in err
