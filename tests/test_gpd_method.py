"""The ``gpd`` method as a trainer plug-in (spec §4): every loss term against a hand
computation on a fixed forward, from-scratch and fine-tuning settings end to end, presets."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from workbench import models
from workbench.config import RunConfig
from workbench.engine import read_metrics
from workbench.experiment import run
from workbench.methods import build_method
from workbench.presets import get_preset

NUM_CLASSES = 10


def _hand_kl(zs, zt, T):
    pt = F.softmax(zt / T, 1)
    return (pt * (pt.log() - F.log_softmax(zs / T, 1))).sum(1).mean() * T * T


def _hand_sce(zs, zd, eps):
    logp = F.log_softmax(zs, 1)
    soft = -(F.softmax(zd, 1) * logp).sum(1)
    uniform = -logp.mean(1)
    return ((1 - eps) * soft + eps * uniform).mean()


def _method(base, **kw):
    torch.manual_seed(0)
    cfg = RunConfig.from_dict(dict(method="gpd", base=base, dataset="digits", student="resnet8",
                                   teacher="resnet8", **kw))
    teacher = models.build("resnet8", NUM_CLASSES, 1).eval() if base != "none" else None
    x = torch.randn(6, 1, 8, 8)
    return build_method(cfg, models.build("resnet8", NUM_CLASSES, 1), teacher, example_input=x), x


@pytest.mark.parametrize("lam,eps", [(3.0, 0.1), (1.5, 0.3)])
def test_gpd_kd_losses_equal_the_spec_formulas(lam, eps):
    method, x = _method("kd", gpd_lambda=lam, sce_eps=eps, kd_T=4, dt_base_weight=0.5)
    y = torch.arange(6) % NUM_CLASSES
    ref = copy.deepcopy(method)  # same parameters; recompute the forward piece by piece
    method.train(), ref.train()
    zs, losses = method(x, y)
    with torch.no_grad():
        zt = ref.teacher(x)
        zd = ref.dt(x)
        zs_ref = ref.dt(x, view="student")
    assert torch.allclose(zs, zs_ref, atol=1e-6)  # float32 logits of O(1): the same sums, ~10 ulp
    ce_w, kd_w = 0.1, 0.9  # KD's reference weights
    expect = {
        "loss_ce_dt": ce_w * F.cross_entropy(zd, y),
        "loss_kd_dt": 0.5 * kd_w * _hand_kl(zd, zt, 4.0),
        "loss_ce": ce_w * F.cross_entropy(zs_ref, y),
        "loss_kd": kd_w * _hand_kl(zs_ref, zt, 4.0),
        "loss_sce": lam * _hand_sce(zs_ref, zd, eps),
    }
    assert set(losses) == set(expect)
    for k, v in expect.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-5, abs=1e-6), k  # float32 loss means over a batch x classes


def test_sce_does_not_send_gradient_into_the_dynamic_teacher_logits():
    method, x = _method("none")
    y = torch.arange(6) % NUM_CLASSES
    zd_grads = []
    orig = method.dt.forward

    def spy(inp, view="dt"):
        out = orig(inp, view=view)
        if view == "both":
            out[0].register_hook(lambda g: zd_grads.append(g.clone()))
        return out
    method.dt.forward = spy
    _, losses = method(x, y)
    losses["loss_sce"].backward()
    assert zd_grads == [] or all(g.abs().max() == 0 for g in zd_grads)


def test_base_none_has_no_teacher_terms():
    method, x = _method("none")
    _, losses = method(x, torch.zeros(6, dtype=torch.long))
    assert set(losses) == {"loss_ce_dt", "loss_ce", "loss_sce"} and method.teacher is None


def test_from_scratch_run_needs_no_teacher(fast_cfg, tmp_path):
    res = run(dict(fast_cfg, method="gpd", base="none", teacher="none", epochs=1))
    recs = read_metrics(res.run_dir)
    assert {r["role"] for r in recs if r["kind"] == "eval"} == {"student", "dynamic_teacher", "student_ema", "dynamic_teacher_ema"}
    assert {r["pair"] for r in recs if r["kind"] == "gap"} == {"T_d-S"}
    assert not (tmp_path / "runs" / "teachers").exists()


def test_fine_tuning_starts_from_the_checkpoint_and_dt_starts_equal(fast_cfg, tmp_path):
    quick = dict(fast_cfg, probe_every=0, epochs=1, teacher="none")
    base = run(dict(quick, method="ce", name="pre"))
    pre_top1 = base.summary["student"]["last_top1"]
    res = run(dict(quick, method="gpd", base="none", name="ft", init=str(base.run_dir / "student.pt")))
    e0 = {r["role"]: r["top1"] for r in read_metrics(res.run_dir) if r["kind"] == "eval" and r["epoch"] == 0}
    assert e0["student"] == pytest.approx(pre_top1)  # fine-tuning really starts from init= (a % of counts: exact up to one rounding)
    assert e0["dynamic_teacher"] == pytest.approx(e0["student"])  # IR preserves the function (same counts)


@pytest.mark.parametrize("preset,expect", [
    ("cifar100/r32x4_r8x4/gpd_dkd", dict(method="gpd", base="dkd", teacher="resnet32x4", student="resnet8x4",
                                          dataset="cifar100", dkd_beta=8.0)),
    ("cifar100/r56_r20/gpd_kd", dict(method="gpd", base="kd", teacher="resnet56", student="resnet20")),
    ("cifar100/r32x4_r8x4/gpd_scratch", dict(method="gpd", base="none", student="resnet8x4")),
])
def test_gpd_presets(preset, expect):
    cfg = RunConfig.from_dict(dict(preset=preset))
    for k, v in expect.items():
        assert getattr(cfg, k) == v, k
    assert cfg.gpd_lambda == 3.0 and cfg.ratio == 2.0


def test_imagenet_presets_follow_the_paper_recipe():
    names = [p for p in __import__("workbench.presets", fromlist=["PRESETS"]).PRESETS if p.startswith("imagenet/")]
    assert names
    cfg = RunConfig.from_dict(dict(preset=[n for n in names if "gpd" in n][0]))
    assert cfg.dataset == "imagefolder" and cfg.method == "gpd" and math.isclose(cfg.gpd_lambda, 3.0)
