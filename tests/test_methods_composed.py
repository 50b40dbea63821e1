"""The composed distiller (``method=composed``): every distance and transform against a hand
computation (float64), known methods as points of the space (KD, FitNet, attention transfer:
equal to the named method's loss), one-line errors for bad terms and bad pairs before any
training, GPD's per-view projectors, checkpointed mask draws, and a short training run."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import float_tol
from workbench import gpd, models
from workbench.config import ConfigError, RunConfig
from workbench.engine import read_metrics
from workbench.experiment import prepare, run
from workbench.losses import cka_distance, cosine_distance, kd_loss, linear_cka, mse_distance, pearson_distance
from workbench.losses_spatial import channel_attention, multiscale_pool, position_mask, spatial_attention
from workbench.methods import Distiller, Outputs, build_method
from workbench.methods.composed import (Comparison, ComposedLoss, Term, format_terms, parse_terms)
from workbench.models.hooks import FeatureTap, stage_paths

F64 = torch.float64
K = 10


def num(t: torch.Tensor) -> float:
    return float(t.detach())


def rows(*values):
    return torch.tensor(values, dtype=F64)


# ------------------------------------------------------------------ distances (hand values)
def test_mse_cosine_pearson_match_hand_values():
    a, b = [1.0, 2.0, 4.0], [2.0, 0.0, 1.0]
    c, d = [0.5, -1.0, 3.0], [1.0, 1.0, -2.0]
    A, B = rows(a, c), rows(b, d)
    mse = sum((x - y) ** 2 for x, y in zip(a + c, b + d)) / 6
    # float64, 6 terms: (6 + 4) eps of headroom
    assert float(mse_distance(A, B)) == pytest.approx(mse, rel=float_tol(F64, 6))

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))

    def centred(u):
        m = sum(u) / len(u)
        return [x - m for x in u]

    want_cos = ((1 - cos(a, b)) + (1 - cos(c, d))) / 2
    want_r = ((1 - cos(centred(a), centred(b))) + (1 - cos(centred(c), centred(d)))) / 2
    assert float(cosine_distance(A, B)) == pytest.approx(want_cos, rel=float_tol(F64, 3, ops=8))
    assert float(pearson_distance(A, B)) == pytest.approx(want_r, rel=float_tol(F64, 3, ops=10))
    # flattening: a (N, C, H, W) map is compared as its flattened rows
    assert torch.equal(cosine_distance(A.view(2, 3, 1, 1), B.view(2, 3, 1, 1)), cosine_distance(A, B))


def test_cka_matches_the_feature_space_formula_and_its_invariances():
    """The Gram-matrix implementation against the textbook form ||B^T A||_F^2 / (||A^T A|| ||B^T B||)
    on column-centred matrices of different widths (written out with Python sums), and CKA's
    invariances: orthogonal transforms and isotropic scaling leave it at 1."""
    A = [[1.0, 2.0], [0.0, 1.0], [3.0, -1.0], [2.0, 2.0]]     # 4 examples, width 2
    B = [[0.5, 1.0, 2.0], [1.0, 0.0, 0.0], [-1.0, 2.0, 1.0], [0.0, 1.0, 3.0]]  # width 3

    def centre(M):
        n = len(M)
        means = [sum(r[j] for r in M) / n for j in range(len(M[0]))]
        return [[r[j] - means[j] for j in range(len(r))] for r in M]

    def cross(X, Y):  # X^T Y
        return [[sum(X[i][p] * Y[i][q] for i in range(len(X))) for q in range(len(Y[0]))] for p in range(len(X[0]))]

    def fro2(M):
        return sum(v * v for r in M for v in r)

    a, b = centre(A), centre(B)
    want = fro2(cross(b, a)) / math.sqrt(fro2(cross(a, a)) * fro2(cross(b, b)))
    got = linear_cka(torch.tensor(A, dtype=F64), torch.tensor(B, dtype=F64))
    assert float(got) == pytest.approx(want, rel=float_tol(F64, 16, ops=12))
    assert float(cka_distance(torch.tensor(A, dtype=F64), torch.tensor(B, dtype=F64))) == pytest.approx(1 - want, rel=1e-12)
    torch.manual_seed(0)
    X = torch.randn(6, 5, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=F64))
    assert float(cka_distance(X, 3.0 * X @ Q)) == pytest.approx(0.0, abs=1e-12)  # float64 identity up to rounding


def test_kl_distance_of_a_logit_term_is_hintons_kd():
    s, t, T = [1.0, 2.0, 3.0], [3.0, 2.0, 0.5], 4.0

    def softmax(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    want = sum(p * math.log(p / q) for p, q in zip(softmax(t), softmax(s))) * T**2
    loss = ComposedLoss([Term("logits", "none", "kl", 1.0)], (), (), [(Comparison(None, None),)], nn.ModuleDict(),
                        temperature=T)
    got = loss.terms(Outputs(rows(s)), Outputs(rows(t)), None)["loss_logits_none_kl"]
    assert float(got) == pytest.approx(want, rel=float_tol(F64, 3))


# ------------------------------------------------------------------ transforms (hand values)
def test_spatial_and_channel_attention_match_hand_values():
    # one example, 2 channels, 2x2 positions
    x = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[2.0, 1.0], [-1.0, 0.0]]]], dtype=F64)
    p = 2.0
    q = [(1 + 4) / 2, (4 + 1) / 2, (0 + 1) / 2, (9 + 0) / 2]  # mean over channels of |A|^2, row-major
    norm = math.sqrt(sum(v * v for v in q))
    assert torch.allclose(spatial_attention(x, p), rows([v / norm for v in q]), rtol=1e-15, atol=0)
    c = [(1 + 4 + 0 + 9) / 4, (4 + 1 + 1 + 0) / 4]  # mean over positions of |A|^2 per channel
    norm = math.sqrt(sum(v * v for v in c))
    assert torch.allclose(channel_attention(x, p), rows([v / norm for v in c]), rtol=1e-15, atol=0)
    # p = 1 uses |A| (the paper's absolute value), not A
    q1 = [(1 + 2) / 2, (2 + 1) / 2, (0 + 1) / 2, (3 + 0) / 2]
    norm = math.sqrt(sum(v * v for v in q1))
    assert torch.allclose(spatial_attention(x, 1.0), rows([v / norm for v in q1]), rtol=1e-15, atol=0)


def test_multiscale_pool_concatenates_block_means_per_grid():
    x = torch.arange(2 * 4 * 4, dtype=F64).view(1, 2, 4, 4)
    got = multiscale_pool(x)
    assert got.shape == (1, 2 * (1 + 4 + 16))
    c0 = x[0, 0]
    level1 = [float(x[0, c].mean()) for c in range(2)]
    level2_c0 = [float(c0[i:i + 2, j:j + 2].mean()) for i in (0, 2) for j in (0, 2)]
    assert got[0, :2].tolist() == level1  # exact: means of small integers
    assert got[0, 2:6].tolist() == level2_c0
    assert torch.equal(got[0, 10:26], x[0, 0].flatten())  # the 4x4 grid is the map itself
    # grids finer than the map are skipped: a 2x2 map gives the 1x1 and 2x2 levels only
    assert multiscale_pool(torch.ones(3, 5, 2, 2, dtype=F64)).shape == (3, 5 * (1 + 4))


def test_position_mask_is_seeded_per_position_and_respects_the_ratio():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    m1, m2 = position_mask((4, 7, 8, 8), 0.25, g1), position_mask((4, 7, 8, 8), 0.25, g2)
    assert m1.shape == (4, 1, 8, 8) and torch.equal(m1, m2)
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(position_mask((2, 1, 3, 3), 0.0, g1), torch.ones(2, 1, 3, 3))
    big = position_mask((64, 1, 32, 32), 0.25, torch.Generator().manual_seed(0))
    # 65,536 Bernoulli(0.75) draws: std of the mean 0.0017; 0.01 is ~6 sigma
    assert abs(float(big.mean()) - 0.75) < 0.01


def test_mask_term_draws_a_fresh_seeded_mask_each_step_and_checkpoints_its_step():
    torch.manual_seed(0)
    s = Outputs(torch.zeros(2, K), {"a": torch.randn(2, 3, 4, 4, dtype=F64)})
    t = Outputs(torch.zeros(2, K), {"b": torch.randn(2, 3, 4, 4, dtype=F64)})

    def make():
        return ComposedLoss([Term("stage1", "mask", "mse", 2.0)], ("a",), ("b",), [(Comparison("a", "b"),)],
                            nn.ModuleDict(), mask_ratio=0.5, mask_seed=7)

    loss = make()
    first, second = (float(loss.terms(s, t, None)["loss_stage1_mask_mse"]) for _ in range(2))
    assert first != second  # a fresh mask each step
    g = torch.Generator().manual_seed(7)  # the masks are successive draws of one generator seeded with 7
    for got in (first, second):
        m = position_mask((2, 3, 4, 4), 0.5, g).to(F64)
        want = 2.0 * float((((s.features["a"] - t.features["b"]) * m) ** 2).mean())
        assert got == pytest.approx(want, rel=float_tol(F64, 96))
    # the generator's state travels with the state dict (checkpoints): a resumed run draws the same masks
    resumed = make()
    resumed.load_state_dict(loss.state_dict())
    assert resumed.terms(s, t, None)["loss_stage1_mask_mse"] == loss.terms(s, t, None)["loss_stage1_mask_mse"]
    fresh = make()
    assert fresh.terms(s, t, None)["loss_stage1_mask_mse"] != loss.terms(s, t, None)["loss_stage1_mask_mse"]


# ------------------------------------------------------------------ known methods as points
def _pair(student="resnet8", teacher="resnet8x4"):
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, dtype=F64), torch.arange(4) % K
    return x, y, models.build(student, K).double(), models.build(teacher, K).double().eval()


def test_kd_point_equals_the_kd_method():
    x, y, student, teacher = _pair()
    kd = build_method(RunConfig.from_dict(dict(method="kd")), student, teacher, example_input=x[:2])
    composed = build_method(RunConfig.from_dict(dict(method="composed", composed_terms="logits:none:kl:0.9",
                                                     ce_weight=0.1, composed_T=4.0)), student, teacher,
                            example_input=x[:2])
    _, a = kd(x, y)
    _, b = composed(x, y)
    assert num(a["loss_ce"]) == num(b["loss_ce"])  # the same op on the same numbers
    # kd_loss on the same logits either way: equal up to float64 rounding of 4 x 10 terms
    assert num(b["loss_logits_none_kl"]) == pytest.approx(num(a["loss_kd"]), rel=float_tol(F64, 40))


def test_fitnet_point_equals_the_fitnet_method_with_the_same_regressor():
    x, y, student, teacher = _pair()
    fit = build_method(RunConfig.from_dict(dict(method="fitnet")), student, teacher, example_input=x[:2]).double()
    composed = build_method(RunConfig.from_dict(dict(method="composed", composed_terms="stage2:none:mse:100",
                                                     composed_projector="always")),
                            student, teacher, example_input=x[:2]).double()
    (key, proj), = composed.criterion.projectors.items()
    assert type(proj).__name__ == "ConvReg"
    proj.load_state_dict(fit.criterion.regressor.state_dict())
    _, a = fit(x, y)
    _, b = composed(x, y)
    got, want = num(b["loss_stage2_none_mse"]), num(a["loss_feat"])
    assert want > 0 and got == pytest.approx(want, rel=1e-12)  # the same float64 ops on the same numbers


def _at_by_hand(fs_list, ft_list, p=2):
    """mdistiller's AT written out: the larger map block-averaged onto the smaller grid, Q = mean
    over channels of f^p, rows divided by their L2 norm, mean squared difference, summed over
    stages (weight applied by the caller)."""
    total = 0.0
    for fs, ft in zip(fs_list, ft_list):
        hs, ht = fs.shape[2], ft.shape[2]
        if hs > ht:
            r = hs // ht
            fs = fs.reshape(fs.shape[0], fs.shape[1], ht, r, ht, r).mean((3, 5))
        elif ht > hs:
            r = ht // hs
            ft = ft.reshape(ft.shape[0], ft.shape[1], hs, r, hs, r).mean((3, 5))
        qs = fs.pow(p).mean(1).reshape(fs.shape[0], -1)
        qt = ft.pow(p).mean(1).reshape(ft.shape[0], -1)
        qs = qs / qs.pow(2).sum(1, keepdim=True).sqrt()
        qt = qt / qt.pow(2).sum(1, keepdim=True).sqrt()
        total = total + (qs - qt).pow(2).mean()
    return total


def test_attention_transfer_point_equals_mdistillers_at_on_a_pair():
    """stages:sattn:mse:1000 on resnet8 <- resnet8x4 (widths 16/32/64 vs 64/128/256: width-free,
    no projector) equals 1000 * sum over the three stages of mdistiller's single-stage AT loss."""
    x, y, student, teacher = _pair()
    m = build_method(RunConfig.from_dict(dict(method="composed", composed_terms="stages:sattn:mse:1000")),
                     student, teacher, example_input=x[:2])
    assert len(m.criterion.projectors) == 0 and m.ce_weight == 1.0  # mdistiller's AT CE weight 1
    m.eval()
    _, losses = m(x, y)
    with torch.no_grad(), FeatureTap(student, stage_paths(student)) as ts, FeatureTap(teacher, stage_paths(teacher)) as tt:
        student(x)
        teacher(x)
    want = 1000.0 * _at_by_hand([ts[p] for p in stage_paths(student)], [tt[p] for p in stage_paths(teacher)])
    got = num(losses["loss_stages_sattn_mse"])
    assert want > 0 and got == pytest.approx(float(want), rel=1e-10)  # float64, the same quantities reduced differently


