"""Run integrity, second pass (issue 28): data and teachers that change under a run, preemption by
SIGTERM, and the last tracebacks. One test (or a few) per case of the issue, numbered as there;
each failed on the code before the fix. Tiny digits / fake-file runs, seconds each.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.engine import Preempted, Trainer, read_metrics
from workbench.engine.checkpoint import BEST, LAST, STUDENT, load_checkpoint
from workbench.engine.trainer import STUDENT_EMA
from workbench.experiment import run

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"time", "images_per_s"}
QUIET = dict(log=lambda *_: None)
SUBPROCESS_TIMEOUT = 300


def strip(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def assert_same(a, b, path: str = "") -> None:
    """Equal nested checkpoint contents: tensors bit for bit (dtype too), everything else by ==."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def assert_same_run(run_dir: Path, ref_dir: Path) -> None:
    """A resumed run equals the uninterrupted one: records minus timing fields, every checkpoint
    (all but its config and the effective values recorded with it, which name the folder) and the
    saved students, tensor for tensor."""
    assert strip(read_metrics(run_dir)) == strip(read_metrics(ref_dir))
    for name in (LAST, BEST):
        a, b = load_checkpoint(run_dir / name), load_checkpoint(ref_dir / name)
        assert "position" not in a
        for key in ("config", "effective"):
            a.pop(key), b.pop(key)
        assert_same(a, b, name)
    for name in (STUDENT, STUDENT_EMA):
        if (ref_dir / name).exists():
            assert_same(torch.load(run_dir / name, weights_only=True), torch.load(ref_dir / name, weights_only=True), name)


def _env():
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _cli(args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "train", *[f"{k}={v}" for k, v in args.items()]],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------ 7. preemption
def _signal_at_step(monkeypatch, run_name: str, epoch: int, step: int, sig=signal.SIGTERM):
    """Send ``sig`` to this process right after optimizer step ``step`` of ``epoch`` of the run
    folder ``run_name`` (the teacher phase is left alone)."""
    real = Trainer._backward_step
    seen = {}

    def backward_step(self, loss, losses):
        real(self, loss, losses)
        if self.run_dir.name == run_name:
            key = (id(self), self.epoch)
            seen[key] = seen.get(key, 0) + 1
            if self.epoch == epoch and seen[key] == step:
                os.kill(os.getpid(), sig)
    monkeypatch.setattr(Trainer, "_backward_step", backward_step)


def _crash_at_epoch(monkeypatch, run_name: str, epoch: int):
    """The run folder ``run_name`` dies (KeyboardInterrupt, as a kill would) when ``epoch`` starts:
    its epoch ``epoch - 1`` checkpoint is on disk. Independent of the preemption machinery."""
    real = Trainer.train_epoch

    def train_epoch(self, e):
        if self.run_dir.name == run_name and e == epoch:
            raise KeyboardInterrupt("simulated kill")
        return real(self, e)
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


GPD = dict(method="gpd", base="kd", branches=2, epochs=3, probe_samples=50)  # EMA twins on (gpd's default)


@pytest.fixture(scope="module")
def gpd_ref(tmp_path_factory):
    """One uninterrupted GPD run the GPD preemption tests compare with; they run in its out_dir, so
    the teacher is trained once."""
    from conftest import FAST

    out = tmp_path_factory.mktemp("gpd") / "runs"
    cfg = dict(FAST, out_dir=str(out), **GPD)
    run(dict(cfg, name="ref"), **QUIET)
    return cfg, out / "ref"


def test_7_sigterm_mid_epoch_checkpoints_that_step_and_the_rerun_is_bit_identical(gpd_ref, monkeypatch):
    """GPD with its EMA twins, SIGTERM after step 2 of epoch 2: the run stops after that step with a
    mid-epoch last.pt (the position, not the epoch-end state), best.pt stays epoch 1, the
    exception names signal, epoch, step and file; the rerun equals an uninterrupted run bit for bit
    (records, last/best checkpoints, student.pt, student_ema.pt)."""
    cfg, ref = gpd_ref
    _signal_at_step(monkeypatch, "killed", epoch=2, step=2)
    with pytest.raises(Preempted) as err:
        run(dict(cfg, name="killed"), **QUIET)
    e, run_dir = err.value, Path(cfg["out_dir"]) / "killed"
    assert (e.signal, e.epoch, e.step, e.checkpoint) == ("SIGTERM", 2, 2, run_dir / LAST), str(e)
    assert "rerun the same command to resume" in str(e) and "\n" not in str(e)
    ckpt = load_checkpoint(run_dir / LAST)
    assert ckpt["epoch"] == 1 and ckpt["position"]["epoch"] == 2 and ckpt["position"]["step"] == 2
    assert load_checkpoint(run_dir / BEST)["epoch"] == 1
    assert max(r["epoch"] for r in read_metrics(run_dir)) == 1  # nothing of epoch 2 logged yet
    monkeypatch.undo()
    run(dict(cfg, name="killed"), **QUIET)
    assert_same_run(run_dir, ref)


