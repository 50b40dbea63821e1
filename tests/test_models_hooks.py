"""Feature hooks: penultimate features are the classifier's input, stage paths resolve, captures
are faithful (also under torchvision's in-place ReLUs), and hooks are removed on exit."""
import pytest
import torch
from torch import nn

from workbench import models
from workbench.models.hooks import FeatureTap, classifier_path, penultimate, stage_paths

torch.set_num_threads(1)

EXPECTED_CLASSIFIER = {
    "resnet8": "fc", "resnet8x4": "fc", "wrn_16_1": "fc", "vgg8": "classifier",
    "MobileNetV2": "classifier.0", "ShuffleV1": "linear", "ShuffleV2": "linear", "ResNet50": "linear",
    "ResNet18": "linear", "resnet18": "fc", "mobilenet_v2": "classifier.1", "mobilenet_v1": "fc",
    "vit_tiny": "head",
}


def _no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSIFIER))
def test_classifier_path(name):
    model = models.build(name, 10)
    path = classifier_path(model)
    assert path == EXPECTED_CLASSIFIER[name]
    assert isinstance(model.get_submodule(path), nn.Linear)


def test_classifier_fallback_is_last_linear():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert classifier_path(net) == "3"
    with pytest.raises(ValueError, match="no nn.Linear"):
        classifier_path(nn.Sequential(nn.Conv2d(1, 1, 1)))


@pytest.mark.parametrize("name", models.available())
def test_stage_paths_resolve_and_penultimate_is_classifier_input(name):
    torch.manual_seed(0)
    model = models.build(name, 10, in_channels=1, image_size=8).eval()
    paths = stage_paths(model)
    assert len(paths) >= 3
    x = torch.randn(2, 1, 8, 8)
    with FeatureTap(model, ["penultimate", *paths]) as tap:
        with torch.no_grad():
            logits = model(x)
    assert _no_hooks_left(model)
    feat = tap["penultimate"]
    head = model.get_submodule(classifier_path(model))
    assert feat.ndim == 2 and feat.shape == (2, head.in_features)
    with torch.no_grad():
        # a ViT with a distillation token averages several heads; the probed one is the cls head
        own = model.forward_parts(x)["cls"] if hasattr(model, "forward_parts") else logits
        torch.testing.assert_close(head(feat), own, rtol=0, atol=0)  # the very same operations: bit-identical
    assert all(tap[p].shape[0] == 2 for p in paths)


def test_cifar_resnet_stage_shapes():
    model = models.build("resnet8", 10).eval()
    assert stage_paths(model) == ["layer1", "layer2", "layer3"]
    with FeatureTap(model, ["layer1", "layer2", "layer3"]) as tap, torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert [tuple(tap[p].shape) for p in ("layer1", "layer2", "layer3")] == [
        (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]


def test_capture_is_not_changed_by_later_inplace_ops():
    """torchvision's BasicBlock adds the identity in place onto bn2's output."""
    torch.manual_seed(0)
    model = models.build("resnet18", 10).eval()
    with FeatureTap(model, ["maxpool", "layer1.0.bn2"]) as tap, torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    blk = model.layer1[0]
    with torch.no_grad():
        expected = blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(tap["maxpool"])))))
    torch.testing.assert_close(tap["layer1.0.bn2"], expected)  # same ops re-run; float32 defaults (1.3e-6, 1e-5)


def test_detach_flag_and_penultimate_helper():
    model = models.build("resnet8", 10)
    x = torch.randn(2, 3, 32, 32)
    logits, feat = penultimate(model, x)
    assert not feat.requires_grad and feat.shape == (2, 64)
    torch.testing.assert_close(model.fc(feat), logits)  # same ops re-run; float32 defaults
    logits, feat = penultimate(model, x, detach=False)
    assert feat.requires_grad
    feat.pow(2).sum().backward()
    assert model.conv1.weight.grad is not None and model.fc.weight.grad is None
    assert _no_hooks_left(model)


def test_hooks_removed_on_error_and_bad_names():
    model = models.build("resnet8", 10)
    with pytest.raises(RuntimeError):
        with FeatureTap(model, ["penultimate", "layer2"]):
            model(torch.randn(2, 5, 32, 32))  # wrong channel count
    assert _no_hooks_left(model)
    with pytest.raises(ValueError, match="layer2"):  # suggests the close valid name
        FeatureTap(model, ["layr2"])
    with FeatureTap(model, ["layer2"]) as tap:
        pass
    with pytest.raises(KeyError, match="run a forward"):
        tap["layer2"]


def test_stage_paths_unknown_model():
    with pytest.raises(ValueError, match="no known stages"):
        stage_paths(nn.Sequential(nn.Linear(2, 2)))
