"""train_data= (DM-KD's protocol): another training image set than the evaluated dataset -- parsing,
the class mapping checked one line before any training, images brought to the evaluation format
(channels, resolution, normalisation) against a hand computation, KD without labels (ce_weight=0),
and the data's identity in the run name's hash and the resume check; the teacher stays on real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench import data
from workbench.config import ConfigError, RunConfig
from workbench.data import train_data as td
from workbench.data.digits import MEAN, STD
from workbench.engine import CheckpointError, Trainer
from workbench.experiment import prepare, run, teacher_config

QUIET = dict(log=lambda *_: None)
DIGITS = data.info("digits")


def make_folder(root: Path, names, per_class: int = 3, size: int = 16, value=None, mode="RGB") -> Path:
    """Class folders of small PNGs (colour, ``size`` px: other channels and resolution than digits)."""
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            pixels = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 256, shape, np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i}.png")
    return root


# ------------------------------------------------------------------ parsing
def test_parse_folders_and_dataset_specs(tmp_path):
    assert td.parse("") is None
    assert td.parse(str(tmp_path)) == td.TrainData(td.FOLDER, path=str(tmp_path))
    assert td.parse("digits:train_per_class=5,seed=1") == td.TrainData(td.DATASET, name="digits",
                                                                      options={"train_per_class": 5, "seed": 1})
    with pytest.raises(ValueError, match="neither a folder .* nor a registered dataset"):
        td.parse("nosuchset")
    with pytest.raises(ValueError, match="has no option 'colour'; valid"):
        td.parse("digits:colour=1")
    with pytest.raises(ConfigError, match="train_data") as err:
        RunConfig(dataset="digits", train_data="digits:seed").validate()
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ class mapping
def test_class_folders_by_label_or_by_name(tmp_path):
    by_label = make_folder(tmp_path / "a", [f"{i:03d}" for i in range(10)], per_class=1)
    assert td.class_map(by_label, DIGITS) == {f"{i:03d}": i for i in range(10)}
    fashion = data.info("fashion_mnist", source="embedded")
    names = [n.replace("/", "_") for n in fashion.class_names]
    by_name = make_folder(tmp_path / "b", names, per_class=1)
    assert td.class_map(by_name, fashion) == {n: i for i, n in enumerate(names)}  # T-shirt_top is class 0


@pytest.mark.parametrize("folders, match", [
    ([str(i) for i in range(9)], r"missing \[9\]"),
    ([str(i) for i in range(11)], r"unknown \['10'\]"),
    (["cat", "dog"] + [str(i) for i in range(8)], r"unknown \['cat', 'dog'\]"),
])
def test_mismatched_classes_are_one_line_before_any_training(tmp_path, monkeypatch, folders, match):
    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("training started"))
    folder = make_folder(tmp_path / "syn", folders, per_class=1)
    cfg = RunConfig(dataset="digits", train_per_class=10, method="ce", teacher="none", student="resnet8", epochs=1,
                    train_data=str(folder), out_dir=str(tmp_path / "runs"), progress=False)
    with pytest.raises(ConfigError, match=match) as err:
        prepare(cfg)
    assert "\n" not in str(err.value) and "train_data" in str(err.value)
    assert not cfg.run_dir().exists()


def test_an_empty_class_folder_and_other_class_names_are_refused(tmp_path):
    folder = make_folder(tmp_path / "syn", [str(i) for i in range(10)], per_class=1)
    for f in (folder / "4").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"class folder .*4 has no image files"):
        td.check(td.parse(str(folder)), DIGITS)
    with pytest.raises(ValueError, match="labels would not match"):  # same count, other classes
        td.check(td.parse("fashion_mnist:source=embedded"), DIGITS)


# ------------------------------------------------------------------ the images, by hand
def test_folder_images_take_the_evaluation_format(tmp_path):
    """A 16 x 16 RGB image of grey level 200 -> one channel (PIL's L: 200), 8 x 8 (a constant stays
    constant under the antialiased resize), normalised with digits' mean/std."""
    folder = make_folder(tmp_path / "syn", [str(i) for i in range(10)], per_class=2, value=200)
    ds = td.build(td.parse(str(folder)), DIGITS, augment=False)
    assert len(ds) == 20 and torch.equal(data.labels(ds), torch.arange(10).repeat_interleave(2))
    x, y = ds[5]
    assert x.shape == (1, 8, 8) and y == 2
    want = (200 / 255 - MEAN) / STD  # float64 by hand; ToTensor + Normalize in float32: 3 roundings
    assert torch.allclose(x, torch.full((1, 8, 8), want, dtype=torch.float32), rtol=4 * 2**-24, atol=0)


def test_a_registered_dataset_is_resized_to_the_evaluation_resolution():
    ds = td.build(td.parse("digits:image_size=16,train_per_class=5"), DIGITS, augment=False)
    x, _ = ds[0]
    assert x.shape == (1, 8, 8) and len(ds) == 50


