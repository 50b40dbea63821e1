"""The validation split carved from the training data (``val_per_class``, ``val_seed``,
``eval_on``): seeded, class-balanced, disjoint from the test set and from the images trained on,
recorded in the run's records, and a run with ``eval_on=val`` never builds the test set (nor does
its teacher phase, its transfer probe or the notebook's re-evaluation)."""
import numpy as np
import pytest
import torch
from PIL import Image

from workbench import data
from workbench.config import ConfigError, RunConfig
from workbench.data.base import DatasetEntry
from workbench.data.device import device_tensors
from workbench.experiment import prepare, run, run_datasets
from workbench.nb.run import check_student


def contents(ds) -> list[bytes]:
    """Each example's image as bytes, read without augmentation by the caller."""
    return [ds[i][0].numpy().tobytes() for i in range(len(ds))]


# ------------------------------------------------------------------ the pick
def test_holdout_indices_are_class_balanced_disjoint_complete_and_seeded():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 9)
    np.random.default_rng(1).shuffle(labels)
    train, val = data.holdout_indices(labels, 3, seed=4)
    assert np.bincount(labels[val]).tolist() == [3, 3, 3]  # class-balanced
    assert not set(train) & set(val) and sorted([*train, *val]) == list(range(len(labels)))
    again = data.holdout_indices(labels, 3, seed=4)
    assert np.array_equal(val, again[1]) and np.array_equal(train, again[0])  # identical for the same seed
    assert not np.array_equal(val, data.holdout_indices(labels, 3, seed=5)[1])  # another seed, another pick
    with pytest.raises(ValueError, match=r"val_per_class=5: class 1 has only 5 training images.*valid: 0\.\.4"):
        data.holdout_indices(labels, 5, seed=0)


@pytest.mark.parametrize("name, options", [("digits", dict(train_per_class=12)), ("digits", {}),
                                           ("fashion_mnist", dict(source="embedded", train_per_class=30))])
def test_val_is_disjoint_from_the_test_set_and_the_training_images(name, options):
    """Content-level checks on the real embedded datasets (their images are all distinct, asserted
    below, so equal bytes would mean the same image)."""
    train, val = data.splits(name, {**options, "augment": False}, 4, 7, eval_on="val")
    test = data.build(name, "test", **options)
    whole = data.build(name, "train", **options, augment=False)
    w, t, v, r = contents(whole), contents(test), contents(val), contents(train)
    assert len(set(w)) == len(w)  # no duplicate images: byte equality is identity
    assert not set(v) & set(t)  # disjoint from the test set
    assert not set(v) & set(r)  # and from the images trained on
    assert sorted(v + r) == sorted(w)  # together they are the training split as configured
    counts = np.bincount(val.targets.numpy())
    assert counts.tolist() == [4] * len(counts)  # class-balanced
    assert [int(val[i][1]) for i in range(len(val))] == val.targets.tolist()  # labels travel with the images
    again = data.splits(name, {**options, "augment": False}, 4, 7, eval_on="val")[1]
    assert contents(again) == v  # identical for the same seed
    assert contents(data.splits(name, {**options, "augment": False}, 4, 8, eval_on="val")[1]) != v


def test_training_part_keeps_the_configured_augmentation_and_val_has_none():
    train, val = data.splits("digits", dict(train_per_class=12), 4, 0, eval_on="val")
    assert train.dataset.augment and not val.dataset.augment
    assert len(train) == 10 * 8 and len(val) == 10 * 4


def test_subsets_keep_the_device_resident_path():
    train, val = data.splits("fashion_mnist", dict(source="embedded", train_per_class=20), 5, 0, eval_on="val")
    for part in (train, val):
        t = device_tensors(part)
        assert t is not None and len(t.images) == len(part) and torch.equal(t.targets, part.targets)
    # unaugmented val: the device tensors normalised as the items are (one example)
    t = device_tensors(val)
    x = (t.images[3].float() / 255.0 - t.mean[0]) / t.std[0]
    assert torch.allclose(x, val[3][0], rtol=0, atol=1e-6)  # float32 normalisation of one pixel each


