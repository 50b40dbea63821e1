"""Weight inheritance: uniform block selection per stage, front slicing (whole heads for qkv),
inherited tensors equal the teacher's slices (by hand, one per kind), clear one-line errors for
pairs that cannot inherit; BN recalibration re-estimates exactly the BN buffers (cumulative
average) and touches nothing else."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workbench import models
from workbench.models.inherit import InheritanceError, inherit, inheritance_map, recalibrate_bn

torch.set_num_threads(1)

K = 10
BENCH = Path(__file__).resolve().parents[1] / "bench"
#: the spec's pairs (teacher, student) and the teacher blocks each student stage takes
PAIRS = {
    ("resnet56", "resnet20"): ("layer1", [0, 3, 6]),
    ("resnet110", "resnet32"): ("layer2", [0, 3, 6, 9, 12]),
    ("resnet32x4", "resnet8x4"): ("layer3", [0]),
    ("wrn_40_2", "wrn_16_2"): ("block2.layer", [0, 3]),
    ("vgg13", "vgg8"): ("block1", [0, 1]),  # one conv unit (conv, BN) <- the first of two
    ("vit_small", "vit_tiny"): ("blocks", list(range(12))),
}


def _distinct(model):
    """Every float tensor of ``model``'s state (parameters, BN running statistics) set to random
    values in [0.5, 1.5) (positive: valid variances). Fresh BN statistics, BN/LayerNorm affine
    parameters and the ViT's zero biases are the same constants in every model, so without this an
    equality check on them would pass whatever inheritance copied (or left alone)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def _pair(t_name, s_name, **kw):
    torch.manual_seed(0)
    teacher = _distinct(models.build(t_name, K, **kw))
    torch.manual_seed(1)
    return teacher, models.build(s_name, K, **kw)


def _selected(mapping, container):
    """Teacher child indices the student's children of ``container`` map to, in student order."""
    n = len(container.split("."))
    pairs = {(int(s.split(".")[n]), int(t.split(".")[n])) for s, t in mapping.items() if s.startswith(container + ".")}
    return [t for _, t in sorted(pairs)]


@pytest.mark.parametrize("t_name, s_name", sorted(PAIRS))
def test_spec_pairs_select_uniform_blocks_and_copy_them(t_name, s_name):
    teacher, student = _pair(t_name, s_name)
    container, expected = PAIRS[(t_name, s_name)]
    mapping = inheritance_map(student, teacher)
    assert _selected(mapping, container) == expected
    assert inherit(student, teacher) is student  # in place
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for s_key, t_key in mapping.items():
        s, t = s_state[s_key], t_state[t_key]
        if "qkv" not in s_key:  # qkv is checked by hand below
            assert torch.equal(s, t[tuple(slice(0, d) for d in s.shape)]), s_key


def test_resnet56_to_resnet20_by_hand():
    teacher, student = _pair("resnet56", "resnet20")
    inherit(student, teacher)
    assert torch.equal(student.layer2[1].conv2.weight, teacher.layer2[3].conv2.weight)  # conv
    assert torch.equal(student.layer3[2].bn1.running_mean, teacher.layer3[6].bn1.running_mean)  # BN buffer
    assert torch.equal(student.layer2[0].downsample[0].weight, teacher.layer2[0].downsample[0].weight)
    assert torch.equal(student.fc.weight, teacher.fc.weight)


def test_width_slicing_resnet32x4_to_resnet8_by_hand():
    teacher, student = _pair("resnet32x4", "resnet8")  # widths (32, 64, 128, 256) -> (16, 16, 32, 64)
    inherit(student, teacher)
    assert torch.equal(student.conv1.weight, teacher.conv1.weight[:16])
    assert torch.equal(student.layer2[0].conv1.weight, teacher.layer2[0].conv1.weight[:32, :16])
    assert torch.equal(student.layer2[0].bn1.running_var, teacher.layer2[0].bn1.running_var[:32])
    assert torch.equal(student.layer3[0].downsample[1].weight, teacher.layer3[0].downsample[1].weight[:64])
    assert torch.equal(student.fc.weight, teacher.fc.weight[:, :64]) and torch.equal(student.fc.bias, teacher.fc.bias)