def test_7_mid_epoch_resume_is_exact_on_the_device_resident_loader_too(fast_cfg, monkeypatch):
    """device_data=on (batches gathered and augmented from one tensor, crops/flips drawn from the
    loader's own generator, here on the CPU): the mid-epoch checkpoint keeps that generator's state,
    so the rerun draws what the uninterrupted run drew."""
    cfg = dict(fast_cfg, method="ce", epochs=2, probe_every=0, device_data="on")
    run(dict(cfg, name="ref"), **QUIET)
    _signal_at_step(monkeypatch, "killed", epoch=1, step=2)
    with pytest.raises(Preempted, match=r"in epoch 1/2 after step 2/"):
        run(dict(cfg, name="killed"), **QUIET)
    monkeypatch.undo()
    run(dict(cfg, name="killed"), **QUIET)
    assert_same_run(Path(fast_cfg["out_dir"]) / "killed", Path(fast_cfg["out_dir"]) / "ref")


@pytest.mark.parametrize("where", ["checkpoint_write", "probes"])
def test_7_sigterm_during_a_checkpoint_write_or_probes_stops_after_that_epochs_checkpoint(gpd_ref, monkeypatch, where):
    """The signal arrives while epoch 1's last.pt is being written, or while its probes run: the
    write completes, the run stops with the normal epoch-1 checkpoint (no position) and the
    rerun is bit-identical."""
    from workbench import experiment
    from workbench.engine import trainer as trainer_module

    cfg, ref = gpd_ref
    name = f"killed_{where}"
    if where == "checkpoint_write":
        real = trainer_module.atomic_save

        def atomic_save(obj, path):
            if Path(path).parent.name == name and Path(path).name == LAST and obj.get("epoch") == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(obj, path)
        monkeypatch.setattr(trainer_module, "atomic_save", atomic_save)
    else:
        real = experiment.default_callbacks

        def callbacks(c, info):
            cbs = real(c, info)
            probe = cbs[0]
            on_eval_end = probe.on_eval_end

            def signalling(state, epoch, outputs):
                if epoch == 1 and state.run_dir.name == name:
                    os.kill(os.getpid(), signal.SIGTERM)
                return on_eval_end(state, epoch, outputs)
            probe.on_eval_end = signalling
            return cbs
        monkeypatch.setattr(experiment, "default_callbacks", callbacks)
    with pytest.raises(Preempted, match=r"stopped by SIGTERM after epoch 1/3") as err:
        run(dict(cfg, name=name), **QUIET)
    run_dir = Path(cfg["out_dir"]) / name
    assert err.value.step is None and err.value.epoch == 1
    ckpt = load_checkpoint(run_dir / LAST)
    assert ckpt["epoch"] == 1 and "position" not in ckpt
    monkeypatch.undo()
    run(dict(cfg, name=name), **QUIET)
    assert_same_run(run_dir, ref)


CTC = dict(method="ctc", teacher="none", epochs=3, ctc_stage_epoch=1, probe_every=0)


@pytest.mark.parametrize("where", ["stage2_mid_epoch", "data_pass"])
def test_7_ctc_preempted_across_its_stage_boundary_resumes_bit_identical(fast_cfg, monkeypatch, where):
    """CTC (memory banks, snapshot at the end of epoch 1, stage-2 heads): SIGTERM in the middle of
    stage 2's first epoch, or during the memory refresh (data pass) at the boundary. The rerun
    ends with the uninterrupted run's banks, weights and records."""
    from workbench.methods.own_terms import DataPass

    cfg = dict(fast_cfg, **CTC)
    run(dict(cfg, name="ref"), **QUIET)
    if where == "stage2_mid_epoch":
        _signal_at_step(monkeypatch, "killed", epoch=2, step=3, sig=signal.SIGUSR1)
        expected = dict(epoch=2, step=3, signal="SIGUSR1")
    else:
        real = DataPass.__call__

        def observe_batch(self, *args):  # a batch of the data pass
            os.kill(os.getpid(), signal.SIGUSR2)
            return real(self, *args)
        monkeypatch.setattr(DataPass, "__call__", observe_batch)
        expected = dict(epoch=1, step=None, signal="SIGUSR2")
    with pytest.raises(Preempted) as err:
        run(dict(cfg, name="killed"), **QUIET)
    assert {k: getattr(err.value, k) for k in expected} == expected, str(err.value)
    monkeypatch.undo()
    run(dict(cfg, name="killed"), **QUIET)
    assert_same_run(Path(fast_cfg["out_dir"]) / "killed", Path(fast_cfg["out_dir"]) / "ref")


