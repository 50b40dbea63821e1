"""``teacher=torchvision:<arch>``: torchvision's ImageNet weights from the local torch hub cache,
as the GPD reference code loads its teachers; a missing or damaged file is one line naming the
file, the folder and the URL, before any work; the ImageNet presets use it."""
import dataclasses
import hashlib
import re
from pathlib import Path

import pytest
import torch

from workbench import models, torchvision_teachers
from workbench.config import ConfigError, RunConfig
from workbench.experiment import prepare, run
from workbench.presets import PRESETS

DIGITS_KD = dict(dataset="digits", train_per_class=5, method="kd", student="resnet8", epochs=1, batch_size=25,
                 eval_batch_size=512, probe_every=0, progress=False)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def _fake_weights(folder: Path, monkeypatch, arch="resnet18", num_classes=10, in_channels=1) -> Path:
    """A state dict of ``arch`` saved under a torch-hub style name carrying its own SHA-256 prefix,
    registered as torchvision's file for ``arch`` (the real files are not downloaded in tests)."""
    tmp = folder / "tmp.pth"
    torch.save(models.build(arch, num_classes, in_channels).state_dict(), tmp)
    name = f"{arch}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(folder / name)
    entry = torchvision_teachers.TORCHVISION_WEIGHTS[arch]
    monkeypatch.setitem(torchvision_teachers.TORCHVISION_WEIGHTS, arch, dataclasses.replace(entry, files=(name,)))
    monkeypatch.setattr(torchvision_teachers, "_verified", set())
    return folder / name


def test_missing_file_is_one_line_naming_file_folder_and_url(hub, tmp_path):
    cfg = RunConfig.from_dict(dict(DIGITS_KD, teacher="torchvision:resnet34", out_dir=str(tmp_path / "runs")))
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "resnet34-b627a593.pth" in msg and str(hub) in msg
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in msg
    assert not (tmp_path / "runs").exists()  # nothing created, no teacher trained


def test_unknown_name_gets_the_valid_choices():
    with pytest.raises(ConfigError, match=r"torchvision:resnet34.*torchvision:resnet50|did you mean"):
        torchvision_teachers.path("torchvision:resnet35")


def test_present_file_is_the_teacher_and_names_the_run(hub, tmp_path, monkeypatch):
    path = _fake_weights(hub, monkeypatch)
    cfg = dict(DIGITS_KD, teacher="torchvision:resnet18", out_dir=str(tmp_path / "runs"))
    prep = prepare(RunConfig.from_dict(cfg))
    assert (prep.teacher.kind, prep.teacher_arch, prep.teacher.path) == ("torchvision", "resnet18", path)
    assert prep.run_dir.name.startswith("digits_resnet18-resnet8_kd_s0-")
    res = run(cfg, log=lambda *_: None)
    assert "teacher" in res.summary and not (tmp_path / "runs" / "teachers").exists()  # loaded, not trained
    # found under an older torchvision name too (the GPD README's files) when the current one is absent
    monkeypatch.setitem(torchvision_teachers.TORCHVISION_WEIGHTS, "resnet18", dataclasses.replace(
        torchvision_teachers.TORCHVISION_WEIGHTS["resnet18"], files=("resnet18-00000000.pth", path.name)))
    assert torchvision_teachers.path("torchvision:resnet18") == path


def test_damaged_file_is_one_line(hub, monkeypatch):
    path = _fake_weights(hub, monkeypatch)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ConfigError, match=r"damaged or not torchvision's file .*fetch https://") as e:
        torchvision_teachers.path("torchvision:resnet18")
    assert "\n" not in str(e.value)


def test_imagenet_presets_load_torchvisions_teachers():
    """GPD's --teacher-weight files (and mdistiller's torchvision models): no 90-epoch teacher."""
    for name, values in PRESETS.items():
        if name.startswith("imagenet/") and values.get("teacher", "none") != "none":
            assert values["teacher"] in ("torchvision:resnet34", "torchvision:resnet50"), name
    assert round(torchvision_teachers.TORCHVISION_WEIGHTS["resnet34"].top1, 2) == 73.31  # the GPD README's teacher
    published = (Path(__file__).resolve().parents[1] / "docs" / "published.md").read_text()
    assert re.search(r"^\| teacher \| 73\.31 \| 76\.16 \|", published, flags=re.M)
