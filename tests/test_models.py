"""The zoo reproduces RepDistiller's CIFAR models (parameter counts, state-dict names/shapes,
pooling equivalences) and every registered model runs on 32x32x3 and 8x8x1 inputs."""
import pytest
import torch
from torch import nn

from workbench import models
from workbench.models import vit as vit_mod

torch.set_num_threads(1)

# num_classes=100 parameter counts of RepDistiller's definitions (HobbitLong/RepDistiller models/)
REPDISTILLER_PARAMS = {
    "resnet8": 83_892, "resnet20": 278_324, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860, "wrn_16_2": 703_284, "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156, "vgg8": 3_965_028, "vgg13": 9_462_180, "MobileNetV2": 812_836,
    "ShuffleV1": 949_258, "ShuffleV2": 1_355_528, "ResNet50": 23_705_252,
}
LITERATURE_NAMES = (
    "resnet8 resnet14 resnet20 resnet32 resnet44 resnet56 resnet110 resnet8x4 resnet32x4 wrn_16_1 "
    "wrn_16_2 wrn_40_1 wrn_40_2 vgg8 vgg11 vgg13 vgg16 vgg19 MobileNetV2 ShuffleV1 ShuffleV2 ResNet50"
).split()
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_names_and_families():
    names = models.available()
    for name in LITERATURE_NAMES:
        assert name in names and models.family(name) == "cifar"
    for name in ("resnet18", "resnet34", "resnet50", "mobilenet_v2"):
        assert models.family(name) == "imagenet"
    assert models.family("vit_tiny") == "vit"
    assert "mobile_half" not in names and "mobile_half" in models.available(include_aliases=True)
    assert type(models.build("mobile_half", 10)) is type(models.build("MobileNetV2", 10))


@pytest.mark.parametrize("name", sorted(REPDISTILLER_PARAMS))
def test_parameter_counts_match_repdistiller(name):
    assert n_params(models.build(name, 100)) == REPDISTILLER_PARAMS[name]


def test_torchvision_resnet18_parameter_count():
    assert n_params(models.build("resnet18", 1000)) == 11_689_512


@pytest.mark.parametrize("name", models.available())
def test_forward_32x32_rgb_and_8x8_gray(name):
    torch.manual_seed(0)
    with torch.no_grad():
        big = models.build(name, 100).eval()
        out = big(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 100) and torch.isfinite(out).all()
        small = models.build(name, 10, in_channels=1, image_size=8).eval()
        out = small(torch.randn(2, 1, 8, 8))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_unknown_name_and_bad_arguments():
    with pytest.raises(ValueError, match="resnet8x4"):  # the message lists the valid names
        models.build("resnet8x5", 100)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("resnet8", 0)
    with pytest.raises(ValueError, match="in_channels"):
        models.build("resnet8", 10, in_channels=0)
    with pytest.raises(ValueError, match="unknown model"):
        models.family("nope")


# --- state-dict names written from RepDistiller's resnet.py / wrn.py / vgg.py / ... ------------

def _conv_bn(prefix_conv, prefix_bn):
    return [f"{prefix_conv}.weight"] + [f"{prefix_bn}.{k}" for k in BN_KEYS]