def test_7_a_notebook_run_stopped_by_sigterm_ends_in_the_same_one_line(fast_cfg, monkeypatch):
    """The notebooks' train() turns Preempted into a one-line RunError with the CLI's words."""
    from workbench.config import RunConfig
    from workbench.nb.errors import RunError
    from workbench.nb.run import train

    _signal_at_step(monkeypatch, "nb", epoch=1, step=1)
    with pytest.raises(RunError, match=r"^stopped by SIGTERM in epoch 1/1 after step 1/\d+ \(checkpoint .*nb/last\.pt\); "
                                       r"rerun the same command to resume$"):
        train(RunConfig.from_dict(dict(fast_cfg, method="ce", epochs=1, probe_every=0, name="nb")), echo=lambda *_: None)


def test_7_the_previous_signal_handlers_come_back_after_a_run(fast_cfg):
    """Another program in the process (submitit, a notebook) keeps its own handlers."""
    def mine(*_):
        pass

    before = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    try:
        run(dict(fast_cfg, method="ce", epochs=1, probe_every=0), **QUIET)
        assert all(signal.getsignal(s) is mine for s in before)
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def _training_started(run_dir: Path) -> bool:
    """The student run is past its epoch-0 evaluation (its training has begun)."""
    path = run_dir / "metrics.jsonl"
    return path.exists() and b'"kind": "eval", "epoch": 0' in path.read_bytes()


CLI_RUN = dict(method="ce", dataset="digits", train_per_class=60, student="resnet8", epochs=2, batch_size=16,
               schedule="cosine", progress="false", probe_every=0)


@pytest.fixture(scope="module")
def cli_ref(tmp_path_factory):
    """An uninterrupted CLI run of :data:`CLI_RUN` (the CLI tests run beside it in its out_dir)."""
    out = tmp_path_factory.mktemp("cli")
    ref = _cli(dict(CLI_RUN, out_dir=out, name="ref"))
    assert ref.wait(timeout=SUBPROCESS_TIMEOUT) == 0, ref.stderr.read()
    return dict(CLI_RUN, out_dir=out), out / "ref"


def test_7_cli_kill_term_exits_75_with_one_line_and_the_rerun_is_identical(cli_ref):
    """``kill -TERM`` of the CLI while it trains: exit code 75 (EX_TEMPFAIL), one line naming the
    signal and where it stopped, no traceback; rerunning the same command ends bit-identical to an
    uninterrupted run, wherever the signal landed."""
    from workbench.cli import PREEMPTED

    args, ref_dir = cli_ref
    tmp_path = args["out_dir"]
    assert PREEMPTED == 75
    proc = _cli(dict(args, name="killed"))
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while time.time() < deadline and proc.poll() is None and not _training_started(tmp_path / "killed"):
        time.sleep(0.02)
    time.sleep(0.5)  # some steps into epoch 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == PREEMPTED, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "rerun the same command" in lines[0], err
    again = _cli(dict(args, name="killed"))
    assert again.wait(timeout=SUBPROCESS_TIMEOUT) == 0, again.stderr.read()
    assert_same_run(tmp_path / "killed", ref_dir)


KILL_IN_WRITE_SCRIPT = """
import os, signal, sys
from workbench import cli
from workbench.engine import Trainer, checkpoint
from workbench.engine import trainer as trainer_module

real, seen = Trainer._backward_step, {"n": 0}

def backward_step(self, loss, losses):  # SIGTERM after the 2nd step of epoch 2
    real(self, loss, losses)
    if self.epoch == 2:
        seen["n"] += 1
        if seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

def atomic_save(obj, path):  # kill -9 halfway through writing the mid-epoch checkpoint
    if "position" in obj:
        with open(checkpoint.temp_path(path), "wb") as f:
            f.write(b"PK" + bytes(5000))
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return checkpoint.atomic_save(obj, path)
Trainer._backward_step = backward_step
trainer_module.atomic_save = atomic_save
sys.exit(cli.main(sys.argv[1:]))
"""


def test_7_kill_9_while_writing_a_mid_epoch_checkpoint_loses_nothing_written_before(cli_ref, tmp_path):
    """kill -9 in the middle of writing the mid-epoch checkpoint: last.pt is still the epoch-1
    checkpoint (atomic write), the half-written temporary file is removed by the rerun, which ends
    bit-identical to an uninterrupted run."""
    args, ref_dir = cli_ref
    script = tmp_path / "kill_in_write.py"
    script.write_text(KILL_IN_WRITE_SCRIPT)
    env = dict(_env(), PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, str(script), "train", *[f"{k}={v}" for k, v in args.items()],
                             "name=killed9"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = args["out_dir"] / "killed9"
    assert load_checkpoint(run_dir / LAST)["epoch"] == 1 and [p for p in run_dir.iterdir() if ".tmp" in p.name]
    again = _cli(dict(args, name="killed9"))
    assert again.wait(timeout=SUBPROCESS_TIMEOUT) == 0, again.stderr.read()
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]
    assert_same_run(run_dir, ref_dir)