def test_imagefolder_validation_images_come_from_the_train_folders(tmp_path):
    """ImageNet-style folders (made here): val is a class-balanced part of train/<class>/, never of
    val/<class>/ (the folder imagefolder evaluates on)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    opts = dict(root=str(tmp_path), image_size=8)
    train, val = data.splits("imagefolder", opts, 1, 0, eval_on="val")
    paths = [val.dataset.samples[i][0] for i in val.indices]
    assert len(paths) == 2 and all("/train/" in p for p in paths)
    assert sorted(p.split("/")[-2] for p in paths) == ["a", "b"]
    assert not {val.dataset.samples[i][0] for i in val.indices} & {train.dataset.samples[i][0] for i in train.indices}


# ------------------------------------------------------------------ config and runs
def test_bad_validation_settings_are_one_line(fast_cfg):
    with pytest.raises(ConfigError, match="eval_on: 'val' .* set val_per_class"):
        RunConfig.from_dict(dict(fast_cfg, eval_on="val"))
    with pytest.raises(ConfigError, match=r"val_per_class: 10 validation images .* train_per_class=10 .* valid: 0\.\.9"):
        RunConfig.from_dict(dict(fast_cfg, val_per_class=10))
    with pytest.raises(ConfigError, match="eval_on: unknown"):
        RunConfig.from_dict(dict(fast_cfg, eval_on="train"))
    cfg = RunConfig.from_dict(dict(fast_cfg, val_per_class=2, teacher_data="all"))
    with pytest.raises(ConfigError, match="teacher_data: 'all' would train the teacher resnet8 on every training "
                                          "image, the student's validation images"):
        prepare(cfg)


def test_a_run_on_val_never_builds_the_test_set_and_records_its_split(fast_cfg, monkeypatch):
    """Teacher trained on the fly, probes on, a transfer target (the other digits): every dataset
    built is a training split; eval and summary records say split 'val' and count the validation
    images; the notebook's re-evaluation of student.pt reads the same split."""
    built = []
    original = DatasetEntry.build

    def spy(self, split, **options):
        built.append((self.name, split))
        return original(self, split, **options)

    monkeypatch.setattr(DatasetEntry, "build", spy)
    cfg = dict(fast_cfg, val_per_class=3, eval_on="val", source_classes="0,1,2,3,4", method="kd")
    res = run(cfg)
    assert built and all(split == "train" for _, split in built)
    recs = res.records
    evals = [r for r in recs if r["kind"] == "eval"]
    assert evals and all(r["split"] == "val" and r["n"] == 5 * 3 for r in evals)
    assert {r["split"] for r in recs if r["kind"] == "summary"} == {"val"}
    assert any(r.get("probe") == "transferability" for r in recs)  # on the target's own validation split
    table = check_student(RunConfig.from_dict(cfg), res.run_dir, recs)
    row = table.rows[0]
    n = 5 * 3  # re-evaluated on val == logged: the same count of correct examples out of 15 (the log is float32)
    assert row[3] * n / 100 == pytest.approx(round(row[4] * n / 100), abs=1e-6)
    assert all(split == "train" for _, split in built)
    # the teacher phase trained on train minus val and evaluated on val too
    teacher_cfg = [r for r in (res.run_dir.parent / "teachers").glob("*/config.json")]
    assert len(teacher_cfg) == 1 and '"eval_on": "val"' in teacher_cfg[0].read_text()


def test_val_per_class_with_eval_on_test_trains_without_val_and_scores_on_test(fast_cfg):
    """The final-run setting: the search's training images, scored on the untouched test split."""
    cfg = RunConfig.from_dict(dict(fast_cfg, val_per_class=3))
    train, evaluation = run_datasets(cfg)
    assert len(train) == 10 * 7
    assert contents(evaluation) == contents(data.build("digits", "test", train_per_class=10))
    plain = data.training_split("digits", dict(train_per_class=10, augment=False), 3, 0)
    assert np.array_equal(train.indices, plain.indices)  # the augmented and plain cuts pick the same images
    val = data.validation_split("digits", dict(train_per_class=10), 3, 0)
    assert not set(contents(plain)) & set(contents(val))


def test_weight_inheritance_re_estimates_batchnorm_on_the_training_images_only(fast_cfg, monkeypatch):
    """init=inherit recalibrates BN on training images: with a validation split, never on them."""
    from workbench import student_init

    seen = {}

    class Stop(Exception):
        pass

    def capture(student, source, images, *args, **kwargs):
        seen["images"] = images
        raise Stop

    monkeypatch.setattr(student_init, "inherit_student", capture)
    with pytest.raises(Stop):
        run(dict(fast_cfg, val_per_class=3, eval_on="val", init="inherit", method="kd"))
    val = data.validation_split("digits", dict(train_per_class=10), 3, 0)
    assert len(seen["images"]) == 10 * 7 and not set(contents(seen["images"])) & set(contents(val))


def test_top1_curves_follow_the_split_the_eval_records_are_on():
    from workbench.probes.figures import top1_curves

    recs = [{"kind": "eval", "epoch": e, "split": "val", "role": "student", "top1": 50.0 + e} for e in range(3)]
    fig = top1_curves(recs)
    assert fig.layout.title.text == "Top-1 (val)" and list(fig.data[0].y) == [50.0, 51.0, 52.0]
    assert not top1_curves(recs, split="test").data  # asking for test finds no val record


def test_a_device_resident_run_on_the_split_equals_the_dataloader_run(fast_cfg):
    """Both parts keep the device-resident path: without augmentation, a device_data=on run with a
    validation split trains on exactly the DataLoader run's batches (bit-identical weights) and
    scores the same validation images."""
    from workbench.engine.checkpoint import load_checkpoint

    quick = dict(fast_cfg, method="ce", teacher="none", epochs=1, probe_every=0, augment=False, val_per_class=3,
                 eval_on="val")
    a, b = (run(dict(quick, device_data=mode, name=mode)) for mode in ("off", "on"))
    wa, wb = (load_checkpoint(r.run_dir / "last.pt")["model"] for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ea, eb = ([(r["top1"], r["loss"], r["n"]) for r in res.records if r["kind"] == "eval"] for res in (a, b))
    assert ea == eb and ea[0][2] == 30
