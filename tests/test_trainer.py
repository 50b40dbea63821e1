"""The training loop end to end on tiny digits runs: records, teacher frozen, resume equality
(with a real SIGKILL), NaN handling, checkpoint errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench import models
from workbench.config import ConfigError, RunConfig
from workbench.engine import CheckpointError, NonFiniteLossError, Trainer, read_metrics
from workbench.engine.checkpoint import LAST, load_checkpoint
from workbench.experiment import run
from workbench.methods import Distiller

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"time", "images_per_s"}


def strip(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def test_kd_run_writes_tidy_records_and_checkpoints(fast_cfg):
    res = run(dict(fast_cfg, method="kd"))
    d = res.run_dir
    assert (d / "config.json").exists() and (d / LAST).exists() and (d / "student.pt").exists()
    recs = read_metrics(d)
    evals = [r for r in recs if r["kind"] == "eval"]
    assert {(r["epoch"], r["role"]) for r in evals} == {(e, r) for e in (0, 1, 2) for r in ("student", "teacher")}
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["epoch"] for r in train] == [1, 2]
    assert {"loss_ce", "loss_kd", "lr", "top1", "time", "loss"} <= set(train[0])
    assert train[0]["loss"] == pytest.approx(train[0]["loss_ce"] + train[0]["loss_kd"])  # float64 sums of the same terms
    for r in evals:
        assert 0 <= r["top1"] <= r["top5"] <= 100 and r["n"] == 1797 - 100
    assert {r["pair"] for r in recs if r["kind"] == "gap"} == {"T_s-S"}
    student_evals = [r for r in evals if r["role"] == "student"]
    assert res.summary["student"]["last_top1"] == student_evals[-1]["top1"]
    assert res.summary["student"]["best_top1"] == max(r["top1"] for r in student_evals[1:])
    # the saved student loads as a plain zoo model with the logged accuracy
    student = models.load("resnet8", d / "student.pt", num_classes=10, in_channels=1)
    assert isinstance(student, torch.nn.Module)


def test_static_teacher_is_frozen_in_eval_mode(fast_cfg):
    from workbench import data
    from workbench.methods import build_method

    cfg = RunConfig.from_dict(dict(fast_cfg, method="dkd", epochs=1))
    teacher = models.build("resnet8", 10, 1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = build_method(cfg, models.build("resnet8", 10, 1), teacher)
    seen_modes = []
    teacher.register_forward_hook(lambda m, i, o: seen_modes.append((m.training, torch.is_grad_enabled())))
    ds = data.build("digits", "train", train_per_class=10)
    trainer = Trainer(cfg, method, ds, data.build("digits", "test", train_per_class=10), Path(fast_cfg["out_dir"]) / "t")
    trainer.model.train()
    trainer.train_epoch(1)
    assert seen_modes and all(mode == (False, False) for mode in seen_modes)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN stats too
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(id(p) in {id(q) for g in trainer.optimizer.param_groups for q in g["params"]} for p in teacher.parameters())


@pytest.mark.parametrize("method, clip", [("kd", None), ("gpd", 5.0)])
def test_trainer_clips_at_the_methods_default(fast_cfg, monkeypatch, method, clip):
    """No grad_clip given: GPD's steps clip the gradient norm at 5, other methods' do not clip."""
    from workbench import data
    from workbench.methods import build_method

    seen, real = [], torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *args, **kwargs):
        seen.append(max_norm)
        return real(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    cfg = RunConfig.from_dict(dict(fast_cfg, method=method, base="kd", epochs=1, branches=0, train_per_class=2))
    train, test = (data.build("digits", split, train_per_class=2) for split in ("train", "test"))
    method_ = build_method(cfg, models.build("resnet8", 10, 1), models.build("resnet8", 10, 1),
                           example_input=train[0][0][None])
    trainer = Trainer(cfg, method_, train, test, Path(fast_cfg["out_dir"]) / method)
    trainer.model.train()
    trainer.train_epoch(1)
    assert set(seen) == ({clip} if clip else set())


def _cli(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "workbench", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _args(d: dict) -> list[str]:
    return [f"{k}={v}" for k, v in d.items()]


def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    base = dict(method="gpd", base="kd", dataset="digits", train_per_class=60, teacher="resnet8", student="resnet8",
                epochs=3, teacher_epochs=1, batch_size=16, lr=0.05, schedule="cosine", probe_samples=100,
                out_dir=tmp_path, progress="false", branches=2, grad_clip=5)
    ref = _cli(_args(dict(base, name="ref")))
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    killed = _cli(_args(dict(base, name="killed")))
    last = tmp_path / "killed" / LAST
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for the epoch-1 checkpoint, then kill inside epoch 2
        if last.exists() and load_checkpoint(last)["epoch"] >= 1:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "summary.json").exists(), "the run finished before the kill"
    resumed = _cli(_args(dict(base, name="killed")))
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    a, b = load_checkpoint(tmp_path / "ref" / LAST), load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 3
    assert a["method"].keys() == b["method"].keys()
    for key, value in a["method"].items():
        same = torch.equal(value, b["method"][key]) if torch.is_tensor(value) else value == b["method"][key]
        assert same, key
    assert strip(read_metrics(tmp_path / "ref")) == strip(read_metrics(tmp_path / "killed"))


class _NaNAt(Distiller):
    def __init__(self, student, at_step):
        super().__init__(student)
        self.calls, self.at = 0, at_step

    def forward(self, x, y):
        logits, losses = super().forward(x, y)
        self.calls += 1
        if self.calls == self.at:
            losses["loss_ce"] = losses["loss_ce"] * float("nan")
        return logits, losses


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(fast_cfg, tmp_path):
    from workbench import data

    cfg = RunConfig.from_dict(dict(fast_cfg, method="ce", epochs=3))
    train = data.build("digits", "train", train_per_class=10)  # 100 images, batch 32 -> 4 steps/epoch
    method = _NaNAt(models.build("resnet8", 10, 1), at_step=6)
    trainer = Trainer(cfg, method, train, data.build("digits", "test", train_per_class=10), tmp_path / "nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2/4.*loss_ce.*last good checkpoint.*epoch 1"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "nan" / LAST)["epoch"] == 1


def test_corrupt_truncated_and_mismatched_checkpoints_give_clear_errors(fast_cfg):
    cfg = dict(fast_cfg, method="ce", epochs=1, name="fixed")  # a fixed name: default names differ per config
    res = run(cfg)
    last = res.run_dir / LAST
    blob = last.read_bytes()
    last.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        run(cfg)
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        run(cfg)
    last.write_bytes(blob)
    with pytest.raises(CheckpointError, match=r"different config \(lr: saved 0.05 vs now 0.1"):
        run(dict(cfg, lr=0.1))
    with pytest.raises(CheckpointError, match="resume=true"):
        run(dict(cfg, resume=False))
    torch.save({"model": {}}, last)
    with pytest.raises(CheckpointError, match="not a workbench checkpoint"):
        run(cfg)


def test_finished_run_is_not_retrained(fast_cfg):
    first = run(dict(fast_cfg, method="ce", epochs=1))
    mtime = (first.run_dir / LAST).stat().st_mtime_ns
    again = run(dict(fast_cfg, method="ce", epochs=1))
    assert (first.run_dir / LAST).stat().st_mtime_ns == mtime
    assert again.summary == first.summary


def test_teacher_is_trained_once_and_cached(fast_cfg):
    logs = []
    run(dict(fast_cfg, method="kd", seed=0), log=logs.append)
    run(dict(fast_cfg, method="kd", seed=1), log=logs.append)
    assert sum("training teacher" in m for m in logs) == 1 and sum("cached teacher" in m for m in logs) == 1


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    for args, words in ([["method=kdd"], "unknown method 'kdd'"], [["dataset=cifar100", "download=false"], "preset=fashion/demo/"],
                        [["teacher=/nope/t.pth", "dataset=digits"], "does not exist"]):
        p = _cli(args + [f"out_dir={tmp_path}"])
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 2 and words in out and "Traceback" not in out, out


def test_unwritable_output_dir_fails_before_training(fast_cfg, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # running as root: permissions do not bind; use a file as parent
        ro = tmp_path / "file"
        ro.write_text("x")
    with pytest.raises(ConfigError, match="out_dir: cannot write"):
        run(dict(fast_cfg, method="ce", out_dir=str(ro / "runs")))


def test_cached_static_teacher_gives_exactly_the_metrics_of_evaluating_it_every_epoch(fast_cfg, monkeypatch):
    """The static teacher's eval outputs are computed once and reused: the records (and the gap
    probes built on them) equal those of a run that re-evaluates the teacher every epoch."""
    cached = read_metrics(run(dict(fast_cfg, method="kd", out_dir=fast_cfg["out_dir"] + "/a")).run_dir)
    orig = Trainer.evaluate

    def fresh(self, epoch):
        self._static_outputs = None  # forget the cache: the teacher is evaluated again
        return orig(self, epoch)

    monkeypatch.setattr(Trainer, "evaluate", fresh)
    every = read_metrics(run(dict(fast_cfg, method="kd", out_dir=fast_cfg["out_dir"] + "/b")).run_dir)
    pick = lambda recs: strip([r for r in recs if r["kind"] in ("eval", "gap")])  # noqa: E731
    assert [r for r in pick(cached) if r["kind"] == "eval" and r["role"] == "teacher"]
    assert pick(cached) == pick(every)  # exact: same inputs, same model, same arithmetic


def test_auto_memory_format_is_recorded_and_kept_when_a_run_resumes(fast_cfg, monkeypatch):
    """``channels_last=auto`` is a function of device and input shape (digits 8x8 on CPU:
    contiguous), recorded in every train record and checkpoint; a run resumed after the rule
    changed keeps the layout it started in, so it ends exactly as the uninterrupted run."""
    from workbench.engine import device

    cfg = dict(fast_cfg, method="kd")
    ref = run(dict(cfg, name="ref"))
    assert [r["memory_format"] for r in read_metrics(ref.run_dir, kind="train")] == ["contiguous"] * 2
    assert load_checkpoint(ref.run_dir / LAST)["memory_format"] == "contiguous"

    def crash_after_first_checkpoint(self, train, top1):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_print_epoch", crash_after_first_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            run(dict(cfg, name="cut"))
    assert load_checkpoint(Path(cfg["out_dir"]) / "cut" / LAST)["epoch"] == 1
    monkeypatch.setattr(device, "CPU_CHANNELS_LAST_MIN_PIXELS", 1)  # the rule now picks channels_last
    fresh = run(dict(cfg, name="fresh"))
    assert [r["memory_format"] for r in read_metrics(fresh.run_dir, kind="train")] == ["channels_last"] * 2
    resumed = run(dict(cfg, name="cut"))
    assert [r["memory_format"] for r in read_metrics(resumed.run_dir, kind="train")] == ["contiguous"] * 2
    a, b, c = (load_checkpoint(r.run_dir / LAST)["method"] for r in (ref, resumed, fresh))
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))  # bit-identical to uninterrupted
    assert strip(read_metrics(ref.run_dir)) == strip(read_metrics(resumed.run_dir))
    # the layout does change the float summation order: without keeping it the resume would differ
    assert not all(torch.equal(a[k], c[k]) for k in a if torch.is_tensor(a[k]) and a[k].is_floating_point())
