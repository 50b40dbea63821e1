"""Hard parameter sharing and CBR: the student view and the extracted student are read out of
T_d's parameters; separate BN statistics; state dicts; gradient scaling."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from workbench import models
from workbench.gpd import DynamicTeacher, expand, extract_student
from workbench.gpd.channels import student_block_mask
from workbench.models.hooks import FeatureTap

TOL = 1e-5  # the spec's float32 bound on max|diff| / max|logit| (see test_gpd_exactness.py)
NUM_CLASSES = 10
SMALL_VIT = dict(depth=2, dim=64, head_dim=16)
ARCHS = [("resnet20", {}, 1.5), ("MobileNetV2", {}, 2.0), ("vit_tiny", SMALL_VIT, 1.5)]


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def _train_steps(dt: DynamicTeacher, steps: int = 3) -> None:
    opt = torch.optim.SGD(dt.parameters(), lr=0.05, momentum=0.9)
    dt.train()
    for i in range(steps):
        x, y = _batch(seed=i)
        z_d, z_s = dt(x, view="both")
        loss = F.cross_entropy(z_d, y) + F.cross_entropy(z_s, y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("name,kwargs,ratio", ARCHS, ids=[a[0] for a in ARCHS])
def test_extracted_student_equals_student_view_before_and_after_training(name, kwargs, ratio):
    torch.manual_seed(0)
    student = models.build(name, num_classes=NUM_CLASSES, **kwargs)
    dt = expand(student, ratio=ratio, scale_init="reference")
    x, _ = _batch(seed=99)
    for stage in ("init", "trained"):
        if stage == "trained":
            _train_steps(dt)
        dt.eval()
        extracted = extract_student(dt).eval()
        assert type(extracted) is type(student)
        with torch.no_grad():
            z_view, z_ext = dt(x, view="student"), extracted(x)
        assert rel_err(z_ext, z_view) <= TOL, stage
        fresh = models.build(name, num_classes=NUM_CLASSES, **kwargs)
        fresh.load_state_dict(extracted.state_dict(), strict=True)
        with torch.no_grad():
            assert rel_err(fresh.eval()(x), z_view) <= TOL, stage
    # training moved the student away from where it started
    with torch.no_grad():
        assert rel_err(z_view, student.eval()(x)) > 1e-3


def test_extracted_student_has_no_hooks_and_plain_parameters():
    student = models.build("resnet20", num_classes=NUM_CLASSES)
    dt = expand(student, ratio=2.0, scale_init="reference")
    seen = []
    dt.student_template.fc.register_forward_hook(lambda *a: seen.append(1))
    extracted = extract_student(dt)
    extracted(torch.randn(1, 3, 8, 8))
    assert seen == []
    assert [n for n, _ in extracted.named_parameters()] == [n for n, _ in student.named_parameters()]
    assert list(extracted.state_dict()) == list(student.state_dict())


def test_a_teacher_step_moves_the_student():
    torch.manual_seed(1)
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=2.0, scale_init="reference")
    before = extract_student(dt).state_dict()
    opt = torch.optim.SGD(dt.parameters(), lr=0.1)
    x, y = _batch()
    F.cross_entropy(dt(x), y).backward()  # T_d loss only
    opt.step()
    after = extract_student(dt).state_dict()
    moved = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert "fc.weight" in moved and "layer1.0.conv1.weight" in moved and "bn1.weight" in moved


def test_student_loss_reaches_exactly_the_shared_slice():
    torch.manual_seed(2)
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=2.0, branches=0, scale_init="reference")
    x, y = _batch()
    F.cross_entropy(dt(x, view="student"), y).backward()
    g = dt.wide.fc.weight.grad
    assert g[:, :64].abs().sum() > 0 and torch.all(g[:, 64:] == 0)
    g = dt.wide.layer2[0].conv1.weight.grad  # (64, 32, 3, 3) in T_d, (32, 16) in the student
    assert g[:32, :16].abs().sum() > 0 and torch.all(g[32:] == 0) and torch.all(g[:, 16:] == 0)
    assert all(p.grad is not None for p in dt.parameters())


def test_both_views_in_one_call_use_every_parameter():
    torch.manual_seed(3)
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=1.5, scale_init="reference")
    x, y = _batch()
    z_d, z_s = dt(x, view="both")
    (F.cross_entropy(z_d, y) + F.cross_entropy(z_s, y)).backward()
    assert all(p.grad is not None for p in dt.parameters())
    # same values as two separate calls
    dt.eval()
    with torch.no_grad():
        z_d, z_s = dt(x, view="both")
        assert torch.equal(z_d, dt(x)) and torch.equal(z_s, dt(x, view="student"))


def _bn_stats(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def test_each_view_keeps_its_own_batchnorm_statistics():
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=2.0, scale_init="reference").train()
    x, _ = _batch()
    wide0, stud0 = _bn_stats(dt.wide), _bn_stats(dt.student_template)
    assert len(stud0) == 3 * sum(isinstance(m, nn.BatchNorm2d) for m in dt.student_template.modules())
    dt(x)  # teacher forward in train mode
    wide1, stud1 = _bn_stats(dt.wide), _bn_stats(dt.student_template)
    assert all(torch.equal(stud0[k], stud1[k]) for k in stud0)
    assert not torch.equal(wide0["bn1.running_mean"], wide1["bn1.running_mean"])
    dt(x, view="student")  # student forward in train mode
    wide2, stud2 = _bn_stats(dt.wide), _bn_stats(dt.student_template)
    assert all(torch.equal(wide1[k], wide2[k]) for k in wide1)
    assert not torch.equal(stud1["bn1.running_mean"], stud2["bn1.running_mean"])
    # the student view's stats are the student's own: after the same batch they equal a plain student's
    plain = copy.deepcopy(extract_student(dt))  # holds stud2
    assert torch.equal(plain.bn1.running_mean, stud2["bn1.running_mean"])


def test_eval_mode_touches_no_statistics():
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=2.0, scale_init="reference").eval()
    before = {k: v.clone() for k, v in dt.state_dict().items() if isinstance(v, torch.Tensor)}
    dt(_batch()[0], view="both")
    assert all(torch.equal(before[k], v) for k, v in dt.state_dict().items() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("name,kwargs,ratio", ARCHS, ids=[a[0] for a in ARCHS])
def test_state_dict_round_trip_into_a_fresh_teacher(name, kwargs, ratio):
    torch.manual_seed(4)
    dt = expand(models.build(name, num_classes=NUM_CLASSES, **kwargs), ratio=ratio)
    _train_steps(dt, steps=2)  # moves weights, branch scales and both views' BN stats
    fresh = expand(models.build(name, num_classes=NUM_CLASSES, **kwargs), ratio=ratio)
    fresh.load_state_dict(dt.state_dict(), strict=True)
    x, _ = _batch(seed=7)
    dt.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), dt(x))
        assert torch.equal(fresh(x, view="student"), dt(x, view="student"))


def test_state_dict_from_another_ratio_is_refused():
    dt2 = expand(models.build("resnet8", num_classes=NUM_CLASSES), ratio=2.0, branches=0, scale_init="reference")
    dt3 = expand(models.build("resnet8", num_classes=NUM_CLASSES), ratio=3.0, branches=0, scale_init="reference")
    with pytest.raises(ValueError, match="ratio=3.0"):
        dt2.load_state_dict(dt3.state_dict())


@pytest.mark.parametrize("convention", ["reference", "full_scale"])
@pytest.mark.parametrize("mode", ["faithful", "compensated"])
def test_student_gradient_scale(mode, convention):
    """The gradient reaching a shared slice vs a standalone student's gradient: x cnt (faithful)
    or x 1/cnt (compensated) on the dims IR divided -- outputs in the reference convention,
    inputs in the full-scale one --; x 1 elsewhere. (float32 gradients of one batch; rtol 1e-4
    covers the different summation order of wide and plain convs.)"""
    torch.manual_seed(5)
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=1.5, student_grad=mode,
                convention=convention, scale_init="one_zero").eval()
    standalone = extract_student(dt).eval()
    x, y = _batch()
    F.cross_entropy(dt(x, view="student"), y).backward()
    F.cross_entropy(standalone(x), y).backward()
    cnt = torch.tensor([2.0] * 8 + [1.0] * 8)  # 16 -> 24 channels: the first 8 have two copies
    factor = cnt if mode == "faithful" else 1 / cnt
    conv_w = dt.wide.layer1[0].conv2.weight.grad[:16, :16]  # multi-branch conv: origin scale 1
    # float32 gradients: batch x spatial sums of thousands of terms in the wide and the standalone
    # model, in different orders: float_tol(float32, ~800) ~ 1e-4 (this and the two checks below)
    conv_factor = factor[:, None, None, None] if convention == "reference" else factor[None, :, None, None]
    assert torch.allclose(conv_w, standalone.layer1[0].conv2.weight.grad * conv_factor, rtol=1e-4, atol=1e-9)
    fc_cnt = torch.tensor([2.0] * 32 + [1.0] * 32)
    fc_factor = torch.ones(64) if convention == "reference" else (fc_cnt if mode == "faithful" else 1 / fc_cnt)
    assert torch.allclose(dt.wide.fc.weight.grad[:, :64], standalone.fc.weight.grad * fc_factor, rtol=1e-4, atol=1e-9)
    for name in ("bn1.weight", "fc.bias"):  # per-channel / not widened: unscaled in every mode
        assert torch.allclose(dt.wide.get_parameter(name).grad[: standalone.get_parameter(name).numel()],
                              standalone.get_parameter(name).grad, rtol=1e-4, atol=1e-9)


def _student_step(dt, x, y, lr):
    """Change of the extracted student's tensors after one SGD step of the student loss on T_d."""
    dt = copy.deepcopy(dt)
    before = extract_student(dt).state_dict()
    opt = torch.optim.SGD(dt.parameters(), lr=lr)
    F.cross_entropy(dt(x, view="student"), y).backward()
    opt.step()
    after = extract_student(dt).state_dict()
    return {k: after[k] - before[k] for k in before if before[k].is_floating_point()}


