"""The fast data path: device-resident datasets with batched augmentation, and the opt-in
static-teacher logit cache. Checked on the CPU device (same code as on CUDA)."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import float_tol
from workbench.config import ConfigError, RunConfig
from workbench.data import cifar
from workbench.data.device import DeviceLoader, augment_batch, device_tensors
from workbench.engine.checkpoint import load_checkpoint
from workbench.experiment import run


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def _max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def test_device_resident_run_equals_the_dataloader_run_without_augmentation(fast_cfg):
    quick = dict(fast_cfg, method="kd", epochs=1, probe_every=0, augment=False)
    a = run(dict(quick, device_data="off", name="off")).run_dir
    b = run(dict(quick, device_data="on", name="on")).run_dir
    assert _max_diff(_weights(a), _weights(b)) == 0.0


def test_cached_teacher_logits_give_the_same_run(fast_cfg):
    quick = dict(fast_cfg, method="kd", epochs=1, probe_every=0, augment=False)
    a = run(dict(quick, name="live")).run_dir
    b = run(dict(quick, cache_teacher=True, name="cached")).run_dir
    # teacher batches differ in size only: float32 logits that differ in the last bits (kernels are
    # chosen per batch size) move 4 SGD steps of O(1) weights by ~1e-7; 1e-5 is ~100 ulp of them
    assert _max_diff(_weights(a), _weights(b)) < 1e-5


def test_cache_teacher_needs_unaugmented_inputs():
    with pytest.raises(ConfigError, match="cache_teacher.*augment=false"):
        RunConfig.from_dict(dict(method="kd", cache_teacher=True))


def test_batched_crop_is_a_window_of_the_zero_padded_image_and_flip_mirrors():
    torch.manual_seed(0)
    x = torch.randint(1, 255, (64, 3, 6, 6), dtype=torch.uint8)
    pad = 2
    out = augment_batch(x, pad, True, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    flipped = 0
    for i in range(len(x)):
        windows = [padded[i, :, r:r + 6, c:c + 6] for r in range(2 * pad + 1) for c in range(2 * pad + 1)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 10 < flipped < 54  # about half of 64 (binomial, p = 0.5)
    again = augment_batch(x, pad, True, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


class FakeCifar:  # what torchvision's CIFAR dataset exposes, plus the workbench's attributes
    def __init__(self, n=5):
        rng = np.random.default_rng(0)
        self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = list(range(n))
        self.workbench_stats, self.workbench_augment = cifar.STATS["cifar100"], False


def test_cifar_on_the_device_equals_the_torchvision_pipeline():
    ds = FakeCifar()
    loader = DeviceLoader(device_tensors(ds), range(5), 5, torch.device("cpu"))
    x, y = next(iter(loader))
    tf = cifar.transforms("cifar100", train=False)
    ref = torch.stack([tf(Image.fromarray(img)) for img in ds.data])
    # float32 (x / 255 - mean) / std, |x| < 3: a few roundings of 1.2e-7 each (no reduction)
    assert torch.allclose(x, ref, rtol=0, atol=float_tol(torch.float32, terms=3) * 3) and y.tolist() == ds.targets


def test_device_data_on_refuses_unsupported_datasets(fast_cfg):
    with pytest.raises(ConfigError, match="device_data.*imagefolder"):
        run(dict(fast_cfg, dataset="imagefolder", train_per_class=None, method="ce", teacher="none",
                 device_data="on", epochs=1))


def test_cpu_augmentation_is_a_padded_crop_and_flip_with_every_offset_drawn():
    """The one pipeline (data.augment) on the DataLoader path: each output is exactly one of the
    (2p+1)^2 x 2 zero-padded crops / mirror images of RandomCrop(32, padding=p) + flip, and over
    many draws every offset and both flips occur (the torchvision distribution's support)."""
    from workbench.data.augment import TranslateFlip

    pad = cifar.CROP_PADDING
    img = torch.randint(1, 256, (3, 32, 32), dtype=torch.uint8)  # no zeros: padding is recognisable
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    candidates = {(dy, dx, f): (padded[:, dy:dy + 32, dx:dx + 32].flip(2) if f else padded[:, dy:dy + 32, dx:dx + 32])
                  for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (0, 1)}
    tf = TranslateFlip(pad, flip=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(1500):
        out = tf(img)
        hits = [k for k, c in candidates.items() if torch.equal(out, c)]
        assert len(hits) >= 1
        seen.update(hits)
    assert {(dy, dx) for dy, dx, _ in seen} == {(dy, dx) for dy, dx, _ in candidates} and {f for *_, f in seen} == {0, 1}
    # and CIFAR's CPU train transform is exactly that pipeline followed by the normalisation
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    torch.manual_seed(1)
    got = cifar.transforms("cifar100", train=True)(pil)
    torch.manual_seed(1)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in cifar.STATS["cifar100"])
    want = (tf(img).float() / 255 - mean) / std
    assert torch.allclose(got, want, rtol=0, atol=float_tol(torch.float32, terms=3) * 3)  # as above: no reduction
