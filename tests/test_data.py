"""Dataset registry: digits splits, options, and clear errors for missing/unknown data."""
import pytest
import torch

from workbench import data


def test_digits_low_label_split_is_seeded_and_disjoint():
    tr = data.build("digits", "train", train_per_class=5, seed=3)
    te = data.build("digits", "test", train_per_class=5, seed=3)
    assert len(tr) == 50 and len(tr) + len(te) == 1797
    assert torch.bincount(tr.targets).tolist() == [5] * 10
    again = data.build("digits", "train", train_per_class=5, seed=3)
    assert torch.equal(tr.images, again.images)
    other = data.build("digits", "train", train_per_class=5, seed=4)
    assert not torch.equal(tr.images, other.images)


def test_digits_split_indices_partition_the_dataset():
    import numpy as np

    from workbench.data.digits import split_indices

    y = np.repeat(np.arange(10), 20)
    s = split_indices(y, 7, seed=0)
    assert len(np.intersect1d(s["train"], s["test"])) == 0
    assert sorted(np.concatenate([s["train"], s["test"]]).tolist()) == list(range(200))
    assert np.bincount(y[s["train"]]).tolist() == [7] * 10


def test_digits_default_split_is_70_30_and_normalised():
    tr, te = data.build("digits", "train"), data.build("digits", "test")
    assert abs(len(te) / 1797 - 0.3) < 0.01
    x = torch.cat([tr.images, te.images])
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1.0) < 0.01


def test_digits_options_classes_size_augment():
    ds = data.build("digits", "train", classes=(5, 6, 7, 8, 9), image_size=32, augment=False)
    assert set(ds.targets.tolist()) == {0, 1, 2, 3, 4}
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and isinstance(y, int)
    assert data.info("digits", classes=(0, 1)).num_classes == 2
    torch.manual_seed(0)
    aug = data.build("digits", "train", augment=True)
    shifted = [not torch.equal(aug[i][0], aug.images[i]) for i in range(20)]
    assert any(shifted)
    assert torch.equal(data.build("digits", "test")[0][0], data.build("digits", "test").images[0])


def test_unknown_dataset_and_option_errors():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar1000'.*cifar10, cifar100, digits.*did you mean 'cifar100'"):
        data.build("cifar1000", "train")
    with pytest.raises(ValueError, match=r"unknown option 'train_pc'.*train_per_class"):
        data.build("digits", "train", train_pc=3)
    with pytest.raises(ValueError, match="split"):
        data.build("digits", "val")
    with pytest.raises(ValueError, match="classes"):
        data.build("digits", "train", classes=(1, 1))


def test_missing_cifar_says_where_and_names_digits(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.build("cifar100", "train", root=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-100-python" in msg and "preset=fashion/demo/" in msg


def test_missing_imagefolder(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match=r"train.*val|preset=fashion/demo/"):
        data.info("imagefolder", root=tmp_path)


def test_imagefolder_reads_class_folders(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            Image.new("RGB", (40, 40), (10, 200, 30)).save(d / "a.png")
    assert data.info("imagefolder", root=tmp_path, image_size=32).num_classes == 2
    x, y = data.build("imagefolder", "test", root=tmp_path, image_size=32)[0]
    assert x.shape == (3, 32, 32) and y == 0


def test_synthetic_is_seeded_and_learnable_shape():
    a = data.build("synthetic", "train", num_classes=3, image_size=8, size=10, seed=1)
    b = data.build("synthetic", "train", num_classes=3, image_size=8, size=10, seed=1)
    assert torch.equal(a.tensors[0], b.tensors[0]) and a.tensors[0].shape == (10, 3, 8, 8)


def test_datasets_name_their_classes_in_label_order():
    """Feature-map legends read these (issue 29 item 8: they said 0-9 instead of class names)."""
    assert data.info("fashion_mnist").class_names[7] == "Sneaker"
    assert data.info("fashion_mnist", classes=(9, 0)).class_names == ("Ankle boot", "T-shirt/top")  # re-indexed labels
    assert data.info("digits", classes=(5, 7)).class_names == ("5", "7")
    assert data.info("cifar10").class_name(3) == "cat"
    names = data.info("cifar100").class_names
    assert len(set(names)) == 100 and list(names) == sorted(names) and names[0] == "apple"
    assert data.info("synthetic").class_name(4) == "4"  # no names: the label number


def test_notebook_feature_maps_use_the_class_names():
    from workbench.config import RunConfig
    from workbench.nb.figures import class_names

    assert class_names(RunConfig.from_dict(dict(dataset="fashion_mnist")))[0] == "T-shirt/top"
    assert class_names(RunConfig.from_dict(dict(dataset="synthetic"))) is None