def _plain_step(model, x, y, lr):
    model = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return {k: v - before[k] for k, v in model.state_dict().items() if v.is_floating_point()}


def _teacher_step(dt, x, y, lr):
    """Change of T_d's parameters after one SGD step of T_d's own (CE) loss."""
    dt = copy.deepcopy(dt)
    before = {k: v.detach().clone() for k, v in dt.wide.named_parameters()}
    opt = torch.optim.SGD(dt.parameters(), lr=lr)
    F.cross_entropy(dt(x), y).backward()
    opt.step()
    return {k: v.detach() - before[k] for k, v in dt.wide.named_parameters()}


STEP_CASES = [  # (architecture, input side, first conv, an inner conv, classifier)
    ("resnet8", 32, "conv1.weight", "layer1.0.conv1.weight", "fc.weight"),
    ("resnet18", 32, "conv1.weight", "layer2.0.conv2.weight", "fc.weight"),
]
#: measured on the official GPD code at r = 2 (spec §2): one student-loss SGD step moves the
#: student's first conv / inner conv / BN / classifier this many times as far as a standalone
#: student's step; one T_d-loss step moves T_d's first conv / inner conv / classifier this many
#: times as far as in the full-scale parametrization of the same function
REFERENCE_STUDENT_FACTORS = (4.0, 4.0, 1.0, 1.0)
FULL_SCALE_STUDENT_FACTORS = (1.0, 4.0, 1.0, 4.0)
REFERENCE_TEACHER_FACTORS = (2.0, 1.0, 0.5)
#: float64 steps: the ratio of two step norms is exact to ~1e-12; 1e-9 leaves room
STEP_RTOL = 1e-9