DDP_SCRIPT = """
import os, signal, sys
from workbench import cli
from workbench.engine import Trainer

real, seen = Trainer._backward_step, {"n": 0}

def backward_step(self, loss, losses):  # rank 1 alone gets SIGTERM after its 3rd step of epoch 2
    real(self, loss, losses)
    if self.epoch == 2:
        seen["n"] += 1
        if seen["n"] == 3 and os.environ["RANK"] == "1" and os.environ.get("SIGNAL_RANK1") == "1":
            os.kill(os.getpid(), signal.SIGTERM)
Trainer._backward_step = backward_step
sys.exit(cli.main(sys.argv[1:]))
"""


def test_7_ddp_all_ranks_stop_at_the_same_step_and_rank_0_writes(tmp_path):
    """torchrun, 2 processes (gloo): only rank 1 receives SIGTERM, after its 3rd step of epoch 2.
    Both ranks stop after that same step (they agree on the flag every step), rank 0 writes the
    mid-epoch checkpoint, every rank exits 75 and one line is printed; the resumed run equals an
    uninterrupted 2-process run bit for bit."""
    script = tmp_path / "train_with_signal.py"
    script.write_text(DDP_SCRIPT)
    args = [f"{k}={v}" for k, v in dict(method="ce", dataset="digits", train_per_class=20, student="resnet8",
                                       epochs=2, batch_size=20, progress="false", probe_every=0,
                                       out_dir=tmp_path).items()]

    def torchrun(name: str, signal_rank1: bool):
        env = dict(_env(), SIGNAL_RANK1="1" if signal_rank1 else "0", PYTHONPATH=str(ROOT))
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(script), "train", *args, f"name={name}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)

    ref = torchrun("ref", False)
    assert ref.returncode == 0, ref.stderr[-3000:]
    stopped = torchrun("killed", True)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and out.count("stopped by SIGTERM in epoch 2/2 after step 3/") == 1, out[-3000:]
    assert f'File "{ROOT / "workbench"}' not in out, out[-3000:]  # no traceback of ours (torchrun prints its own)
    ckpt = load_checkpoint(tmp_path / "killed" / LAST)
    assert ckpt["position"]["step"] == 3 and ckpt["position"]["world"] == 2 and len(ckpt["position"]["ranks"]) == 2
    resumed = torchrun("killed", False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "killed", tmp_path / "ref")


