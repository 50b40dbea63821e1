"""IR: structure of T_d (paths, widths, heads, noise placement, branches) and clear errors for
what cannot be widened exactly. The per-architecture exactness grid is in test_gpd_exactness.py."""
import pytest
import torch
from torch import nn

from workbench import models
from workbench.gpd import DEFAULT_BRANCHES, MultiBranchConv2d, UnsupportedLayerError, expand
from workbench.gpd.channels import slice_plain
from workbench.models.hooks import classifier_path

TOL = 1e-5  # max abs diff <= TOL * max |logit|: the spec's float32 bound (see test_gpd_exactness.py)
NUM_CLASSES = 10
SMALL_VIT = dict(depth=2, dim=64, head_dim=16)  # 4 heads: r = 1.5 -> 6 heads, 1.25 -> 5
TINY_VIT = dict(depth=2)  # vit_tiny shapes (3 heads of 64), 2 blocks to stay fast


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("branches", [0, DEFAULT_BRANCHES])
@pytest.mark.parametrize("name", ["resnet20", "MobileNetV2"])
def test_branch_counts_preserve_the_function(name, branches):
    torch.manual_seed(1)
    student = models.build(name, num_classes=NUM_CLASSES).eval()
    dt = expand(student, ratio=1.5, branches=branches, noise=0.0, scale_init="one_zero").eval()
    n_multi = sum(isinstance(m, MultiBranchConv2d) for m in dt.wide.modules())
    n_branchable = sum(
        type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1) for m in student.modules()
    )
    assert n_multi == (0 if branches == 0 else n_branchable) and n_branchable > 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(dt(x), student(x)) <= TOL


def test_wide_keeps_module_paths_and_io_widths():
    student = models.build("resnet20", num_classes=NUM_CLASSES)
    dt = expand(student, ratio=2.0, scale_init="reference")
    wide_paths = {p for p, _ in dt.wide.named_modules()}
    assert {p for p, _ in student.named_modules()} <= wide_paths
    assert classifier_path(dt.wide) == classifier_path(student) == "fc"
    assert dt.wide.conv1.in_channels == 3 and dt.wide.fc.out_features == NUM_CLASSES
    assert dt.wide.fc.in_features == 128 and dt.wide.layer1[0].conv1.out_channels == 32


@pytest.mark.parametrize("convention", ["reference", "full_scale"])
def test_vit_heads_are_duplicated_whole(convention):
    torch.manual_seed(2)
    student = models.build("vit_tiny", num_classes=NUM_CLASSES, **SMALL_VIT).eval()
    dt = expand(student, ratio=1.5, noise=0.0, convention=convention, scale_init="reference")
    qkv = dt.wide.blocks[0].attn.qkv
    assert qkv.in_features == 96 and qkv.out_features == 288  # 6 heads of 16
    w_s = student.blocks[0].attn.qkv.weight.detach()
    # wide q-head 4 (rows 64..79) copies student q-head 0 (rows 0..15, 2 copies each); wide
    # columns 64..95 copy student columns 0..31 (2 copies each). Reference: the rows (outputs)
    # are divided by their count; full scale: the columns (inputs) are
    assert torch.allclose(qkv.weight[64:80, :32] * 2, w_s[:16, :32])  # w/2*2 is exact in binary floats (so below)
    if convention == "reference":
        assert torch.allclose(qkv.weight[64:80, 64:] * 2, w_s[:16, :32])
        assert torch.allclose(qkv.weight[32:48, :32], w_s[32:48, :32])  # rows 32..63 have one copy
        assert torch.allclose(dt.wide.cls_token[..., :32] * 2, student.cls_token[..., :32])  # tokens divided
    else:
        assert torch.allclose(qkv.weight[96:112, 64:] * 2, w_s[64:80, :32])
        assert torch.allclose(dt.wide.cls_token[..., :64], student.cls_token)
    assert dt.wide.cls_token.shape == (1, 1, 96) and dt.wide.pos_embed.shape[-1] == 96
    assert type(dt.wide.blocks[0].norm1).__name__ == "ReplicaAwareLayerNorm"  # uneven counts
    assert type(expand(student, ratio=2.0, scale_init="reference").wide.blocks[0].norm1) is nn.LayerNorm  # even: plain