def test_attention_transfer_pools_the_larger_map_onto_the_smaller_grid():
    torch.manual_seed(1)
    fs = [torch.randn(3, 4, 8, 8, dtype=F64), torch.randn(3, 4, 2, 2, dtype=F64)]
    ft = [torch.randn(3, 6, 4, 4, dtype=F64), torch.randn(3, 5, 4, 4, dtype=F64)]  # finer teacher map in stage 2
    loss = ComposedLoss([Term("stages", "sattn", "mse", 1000.0)], ("a", "b"), ("c", "d"),
                        [(Comparison("a", "c"), Comparison("b", "d"))], nn.ModuleDict(), p=2.0)
    got = loss.terms(Outputs(None, dict(a=fs[0], b=fs[1])), Outputs(None, dict(c=ft[0], d=ft[1])), None)
    assert num(got["loss_stages_sattn_mse"]) == pytest.approx(float(1000.0 * _at_by_hand(fs, ft)), rel=1e-12)


def test_several_terms_are_summed_with_their_weights_under_their_own_keys():
    x, y, student, teacher = _pair()
    cfg = dict(method="composed", composed_terms="logits:none:kl:0.5+stages:sattn:mse:10+logits:none:kl:2")
    m = build_method(RunConfig.from_dict(cfg), student, teacher, example_input=x[:2]).eval()
    _, losses = m(x, y)
    assert list(losses) == ["loss_ce", "loss_logits_none_kl", "loss_stages_sattn_mse", "loss_logits_none_kl_2"]
    assert num(losses["loss_logits_none_kl_2"]) == pytest.approx(4 * num(losses["loss_logits_none_kl"]), rel=1e-14)