# ------------------------------------------------------------------ 8. a failed checkpoint write
FSIZE_SCRIPT = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # what `ulimit -f` sets: writes past it fail
from workbench import cli
sys.exit(cli.main(sys.argv[2:]))
"""


def test_8_a_file_size_limit_hit_while_checkpointing_is_the_one_line_write_error(tmp_path, fast_cfg):
    """RLIMIT_FSIZE of 100 kB: config and metrics fit, last.pt (about 1 MB) does not (Python ignores
    SIGXFSZ, so the write fails with EFBIG). torch.save reports that as "RuntimeError: unexpected
    pos ..."; now the CLI prints the same one line as a failed metrics write, naming the file, the
    cause and its remedy (not "free disk space"), exits 2 and leaves no temporary file."""
    script = tmp_path / "limited.py"
    script.write_text(FSIZE_SCRIPT)
    args = [f"{k}={v}" for k, v in dict(fast_cfg, method="ce", epochs=1, probe_every=0, name="limited").items()]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(100_000), "train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    run_dir = Path(fast_cfg["out_dir"]) / "limited"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert f"could not write {run_dir / LAST}" in lines[0] and "File too large" in lines[0] and "ulimit -f" in lines[0]
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]


def test_8_disk_full_inside_torch_save_is_the_one_line_write_error(fast_cfg, monkeypatch, capsys):
    """ENOSPC from the file write torch.save makes (which torch re-raises as a RuntimeError without
    the cause): the same one line as a failed metrics write ("Free disk space ... rerun"), exit 2."""
    from workbench import cli
    from workbench.engine import checkpoint

    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            if self.written + len(data) > 4096:
                raise OSError(28, os.strerror(28))
            self.written += len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(checkpoint, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    argv = ["train"] + [f"{k}={v}" for k, v in dict(fast_cfg, method="ce", epochs=1, probe_every=0).items()]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and LAST in err and "No space left" in err and "Free disk space" in err, err


# ------------------------------------------------------------------ 6. top1_reported on every epoch
def test_6_top1_reported_is_on_every_epoch_with_ema_also_where_the_twins_are_skipped(fast_cfg):
    """ema_eval_every=3 over 4 epochs: the twins are evaluated at epochs 0, 3 and 4 only; every
    epoch's student (and, for GPD, dynamic-teacher) record still carries top1_reported -- the raw
    top-1 where the twin was skipped, as its help says -- and the static teacher never does."""
    res = run(dict(fast_cfg, method="gpd", base="kd", branches=0, epochs=4, ema_eval_every=3, probe_every=0), **QUIET)
    evals = [r for r in read_metrics(res.run_dir, kind="eval")]
    by = {(r["epoch"], r["role"]): r for r in evals}
    assert sorted(e for e, role in by if role == "student_ema") == [0, 3, 4]
    for epoch in range(5):
        for role in ("student", "dynamic_teacher"):
            rec, twin = by[(epoch, role)], by.get((epoch, role + "_ema"))
            assert rec["top1_reported"] == (max(rec["top1"], twin["top1"]) if twin else rec["top1"]), (epoch, role)
        assert "top1_reported" not in by[(epoch, "teacher")]


# ------------------------------------------------------------------ 1-3. data that moves under a run
@pytest.fixture
def fake_fashion(monkeypatch, tmp_path):
    """Fake full Fashion-MNIST files (tiny, well-formed) accepted as the published ones, no system
    copy, and an empty default data root; returns a function writing them into a folder."""
    from test_data_fashion import fake_content_md5, write_files
    from workbench.data import fashion_files as ff

    monkeypatch.setattr(ff, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(ff, "CONTENT_MD5", fake_content_md5(), raising=False)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "default-root"))
    return write_files


FASHION = dict(dataset="fashion_mnist", student="resnet8", batch_size=10, epochs=1, teacher_epochs=1, lr=0.05,
               probe_every=0, progress=False, eval_batch_size=512)


def test_1_data_root_is_honoured_by_the_teacher_recorded_resolved_and_in_the_run_name(tmp_path, fake_fashion,
                                                                                      monkeypatch):
    """dataset=fashion_mnist data_root=A (full files in A; other copies in the default root B):
    the teacher is trained from A -- no file of B is read --, its cached config records A (not
    ""), and data_root=A and data_root=B name different runs (and teachers)."""
    from workbench.config import RunConfig
    from workbench.data import fashion_files as ff
    from workbench.experiment import teacher_config

    a, b = tmp_path / "A", tmp_path / "default-root"
    fake_fashion(a), fake_fashion(b)
    read = []
    real = ff.load_full
    monkeypatch.setattr(ff, "load_full", lambda folder: read.append(Path(folder).resolve()) or real(folder))
    cfg = dict(FASHION, method="kd", teacher="resnet8", data_root=str(a), out_dir=str(tmp_path / "runs"))
    run(cfg, **QUIET)
    assert set(read) == {a.resolve()}, read
    tcfg = teacher_config(RunConfig.from_dict(cfg), "resnet8")
    import json
    assert json.loads((tcfg.run_dir() / "config.json").read_text())["data_root"] == str(a.resolve())
    in_b = RunConfig.from_dict(dict(cfg, data_root=str(b)))
    assert in_b.run_dir() != RunConfig.from_dict(cfg).run_dir()
    assert teacher_config(in_b, "resnet8").run_dir() != tcfg.run_dir()


def test_1_data_root_on_a_dataset_read_from_no_folder_is_refused():
    """digits is not read from a folder: data_root= would be ignored silently; now one line."""
    from workbench.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match=r"data_root: applies to dataset .*fashion_mnist.* only \(dataset='digits'\)"):
        RunConfig.from_dict(dict(dataset="digits", data_root="/somewhere"))


def test_2_full_fashion_files_with_a_flipped_pixel_or_shifted_labels_are_refused_naming_the_file(tmp_path,
                                                                                               fake_fashion):
    """The full files are checked against the published content checksums (as CIFAR's are): one
    flipped pixel, or labels shifted by one, is one line naming the file -- up front, through the
    CLI too, with nothing created."""
    import numpy as np

    from workbench import cli, data
    from workbench.data import fashion_files as ff
    from workbench.data import idx

    folder = tmp_path / "full"
    fake_fashion(folder, gz=False)
    data.check_available("fashion_mnist", source="full", root=str(folder))  # the published files pass
    images = idx.read(folder / "train-images-idx3-ubyte").copy()
    images[3, 10, 10] ^= 0x80
    idx.write(folder / "train-images-idx3-ubyte", images)
    with pytest.raises(ff.DatasetFileError, match=r"train-images-idx3-ubyte is not the published .* damaged or modified"):
        data.check_available("fashion_mnist", source="full", root=str(folder))
    fake_fashion(folder, gz=False)
    labels = idx.read(folder / "t10k-labels-idx1-ubyte")
    idx.write(folder / "t10k-labels-idx1-ubyte", np.roll(labels, 1))
    out = tmp_path / "runs"
    argv = ["train"] + [f"{k}={v}" for k, v in dict(FASHION, method="ce", data_source="full", data_root=folder,
                                                    out_dir=out).items()]
    assert cli.main(argv) == 2
    assert not out.exists()


def test_2_the_published_checksums_are_those_of_the_real_files_where_installed():
    from workbench.data import fashion_files as ff

    folder = ff.find_full()
    if folder is None:
        pytest.skip("full Fashion-MNIST files not installed (Debian dataset-fashion-mnist)")
    ff.load_full(folder)  # raises if any installed file differs from the published content


def test_3_data_source_auto_is_pinned_on_resume(tmp_path, fake_fashion, monkeypatch):
    """A run started on the embedded subset (data_source=auto, no full files) and stopped in epoch 2:
    the full files appear, the same command with name= resumes on the data it started with and ends
    as the uninterrupted embedded run; without name= the same command is another run (its default
    name covers the resolved data), so nothing continues on other data."""
    from workbench.config import RunConfig

    a = tmp_path / "A"
    a.mkdir()
    cfg = dict(FASHION, method="ce", epochs=2, train_per_class=3, data_root=str(a), out_dir=str(tmp_path / "runs"))
    run(dict(cfg, name="ref"), **QUIET)
    embedded_name = RunConfig.from_dict(cfg).run_dir()
    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        _crash_at_epoch(mp, "killed", epoch=2)
        run(dict(cfg, name="killed"), **QUIET)
    fake_fashion(a)  # the full files appear meanwhile
    run(dict(cfg, name="killed"), **QUIET)
    assert_same_run(tmp_path / "runs" / "killed", tmp_path / "runs" / "ref")
    assert all(r["n"] == 1000 for r in read_metrics(tmp_path / "runs" / "killed", kind="eval"))  # the subset's test split
    assert RunConfig.from_dict(cfg).run_dir() != embedded_name


# ------------------------------------------------------------------ 4. a teacher file changed under a run
def test_4_a_teacher_file_overwritten_between_kill_and_resume_is_refused(fast_cfg, tmp_path, monkeypatch, capsys):
    """kd from a teacher checkpoint file, stopped in epoch 2; the file is overwritten with other
    weights. The resume stops with one line naming the file and both hashes (before: it continued
    silently with the new teacher); restoring the file lets it continue."""
    import shutil

    from workbench import cli, models

    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(1)
    torch.save({"model": models.build("resnet8", 10, 1).state_dict(), "arch": "resnet8"}, teacher)
    original = teacher.read_bytes()
    cfg = dict(fast_cfg, method="kd", teacher=str(teacher), epochs=2, probe_every=0, name="kd")
    _crash_at_epoch(monkeypatch, "kd", epoch=2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, **QUIET)
    monkeypatch.undo()
    torch.manual_seed(2)
    torch.save({"model": models.build("resnet8", 10, 1).state_dict(), "arch": "resnet8"}, teacher)
    before = load_checkpoint(Path(fast_cfg["out_dir"]) / "kd" / LAST)
    assert cli.main(["train"] + [f"{k}={v}" for k, v in cfg.items()]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"the teacher file {teacher} changed since it started" in err, err
    assert_same(load_checkpoint(Path(fast_cfg["out_dir"]) / "kd" / LAST), before)  # nothing trained
    teacher.write_bytes(original)
    run(cfg, **QUIET)
    shutil.rmtree(Path(fast_cfg["out_dir"]) / "kd")


# ------------------------------------------------------------------ 5. imagefolder data identity
def _class_folders(root: Path, classes: dict[str, int], splits=("train", "val"), seed: int = 0) -> Path:
    """ImageNet-style folders whose file names carry their class (``<class>_<i>.png``)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split in splits:
        for c, n in classes.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / c / f"{c}_{i}.png")
    return root


