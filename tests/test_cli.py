"""The command line a newcomer meets (issue 29 item 10): mistyped presets and commands get a
did-you-mean (not a list of ~200 names), the terminal progress has an overall ETA, the last line
names S, T_d, T_s and their gaps, and a missing dataset is said in a few words."""
import pytest

from workbench import cli
from workbench.engine import progress as engine_progress


def test_mistyped_preset_is_one_short_line_with_a_did_you_mean(capsys):
    from workbench.presets import PRESETS

    assert cli.main(["train", "preset=fashion/demo/gpd_dk"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'fashion/demo/gpd_dkd'?" in err, err
    assert "`python -m workbench presets` lists all" in err and f"{len(PRESETS)} presets" in err, err
    assert "cifar100/r32x4_r8x4/kd" not in err and len(err) < 200, err  # not every preset name
    assert cli.main(["presets", "fashon/demo/kd"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'fashion/demo/kd'?" in err and len(err) < 200, err


@pytest.mark.parametrize("typo, meant", [("trian", "train"), ("preset", "presets"), ("model", "models"),
                                         ("key", "keys"), ("method", "methods")])
def test_mistyped_command_gets_a_did_you_mean(capsys, typo, meant):
    assert cli.main([typo]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: unknown command {typo!r}") and f"did you mean {meant!r}?" in err, err
    assert len(err.splitlines()) == 1, err


def test_commands_are_read_from_the_usage_so_new_commands_get_the_did_you_mean_too():
    assert {"train", "presets", "methods", "models", "keys"} <= set(cli.commands())
    usage = cli.USAGE.replace("\nCommands\n", "\nCommands\n  sweep     run a grid of runs\n", 1)
    assert "sweep" in cli.commands(usage)
    from workbench.registry import unknown_choice

    assert "did you mean 'sweep'?" in unknown_choice("command", "swep", cli.commands(usage))


def test_done_line_names_the_dynamic_and_static_teacher_and_the_gaps(tmp_path):
    summary = {"student": dict(last_top1=80.0, best_top1=81.5, best_epoch=7),
               "dynamic_teacher": dict(last_top1=79.25, best_top1=80.0, best_epoch=8),
               "teacher": dict(last_top1=90.0, best_top1=90.0, best_epoch=0)}
    line = cli.done_line(summary, tmp_path)
    assert "S 80.00 (best 81.50 at epoch 7)" in line and "T_d 79.25" in line and "T_s 90.00" in line, line
    assert "T_d-S -0.75" in line and "T_s-S +10.00" in line and str(tmp_path) in line, line
    # an EMA-evaluated run states the reported (max of raw and EMA) values
    summary["student"].update(last_top1_reported=80.5, best_top1_reported=82.0, best_epoch_reported=9)
    line = cli.done_line(summary, tmp_path)
    assert "S 80.50 (best 82.00 at epoch 9)" in line and "T_d-S -1.25" in line, line
    plain = cli.done_line({"student": dict(last_top1=70.0, best_top1=71.0, best_epoch=3)}, tmp_path)
    assert "T_d" not in plain and "gaps" not in plain and "S 70.00" in plain, plain


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_terminal_progress_ends_each_epoch_line_with_the_phase_eta(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(engine_progress.time, "perf_counter", fake)
    lines = []
    monkeypatch.setattr(engine_progress.TerminalProgress, "_write", lambda self, msg: lines.append(msg))
    p = engine_progress.TerminalProgress()
    p.phase("gpd (base dkd): resnet20 -> resnet8", 10)
    fake.now += 15.0  # set-up and the evaluation before epoch 1: not an epoch's cost
    list(p.bar(range(3), "epoch 1/10", 3, epoch=1))
    fake.now += 20.0  # two epochs of 10 s
    p.line("epoch 1/10 ...")
    list(p.bar(range(3), "epoch 2/10", 3, epoch=2))
    p.line("epoch 2/10 ...")
    assert lines[-1] == "epoch 2/10 ...  | elapsed 0:35, ETA 1:20", lines  # 8 epochs x 10 s left
    # resumed at epoch 7 of 10: the epochs done before the resume are not time left
    p.phase("gpd", 10, start=7)
    fake.now += 30.0
    p.line("epoch 7/10 ...")
    assert lines[-1].endswith("elapsed 0:30, ETA 1:30"), lines  # 3 epochs x 30 s left
    fake.now += 90.0
    for e in (8, 9, 10):
        p.line(f"epoch {e}/10 ...")
    assert lines[-1].endswith("elapsed 2:00, done"), lines


def test_clock_reads_minutes_and_hours():
    assert engine_progress.clock(59.6) == "1:00" and engine_progress.clock(3725) == "1:02:05"


def test_missing_cifar_is_a_short_message_in_each_front_ends_spelling(tmp_path, monkeypatch):
    from workbench import data

    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets").mkdir()
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.check_available("cifar100", root=tmp_path / "datasets", download=False)
    cli_text, nb_text = str(e.value), e.value.in_notebook()
    for text in (cli_text, nb_text):
        assert len(text) < 400 and "\n" not in text, text  # it was ~1,000 characters
        assert "papermill" not in text and str(tmp_path) not in text, text  # paths relative to here
        assert "no folder datasets/cifar-100-python" in text and "https://www.cs.toronto.edu/~kriz/cifar.html" in text
    assert "data_root=<folder>" in cli_text and "preset=fashion/demo/<method>" in cli_text, cli_text
    assert "data_root = '<folder>'" in nb_text and "dataset = 'fashion_mnist'" in nb_text, nb_text
    assert "preset=" not in nb_text and "python -m" not in nb_text, nb_text


def test_a_failed_download_is_said_in_a_few_words(tmp_path, monkeypatch):
    from workbench.data import base, cifar

    class Offline:  # torchvision's dataset class, without a network
        filename = "cifar-10-python.tar.gz"

        def __init__(self, **kw):
            raise OSError("[Errno -2] Name or service not known\nand a second line")

    monkeypatch.setattr(cifar, "_tv_class", lambda name: Offline)
    with pytest.raises(base.DatasetNotFoundError) as e:
        cifar._ensure("cifar10", tmp_path, download=True)
    assert "download failed (OSError: [Errno -2] Name or service not known)" in str(e.value), str(e.value)
    assert "second line" not in str(e.value) and base.failure(OSError("x" * 500)).endswith("...")