# ------------------------------------------------------------------ grammar and bad input
def test_terms_round_trip_through_their_text():
    text = "logits:none:kl:0.9+stages:sattn:mse:1000.0+stage2:mask:cka:0.25+penultimate:none:cosine:1e+3"
    terms = parse_terms(text)
    assert [t.tap for t in terms] == ["logits", "stages", "stage2", "penultimate"]
    assert terms[2].stage == 2 and terms[3].weight == 1000.0  # '1e+3' is one weight, not a separator
    assert parse_terms(format_terms(terms)) == terms


@pytest.mark.parametrize("terms, match", [
    ("logit:none:kl:1", r"term 'logit:none:kl:1': unknown tap 'logit'; valid choices: logits, penultimate, stage<N>, stages"),
    ("stage2:attention:mse:1", r"unknown transform 'attention'; valid choices: none, sattn, cattn, mask, pool"),
    ("stage2:none:l2:1", r"unknown distance 'l2'; valid choices: kl, mse, cosine, pearson, cka"),
    ("stage2:none:mse:x", r"weight 'x' is not a finite number >= 0"),
    ("stage2:none:mse", r"has 3 part\(s\); a term is tap:transform:distance:weight"),
    ("stage0:none:mse:1", r"unknown tap 'stage0'"),
    ("logits:sattn:mse:1", r"transform sattn needs a feature map .* valid transforms for logits: none"),
    ("", r"holds no term"),
])
def test_bad_terms_are_one_line_naming_the_part_and_the_choices(terms, match):
    with pytest.raises(ConfigError, match=match) as e:
        RunConfig.from_dict(dict(method="composed", composed_terms=terms))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=match):  # also when it is GPD's base loss
        RunConfig.from_dict(dict(method="gpd", base="composed", composed_terms=terms))