# ------------------------------------------------------------------ runs
def _cfg(tmp_path, folder, **kw):
    return dict(dataset="digits", train_per_class=10, method="kd", teacher="resnet8", teacher_epochs=1, ce_weight=0.0,
                student="resnet8", epochs=1, batch_size=16, train_data=str(folder), out_dir=str(tmp_path / "runs"),
                probe_every=0, progress=False, **kw)


def test_kd_without_labels_on_another_image_set(tmp_path):
    """ce_weight=0 (DM-KD): the CE term is zero, the loss is KD alone, and the train record's top-1 is
    the accuracy on the folder's labels (images of one grey level per class: learnable)."""
    root = tmp_path / "syn"
    for c in range(10):
        make_folder(root, [str(c)], per_class=4, value=20 * c + 10)
    res = run(_cfg(tmp_path, root, name="dmkd"), **QUIET)
    train = [r for r in res.records if r["kind"] == "train"]
    assert train[0]["loss_ce"] == 0.0 and train[0]["loss"] == train[0]["loss_kd"]
    assert 0.0 <= train[0]["top1"] <= 100.0
    assert len(data.labels(td.build(td.parse(str(root)), DIGITS, False))) == 40  # what the epoch saw
    prov = torch.load(res.run_dir / "last.pt", weights_only=True)["provenance"]
    assert prov["train_data"]["spec"] == str(root) and prov["train_data"]["fingerprint"]


def test_the_name_covers_the_folder_contents_and_the_teacher_does_not_depend_on_it(tmp_path):
    folder = make_folder(tmp_path / "syn", [str(i) for i in range(10)], per_class=1)
    cfg = RunConfig(**_cfg(tmp_path, folder))
    name = cfg.default_name()
    assert name != RunConfig(**_cfg(tmp_path, "")).default_name()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "3" / "extra.png")
    assert RunConfig(**_cfg(tmp_path, folder)).default_name() != name  # same path, other images
    # DM-KD's teachers are trained on the real data: one cached teacher for every train_data
    assert teacher_config(cfg, "resnet8").train_data == ""
    assert teacher_config(cfg, "resnet8").run_dir() == teacher_config(RunConfig(**_cfg(tmp_path, "")),
                                                                      "resnet8").run_dir()


def test_a_run_whose_training_images_changed_is_not_resumed(tmp_path):
    """The run folder is named by the config (its path string too); a rerun after the images under the
    same path changed is refused with one line (provenance), like a changed dataset."""
    folder = make_folder(tmp_path / "syn", [str(i) for i in range(10)], per_class=2)
    cfg = _cfg(tmp_path, folder, name="fixed")
    run(cfg, **QUIET)
    (folder / "7" / "0.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "7" / "new.png")
    with pytest.raises(CheckpointError, match="train_data=.* changed since it started") as err:
        run(cfg, **QUIET)
    assert "\n" not in str(err.value)


def test_dmkd_presets_hold_the_reference_settings():
    """DM-KD's CIFAR-100 (train_student.py defaults) and ImageNet (scripts/imagenet_distill.sh) values."""
    from workbench.presets import get_preset

    cifar = RunConfig(**get_preset("dmkd/cifar100/r34_r18"))
    assert (cifar.method, cifar.ce_weight, cifar.kd_weight, cifar.kd_T, cifar.epochs, cifar.lr, tuple(cifar.milestones),
            cifar.weight_decay, cifar.batch_size, cifar.teacher, cifar.student) == \
        ("kd", 0.0, 0.9, 4.0, 240, 0.1, (150, 180, 210), 5e-4, 128, "ResNet34", "ResNet18")
    imagenet = RunConfig(**get_preset("dmkd/imagenet/r18_r18"))
    assert (imagenet.ce_weight, imagenet.kd_weight, imagenet.kd_T, imagenet.epochs, tuple(imagenet.milestones),
            imagenet.weight_decay, imagenet.batch_size, imagenet.teacher, imagenet.student) == \
        (0.0, 1.0, 10.0, 100, (30, 60, 90), 1e-4, 256, "resnet18", "resnet18")


def test_folder_images_are_augmented_as_the_evaluated_dataset(tmp_path):
    """The evaluated dataset's own translation range and flip (fashion_mnist: 2 px + flip; digits: 1 px,
    no flip), so a study comparing folder images with the dataset's own sees the same augmentation."""
    fashion = data.info("fashion_mnist", source="embedded")
    folder = make_folder(tmp_path / "f", [str(i) for i in range(10)], per_class=1, size=28)
    after = td.build(td.parse(str(folder)), fashion, augment=True).after
    assert (after.pad, after.flip) == (2, True)
    after = td.build(td.parse(str(folder)), DIGITS, augment=True).after
    assert (after.pad, after.flip) == (1, False)
    assert td.build(td.parse(str(folder)), DIGITS, augment=False).after is None