def test_vit_ratio_without_whole_heads_is_rejected():
    student = models.build("vit_tiny", num_classes=NUM_CLASSES, **TINY_VIT)
    with pytest.raises(UnsupportedLayerError, match=r"blocks\.0\.attn.*Attention.*head_dim 64"):
        expand(student, ratio=1.5, scale_init="reference")


def test_noise_goes_only_on_replicated_entries():
    torch.manual_seed(3)
    student = models.build("resnet20", num_classes=NUM_CLASSES).eval()
    exact = expand(student, ratio=1.5, noise=0.0, branches=0, scale_init="reference").eval()
    noisy = expand(student, ratio=1.5, noise=1e-3, branches=0, scale_init="reference").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        z_s = student(x)
        assert rel_err(noisy(x, view="student"), z_s) <= TOL  # student block untouched
        assert 0 < rel_err(noisy(x), z_s) < 0.1  # T_d moved, a little
    for (name, p0), p1 in zip(exact.wide.named_parameters(), noisy.wide.parameters()):
        diff = (p1 - p0).detach()
        rules = exact.plan.tensors[name]
        assert torch.equal(slice_plain(diff, rules), torch.zeros_like(slice_plain(diff, rules))), name
        if any(not r.cmap.is_identity for r in rules):
            assert 1e-4 < diff.std() < 1e-2, name  # a statistical range around noise=1e-3, not a rounding tolerance


def test_expand_does_not_touch_the_student():
    student = models.build("resnet20", num_classes=NUM_CLASSES).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    dt = expand(student, ratio=2.0, scale_init="reference")
    assert student.training and dt.training
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


# ---------------------------------------------------------------- unsupported

class _GroupedConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.grouped(self.stem(x)).mean((2, 3)))


class _TorchShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.shuffle = nn.ChannelShuffle(2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.shuffle(self.stem(x)).mean((2, 3)))


class _RecurrentNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.rnn(self.embed(x))[0][:, -1])