def test_5_imagefolder_class_folders_swapped_in_place_train_another_teacher(tmp_path):
    """The cached teacher's key covers the data's identity (class folders and their file lists),
    not only the path: after swapping two class folders in place, a new student run trains a new
    teacher instead of reusing the one trained on the old labels, and the resumed student run
    is refused."""
    from workbench.engine.checkpoint import CheckpointError

    root = _class_folders(tmp_path / "imgs", {"ant": 3, "bee": 4})
    base = dict(dataset="imagefolder", data_root=str(root), method="kd", teacher="resnet8", student="resnet8",
                image_size=8, epochs=1, teacher_epochs=1, batch_size=4, probe_every=0, progress=False,
                out_dir=str(tmp_path / "runs"))
    logs = []
    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        _crash_at_epoch(mp, "before", epoch=2)
        run(dict(base, name="before", epochs=2), log=logs.append)
    for split in ("train", "val"):
        (root / split / "ant").rename(root / split / "tmp")
        (root / split / "bee").rename(root / split / "ant")
        (root / split / "tmp").rename(root / split / "bee")
    run(dict(base, seed=1), log=logs.append)
    assert sum("training teacher" in m for m in logs) == 2, logs
    with pytest.raises(CheckpointError, match=r"class folders or image files under .* changed since it started"):
        run(dict(base, name="before", epochs=2), **QUIET)


