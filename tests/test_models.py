"""The zoo reproduces RepDistiller's CIFAR models (parameter counts, state-dict names/shapes,
pooling equivalences), the community MobileNetV1 for ImageNet, and every registered model runs
on 32x32x3 and 8x8x1 inputs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import models
from workbench.models import vit as vit_mod
from workbench.models.hooks import FeatureTap

torch.set_num_threads(1)

# num_classes=100 parameter counts of RepDistiller's definitions (HobbitLong/RepDistiller models/)
REPDISTILLER_PARAMS = {
    "resnet8": 83_892, "resnet20": 278_324, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860, "wrn_16_2": 703_284, "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156, "vgg8": 3_965_028, "vgg13": 9_462_180, "MobileNetV2": 812_836,
    "ShuffleV1": 949_258, "ShuffleV2": 1_355_528, "ResNet18": 11_220_132, "ResNet34": 21_328_292,
    "ResNet50": 23_705_252,
}
# the standard MobileNetV1 with BN at 1000 classes (GPD's CNN/models/mobilenet.py, mdistiller's
# imagenet/mobilenetv1.py): convs 3,185,088 + BN 21,888 + fc 1,025,000
MOBILENET_V1_PARAMS = 4_231_976
LITERATURE_NAMES = (
    "resnet8 resnet14 resnet20 resnet32 resnet44 resnet56 resnet110 resnet8x4 resnet32x4 wrn_16_1 "
    "wrn_16_2 wrn_40_1 wrn_40_2 vgg8 vgg11 vgg13 vgg16 vgg19 MobileNetV2 ShuffleV1 ShuffleV2 ResNet18 "
    "ResNet34 ResNet50"
).split()
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_names_and_families():
    names = models.available()
    for name in LITERATURE_NAMES:
        assert name in names and models.family(name) == "cifar"
    for name in ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v1"):
        assert models.family(name) == "imagenet"
    assert models.family("vit_tiny") == "vit"
    assert "mobile_half" not in names and "mobile_half" in models.available(include_aliases=True)
    assert type(models.build("mobile_half", 10)) is type(models.build("MobileNetV2", 10))


@pytest.mark.parametrize("name", sorted(REPDISTILLER_PARAMS))
def test_parameter_counts_match_repdistiller(name):
    assert n_params(models.build(name, 100)) == REPDISTILLER_PARAMS[name]


def test_torchvision_resnet18_parameter_count():
    assert n_params(models.build("resnet18", 1000)) == 11_689_512


def test_capitalised_resnet18_is_the_cifar_one_and_lowercase_is_torchvisions():
    cifar, tv = models.build("ResNet18", 100), models.build("resnet18", 100)
    assert models.family("ResNet18") == "cifar" and models.family("resnet18") == "imagenet"
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.modules())
    assert tv.conv1.kernel_size == (7, 7) and isinstance(tv.maxpool, nn.MaxPool2d)
    assert n_params(tv) == 11_227_812  # torchvision's at 100 classes: not the zoo's 11,220,132
    final_maps = []
    for model in (cifar, tv):  # the CIFAR stem keeps the resolution: 32x32 -> 4x4, not 1x1
        with FeatureTap(model, ["layer4"]) as tap, torch.no_grad():
            model.eval()(torch.randn(1, 3, 32, 32))
        final_maps.append(tuple(tap["layer4"].shape))
    assert final_maps == [(1, 512, 4, 4), (1, 512, 1, 1)]


def test_mobilenet_v1_parameter_count_and_plain_layers():
    model = models.build("mobilenet_v1", 1000)
    assert n_params(model) == MOBILENET_V1_PARAMS
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1]
    assert len(convs) == 1 + 2 * 13 and len(depthwise) == 13
    assert all(m.groups == m.in_channels == m.out_channels and m.kernel_size == (3, 3) for m in depthwise)
    assert [m.out_channels for m in convs if m.kernel_size == (1, 1)] == [
        64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert convs[0].stride == (2, 2) and convs[0].out_channels == 32
    assert sum(m.stride == (2, 2) for m in convs) == 5  # 224 -> 7
    leaf_types = {type(m) for m in model.modules() if not list(m.children())}
    assert leaf_types == {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Linear}
    assert model.fc.weight.shape == (1000, 1024)


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


# --- state dicts built the reference way load strictly and give the reference's logits ---------
# The walkers below are written from the community definitions (RepDistiller/mdistiller
# resnetv2.py; GPD/mdistiller mobilenet v1), not from our modules: each run both declares the
# reference's tensors by name and shape (creating random ones on first use) and computes the
# reference's eval-mode logits with them.

class ReferenceTensors:
    """Named tensors created on first use, in the layout of the reference file."""

    def __init__(self, seed: int = 0):
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}

    def _get(self, name, make):
        if name not in self.state:
            self.state[name] = make()
        return self.state[name]

    def conv(self, x, name, c_out, k, stride=1, groups=1):
        fan_in = x.shape[1] // groups * k * k
        w = self._get(f"{name}.weight", lambda: torch.randn(
            c_out, x.shape[1] // groups, k, k, generator=self.g) * (2.0 / fan_in) ** 0.5)
        return F.conv2d(x, w, stride=stride, padding=k // 2, groups=groups)

    def bn(self, x, name):
        c = x.shape[1]
        stats = {"weight": lambda: 1 + 0.2 * torch.randn(c, generator=self.g),
                 "bias": lambda: 0.1 * torch.randn(c, generator=self.g),
                 "running_mean": lambda: 0.1 * torch.randn(c, generator=self.g),
                 "running_var": lambda: 0.5 + torch.rand(c, generator=self.g),
                 "num_batches_tracked": lambda: torch.tensor(7)}
        t = {k: self._get(f"{name}.{k}", make) for k, make in stats.items()}
        return F.batch_norm(x, t["running_mean"], t["running_var"], t["weight"], t["bias"], False, 0.0, 1e-5)

    def linear(self, x, name, c_out):
        w = self._get(f"{name}.weight", lambda: torch.randn(c_out, x.shape[1], generator=self.g) / x.shape[1] ** 0.5)
        b = self._get(f"{name}.bias", lambda: 0.1 * torch.randn(c_out, generator=self.g))
        return F.linear(x, w, b)


def resnetv2_basic_reference(ref, x, num_blocks, num_classes):
    """resnetv2.py ResNet(BasicBlock, num_blocks): relu(bn1(conv1)); per block relu(bn1(conv1)),
    bn2(conv2), + shortcut (conv 1x1 + BN iff stride != 1 or in_planes != planes); relu; pool; linear."""
    out = F.relu(ref.bn(ref.conv(x, "conv1", 64, 3), "bn1"))
    in_planes = 64
    for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)), start=1):
        for j, s in enumerate([stride] + [1] * (n - 1)):
            p = f"layer{i}.{j}"
            h = F.relu(ref.bn(ref.conv(out, f"{p}.conv1", planes, 3, s), f"{p}.bn1"))
            h = ref.bn(ref.conv(h, f"{p}.conv2", planes, 3), f"{p}.bn2")
            if s != 1 or in_planes != planes:
                out = ref.bn(ref.conv(out, f"{p}.shortcut.0", planes, 1, s), f"{p}.shortcut.1")
            out, in_planes = F.relu(h + out), planes
    return ref.linear(out.mean((2, 3)), "linear", num_classes)


def mobilenet_v1_reference(ref, x, num_classes):
    """model.0 = conv_bn(3, 32, 2); model.1..13 = conv_dw(inp, oup, stride) (depthwise 3x3 at
    indices 0-2, pointwise 1x1 at 3-5); model.14 = average pool; fc."""
    out = F.relu(ref.bn(ref.conv(x, "model.0.0", 32, 3, 2), "model.0.1"))
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (oup, stride) in enumerate(cfg, start=1):
        inp = out.shape[1]
        out = F.relu(ref.bn(ref.conv(out, f"model.{i}.0", inp, 3, stride, groups=inp), f"model.{i}.1"))
        out = F.relu(ref.bn(ref.conv(out, f"model.{i}.3", oup, 1), f"model.{i}.4"))
    return ref.linear(out.mean((2, 3)), "fc", num_classes)


@pytest.mark.parametrize("name, reference, size", [
    ("ResNet18", lambda ref, x: resnetv2_basic_reference(ref, x, (2, 2, 2, 2), 100), 32),
    ("ResNet34", lambda ref, x: resnetv2_basic_reference(ref, x, (3, 4, 6, 3), 100), 32),
    ("mobilenet_v1", lambda ref, x: mobilenet_v1_reference(ref, x, 100), 64),
])
def test_reference_layout_loads_strictly_with_reference_logits(name, reference, size):
    ref = ReferenceTensors()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    expected = reference(ref, x)
    model = models.build(name, 100).eval()
    model.load_state_dict(ref.state, strict=True)  # same names, same shapes, nothing missing or extra
    with torch.no_grad():
        ours = model(x)
    # the same float32 kernels; only the global pool's summation order may differ (~1e-7 relative)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


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