def test_pair_free_rules_are_config_errors():
    with pytest.raises(ConfigError, match="ctkd: .* has no kl term"):
        RunConfig.from_dict(dict(method="composed", composed_terms="stages:sattn:mse:1", ctkd=True))
    with pytest.raises(ConfigError, match="cache_teacher: .* reads features"):
        RunConfig.from_dict(dict(method="composed", composed_terms="stages:sattn:mse:1", cache_teacher=True,
                                 augment=False))
    with pytest.raises(ConfigError, match="composed_mask_ratio"):
        RunConfig.from_dict(dict(method="composed", composed_terms="stage1:mask:mse:1", composed_mask_ratio=1.0))
    RunConfig.from_dict(dict(method="composed", composed_terms="logits:none:kl:1", cache_teacher=True, augment=False))


@pytest.mark.parametrize("extra, match", [
    (dict(composed_terms="stage4:none:mse:1"), r"the student \(CifarResNet\) has 3 stage\(s\) \(layer1, layer2, layer3\); "
                                                r"valid stage taps: stage1, stage2, stage3"),
    (dict(composed_terms="stage2:cattn:mse:1", composed_projector="none"),
     r"layer2 \(map: 32 channels, 4x4\) and the teacher's layer2 \(map: 128 channels, 4x4\) do not match; .*"
     r"use composed_projector=auto \(or always\), or a width-free transform \(sattn\) or distance \(cka\)"),
    (dict(composed_terms="stage2:sattn:mse:1", student="vit_nano", image_size=16),
     r"transform sattn needs a feature map .* blocks.1 is not one \(tokens: 65 of width 64\)"),
    (dict(composed_terms="stage2:none:mse:1", student="vit_nano", image_size=16),
     r"no projector maps the student's features \(tokens: 65 of width 64\) onto the teacher's"),
    (dict(composed_terms="stages:none:cka:1", student="vit_nano", image_size=16), r"has 4 stages, the teacher"),
    (dict(composed_terms="stage2:none:mse:1", method="gpd", base="composed", composed_projector="none",
          teacher="resnet8"), r"layer2 \(map: 64 channels, 4x4\) and the teacher's layer2 \(map: 32"),  # T_d: 2 x 32
])
def test_pair_errors_are_one_line_in_prepare_before_any_teacher_is_trained(fast_cfg, tmp_path, extra, match):
    cfg = RunConfig.from_dict({**fast_cfg, "method": "composed", "teacher": "resnet8x4", **extra})
    with pytest.raises(ConfigError, match=match) as e:
        prepare(cfg)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()  # no teacher trained, nothing written


