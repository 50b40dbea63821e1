"""Frozen feature extraction: values, layers, frozen state, checkpoints, disk cache."""
import os

import numpy as np
import pytest
import torch
from torch import nn

from workbench import data, models
from workbench.probes import cache as C
from workbench.probes.features import collect_outputs, extract_features, extract_many, select_indices

torch.set_num_threads(1)


def tiny(width=6, classes=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


class Counter:
    def __init__(self, model):
        self.n = 0
        model.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))


@pytest.fixture(scope="module")
def source():
    return data.build("digits", "test", classes=(0, 1, 2, 3, 4), augment=False)


def test_penultimate_values_match_manual_forward_and_state_is_untouched(source):
    m = tiny()
    m.train()  # must come back in train mode, with BN statistics unchanged
    bn_before = {k: v.clone() for k, v in m[1].state_dict().items()}
    fs = extract_features(m, source, max_samples=50, batch_size=16, cache_dir=False)
    assert fs.features.shape == (50, 6) and fs.logits.shape == (50, 5) and fs.labels.shape == (50,)
    np.testing.assert_array_equal(fs.index, np.arange(50))
    assert m.training and m[1].training
    for k, v in m[1].state_dict().items():
        assert torch.equal(v, bn_before[k]), k
    x = torch.stack([source[i][0] for i in range(50)])
    m.eval()
    with torch.no_grad():
        feats = m[:5](x)
        # float32, batches of 16 vs one batch of 50: per-example sums (9-term convs, 6-term linear)
        # in kernels picked per batch size
        np.testing.assert_allclose(fs.features, feats.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fs.logits, m(x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fs.labels, [int(source[i][1]) for i in range(50)])
    np.testing.assert_array_equal(fs.predictions, fs.logits.argmax(1))


def test_other_layers_are_pooled_and_bad_layer_names_raise(source):
    m = tiny()
    fs = extract_features(m, source, layer="1", max_samples=20, cache_dir=False)  # BN output map
    x = torch.stack([source[i][0] for i in range(20)])
    with torch.no_grad():
        expected = m.eval()[:2](x).mean(dim=(2, 3))
    np.testing.assert_allclose(fs.features, expected.numpy(), rtol=1e-5, atol=1e-6)  # float32 mean of 8x8 maps, other batching
    with pytest.raises(ValueError, match="layer7|valid choices"):
        extract_features(m, source, layer="layer7", max_samples=4, cache_dir=False)


def test_real_zoo_model_and_checkpoint_path(tmp_path, source):
    m = models.build("resnet8", num_classes=5, in_channels=1)
    ckpt = tmp_path / "student.pth"
    torch.save(m.state_dict(), ckpt)
    a = extract_features(m, source, max_samples=12, cache_dir=False)
    b = extract_features(ckpt, source, max_samples=12, cache_dir=False, arch="resnet8", num_classes=5, in_channels=1)
    assert a.features.shape == (12, 64)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)  # float32, same model reloaded: same sums
    with pytest.raises(ValueError, match="arch="):
        extract_features(ckpt, source, max_samples=4, cache_dir=False)


def test_cache_hit_skips_the_forward_and_keys_on_weights_and_file(tmp_path, source):
    m = tiny()
    calls = Counter(m)
    a = extract_features(m, source, max_samples=30, batch_size=10, cache_dir=tmp_path)
    assert calls.n == 3
    b = extract_features(m, source, max_samples=30, batch_size=10, cache_dir=tmp_path)
    assert calls.n == 3  # served from disk
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.index, b.index)
    assert len(list((tmp_path / "features").glob("*.npz"))) == 1
    assert not list((tmp_path / "features").glob("*.tmp"))  # atomic write left no temp file
    with torch.no_grad():
        m[5].bias.add_(1.0)  # new weights -> new key
    extract_features(m, source, max_samples=30, batch_size=10, cache_dir=tmp_path)
    assert calls.n == 6
    extract_features(m, source, max_samples=29, batch_size=10, cache_dir=tmp_path)  # new inputs
    assert calls.n == 9

    loads = []
    ckpt = tmp_path / "m.pth"
    torch.save(m.state_dict(), ckpt)

    def loader(p):
        loads.append(p)
        net = tiny()
        net.load_state_dict(torch.load(p))
        return net

    extract_features(ckpt, source, max_samples=10, cache_dir=tmp_path, loader=loader)
    extract_features(ckpt, source, max_samples=10, cache_dir=tmp_path, loader=loader)
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "rewritten" checkpoint
    fs = extract_features(ckpt, source, max_samples=10, cache_dir=tmp_path, loader=loader)
    assert fs.features.shape == (10, 6)
    assert len(loads) == 2  # a cache hit does not even load the checkpoint
    assert len(list((tmp_path / "features").glob("*.npz"))) == 5


def test_extract_many_shares_examples_and_collect_outputs_mimics_trainer(source):
    nets = {"student": tiny(4, seed=1), "teacher": tiny(8, seed=2)}
    sets = extract_many(nets, source, max_samples=25, sample="random", seed=3, cache_dir=False)
    np.testing.assert_array_equal(sets["student"].index, sets["teacher"].index)
    np.testing.assert_array_equal(sets["student"].index, select_indices(len(source), 25, "random", 3))
    assert not np.array_equal(sets["student"].index, np.arange(25))
    outs = collect_outputs(nets, source, probe_samples=7, cache_dir=False)
    assert outs["teacher"].logits.shape == (len(source), 5)
    assert outs["teacher"].features.shape == (7, 8) and outs["student"].features.shape == (7, 4)
    assert torch.equal(outs["student"].targets, outs["teacher"].targets)
    with pytest.raises(ValueError, match="valid choices"):
        select_indices(10, 5, sample="stratified")


def test_cache_helpers_resolve_and_survive_torn_files(tmp_path):
    assert C.resolve_cache_dir(False) is None
    assert C.resolve_cache_dir(None, run_dir=tmp_path) == tmp_path / "cache"
    assert C.resolve_cache_dir(None) == C.DEFAULT_CACHE_DIR
    assert C.make_key(a=1, b=[2]) == C.make_key(b=[2], a=1) != C.make_key(a=1, b=[3])
    C.save(tmp_path, "x", "k", v=np.arange(3))
    np.testing.assert_array_equal(C.load(tmp_path, "x", "k")["v"], np.arange(3))
    (tmp_path / "x" / "k.npz").write_bytes(b"torn")
    assert C.load(tmp_path, "x", "k") is None
