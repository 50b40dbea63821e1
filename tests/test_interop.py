"""Community teacher files (RepDistiller's ``save/models/<arch>_vanilla/ckpt_epoch_240.pth``,
a dict whose ``"model"`` entry is the state dict) work as ``teacher=`` / ``init=`` values of the
CLI and the experiment runner as they are."""
import pytest
import torch

from workbench import cli, data, models
from workbench.engine import read_metrics
from workbench.experiment import run

ARCH, NUM_CLASSES, IN_CHANNELS = "resnet8", 10, 1


def _zoo_file(tmp_path, num_classes=NUM_CLASSES, arch=ARCH):
    torch.manual_seed(1)
    model = models.build(arch, num_classes, IN_CHANNELS)
    with torch.no_grad():  # non-trivial BN statistics so a loader that drops buffers is caught
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    path = tmp_path / "save" / "models" / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": 0.0}, path)
    return model.eval(), path


def _accuracy(model, fast_cfg):
    ds = data.build("digits", "test", train_per_class=fast_cfg["train_per_class"], seed=0)
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    ys = torch.tensor([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        return 100.0 * (model(xs).argmax(1) == ys).float().mean().item()


def test_repdistiller_teacher_file_through_the_cli(fast_cfg, tmp_path, capsys):
    model, path = _zoo_file(tmp_path)
    args = [f"{k}={v}" for k, v in dict(fast_cfg, method="kd", teacher=str(path), epochs=1, probe_every=0,
                                       name="zoo").items()]
    assert cli.main(["train", *args]) == 0
    recs = read_metrics(tmp_path / "runs" / "zoo")
    teacher_top1 = [r["top1"] for r in recs if r["kind"] == "eval" and r["role"] == "teacher"]
    # top-1 in % = count / n: equal counts, one float32 rounding each (approx default 1e-6)
    assert len(teacher_top1) == 2 and teacher_top1 == pytest.approx([_accuracy(model, fast_cfg)] * 2)
    assert not (tmp_path / "runs" / "teachers").exists()  # the file was used, nothing trained


def test_repdistiller_file_as_init_for_fine_tuning(fast_cfg, tmp_path):
    model, path = _zoo_file(tmp_path)
    res = run(dict(fast_cfg, method="ce", teacher="none", init=str(path), epochs=1, probe_every=0))
    e0 = [r for r in read_metrics(res.run_dir) if r["kind"] == "eval" and r["epoch"] == 0]
    assert e0[0]["top1"] == pytest.approx(_accuracy(model, fast_cfg))  # same count, one rounding


def test_wrong_class_count_teacher_file_is_a_one_line_cli_error(fast_cfg, tmp_path, capsys):
    _, path = _zoo_file(tmp_path, num_classes=100)
    args = [f"{k}={v}" for k, v in dict(fast_cfg, method="kd", teacher=str(path), epochs=1).items()]
    assert cli.main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert "teacher" in err and "100" in err and "10" in err and "Traceback" not in err
    assert not list((tmp_path / "runs").glob("*/last.pt"))