def test_10_imagefolder_with_an_empty_class_folder_in_val_is_one_line(tmp_path):
    from workbench.config import ConfigError, RunConfig
    from workbench.experiment import prepare

    root = _class_folders(tmp_path / "imgs", {"ant": 2, "bee": 2})
    for f in (root / "val" / "bee").iterdir():
        f.unlink()
    with pytest.raises(ConfigError, match=r"dataset: imagefolder: class folder .*val/bee has no image files"):
        prepare(RunConfig.from_dict(dict(dataset="imagefolder", data_root=str(root), method="ce", student="resnet8",
                                         image_size=8, out_dir=str(tmp_path / "runs"))))
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 9. a frozen rank
FREEZE_SCRIPT = """
import os, signal, sys
from pathlib import Path
from workbench import cli
from workbench.engine import Trainer

real, seen = Trainer._backward_step, {"n": 0}
Path(sys.argv[1] + "." + os.environ["RANK"]).write_text(str(os.getpid()))

def backward_step(self, loss, losses):  # rank 1 freezes (SIGSTOP) after its 2nd step
    real(self, loss, losses)
    seen["n"] += 1
    if seen["n"] == 2 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGSTOP)
Trainer._backward_step = backward_step
sys.exit(cli.main(sys.argv[2:]))
"""


