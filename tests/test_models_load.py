"""``workbench.models.load``: RepDistiller / DDP / torchvision layouts load strictly with identical
logits; wrong architectures, wrong class counts and corrupt files fail with clear messages."""
import argparse

import pytest
import torch
from torch import nn

from workbench import models

torch.set_num_threads(1)


def _trained_like(name, num_classes=100, **kw):
    """A model with non-default BN statistics and weights, so a failed load cannot go unnoticed."""
    torch.manual_seed(0)
    model = models.build(name, num_classes, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(123)
    return model.eval()


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_repdistiller_checkpoint_round_trip(tmp_path):
    teacher = _trained_like("resnet8x4")
    opt = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    teacher(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()  # a realistic optimizer state (momentum buffers) in the file
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": teacher.state_dict(), "accuracy": torch.tensor(79.4),
                "optimizer": opt.state_dict()}, path)
    loaded = models.load("resnet8x4", path, num_classes=100)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(_logits(loaded, x), _logits(teacher, x))
    assert not loaded.training
    assert int(loaded.bn1.num_batches_tracked) == 123


def test_repdistiller_last_file_with_argparse_options_loads(tmp_path):
    model = _trained_like("resnet8")
    path = tmp_path / "resnet8_last.pth"
    torch.save({"opt": argparse.Namespace(model="resnet8", lr=0.05), "model": model.state_dict()}, path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_logits(models.load("resnet8", path, 100), x), _logits(model, x))


@pytest.mark.parametrize("layout", ["plain", "state_dict", "ddp_model", "ddp_plain"])
def test_other_layouts_and_module_prefix(tmp_path, layout):
    model = _trained_like("wrn_16_1", num_classes=10, in_channels=1)
    sd = model.state_dict()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3},
           "ddp_model": {"model": ddp}, "ddp_plain": ddp}[layout]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    loaded = models.load("wrn_16_1", path, num_classes=10, in_channels=1)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(_logits(loaded, x), _logits(model, x))


def test_state_dict_without_bn_counters_loads(tmp_path):
    """Files written before torch 0.4.1 have no num_batches_tracked; BatchNorm fills it in."""
    model = _trained_like("resnet8")
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"model": sd}, path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_logits(models.load("resnet8", path, 100), x), _logits(model, x))


def test_torchvision_weight_file(tmp_path):
    model = _trained_like("resnet18", num_classes=1000)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(_logits(models.load("resnet18", path, 1000), x), _logits(model, x))


def test_wrong_class_count_names_the_shapes(tmp_path):
    path = tmp_path / "c10.pth"
    torch.save({"model": models.build("resnet8", 10).state_dict()}, path)
    with pytest.raises(ValueError) as err:
        models.load("resnet8", path, num_classes=100)
    msg = str(err.value)
    assert str(path) in msg and "fc.weight: expected (100, 64), found (10, 64)" in msg
    assert "fc.bias: expected (100,), found (10,)" in msg


def test_wrong_architecture_names_shapes_and_keys(tmp_path):
    path = tmp_path / "r8.pth"
    torch.save({"model": models.build("resnet8", 100).state_dict()}, path)
    with pytest.raises(ValueError) as err:
        models.load("resnet8x4", path, num_classes=100)
    msg = str(err.value)
    assert "conv1.weight: expected (32, 3, 3, 3), found (16, 3, 3, 3)" in msg
    assert "missing key(s): layer1.0.downsample.0.weight" in msg
    with pytest.raises(ValueError, match=r"unexpected key\(s\): layer1\.1\.conv1\.weight"):
        path2 = tmp_path / "r14.pth"
        torch.save(models.build("resnet14", 100).state_dict(), path2)
        models.load("resnet8", path2, num_classes=100)


def test_corrupt_truncated_and_missing_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": models.build("resnet8", 10).state_dict()}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match="cannot read checkpoint .*" + bad.name):
            models.load("resnet8", bad, num_classes=10)
    with pytest.raises(ValueError, match="not found: .*nope.pth"):
        models.load("resnet8", tmp_path / "nope.pth", num_classes=10)
    no_weights = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "best_acc": 1.0}, no_weights)
    with pytest.raises(ValueError, match="without a state dict.*'epoch'"):
        models.load("resnet8", no_weights, num_classes=10)


class _Custom:  # an arbitrary pickled class: refused under weights_only
    pass


def test_untrusted_objects_are_refused_with_a_hint(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": models.build("resnet8", 10).state_dict(), "extra": _Custom()}, path)
    with pytest.raises(ValueError, match="weights_only=False"):
        models.load("resnet8", path, num_classes=10)
    assert models.load("resnet8", path, num_classes=10, weights_only=False) is not None