@pytest.mark.parametrize("name,side,first,inner,fc", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_one_sgd_step_moves_each_layer_by_the_reference_factors(name, side, first, inner, fc):
    torch.manual_seed(11)
    student = models.build(name, num_classes=NUM_CLASSES).double().train()
    x = torch.randn(8, 3, side, side, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (8,))
    lr = 0.1
    keys = (first, inner, "bn1.weight", fc)
    steps = {}
    for convention in ("reference", "full_scale"):
        dt = expand(student, ratio=2.0, noise=0.0, branches=0, convention=convention,
                    example_input=x[:2], scale_init="reference").train()
        d_view, d_plain = _student_step(dt, x, y, lr), _plain_step(extract_student(dt).train(), x, y, lr)
        factors = tuple(float(d_view[k].norm() / d_plain[k].norm()) for k in keys)
        want = REFERENCE_STUDENT_FACTORS if convention == "reference" else FULL_SCALE_STUDENT_FACTORS
        assert factors == pytest.approx(want, rel=STEP_RTOL), convention
        steps[convention] = _teacher_step(dt, x, y, lr)
    teacher = tuple(float(steps["reference"][k].norm() / steps["full_scale"][k].norm()) for k in (first, inner, fc))
    assert teacher == pytest.approx(REFERENCE_TEACHER_FACTORS, rel=STEP_RTOL)


@pytest.mark.parametrize("name", ["resnet20", "MobileNetV2", "wrn_16_2"])
def test_perturbing_teacher_only_entries_leaves_the_student_unchanged(name):
    """Slice first, then fold: every T_d entry outside the student block -- including the
    internal channels of the 1x1->kxk and dws branches -- is invisible to the student view."""
    torch.manual_seed(7)
    dt = expand(models.build(name, num_classes=NUM_CLASSES), ratio=2.0, scale_init="reference").eval()
    x, _ = _batch()
    with torch.no_grad():
        before, teacher_before = dt(x, view="student"), dt(x)
        for pname, p in dt.wide.named_parameters():
            outside = ~student_block_mask(p.shape, dt.plan.tensors[pname])
            p.add_(torch.randn_like(p) * outside)
        assert torch.equal(dt(x, view="student"), before)
        assert not torch.allclose(dt(x), teacher_before)  # the perturbation was real


def test_branch_bias_is_folded_into_the_batchnorm_that_reads_it():
    """A branched conv's bias (zero at init, trained by the student loss in general) is part
    of the student view; the plain extracted student holds it in the reading BN's running mean:
    equal in eval mode, and in train mode (batch statistics cancel the constant) too."""
    torch.manual_seed(8)
    dt = expand(models.build("resnet8", num_classes=NUM_CLASSES), ratio=2.0, noise=0.0, scale_init="reference")
    assert dt.bias_folds and set(dt.bias_folds) <= set(dt.branched_paths)
    for path in dt.branched_paths:
        bias = dt.wide.get_submodule(path).bias
        assert isinstance(bias, nn.Parameter) and torch.equal(bias, torch.zeros_like(bias))
    with torch.no_grad():
        for path in dt.bias_folds:
            dt.wide.get_submodule(path).bias.normal_()
    x, _ = _batch()
    for mode in ("eval", "train"):
        dt.train(mode == "train")
        extracted = extract_student(dt).train(mode == "train")
        with torch.no_grad():
            assert rel_err(extracted(x), dt(x, view="student")) <= TOL, mode


def test_student_view_wrapper_registers_nothing_and_forwards_modes():
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=2.0, scale_init="reference")
    view = dt.student_view()
    assert list(view.parameters()) == [] and list(view.state_dict()) == []
    view.eval()
    assert not dt.training and not dt.student_template.training and not dt.wide.training
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(view(x), dt(x, view="student"))
    holder = nn.ModuleDict({"dt": dt, "view": view})
    assert len(list(holder.parameters())) == len(list(dt.parameters()))