def test_resnet8x4_state_dict_keys_and_shapes():
    expected = _conv_bn("conv1", "bn1")
    for stage in (1, 2, 3):
        b = f"layer{stage}.0"
        expected += _conv_bn(f"{b}.conv1", f"{b}.bn1") + _conv_bn(f"{b}.conv2", f"{b}.bn2")
        expected += _conv_bn(f"{b}.downsample.0", f"{b}.downsample.1")
    expected += ["fc.weight", "fc.bias"]
    sd = models.build("resnet8x4", 100).state_dict()
    assert sorted(sd) == sorted(expected)
    assert sd["conv1.weight"].shape == (32, 3, 3, 3)
    assert sd["layer1.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert sd["layer3.0.conv2.weight"].shape == (256, 256, 3, 3)
    assert sd["fc.weight"].shape == (100, 256)


def test_resnet20_has_downsample_only_where_shape_changes():
    keys = models.build("resnet20", 100).state_dict()
    ds = sorted({k.split(".downsample")[0] for k in keys if ".downsample." in k})
    assert ds == ["layer2.0", "layer3.0"]  # stem width 16 == layer1 width: no projection there
    assert "layer3.2.bn2.running_var" in keys and "layer3.3.conv1.weight" not in keys


def test_wrn_40_2_keys():
    sd = models.build("wrn_40_2", 100).state_dict()
    assert sd["conv1.weight"].shape == (16, 3, 3, 3)
    assert sd["block1.layer.0.convShortcut.weight"].shape == (32, 16, 1, 1)
    assert sd["block2.layer.0.convShortcut.weight"].shape == (64, 32, 1, 1)
    assert "block1.layer.1.convShortcut.weight" not in sd
    assert sd["block3.layer.5.conv2.weight"].shape == (128, 128, 3, 3)
    assert "block3.layer.6.bn1.weight" not in sd  # (40 - 4) / 6 = 6 blocks per stage
    assert sd["bn1.running_var"].shape == (128,) and sd["fc.weight"].shape == (100, 128)


def test_vgg13_keys():
    sd = models.build("vgg13", 100).state_dict()
    # block = conv(0) BN(1) ReLU(2) conv(3) BN(4); the last ReLU is dropped
    assert sd["block0.0.weight"].shape == (64, 3, 3, 3) and sd["block0.0.bias"].shape == (64,)
    assert sd["block0.1.running_mean"].shape == (64,)
    assert sd["block0.3.weight"].shape == (64, 64, 3, 3) and "block0.4.running_var" in sd
    assert "block0.5.weight" not in sd and "block0.6.weight" not in sd
    assert sd["block4.3.weight"].shape == (512, 512, 3, 3)
    assert sd["classifier.weight"].shape == (100, 512)


def test_mobilenetv2_shufflenet_resnet50_keys():
    mb = models.build("MobileNetV2", 100).state_dict()
    assert mb["conv1.0.weight"].shape == (16, 3, 3, 3)  # 32 * 0.5
    assert mb["blocks.0.0.conv.0.weight"].shape == (16, 16, 1, 1)  # t=1 in the first group
    assert mb["blocks.0.0.conv.6.weight"].shape == (8, 16, 1, 1)  # 16 * 0.5 out
    assert mb["blocks.1.0.conv.3.weight"].shape == (48, 1, 3, 3)  # depthwise on 8 * 6
    assert mb["blocks.6.0.conv.7.running_var"].shape == (160,)
    assert mb["conv2.0.weight"].shape == (1280, 160, 1, 1) and mb["classifier.0.weight"].shape == (100, 1280)
    v1 = models.build("ShuffleV1", 100).state_dict()
    assert v1["layer1.0.conv1.weight"].shape == (54, 24, 1, 1)  # dense first unit, (240-24)/4
    assert v1["layer1.0.conv3.weight"].shape == (216, 18, 1, 1)  # groups 3
    assert v1["layer2.0.conv1.weight"].shape == (60, 80, 1, 1) and v1["linear.weight"].shape == (100, 960)
    v2 = models.build("ShuffleV2", 100).state_dict()
    assert v2["layer1.0.conv5.weight"].shape == (58, 58, 1, 1) and v2["layer1.3.conv1.weight"].shape == (58, 58, 1, 1)
    assert "layer1.4.conv1.weight" not in v2 and v2["conv2.weight"].shape == (1024, 464, 1, 1)
    r50 = models.build("ResNet50", 100).state_dict()
    assert r50["layer1.0.shortcut.0.weight"].shape == (256, 64, 1, 1) and "layer1.1.shortcut.0.weight" not in r50
    assert r50["linear.weight"].shape == (100, 2048)


# --- the parameter-free replacements give the original's logits on 32x32 -----------------------

def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "name, path, original",
    [
        ("resnet8", "avgpool", lambda: nn.AvgPool2d(8)),
        ("wrn_16_1", "avgpool", lambda: nn.AvgPool2d(8)),
        ("ShuffleV1", "avgpool", lambda: nn.AvgPool2d(4)),
        ("ShuffleV2", "avgpool", lambda: nn.AvgPool2d(4)),
        ("MobileNetV2", "avgpool", lambda: nn.AvgPool2d(2, ceil_mode=True)),
        ("vgg8", "pool0", lambda: nn.MaxPool2d(2, 2)),
    ],
)
def test_adaptive_pools_equal_original_fixed_pools_on_32x32(name, path, original):
    torch.manual_seed(0)
    model = _randomize_bn(models.build(name, 100))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model(x)
        if name == "vgg8":  # all floor-mode max-pools, as in the original
            for p in ("pool0", "pool1", "pool2", "pool3"):
                setattr(model, p, original())
        else:
            setattr(model, path, original())
        theirs = model(x)
    # same values up to float summation order
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)  # float32, identical layers summed in another order