def test_9_a_frozen_rank_is_named_in_one_line_after_dist_timeout(tmp_path):
    """torchrun, 2 processes (gloo), dist_timeout=5: rank 1 stops (SIGSTOP) in epoch 1. Rank 0
    gives up after 5 s instead of torch's 30 minutes and prints one line naming rank 1 and the
    timeout; its exit code is 4."""
    from workbench.cli import RANK_LOST

    script, pid_file = tmp_path / "freeze.py", tmp_path / "pid"
    script.write_text(FREEZE_SCRIPT)
    args = [f"{k}={v}" for k, v in dict(method="ce", dataset="digits", train_per_class=20, student="resnet8", epochs=1,
                                       batch_size=20, progress="false", probe_every=0, dist_timeout=5,
                                       out_dir=tmp_path).items()]
    env = dict(_env(), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(pid_file), "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, started = [], time.time()
    for line in proc.stdout:  # until rank 0's line
        lines.append(line)
        if "stopped answering" in line:
            break
    waited = time.time() - started
    rank0, rank1 = (int((tmp_path / f"pid.{r}").read_text()) for r in (0, 1))
    deadline = time.time() + 60
    while time.time() < deadline and not _exited(rank0):  # torchrun then sees rank 0's exit code first
        time.sleep(0.1)
    time.sleep(1)
    os.kill(rank1, signal.SIGKILL)  # a stopped process ignores torchrun's SIGTERM: it would wait 30 s more
    out = "".join(lines) + proc.communicate(timeout=SUBPROCESS_TIMEOUT)[0]
    ours = [line for line in out.splitlines() if "stopped answering" in line]
    assert len(ours) == 1 and "rank 1 of 2 stopped answering" in ours[0] and "dist_timeout=5" in ours[0], out[-3000:]
    assert f"exitcode  : {RANK_LOST}" in out and waited < 120, (waited, out[-3000:])


def _exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_9_dist_timeout_is_a_runtime_key_outside_the_run_name():
    from workbench.config import RUNTIME_KEYS, RunConfig

    assert "dist_timeout" in RUNTIME_KEYS and RunConfig().dist_timeout == 600
    assert RunConfig.from_dict(dict(dist_timeout=30)).run_dir() == RunConfig().run_dir()


# ------------------------------------------------------------------ 10. bad input: one line, nothing created
def _refused(argv_extra: dict, fast_cfg, capsys, match: str) -> None:
    """The CLI refuses with one line matching ``match``, exit 2, and creates no folder."""
    from workbench import cli

    out = Path(fast_cfg["out_dir"])
    code = cli.main(["train"] + [f"{k}={v}" for k, v in {**fast_cfg, **argv_extra}.items()])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    assert not out.exists(), list(out.rglob("*"))


import re  # noqa: E402


def test_10_init_with_a_file_that_is_not_a_checkpoint(fast_cfg, capsys, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    _refused(dict(method="ce", init=junk), fast_cfg, capsys, rf"init: cannot read checkpoint {junk}")


def test_10_an_unknown_transfer_target(fast_cfg, capsys):
    _refused(dict(method="ce", transfer="foo"), fast_cfg, capsys, r"transfer: unknown transfer target 'foo'.*cifar10")


def test_10_gpd_ratio_a_student_cannot_take_names_the_layer_and_the_ratios_that_work(fast_cfg, capsys):
    _refused(dict(method="gpd", base="none", student="ShuffleV1", ratio=1.5), fast_cfg, capsys,
             r"ratio: GPD cannot widen ShuffleV1 by 1.5: module 'layer1\.0\.shuffle1' \(ShuffleBlock\).*"
             r"integer ratio.*ratios that work for ShuffleV1: 2, 3, 4")


@pytest.mark.parametrize("keys, match", [
    (dict(ctc_dim=100_000_000), r"ctc_dim=100000000, ctc_nce_k=16384: CTC's memory banks .* GiB, more than the "
                                r"16.0 GiB available on cpu; lower ctc_dim"),
    (dict(ctc_nce="crd", ctc_nce_k=10**12), r"ctc_nce_k=1000000000000: .* more than the 16.0 GiB available"),
])
def test_10_ctc_sizes_that_cannot_fit_in_memory_are_refused_before_any_folder(fast_cfg, capsys, monkeypatch, keys,
                                                                              match):
    """Checked against the memory the device has (here: 16 GiB, whatever this machine has) before
    any folder is made; before, ctc_dim=1e8 died in an allocation after the teacher phase and crd's
    K=1e12 after writing a run folder. The default sizes pass the same check."""
    from workbench.engine import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 16 * 2**30)
    _refused(dict(method="ctc", teacher="none", **keys), fast_cfg, capsys, match)
    from workbench.config import RunConfig
    from workbench.experiment import prepare

    prepare(RunConfig.from_dict(dict(fast_cfg, method="ctc", teacher="none", ctc_nce="crd")))


def test_10_a_key_given_twice_names_the_key(fast_cfg, capsys):
    from workbench import cli

    code = cli.main(["train", "method=ce", "lr=0.1", "lr=0.2", f"out_dir={fast_cfg['out_dir']}"])
    err = capsys.readouterr().err
    assert code == 2 and "lr: given twice (lr=0.1 and lr=0.2)" in err and len(err.strip().splitlines()) == 1, err


def test_10_gpd_negative_noise(fast_cfg, capsys):
    _refused(dict(method="gpd", base="none", noise=-5), fast_cfg, capsys,
             r"noise: -5 is not a standard deviation; use -1 .* or a value >= 0")


def test_10_probe_samples_0_with_probes_on(fast_cfg, capsys):
    from workbench.config import MIN_PROBE_SAMPLES, RunConfig
    from workbench.probes.transfer import DEFAULT_KNN_K

    assert MIN_PROBE_SAMPLES == DEFAULT_KNN_K + 1
    _refused(dict(method="ce", probe_samples=0), fast_cfg, capsys, r"probe_samples: 0 is too few .* probe_every=0")
    RunConfig.from_dict(dict(probe_samples=0, probe_every=0))  # no probes: nothing to feed


def test_10_a_failed_download_leaves_no_empty_folder_and_is_one_line(tmp_path, monkeypatch, capsys):
    """An empty data root, data_source=full: torchvision's download fails (offline) after making
    <root>/FashionMNIST/raw and part of a file; the run stops with one error line (after the one
    saying the download starts) and the data root is as empty as before (torchvision's retry
    messages do not reach the output)."""
    import torchvision.datasets as tvd

    from workbench import cli
    from workbench.data import fashion_files as ff

    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setattr(ff, "DEBIAN_DIR", tmp_path / "no-debian")

    def offline(root, train, download):
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b partial")
        print("Downloading http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://..., got:\n"
                           "<urlopen error [Errno -2] Name or service not known>")
    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    out = tmp_path / "runs"
    argv = ["train"] + [f"{k}={v}" for k, v in dict(FASHION, method="kd", teacher="resnet8", data_source="full",
                                                    data_root=root, out_dir=out).items()]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "download failed" in errors[0], captured.err
    assert captured.err.strip().splitlines()[:-1] == [f"[workbench] downloading into {root} (may take minutes)"]
    assert "Downloading" not in captured.out + captured.err
    assert list(root.iterdir()) == [] and not out.exists()


# ------------------------------------------------------------------ 11. a teacher trained by another run
def test_11_a_second_run_needing_the_same_uncached_teacher_is_told_to_wait_or_pass_a_file(fast_cfg, capsys):
    """While another process trains the teacher into the cache (it holds the teacher folder's
    lock), a second student run stops with one line naming that process, saying to wait for it
    (the rerun then uses the cached teacher) or to point teacher= at a file -- not to change
    name=/out_dir=, which would not help."""
    from test_integrity import _hold_lock, _kill
    from workbench import cli
    from workbench.config import RunConfig
    from workbench.experiment import teacher_config

    cfg = dict(fast_cfg, method="kd", epochs=1, probe_every=0)
    teacher_dir = teacher_config(RunConfig.from_dict(cfg), "resnet8").run_dir()
    holder = _hold_lock(teacher_dir)
    try:
        assert cli.main(["train"] + [f"{k}={v}" for k, v in cfg.items()]) == 2
    finally:
        _kill(holder)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"in use by process {holder.pid}" in err and "Wait for it to finish" in err and "teacher=" in err, err
    assert "name=" not in err, err