@pytest.mark.parametrize("convention", ["reference", "full_scale"])
def test_hooks_fire_on_each_view(convention):
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=1.5, noise=0.0, convention=convention, scale_init="reference").eval()
    x = torch.randn(2, 3, 16, 16)
    with FeatureTap(dt.wide, ["penultimate", "layer2"]) as tap_d, \
            FeatureTap(dt.student_template, ["penultimate", "layer2"]) as tap_s:
        dt(x)
        assert "penultimate" in tap_d and "penultimate" not in tap_s
        dt(x, view="student")
    assert tap_d["penultimate"].shape == (2, 96) and tap_s["penultimate"].shape == (2, 64)
    # wide features are copies of the student's (32 -> 48 channels: the first 16 have 2 copies),
    # divided by the copy count in the reference convention
    cnt = torch.tensor([2.0] * 16 + [1.0] * 16)[None, :, None, None] if convention == "reference" else 1.0
    assert torch.allclose(tap_d["layer2"][:, :32] * cnt, tap_s["layer2"], atol=1e-4)  # float32 features after ~10 convs (see TOL)
    assert torch.allclose(tap_d["layer2"][:, 32:48] * 2 if convention == "reference" else tap_d["layer2"][:, 32:48],
                          tap_s["layer2"][:, :16], atol=1e-4)


def test_parameters_are_owned_once():
    dt = expand(models.build("resnet20", num_classes=NUM_CLASSES), ratio=2.0, scale_init="reference")
    names = [n for n, _ in dt.named_parameters()]
    assert names and all(n.startswith("wide.") for n in names)
    keys = list(dt.state_dict())
    assert all(k.startswith(("wide.", "student_template.")) or k == "_extra_state" for k in keys)
    assert not any(k.startswith("student_template.") and k.endswith(("weight", "bias")) for k in keys)


def test_unknown_view_is_rejected():
    dt = expand(models.build("resnet8", num_classes=NUM_CLASSES), ratio=2.0, branches=0, scale_init="reference")
    with pytest.raises(ValueError, match="unknown view 'teacher_d'; valid choices: teacher, student, both"):
        dt(torch.randn(1, 3, 8, 8), view="teacher_d")