def test_vgg_pools_keep_a_1x1_map():
    model = models.build("vgg8", 10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 4, 4)).shape == (2, 10)  # 4 -> 2 -> 1 -> 1


def test_resnet_widths_override():
    model = models.build("resnet8", 10, widths=(8, 8, 16, 32))
    assert model.fc.weight.shape == (10, 32) and model.conv1.weight.shape == (8, 3, 3, 3)


def test_torchvision_in_channels_replaces_first_conv():
    r18 = models.build("resnet18", 10, in_channels=1)
    mb = models.build("mobilenet_v2", 10, in_channels=1)
    assert r18.conv1.weight.shape == (64, 1, 7, 7) and r18.conv1.stride == (2, 2)
    assert mb.features[0][0].weight.shape == (32, 1, 3, 3)


# --- ViT -----------------------------------------------------------------------------------

def test_vit_structure_and_patch_choice():
    m32 = models.build("vit_tiny", 100)
    assert m32.patch_embed.proj.kernel_size == (4, 4) and m32.patch_embed.proj.stride == (4, 4)
    assert m32.pos_embed.shape == (1, 65, 192) and m32.cls_token.shape == (1, 1, 192)
    assert isinstance(m32.norm, nn.LayerNorm) and m32.head.weight.shape == (100, 192)
    blk = m32.blocks[0]
    assert blk.attn.qkv.weight.shape == (576, 192) and blk.attn.proj.weight.shape == (192, 192)
    assert blk.attn.head_dim == 64 and isinstance(blk.mlp.act, nn.GELU)
    assert set(dict(m32.named_parameters(recurse=False))) == {"cls_token", "pos_embed"}
    m8 = models.build("vit_tiny", 10, in_channels=1, image_size=8)
    assert m8.patch_embed.proj.kernel_size == (2, 2) and m8.pos_embed.shape == (1, 17, 192)
    assert vit_mod.default_patch_size(224) == 16
    with pytest.raises(ValueError, match="patches"):
        m8(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="unknown vit_tiny option"):
        models.build("vit_tiny", 10, heads=3)


def test_vit_attention_layout_matches_per_head_reference():
    torch.manual_seed(0)
    dim, head_dim = 24, 8
    attn = vit_mod.Attention(dim, head_dim)
    x = torch.randn(2, 5, dim)
    qkv = attn.qkv(x)
    heads = []
    for h in range(dim // head_dim):  # [q | k | v], each [head0 | head1 | ...]
        q, k, v = (qkv[..., part * dim + h * head_dim: part * dim + (h + 1) * head_dim] for part in range(3))
        weights = torch.softmax(q @ k.transpose(1, 2) / head_dim ** 0.5, dim=-1)
        heads.append(weights @ v)
    expected = attn.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)  # float32 attention: dot products of head_dim terms


def test_vit_attention_heads_follow_the_input_width():
    attn = vit_mod.Attention(16, head_dim=8)  # 2 heads
    attn.qkv, attn.proj = nn.Linear(32, 96), nn.Linear(32, 32)  # a copy widened to 4 heads
    assert attn(torch.randn(2, 3, 32)).shape == (2, 3, 32)


def test_vit_small_overrides():
    m = models.build("vit_small", 10, depth=2, dim=64, head_dim=16)
    assert len(m.blocks) == 2 and m.pos_embed.shape == (1, 65, 64)
