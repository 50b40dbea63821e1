"""FitNet and ReviewKD on the feature seam: losses against hand computations, module shapes for
zoo pairs, teacher pre-activations, GPD with a feature base (its student-view loss equals the
plain method on the extracted student), training runs, and a 2-process DDP run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench import gpd, models
from workbench.config import RunConfig
from workbench.engine import read_metrics
from workbench.experiment import run
from workbench.methods import BuildContext, Distiller, build_method
from workbench.methods.base import feature_shapes
from workbench.methods.fitnet import ConvReg, FitNetLoss
from workbench.methods.reviewkd import ReviewKDLoss, hcl_loss, reviewkd_criterion
from workbench.models.hooks import FeatureTap, stage_paths

ROOT = Path(__file__).resolve().parents[1]
K = 10


def test_hcl_matches_a_hand_computation():
    torch.manual_seed(0)
    fs, ft = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    gs, gt = torch.randn(2, 5, 1, 1, dtype=torch.float64), torch.randn(2, 5, 1, 1, dtype=torch.float64)

    def mse(a, b):
        return ((a - b) ** 2).mean()

    def pool(a, s):  # average over s x s blocks of equal size
        n, c, h, w = a.shape
        return a.reshape(n, c, s, h // s, s, w // s).mean((3, 5))

    # 4x4 map: the 4x4 level is skipped (not smaller than the map); 2x2 weight 1/2, 1x1 weight 1/4
    level1 = (mse(fs, ft) + 0.5 * mse(pool(fs, 2), pool(ft, 2)) + 0.25 * mse(pool(fs, 1), pool(ft, 1))) / 1.75
    level2 = mse(gs, gt)  # 1x1 map: the full-resolution term alone
    # float64, a handful of roundings on 100 numbers: 1e-12 is ~1e4 ulps of headroom
    assert abs(float(hcl_loss([fs, gs], [ft, gt])) - float(level1 + level2)) < 1e-12


@pytest.mark.parametrize("s_hw, t_hw, kind", [(8, 8, "Conv2d"), (16, 8, "Conv2d"), (4, 8, "ConvTranspose2d"),
                                              (10, 8, "Conv2d")])
def test_convreg_maps_the_student_map_to_the_teacher_shape(s_hw, t_hw, kind):
    reg = ConvReg((2, 16, s_hw, s_hw), (2, 32, t_hw, t_hw))
    assert type(reg.conv).__name__ == kind
    assert reg(torch.randn(2, 16, s_hw, s_hw)).shape == (2, 32, t_hw, t_hw)


def test_fitnet_loss_is_100_times_the_mse_of_the_regressed_hint():
    torch.manual_seed(1)
    loss = FitNetLoss("layer2", "layer2", (2, 8, 4, 4), (2, 16, 4, 4))
    fs, ft = torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4)
    s = type("O", (), {"features": {"layer2": fs}})()
    t = type("O", (), {"features": {"layer2": ft}})()
    got = loss.terms(s, t, None)["loss_feat"]
    want = 100.0 * ((loss.regressor(fs) - ft) ** 2).mean()
    assert torch.allclose(got, want, rtol=1e-6, atol=0)  # same ops, float32 mean of 512 terms: ~1e-7


def test_preact_tap_is_the_stage_output_before_its_final_relu():
    torch.manual_seed(0)
    net = models.build("resnet20", K).eval()
    x = torch.randn(2, 3, 32, 32)
    paths = stage_paths(net)
    with torch.no_grad(), FeatureTap(net, paths + [p + ":preact" for p in paths]) as tap:
        net(x)
    for p in paths:
        pre = tap[p + ":preact"]
        assert (pre < 0).any()  # really before the ReLU
        assert torch.equal(F.relu(pre), tap[p])  # and exactly the stage's output after it
    # a torchvision ResNet (in-place ReLU) too
    tv = models.build("resnet18", K).eval()
    with torch.no_grad(), FeatureTap(tv, ["layer1:preact", "layer1"]) as tap:
        tv(torch.randn(1, 3, 64, 64))
    assert (tap["layer1:preact"] < 0).any() and torch.equal(F.relu(tap["layer1:preact"]), tap["layer1"])


@pytest.mark.parametrize("student, teacher", [("resnet8x4", "resnet32x4"), ("resnet8", "resnet20"),
                                              ("wrn_16_2", "wrn_40_2"), ("ShuffleV1", "resnet32x4")])
def test_reviewkd_fuses_every_student_level_to_the_teachers_shape(student, teacher):
    torch.manual_seed(0)
    s, t = models.build(student, K), models.build(teacher, K).eval()
    x = torch.randn(2, 3, 32, 32)
    ctx = BuildContext(RunConfig.from_dict(dict(method="reviewkd")), s, t, x)
    crit = reviewkd_criterion(ctx, s)
    t_shapes = feature_shapes(ctx, t, crit.teacher_features)
    with FeatureTap(s, list(crit.student_features)) as tap:
        s(x)
    fused = crit.fuse([tap[n] for n in crit.student_features])
    want = [tuple(v) if len(v) == 4 else (*v, 1, 1) for v in t_shapes.values()]
    assert [tuple(f.shape) for f in fused] == want
    assert crit.abfs[0].att is None and all(a.att is not None for a in crit.abfs[1:])  # deepest level: no fusion


def test_reviewkd_warms_up_linearly():
    crit = ReviewKDLoss(["a", "p"], ["b", "q"], [(1, 2, 4, 4), (1, 2)], [(1, 3, 4, 4), (1, 3)], weight=5.0, warmup=20)
    s = type("O", (), {"features": {"a": torch.randn(1, 2, 4, 4), "p": torch.randn(1, 2)}})()
    t = type("O", (), {"features": {"b": torch.randn(1, 3, 4, 4), "q": torch.randn(1, 3)}})()
    crit.eval()  # BN in eval mode: the same fused maps on every call
    crit.set_epoch(25, 100)
    got = crit.terms(s, t, None)["loss_review"]
    full = 5.0 * hcl_loss(crit.fuse([s.features["a"], s.features["p"]]), [t.features["b"], t.features["q"][:, :, None, None]])
    assert torch.allclose(got, full, rtol=1e-6, atol=0)  # same ops in the same order
    crit.set_epoch(5, 100)
    assert torch.allclose(crit.terms(s, t, None)["loss_review"], 0.25 * full, rtol=1e-6, atol=0)


@pytest.mark.parametrize("base", ["reviewkd", "fitnet"])
def test_gpd_on_a_feature_base_gives_the_student_view_the_plain_methods_loss(base):
    """At init (noise 0, float64) the student view IS the student: its loss term under GPD equals
    the plain method's on the extracted student with the same modules; T_d's own modules are
    sized for T_d's widths."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.arange(4) % K
    teacher = models.build("resnet20", K).double().eval()
    cfg = RunConfig.from_dict(dict(method="gpd", base=base, noise=0.0))
    m = build_method(cfg, models.build("resnet8", K).double(), teacher, example_input=x[:2]).double()
    key = "loss_review" if base == "reviewkd" else "loss_feat"
    m.eval()  # eval-mode BN everywhere: deterministic, views exact
    _, losses = m(x, y)
    plain = Distiller(gpd.extract_student(m.dt).double(), teacher, m.criterion).eval()
    _, ref = plain(x, y)
    got, want = float(losses[key].detach()), float(ref[key].detach())
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want))  # float64, the same operations on the same numbers
    s_width = m.criterion.abfs[-1].conv1[0].in_channels if base == "reviewkd" else m.criterion.regressor.conv.in_channels
    d_width = m.dt_criterion.abfs[-1].conv1[0].in_channels if base == "reviewkd" else m.dt_criterion.regressor.conv.in_channels
    assert d_width == 2 * s_width  # ratio 2