def test_vit_small_to_tiny_by_hand_whole_heads():
    teacher, student = _pair("vit_small", "vit_tiny")  # 384 -> 192 wide, 6 -> 3 heads of 64
    inherit(student, teacher)
    d, dt = 192, 384
    rows = torch.cat([torch.arange(0, d), torch.arange(dt, dt + d), torch.arange(2 * dt, 2 * dt + d)])  # q|k|v
    t_attn, s_attn = teacher.blocks[5].attn, student.blocks[5].attn
    assert torch.equal(s_attn.qkv.weight, t_attn.qkv.weight[rows][:, :d])
    assert torch.equal(s_attn.qkv.bias, t_attn.qkv.bias[rows])
    assert torch.equal(s_attn.proj.weight, t_attn.proj.weight[:d, :d])  # the first 3 heads' outputs
    assert torch.equal(student.blocks[5].mlp.fc1.weight, teacher.blocks[5].mlp.fc1.weight[:768, :d])
    assert torch.equal(student.blocks[5].norm2.weight, teacher.blocks[5].norm2.weight[:d])
    assert torch.equal(student.cls_token, teacher.cls_token[..., :d])
    assert torch.equal(student.pos_embed, teacher.pos_embed[..., :d])
    assert torch.equal(student.patch_embed.proj.weight, teacher.patch_embed.proj.weight[:d])
    assert torch.equal(student.head.weight, teacher.head.weight[:, :d])


def test_dist_vits_inherit_the_dist_token_and_head():
    teacher, student = _pair("vit_small_dist", "vit_tiny_dist", depth=2)
    inherit(student, teacher)
    assert torch.equal(student.dist_token, teacher.dist_token[..., :192])
    assert torch.equal(student.head_dist.weight, teacher.head_dist.weight[:, :192])


def test_state_dict_source_equals_module_source_and_same_arch_is_a_copy():
    teacher, a = _pair("resnet56", "resnet20")
    _, b = _pair("resnet56", "resnet20")
    inherit(a, teacher)
    inherit(b, teacher.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    same, student = _pair("wrn_16_2", "wrn_16_2")
    inherit(student, same)
    assert all(torch.equal(x, y) for x, y in zip(student.state_dict().values(), same.state_dict().values()))


class _Grouped(nn.Sequential):
    def __init__(self, width):
        super().__init__(nn.Conv2d(width, width, 1, groups=3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, K))


@pytest.mark.parametrize("make, match", [
    (lambda: (models.build("wrn_40_2", K), models.build("resnet20", K)), "WideResNet.*different model families"),
    (lambda: (models.build("resnet20", K), models.build("resnet56", K)), "9 blocks in the student but 3 .*deeper"),
    (lambda: (models.build("resnet32", K, widths=(16, 16, 32, 32)), models.build("resnet20", K)), "wider"),
    (lambda: (models.build("resnet56", 100), models.build("resnet20", K)), "class count"),
    (lambda: (models.build("vit_small", K, depth=1, head_dim=32), models.build("vit_tiny", K, depth=1)), "head_dim"),
    (lambda: (models.build("vit_small", K, depth=1), models.build("vit_tiny_dist", K, depth=1)),
     "DistilledViT from ViT: different model families"),
    (lambda: (models.build("vit_small", K, depth=1, image_size=64), models.build("vit_tiny", K, depth=1, patch_size=8, image_size=32)),
     "token count"),
    (lambda: (_Grouped(12), _Grouped(6)), "grouped conv"),
    (lambda: (models.build("resnet8x4", K).state_dict(), models.build("resnet20", K)), "3 blocks in the student but 1"),
    (lambda: (models.build("wrn_16_2", K).state_dict(), models.build("resnet8", K)), "teacher has no .*layer1"),
])
def test_pairs_that_cannot_inherit_raise_one_line(make, match):
    teacher, student = make()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(InheritanceError, match=match) as info:
        inherit(student, teacher)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"cannot inherit {type(student).__name__} from ")
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())  # nothing written