def test_the_early_build_in_prepare_leaves_the_global_rng_alone(fast_cfg):
    """prepare() draws from the global RNG as before (its student checks build models): the early
    build adds no draw, so a run's initial weights do not depend on the method's checks."""
    def draw(method_keys):
        torch.manual_seed(5)
        prepare(RunConfig.from_dict(dict(fast_cfg, **method_keys)))
        return torch.rand(1)

    assert torch.equal(draw(dict(method="composed", composed_terms="stages:sattn:mse:1")), draw(dict(method="kd")))


# ------------------------------------------------------------------ GPD, training
def test_gpd_on_composed_gives_each_view_its_own_projector_and_the_student_view_the_plain_loss():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, dtype=F64), torch.arange(4) % K
    teacher = models.build("resnet8x4", K).double().eval()
    terms = "logits:none:kl:1+stage2:none:mse:100+stages:sattn:mse:1000"
    cfg = RunConfig.from_dict(dict(method="gpd", base="composed", composed_terms=terms, noise=0.0))
    m = build_method(cfg, models.build("resnet8", K).double(), teacher, example_input=x[:2]).double()
    s_proj, d_proj = (c.projectors["1_0"].conv for c in (m.criterion, m.dt_criterion))
    assert (s_proj.in_channels, d_proj.in_channels, s_proj.out_channels) == (32, 64, 128)  # widths 32 / r=2 x 32
    m.eval()
    _, losses = m(x, y)
    assert {"loss_stage2_none_mse", "loss_stage2_none_mse_dt", "loss_stages_sattn_mse_dt"} <= set(losses)
    plain = Distiller(gpd.extract_student(m.dt).double(), teacher, m.criterion).eval()
    _, ref = plain(x, y)
    for key in ("loss_logits_none_kl", "loss_stage2_none_mse", "loss_stages_sattn_mse"):
        got, want = num(losses[key]), num(ref[key])
        assert abs(got - want) <= 1e-9 * max(1.0, abs(want))  # float64: the student view IS the student at init


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One out_dir for the training runs below: the teacher is trained once and cached."""
    return str(tmp_path_factory.mktemp("composed_runs"))


@pytest.mark.parametrize("extra", [dict(), dict(method="gpd", base="composed"), dict(dot=True), dict(ctkd=True)])
def test_composed_trains_alone_and_with_gpd_dot_ctkd_keeping_projectors_out_of_student_pt(fast_cfg, shared_runs, extra):
    terms = "logits:none:kl:1+stage2:none:mse:10+stages:sattn:mse:100+stage3:mask:cosine:1"
    res = run({**fast_cfg, "out_dir": shared_runs, "epochs": 1, "probe_every": 0, "method": "composed", "teacher": "resnet8x4",
               "composed_terms": terms, **extra})
    train = [r for r in read_metrics(res.run_dir) if r["kind"] == "train"][0]
    assert {"loss_logits_none_kl", "loss_stage2_none_mse", "loss_stages_sattn_mse", "loss_stage3_mask_cosine"} <= set(train)
    last = torch.load(res.run_dir / "last.pt", map_location="cpu", weights_only=True)["method"]
    student = torch.load(res.run_dir / "student.pt", map_location="cpu", weights_only=True)["model"]
    assert any(".projectors." in k for k in last)  # resnet8 (32) vs resnet8x4 (128) at stage 2
    seeded = torch.Generator().manual_seed(0).get_state()
    assert not torch.equal(last["criterion._extra_state"]["mask_rng"], seeded)  # the mask draws so far, checkpointed
    assert not any("projectors" in k for k in student)
    if extra.get("ctkd"):
        assert "temperature" in train and train["temperature"] != 4.0


def test_demo_presets_sum_the_kd_and_at_points_on_the_kd_demo_settings():
    from workbench.presets import PRESETS

    kd, ours, g = (PRESETS[f"fashion/demo/{m}"] for m in ("kd", "composed_kd_at", "gpd_composed_kd_at"))
    assert {k: v for k, v in ours.items() if k not in ("method", "ce_weight", "composed_terms")} == \
        {k: v for k, v in kd.items() if k != "method"}
    assert parse_terms(ours["composed_terms"]) == [Term("logits", "none", "kl", 0.9), Term("stages", "sattn", "mse", 1000.0)]
    cfg = RunConfig.from_dict(dict(preset="fashion/demo/gpd_composed_kd_at"))
    assert (cfg.method, cfg.resolved_base, cfg.ce_weight, cfg.composed_terms) == ("gpd", "composed", 0.1, ours["composed_terms"])


def test_vit_tokens_take_none_and_a_linear_projector_between_widths():
    """A ViT pair (vit_nano 64 wide -> vit_tiny 192 wide, the same token grid): stage tokens compared
    entry by entry through a Linear on the student's tokens (auto), the loss trains end to end."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    cfg = RunConfig.from_dict(dict(method="composed", composed_terms="stage2:none:mse:1+stage4:none:cka:1"))
    m = build_method(cfg, models.build("vit_nano", K, 1, image_size=16), models.build("vit_tiny", K, 1, image_size=16),
                     example_input=x)
    (proj,) = m.criterion.projectors.values()
    assert isinstance(proj, nn.Linear) and (proj.in_features, proj.out_features) == (64, 192)
    _, losses = m(x, y)
    sum(losses.values()).backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
