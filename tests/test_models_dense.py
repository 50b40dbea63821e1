"""Teacher dense logits: for every zoo CNN the classifier applied at every position of the map
that global pooling averages; the spatial mean equals the ordinary logits; the map is the one
the model pools (checked by hand for models with a BN/ReLU after the last block and for a
functional pool); hooks are removed and other hooks see nothing extra."""
import pytest
import torch
from torch.nn import functional as F

from workbench import models
from workbench.models.dense import dense_logits, pooled_map_site
from workbench.models.hooks import FeatureTap
from workbench.models.inherit import recalibrate_bn

torch.set_num_threads(1)

K = 10
CNNS = [n for n in models.available() if models.family(n) != "vit"]
#: input side per family and the grid each model's last map has on it
SIDE = {"cifar": 32, "imagenet": 64}
GRID = {"MobileNetV2": 2, "ShuffleV1": 4, "ShuffleV2": 4, "ResNet18": 4, "ResNet34": 4, "ResNet50": 4, "vgg": 4, "imagenet": 2}
EPS32 = torch.finfo(torch.float32).eps
#: roundings besides the sums: the division by H*W (or a multiplication by its rounded
#: reciprocal), the bias addition, and slack for the first-order bound
EXTRA_ROUNDINGS = 4


def _grid(name: str) -> int:
    if models.family(name) == "imagenet":
        return GRID["imagenet"]
    return GRID.get(name, GRID["vgg"] if name.startswith("vgg") else 8)


def _pooled_map(model, x):
    """The map the model pools, read independently of ``dense_logits`` where the site is known."""
    path, side = pooled_map_site(model)
    site = model.get_submodule(path)
    got = []
    hook = (site.register_forward_pre_hook(lambda _m, a: got.append(a[0])) if side == "input"
            else site.register_forward_hook(lambda _m, _a, out: got.append(out)))
    try:
        model(x)
    finally:
        hook.remove()
    return got[-1]


@pytest.mark.parametrize("name", CNNS)
def test_spatial_mean_of_dense_logits_equals_logits(name):
    """Both sides compute the same exact number, sum_c W_kc mean_hw f_chw + b_k, in two orders
    (pool then classify / classify then pool). Any summation order of n terms in float32 is off
    by at most (n - 1) * eps * sum|terms| (first-order bound, any vector width or blocking), so
    with s = |W| @ mean_hw |f| + |b| the two differ by at most 2 * (C + H*W + extra) * eps * s."""
    torch.manual_seed(0)
    model = models.build(name, K)
    side = SIDE[models.family(name)]
    # BN statistics of real activations (fresh running stats let deep nets blow up or vanish)
    recalibrate_bn(model, [torch.randn(8, 3, side, side)]).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        logits, dense = dense_logits(model, x)
        fmap = _pooled_map(model, x)
        head = model.get_submodule(models.classifier_path(model))
        plain = model(x)
    g = _grid(name)
    assert dense.shape == (2, K, g, g) and fmap.shape[-2:] == (g, g)
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)  # the ordinary forward's logits
    c, hw = fmap.shape[1], g * g
    scale = fmap.abs().mean((2, 3)) @ head.weight.abs().T + head.bias.abs()
    bound = 2 * (c + hw + EXTRA_ROUNDINGS) * EPS32 * scale
    err = (dense.mean((2, 3)) - logits).abs()
    assert (err <= bound).all(), f"max err {err.max():.3g}, bound there {bound.flatten()[err.argmax()]:.3g}"
    if g > 1:  # not a broadcast of the logits: positions differ by far more than the rounding bound
        spread = (dense - dense.mean((2, 3), keepdim=True)).abs().amax((2, 3))
        assert (spread > bound).all()


def _stem_to_layer3(m, x):
    return m.layer3(m.layer2(m.layer1(m.relu(m.bn1(m.conv1(x))))))


HAND_MAPS = {
    # the last block's output, pooled directly
    "resnet8": _stem_to_layer3,
    # WRN: BN-ReLU after the last block
    "wrn_16_1": lambda m, x: m.relu(m.bn1(m.block3(m.block2(m.block1(m.conv1(x)))))),
    # ShuffleV2: conv2-BN-ReLU head after the last stage
    "ShuffleV2": lambda m, x: F.relu(m.bn2(m.conv2(m.layer3(m.layer2(m.layer1(F.relu(m.bn1(m.conv1(x))))))))),
    # MobileNetV2 (CIFAR): the 1x1 conv2 head
    "MobileNetV2": lambda m, x: m.conv2(_mobilenet_blocks(m, x)),
    # torchvision MobileNetV2 pools functionally: the output of ``features``
    "mobilenet_v2": lambda m, x: m.features(x),
}


def _mobilenet_blocks(m, x):
    x = m.conv1(x)
    for group in m.blocks:
        x = group(x)
    return x


@pytest.mark.parametrize("name", sorted(HAND_MAPS))
def test_dense_logits_classify_the_map_the_model_pools(name):
    torch.manual_seed(0)
    model = models.build(name, K).eval()
    side = SIDE[models.family(name)]
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        _, dense = dense_logits(model, x)
        fmap = HAND_MAPS[name](model, x)
        head = model.get_submodule(models.classifier_path(model))
        by_hand = torch.einsum("nchw,kc->nkhw", fmap, head.weight) + head.bias[:, None, None]
    # same map, different contraction order for W f: one dot product of C terms per entry
    bound = 2 * (fmap.shape[1] + EXTRA_ROUNDINGS) * EPS32 * (
        torch.einsum("nchw,kc->nkhw", fmap.abs(), head.weight.abs()) + head.bias.abs()[:, None, None])
    assert ((dense - by_hand).abs() <= bound).all()


def test_vgg_map_includes_the_functional_relu():
    """VGG applies its last ReLU in forward: the pooled map (and so the dense logits) is >= 0
    before the classifier, i.e. the hook reads the pool's input, not block4's output."""
    torch.manual_seed(0)
    model = models.build("vgg8", K).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap = _pooled_map(model, x)
        block4_out = FeatureTap(model, ["block4"])
        with block4_out:
            model(x)
    assert (fmap >= 0).all() and (block4_out["block4"] < 0).any()
    torch.testing.assert_close(fmap, F.relu(block4_out["block4"]), rtol=0, atol=0)


def test_hooks_are_removed_and_other_taps_see_one_classifier_call():
    torch.manual_seed(0)
    model = models.build("resnet8", K).eval()
    x = torch.randn(2, 3, 32, 32)
    with FeatureTap(model, ["penultimate"]) as tap, torch.no_grad():
        dense_logits(model, x)
        feats = tap["penultimate"]
    assert feats.shape == (2, 64)  # the pooled features, not the per-position map
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(RuntimeError):
        dense_logits(model, torch.randn(2, 1, 32, 32))  # wrong channel count fails in the forward
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_gradients_flow_through_the_dense_map():
    model = models.build("resnet8", K)
    _, dense = dense_logits(model, torch.randn(2, 3, 16, 16))
    dense.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_a_vit_has_no_pooled_map():
    with pytest.raises(ValueError, match="global average pool.*patch_logits"):
        dense_logits(models.build("vit_nano", K), torch.randn(1, 3, 32, 32))
