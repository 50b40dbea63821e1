"""fashion_mnist: IDX files from every supported place, the embedded subset (balanced, checksummed),
class subsets and the transfer target, clear errors, and the device path."""
import gzip

import numpy as np
import pytest
import torch

from workbench import data
from workbench.config import ConfigError, RunConfig
from workbench.data import fashion_files as ff
from workbench.data import fashion_mnist as fm
from workbench.data import idx
from workbench.data.device import DeviceLoader, device_tensors

N_TRAIN, N_TEST = 30, 20  # tiny fake files: 3 / 2 images per class


@pytest.fixture(autouse=True)
def no_system_files(monkeypatch, tmp_path):
    """Tests see only the files they write: no Debian package folder, an empty data root, and the
    fake files' content checksums in place of the published ones."""
    monkeypatch.setattr(ff, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "empty-root"))
    monkeypatch.setattr(ff, "CONTENT_MD5", fake_content_md5())


def fake_content_md5() -> dict:
    """The content MD5 of each fake file :func:`write_files` writes."""
    import hashlib

    arrays = {"train": fake_split(N_TRAIN, 1), "test": fake_split(N_TEST, 2)}
    return {name: hashlib.md5(idx.encode(arr)).hexdigest()
            for split, names in ff.FILES.items() for name, arr in zip(names, arrays[split])}