def test_error_names_the_registry_architectures_and_the_first_offending_tensor():
    with pytest.raises(InheritanceError, match=r"^cannot inherit resnet8x4 from resnet8: conv1.weight is "
                                               r"\(32, 3, 3, 3\) in the student but \(16, 3, 3, 3\).*wider"):
        inherit(models.build("resnet8x4", K), models.build("resnet8", K), student_name="resnet8x4", teacher_name="resnet8")


def test_source_must_be_a_module_or_state_dict():
    with pytest.raises(TypeError, match="nn.Module or a state dict, got str"):
        inherit(models.build("resnet8", K), "resnet20")


# --- BN recalibration ----------------------------------------------------------------------

def _batches(sizes=(16, 8, 12), side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, side, side, generator=g) * 2 + 1 for n in sizes]


def _bn_buffer_names(model):
    bns = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    return {n for n, _ in model.named_buffers() if n.rpartition(".")[0] in bns}


def test_recalibration_changes_only_bn_buffers():
    torch.manual_seed(0)
    model = models.build("resnet8", K)
    model.register_buffer("marker", torch.arange(3.0))  # a non-BN buffer must survive
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    recalibrate_bn(model, _batches())
    after = model.state_dict()
    bn_buffers = _bn_buffer_names(model)
    for k in before:
        if k in bn_buffers:
            assert not torch.equal(before[k], after[k]), k  # every BN buffer re-estimated
        else:
            assert torch.equal(before[k], after[k]), k
    assert all(torch.equal(p, params_before[n]) for n, p in model.named_parameters())
    assert not model.training and all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.bn1.num_batches_tracked.item() == 3


def test_recalibration_is_the_cumulative_average_of_batch_statistics():
    torch.manual_seed(0)
    model = models.build("resnet8", K).train()
    batches = _batches()
    recalibrate_bn(model, batches)
    assert model.training  # mode restored
    with torch.no_grad():
        acts = [model.conv1(x) for x in batches]  # the input of the first BN
    means = torch.stack([a.mean((0, 2, 3)) for a in acts]).mean(0)
    variances = torch.stack([a.var((0, 2, 3), unbiased=True) for a in acts]).mean(0)
    # every batch weighs the same, whatever its size (momentum=None); 3-term float32 averages
    # computed in two orders differ by a few roundings of O(1) values: 1e-5 >> 10 * eps32
    torch.testing.assert_close(model.bn1.running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.bn1.running_var, variances, rtol=1e-5, atol=1e-6)


def test_recalibration_accepts_loader_pairs_and_restores_on_empty_input():
    model = models.build("resnet8", K).eval()
    data = TensorDataset(torch.randn(20, 3, 8, 8), torch.zeros(20, dtype=torch.long))
    recalibrate_bn(model, DataLoader(data, batch_size=8))
    assert model.bn1.num_batches_tracked.item() == 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_recalibration_of_a_model_without_bn_reads_nothing():
    def never():
        raise AssertionError("batches were read")
        yield  # pragma: no cover

    model = models.build("vit_nano", K)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_bn(model, never()) is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- the digits sanity number (slow: trains a teacher) --------------------------------------

#: bench/digits_inherit.py, resnet20 -> resnet8, 15 teacher epochs, seeds 0-2 (teacher 99.1 +- 0.5):
#: random init 10.0 +- 1.3, inherited 11.6 +- 0.2, inherited + BN recalibration 59.4 +- 1.3 % top-1.
#: A 20-point margin is over 10 standard deviations of either number.
DIGITS_MARGIN = 20.0


@pytest.mark.slow
def test_digits_recalibrated_inherited_student_beats_random_init():
    spec = importlib.util.spec_from_file_location("digits_inherit", BENCH / "digits_inherit.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    res = study.main(["pairs=resnet20:resnet8", "seeds=0", "epochs=15"])["resnet20:resnet8"]
    assert res["recalibrated"][0] > res["random"][0] + DIGITS_MARGIN