@pytest.mark.parametrize("method", [dict(method="fitnet"), dict(method="reviewkd"), dict(method="gpd", base="reviewkd")])
def test_feature_methods_train_and_keep_their_modules_out_of_student_pt(fast_cfg, method):
    res = run(dict(fast_cfg, epochs=1, **method))
    train = [r for r in read_metrics(res.run_dir) if r["kind"] == "train"][0]
    assert any(k in train for k in ("loss_feat", "loss_review"))
    last = torch.load(res.run_dir / "last.pt", map_location="cpu", weights_only=False)["method"]
    student = torch.load(res.run_dir / "student.pt", map_location="cpu", weights_only=False)["model"]
    owned = [k for k in last if k.startswith("criterion.") or k.startswith("dt_criterion.")]
    assert owned and not any("abfs" in k or "regressor" in k for k in student)


def test_reviewkd_runs_under_two_process_ddp(tmp_path):
    """Smoke test: hooks, fusion modules and DDP together (exact parity is not expected here:
    the CNN student's BatchNorm uses each rank's batch statistics, sync_bn is CUDA-only)."""
    args = dict(teacher="resnet8", teacher_epochs=1, student="resnet8", dataset="digits", train_per_class=4,
                epochs=1, batch_size=20, progress="false", probe_every=0, method="reviewkd", out_dir=tmp_path, name="r")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "workbench", "train", *[f"{k}={v}" for k, v in args.items()]],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any(k.startswith("criterion.abfs") for k in torch.load(tmp_path / "r" / "last.pt", weights_only=False)["method"])
