"""Using the student: the README's three-line loader and the CLI export (TorchScript, ONNX) give
the run's student; exported outputs equal the eager model's."""
import importlib.util
import shlex

import pytest
import torch

from conftest import float_tol
from test_readme_examples import readme_block, rel_err
from workbench import data, models
from workbench.cli import main
from workbench.experiment import run

#: a GPD run (the deployable student is CBR-extracted) on digits, no teacher: seconds
TINY = dict(dataset="digits", train_per_class=5, method="gpd", base="none", teacher="none", student="resnet8",
            epochs=1, batch_size=25, ratio=1.5, branches=1, eval_batch_size=512, probe_every=0, progress=False,
            ema_decay=0.9)
#: the exported graph runs the same float32 ops as eager (possibly fused or reordered): the
#: largest reduction is resnet8's 3x3 convs over 64 channels (576 terms) and the classifier
FAN_IN = 64 * 9
HAS_ONNX = all(importlib.util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return run(dict(TINY, out_dir=str(tmp_path_factory.mktemp("runs"))), log=lambda *_: None)


def _test_images(n=16):
    opts = dict(train_per_class=5, augment=False)
    ds = data.build("digits", "test", **opts)
    return torch.stack([ds[i][0] for i in range(n)]), torch.tensor([ds[i][1] for i in range(n)])


def test_readme_loader_gives_the_runs_student(finished):
    images, _ = _test_images()
    block = readme_block("load_student(").replace("runs/<name>/student.pt", str(finished.run_dir / "student.pt"))
    scope = {"images": images}
    exec(block, scope)  # noqa: S102 -- the README's own example
    student = scope["student"]
    assert type(student) is type(models.build("resnet8", 10, 1)) and not student.training
    # what the run evaluated: its last-epoch top-1 on the test set, re-computed from the file alone
    test = data.build("digits", "test", train_per_class=5, augment=False)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        top1 = 100.0 * (student(x).argmax(1) == y).float().mean().item()
    assert top1 == pytest.approx(finished.summary["student"]["last_top1"], abs=1e-3)  # a count of 1 in 1000s
    assert scope["logits"].shape == (16, 10)
    sf = models.student_file(finished.run_dir / "student.pt")
    assert (sf.num_classes, sf.in_channels, sf.input_shape) == (10, 1, (1, 8, 8))


def test_older_student_files_without_the_new_entries_still_load(finished, tmp_path):
    obj = torch.load(finished.run_dir / "student.pt", weights_only=True)
    old = {k: obj[k] for k in ("model", "arch", "epoch")}  # what student.pt held before
    torch.save(old, tmp_path / "student.pt")
    sf = models.student_file(tmp_path / "student.pt")
    assert (sf.num_classes, sf.in_channels, sf.input_shape) == (10, 1, None)
    # alone, its input shape is unknown: one line; beside its run's config.json, the dataset tells it
    from workbench.export import ExportError, export

    with pytest.raises(ExportError, match="does not record its input shape") as e:
        export(tmp_path / "student.pt")
    assert "\n" not in str(e.value)
    (tmp_path / "config.json").write_text((finished.run_dir / "config.json").read_text())
    out = export(tmp_path / "student.pt")
    assert out == tmp_path / "student.torchscript.pt" and out.is_file()


def _exported(finished, fmt, tmp_path, *extra):
    out = tmp_path / f"student.{fmt}"
    assert main(["export", str(finished.run_dir), "--format", fmt, "--out", str(out), *extra]) == 0
    return out


def test_torchscript_export_equals_the_eager_student(finished, tmp_path, capsys):
    images, _ = _test_images()
    out = _exported(finished, "torchscript", tmp_path)
    assert str(out) in capsys.readouterr().out
    scripted = torch.jit.load(str(out))
    eager = models.load_student(finished.run_dir / "student.pt")
    with torch.no_grad():
        assert rel_err(scripted(images), eager(images)) <= float_tol(torch.float32, FAN_IN)
        assert scripted(images[:5]).shape == (5, 10)  # any batch size
    ema = _exported(finished, "torchscript", tmp_path / "ema", "--ema")
    eager_ema = models.load_student(finished.run_dir / "student_ema.pt")
    with torch.no_grad():
        assert rel_err(torch.jit.load(str(ema))(images), eager_ema(images)) <= float_tol(torch.float32, FAN_IN)
        assert rel_err(eager_ema(images), eager(images)) > 1e-3  # another model: --ema is not ignored


def test_readme_export_commands_parse_and_default_beside_the_student(finished, capsys):
    cmds = [line.split("#")[0].strip() for line in readme_block.__globals__["README"].read_text().splitlines()
            if line.startswith("python -m workbench export")]
    assert len(cmds) == 2
    args = shlex.split(cmds[0].replace("runs/<name>", str(finished.run_dir)))[3:]
    assert main(args) == 0 and (finished.run_dir / "student.torchscript.pt").is_file()


@pytest.mark.skipif(not HAS_ONNX, reason="the optional onnx extra is not installed")
def test_onnx_export_equals_the_eager_student(finished, tmp_path):
    import onnxruntime

    images, _ = _test_images()
    out = _exported(finished, "onnx", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # one self-contained file, no external data
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    with torch.no_grad():
        want = models.load_student(finished.run_dir / "student.pt")(images)
    assert rel_err(got, want) <= float_tol(torch.float32, FAN_IN)


def test_bad_requests_are_one_line(finished, tmp_path, capsys, monkeypatch):
    assert main(["export", str(finished.run_dir), "--format", "tflite"]) == 2
    assert "unknown format 'tflite'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "neither a run folder nor a student file" in capsys.readouterr().err
    import workbench.export as ex

    real = importlib.util.find_spec
    monkeypatch.setattr(ex.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    assert main(["export", str(finished.run_dir), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxscript" in err and "pip install -e '.[onnx]'" in err