class _ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1)
        self.mix = nn.Conv2d(10, 5, 1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.mix(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


@pytest.mark.parametrize("model,x,ratio,pattern", [
    (_GroupedConvNet(), None, 1.5, r"'grouped' \(Conv2d\).*groups=2.*integer ratio \(got 1.5\)"),
    (_TorchShuffleNet(), None, 2.0, r"'shuffle' \(ChannelShuffle\).*channel grouping"),
    (_RecurrentNet(), torch.randn(2, 3, 5), 2.0, r"'rnn' \(GRU\)"),
    (_ConcatNet(), None, 2.0, r"'mix' \(Conv2d\).*concat"),
])
def test_unsupported_layers_are_named(model, x, ratio, pattern):
    with pytest.raises(UnsupportedLayerError, match=pattern):
        expand(model, ratio=ratio, example_input=x, scale_init="reference")


def test_grouped_conv_is_widened_group_by_group():
    torch.manual_seed(6)
    net = _GroupedConvNet().eval()
    dt = expand(net, ratio=2.0, noise=0.0, branches=0, scale_init="reference").eval()
    assert dt.wide.grouped.groups == 2 and dt.wide.grouped.in_channels == 16
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert rel_err(dt(x), net(x)) <= TOL


def test_shufflenets_need_an_integer_ratio():
    with pytest.raises(UnsupportedLayerError, match=r"'layer1\.0\.(conv1|shuffle1)'.*integer ratio \(got 1.5\)"):
        expand(models.build("ShuffleV1", num_classes=NUM_CLASSES), ratio=1.5, branches=0, scale_init="reference")


def test_unsupported_error_is_a_value_error():
    assert issubclass(UnsupportedLayerError, ValueError)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(ratio=0.5), "ratio must be a real number >= 1"),
    (dict(ratio="2"), "ratio must be"),
    (dict(noise=-1.0), "noise must be"),
    (dict(scale_init="ones"), "unknown scale_init 'ones'; valid choices: reference, one_zero"),
    (dict(convention="half"), "unknown convention 'half'; valid choices: reference, full_scale"),
    (dict(student_grad="exact"), "unknown student_grad 'exact'; valid choices: faithful, compensated"),
    (dict(branches=["1x1", "bogus"]), "unknown branch kind 'bogus'"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        expand(models.build("resnet8", num_classes=NUM_CLASSES), **kwargs)


def test_bad_example_input_is_reported():
    student = models.build("vit_tiny", num_classes=NUM_CLASSES, image_size=8, **SMALL_VIT)
    with pytest.raises(ValueError, match="example_input"):
        expand(student, scale_init="reference")
    expand(student, example_input=torch.randn(2, 3, 8, 8), scale_init="reference")


def _expanded_pair(monkeypatch, name, ratio, dtype=torch.float32):
    """(T_d with count-scaled BatchNorms, the same T_d with the input/output scale hooks)."""
    from workbench.gpd import layers

    def build():
        torch.manual_seed(0)
        return expand(models.build(name, 10).to(dtype), ratio=ratio, example_input=torch.randn(2, 3, 16, 16, dtype=dtype), scale_init="reference")

    fused = build()
    with monkeypatch.context() as m:
        m.setattr(layers, "COUNT_SCALED", {})  # every BN keeps the hooks
        hooked = build()
    return fused, hooked


def _train_and_compare(fused, hooked, dtype, steps=2):
    """Largest |difference| of logits and of every state-dict tensor after SGD steps on both views."""
    from torch.nn import functional as F

    opts = [torch.optim.SGD(dt.parameters(), lr=0.1, momentum=0.9) for dt in (fused, hooked)]
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(steps):
        x, y = torch.randn(4, 3, 16, 16, generator=g, dtype=dtype), torch.randint(0, 10, (4,), generator=g)
        outs = []
        for dt, opt in zip((fused, hooked), opts):
            opt.zero_grad()
            zd, zs = dt.train()(x, view="both")
            (F.cross_entropy(zd, y) + F.cross_entropy(zs, y)).backward()
            opt.step()
            outs.append(torch.cat([zd, zs]).detach())
        worst = max(worst, float((outs[0] - outs[1]).abs().max()))
    a, b = fused.state_dict(), hooked.state_dict()
    assert a.keys() == b.keys()  # same checkpoint layout
    return max([worst] + [float((a[k] - b[k]).abs().max()) for k in a if torch.is_tensor(a[k]) and a[k].is_floating_point()])


@pytest.mark.parametrize("name", ["resnet8", "MobileNetV2"])
def test_count_scaled_batchnorm_is_bit_identical_to_the_scale_hooks_at_ratio_2(monkeypatch, name):
    """Reference convention, r = 2: every BatchNorm runs on divided inputs as its count-scaled
    twin instead of "x * 2, BN, / 2" hooks; scaling by a power of two is exact in floating point,
    so logits, updated weights and running statistics after training steps are bit-identical."""
    from workbench.gpd import layers

    fused, hooked = _expanded_pair(monkeypatch, name, 2.0)
    bns = [m for m in fused.wide.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, layers.CountScaledBatchNorm2d) and not m._forward_hooks for m in bns)
    assert not any(isinstance(m, layers.CountScaledBatchNorm2d) for m in hooked.modules())
    assert _train_and_compare(fused, hooked, torch.float32) == 0.0


def test_count_scaled_batchnorm_at_ratio_3_agrees_to_rounding(monkeypatch):
    """r = 3 is not a power of two: the two forms round differently, by float64 rounding only."""
    fused, hooked = _expanded_pair(monkeypatch, "resnet8", 3.0, torch.float64)
    assert _train_and_compare(fused, hooked, torch.float64) < 1e-10  # float64 eps 2.2e-16 over ~10 layers and 2 steps