def fake_split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_files(folder, gz: bool = True, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train": fake_split(N_TRAIN, 1), "test": fake_split(N_TEST, 2)}
    for split, (img_name, lbl_name) in ff.FILES.items():
        for name, arr in zip((img_name, lbl_name), arrays[split]):
            if name not in skip:
                idx.write(folder / (name + (".gz" if gz else "")), arr)
    return arrays


def pixels(ds) -> np.ndarray:
    """The dataset's items mapped back to 0..255 pixel values."""
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return torch.round((x * fm.STD + fm.MEAN) * 255).squeeze(1).numpy().astype(np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_with_their_labels_and_pixels(tmp_path, gz):
    arrays = write_files(tmp_path, gz=gz)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        ds = data.build("fashion_mnist", split, source="full", root=tmp_path, augment=False)
        assert len(ds) == n and ds.source == "full"
        assert ds[0][0].shape == (1, 28, 28) and ds[0][0].dtype == torch.float32
        assert ds.targets.tolist() == arrays[split][1].tolist()
        assert np.array_equal(pixels(ds), arrays[split][0])


def test_idx_round_trip_and_header():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx.encode(a)
    assert raw[:4] == bytes([0, 0, 8, 3]) and np.array_equal(idx.parse(raw), a)


def test_torchvision_layout_and_workbench_data_are_searched(tmp_path, monkeypatch):
    write_files(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert ff.find_full(tmp_path / "tv") == tmp_path / "tv" / "FashionMNIST" / "raw"
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "tv"))
    assert data.info("fashion_mnist").source == "full"  # auto finds them without a root
    assert len(data.build("fashion_mnist", "test")) == N_TEST


def test_debian_package_folder_is_searched(tmp_path, monkeypatch):
    write_files(tmp_path / "pkg")
    monkeypatch.setattr(ff, "DEBIAN_DIR", tmp_path / "pkg")
    assert ff.find_full() == tmp_path / "pkg"


def test_missing_full_files_say_where_they_were_looked_for(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.check_available("fashion_mnist", source="full", root=tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "FashionMNIST" in msg
    assert "train-images-idx3-ubyte" in msg and "data_source=embedded" in msg


def test_download_goes_through_torchvision_into_the_raw_folder(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_download(root, train, download):  # what torchvision leaves behind: <root>/FashionMNIST/raw
        calls.append(train)
        write_files(tmp_path / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(tvd, "FashionMNIST", fake_download)
    ds = data.build("fashion_mnist", "test", source="full", root=tmp_path, download=True)
    assert len(ds) == N_TEST and sorted(calls) == [False, True]


def test_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(root, train, download):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.check_available("fashion_mnist", source="full", root=tmp_path, download=True)
    msg = str(e.value)
    assert "\n" not in msg and "download" in msg and "name resolution" in msg and "data_source=embedded" in msg


def test_auto_falls_back_to_the_embedded_subset(tmp_path):
    assert data.info("fashion_mnist", root=tmp_path).source == "embedded"


def test_a_folder_with_some_files_missing_is_an_error(tmp_path):
    write_files(tmp_path, skip=("t10k-labels-idx1-ubyte",))
    with pytest.raises(ValueError, match=r"only some.*missing: t10k-labels-idx1-ubyte"):
        data.build("fashion_mnist", "train", root=tmp_path)


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[:-7]), "damaged or not gzip"),  # truncated gzip stream
    (lambda p: p.write_bytes(gzip.compress(b"\x01\x02\x08\x03" + bytes(20))), "not an IDX file"),
    (lambda p: p.write_bytes(gzip.compress(idx.encode(np.zeros((N_TRAIN, 27, 28), np.uint8)))), "27, 28"),
])
def test_damaged_files_name_the_file_and_the_problem(tmp_path, damage, words):
    write_files(tmp_path)
    damage(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError) as e:
        data.check_available("fashion_mnist", source="full", root=tmp_path)
    assert "train-images-idx3-ubyte" in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_truncated_plain_idx_is_reported():
    with pytest.raises(idx.IDXError, match="truncated"):
        idx.parse(idx.encode(np.zeros((4, 28, 28), np.uint8))[:-1], "x")


def test_damaged_data_stops_a_run_before_training(tmp_path):
    write_files(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"junk")
    from workbench.experiment import prepare

    cfg = RunConfig.from_dict(dict(dataset="fashion_mnist", data_root=str(tmp_path), method="ce", teacher="none",
                                   student="resnet8", out_dir=str(tmp_path / "runs")))
    with pytest.raises(ConfigError, match="dataset: .*t10k-images-idx3-ubyte"):
        prepare(cfg)


# ------------------------------------------------------------------------------ embedded subset
def test_embedded_subset_is_checksummed_balanced_and_official_test_images():
    assert ff.sha256(ff.EMBEDDED_FILE) == ff.EMBEDDED_SHA256
    emb = ff.load_embedded()
    for split in ("train", "test"):
        images, labels = emb[split]
        counts = np.bincount(labels, minlength=10)
        assert images.shape == (len(labels), 28, 28) and images.dtype == np.uint8
        assert counts.min() == counts.max() > 0
    with np.load(ff.EMBEDDED_FILE) as z:  # original indices: distinct, in file order
        for split, size in (("train", 60000), ("test", 10000)):
            index = z[f"{split}_index"].astype(np.int64)
            assert np.all(np.diff(index) > 0) and index.max() < size
    assert (ff.EMBEDDED_DIR / "LICENSE-fashion-mnist.txt").read_text().count("Zalando SE") == 1
    assert ff.EMBEDDED_SHA256 in (ff.EMBEDDED_DIR / "PROVENANCE.md").read_text()


def test_damaged_embedded_subset_is_refused(tmp_path):
    bad = tmp_path / "subset.npz"
    raw = bytearray(ff.EMBEDDED_FILE.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged.*restore it"):
        ff.load_embedded(bad, ff.EMBEDDED_SHA256)
    with pytest.raises(data.DatasetNotFoundError, match="missing"):
        ff.load_embedded(tmp_path / "absent.npz", ff.EMBEDDED_SHA256)


def test_embedded_subset_equals_the_full_files_where_they_are_installed(monkeypatch):
    monkeypatch.undo()  # this one looks at the machine's real folders
    folder = ff.find_full()
    if folder is None:
        pytest.skip("full Fashion-MNIST files not installed (Debian dataset-fashion-mnist)")
    full = ff.load_full(folder)
    with np.load(ff.EMBEDDED_FILE) as z:
        for split in ("train", "test"):
            index = z[f"{split}_index"].astype(np.int64)
            assert np.array_equal(full[split][0][index], z[f"{split}_images"])
            assert np.array_equal(full[split][1][index], z[f"{split}_labels"])


def test_train_per_class_is_a_seeded_balanced_pick_and_test_is_unchanged():
    a = data.build("fashion_mnist", "train", source="embedded", train_per_class=7, seed=3)
    b = data.build("fashion_mnist", "train", source="embedded", train_per_class=7, seed=3)
    c = data.build("fashion_mnist", "train", source="embedded", train_per_class=7, seed=4)
    assert torch.bincount(a.targets).tolist() == [7] * 10
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    test = data.build("fashion_mnist", "test", source="embedded", train_per_class=7)
    assert len(test) == len(ff.load_embedded()["test"][1])
    limit = np.bincount(ff.load_embedded()["train"][1]).min()
    with pytest.raises(ValueError, match=rf"train_per_class must be None or 1..{limit}.*data_source=full"):
        data.check_available("fashion_mnist", source="embedded", train_per_class=limit + 1)


def test_class_subset_reindexes_and_transfer_target_is_the_other_classes(tmp_path):
    from workbench.experiment import transfer_target

    sub = data.build("fashion_mnist", "test", source="embedded", classes=(7, 2))
    labels = ff.load_embedded()["test"][1]
    assert len(sub) == np.isin(labels, (7, 2)).sum() and set(sub.targets.tolist()) == {0, 1}
    assert data.info("fashion_mnist", source="embedded", classes=(7, 2)).num_classes == 2
    cfg = RunConfig.from_dict(dict(dataset="fashion_mnist", source_classes="0,1,2,3,4", train_per_class=5,
                                   split_seed=2, image_size=14, data_root=str(tmp_path)))
    name, opts = transfer_target(cfg)
    assert name == "fashion_mnist" and opts["classes"] == (5, 6, 7, 8, 9)
    assert opts["source"] == "embedded" and opts["train_per_class"] == 5 and opts["seed"] == 2
    target = data.build(name, "train", **opts)
    assert torch.bincount(target.targets).tolist() == [5] * 5 and target[0][0].shape == (1, 14, 14)


def test_image_size_resamples_and_augmentation_is_a_padded_window():
    ds = data.build("fashion_mnist", "train", source="embedded", train_per_class=10, image_size=14)
    assert ds.images.shape[1:] == (1, 14, 14) and ds.pad == 1
    plain = data.build("fashion_mnist", "train", source="embedded", train_per_class=10, augment=False)
    aug = data.build("fashion_mnist", "train", source="embedded", train_per_class=10, augment=True)
    torch.manual_seed(0)
    p = aug.pad
    mirrored = 0
    for i in range(len(aug)):
        x = aug[i][0]
        padded = torch.nn.functional.pad(plain[i][0], (p,) * 4, value=(0 - fm.MEAN) / fm.STD)  # black border
        windows = [padded[:, r:r + 28, c:c + 28] for r in range(2 * p + 1) for c in range(2 * p + 1)]
        is_plain = any(torch.allclose(x, w, atol=1e-6) for w in windows)
        is_mirror = any(torch.allclose(x, w.flip(2), atol=1e-6) for w in windows)
        assert is_plain or is_mirror
        mirrored += is_mirror and not is_plain
    assert 20 < mirrored < 80  # about half of 100 (binomial, p = 1/2)


def test_bad_options_are_one_clear_line():
    with pytest.raises(ValueError, match="classes must be distinct"):
        data.build("fashion_mnist", "train", source="embedded", classes=(1, 1))
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        data.info("fashion_mnist", image_size=4)
    with pytest.raises(ValueError, match="source must be one of auto, embedded, full"):
        data.info("fashion_mnist", source="web")


# ------------------------------------------------------------------------------ config and runs
def test_config_keys_apply_to_the_datasets_that_take_them(tmp_path):
    cfg = RunConfig.from_dict(dict(dataset="fashion_mnist", train_per_class=20, source_classes="0,1",
                                   data_source="embedded", image_size=16, data_root=str(tmp_path)))
    assert cfg.dataset_options() == dict(train_per_class=20, seed=0, classes=(0, 1), source="embedded",
                                         download=True, root=str(tmp_path), image_size=16)
    with pytest.raises(ConfigError, match="data_source: applies to dataset fashion_mnist only"):
        RunConfig.from_dict(dict(dataset="digits", data_source="full"))
    with pytest.raises(ConfigError, match="source_classes: applies to dataset digits and fashion_mnist only"):
        RunConfig.from_dict(dict(dataset="cifar10", source_classes="0,1"))


def test_cached_teacher_tells_embedded_from_full(tmp_path):
    """The cached teacher's config holds the resolved source (never "auto"), so the embedded and
    the full data never share a teacher folder; teacher_data=all drops the student's split."""
    from workbench.experiment import teacher_config

    write_files(tmp_path)
    base = dict(dataset="fashion_mnist", method="kd", teacher="resnet8", train_per_class=2)
    emb = teacher_config(RunConfig.from_dict(dict(base, data_source="embedded")), "resnet8")
    full = teacher_config(RunConfig.from_dict(dict(base, data_root=str(tmp_path))), "resnet8")
    assert (emb.data_source, full.data_source) == ("embedded", "full") and emb.run_dir() != full.run_dir()
    everything = teacher_config(RunConfig.from_dict(dict(base, data_source="embedded", teacher_data="all")), "resnet8")
    assert emb.train_per_class == 2 and everything.train_per_class is None and everything.run_dir() != emb.run_dir()


def test_a_teacher_on_all_training_images_is_trained_once_and_used(fast_cfg):
    from workbench.experiment import run, teacher_config

    cfg = dict(fast_cfg, dataset="fashion_mnist", data_source="embedded", train_per_class=2, source_classes="0,1",
               method="kd", teacher="resnet8", teacher_data="all", teacher_epochs=1, epochs=1, probe_every=0,
               image_size=8)
    run(cfg)
    teacher_run = teacher_config(RunConfig.from_dict(cfg), "resnet8").run_dir()
    from workbench.engine.metrics import read_metrics

    record = read_metrics(teacher_run, kind="train")[-1]
    per_class = np.bincount(ff.load_embedded()["train"][1])[:2].sum()
    assert round(record["images_per_s"] * record["time"]) == per_class  # both classes, every image


def test_device_path_gives_the_dataloader_items():
    ds = data.build("fashion_mnist", "test", source="embedded", classes=(0, 3), augment=False)
    order = list(range(0, len(ds), 7))
    loader = DeviceLoader(device_tensors(ds), order, 16, torch.device("cpu"))
    x = torch.cat([b[0] for b in loader])
    assert torch.equal(x, torch.stack([ds[i][0] for i in order]))


def test_device_resident_run_equals_the_dataloader_run_without_augmentation(fast_cfg):
    from workbench.engine.checkpoint import load_checkpoint
    from workbench.experiment import run

    quick = dict(fast_cfg, dataset="fashion_mnist", data_source="embedded", train_per_class=4,
                 source_classes="0,1", method="ce", teacher="none", epochs=1, probe_every=0, augment=False)
    a = run(dict(quick, device_data="off", name="off")).run_dir
    b = run(dict(quick, device_data="on", name="on")).run_dir
    wa, wb = (load_checkpoint(d / "last.pt")["model"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
