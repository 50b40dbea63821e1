"""``embed`` (DisCo-style embedding distillation, supervised adaptation): the loss against a hand
computation, the projector's widths (the ``embed_hidden`` bottleneck), the optional KD term, GPD
with embed as its base (student view == plain method on the extracted student, T_d's projector
sized for T_d), a training run with the projector out of ``student.pt``."""
import pytest
import torch

from conftest import float_tol
from workbench import gpd, models
from workbench.config import ConfigError, RunConfig
from workbench.engine import read_metrics
from workbench.experiment import run
from workbench.losses import kd_loss
from workbench.methods import Distiller, Outputs, build_method
from workbench.methods.embed import EmbedLoss, embedding_loss
from workbench.methods.kd import KDLoss
from workbench.models.hooks import PENULTIMATE

K = 10


def test_embedding_loss_matches_a_hand_computation():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    # rows normalised: (0.6, 0.8) vs (0, 1) -> 0.36 + 0.04 = 0.4; (1, 0) vs (-1, 0) -> 4; mean 2.2
    assert float(embedding_loss(a, b)) == pytest.approx(2.2, rel=float_tol(torch.float32, 2))
    assert float(embedding_loss(b, b)) == 0.0  # exact: the same normalised rows


def test_embed_terms_equal_the_formula_with_and_without_kd():
    torch.manual_seed(0)
    fs, ft = torch.randn(5, 6), torch.randn(5, 4)
    zs, zt, y = torch.randn(5, K), torch.randn(5, K), torch.arange(5)
    crit = EmbedLoss(6, 4, hidden=3, weight=0.7)
    s, t = Outputs(zs, {PENULTIMATE: fs}), Outputs(zt, {PENULTIMATE: ft})
    lin1, lin2 = crit.projector[0], crit.projector[2]
    with torch.no_grad():  # by hand, float64: P = Linear(6, 3) -> ReLU -> Linear(3, 4)
        h = (fs.double() @ lin1.weight.double().t() + lin1.bias.double()).clamp(min=0)
        p = h @ lin2.weight.double().t() + lin2.bias.double()
        want = 0.7 * ((p / p.norm(dim=1, keepdim=True) - ft.double() / ft.double().norm(dim=1, keepdim=True))
                      ** 2).sum(1).mean()
        got = crit.terms(s, t, y)
    assert set(got) == {"loss_embed"}
    assert float(got["loss_embed"]) == pytest.approx(float(want), rel=float_tol(torch.float32, 6 + 3 + 4))
    with_kd = EmbedLoss(6, 4, hidden=3, weight=0.7, logit=KDLoss(4.0, 0.9))
    with_kd.projector.load_state_dict(crit.projector.state_dict())
    out = with_kd.terms(s, t, y)
    assert set(out) == {"loss_kd", "loss_embed"} and torch.equal(out["loss_embed"], got["loss_embed"])
    assert torch.equal(out["loss_kd"], 0.9 * kd_loss(zs, zt, 4.0))
    assert with_kd.default_ce_weight == 0.1  # KD's CE weight with embed_base=kd


@pytest.mark.parametrize("teacher, t_dim", [("resnet20", 64), ("resnet8x4", 256)])
@pytest.mark.parametrize("hidden", [16, 2048])
def test_projector_is_sized_d_s_to_hidden_to_d_t(teacher, t_dim, hidden):
    cfg = RunConfig.from_dict(dict(method="embed", embed_hidden=hidden))
    x = torch.randn(2, 3, 32, 32)
    m = build_method(cfg, models.build("resnet8", K), models.build(teacher, K), example_input=x)
    p = m.criterion.projector
    assert (p[0].in_features, p[0].out_features, p[2].in_features, p[2].out_features) == (64, hidden, hidden, t_dim)


def test_gpd_on_embed_gives_the_student_view_the_plain_methods_loss():
    """Noise 0, float64, eval-mode BN: the student view IS the extracted student, so its embed term
    under GPD equals the plain method's with the same projector; T_d gets its own projector, twice
    as wide at its input (ratio 2), and its term equals the plain method's on T_d with that one."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.arange(4) % K
    teacher = models.build("resnet20", K).double().eval()
    cfg = RunConfig.from_dict(dict(method="gpd", base="embed", noise=0.0, embed_hidden=32))
    m = build_method(cfg, models.build("resnet8", K).double(), teacher, example_input=x[:2]).double().eval()
    _, losses = m(x, y)
    plain = Distiller(gpd.extract_student(m.dt).double(), teacher, m.criterion).eval()
    _, ref = plain(x, y)
    got, want = float(losses["loss_embed"].detach()), float(ref["loss_embed"].detach())
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want))  # float64, the same operations on the same numbers
    # T_d's term: the plain method's loss on T_d itself with T_d's own projector (dt_base_weight 1)
    wide = Distiller(m.dt.wide, teacher, m.dt_criterion).eval()
    _, ref_dt = wide(x, y)
    got, want = float(losses["loss_embed_dt"].detach()), float(ref_dt["loss_embed"].detach())
    assert abs(got - want) <= 1e-9 * max(1.0, abs(want))
    assert m.dt_criterion is not m.criterion
    assert (m.criterion.projector[0].in_features, m.dt_criterion.projector[0].in_features) == (64, 128)


def test_embed_run_trains_the_projector_and_keeps_it_out_of_student_pt(fast_cfg):
    res = run(dict(fast_cfg, method="embed", embed_hidden=8, epochs=1, probe_every=0))
    train = [r for r in read_metrics(res.run_dir) if r["kind"] == "train"][0]
    assert {"loss_ce", "loss_embed"} <= set(train) and "loss_kd" not in train
    last = torch.load(res.run_dir / "last.pt", weights_only=True)["method"]
    assert last["criterion.projector.0.weight"].shape == (8, 64)
    student = torch.load(res.run_dir / "student.pt", weights_only=True)["model"]
    assert set(student) == set(models.build("resnet8", 10, 1).state_dict())


def test_ctkd_makes_embeds_kd_temperature_learnable(fast_cfg):
    cfg = RunConfig.from_dict(dict(fast_cfg, method="embed", embed_base="kd", ctkd=True))
    m = build_method(cfg, models.build("resnet8", 10, 1), models.build("resnet8", 10, 1),
                     example_input=torch.randn(2, 1, 8, 8))
    from workbench.methods.ctkd import LearnableTemperature

    assert isinstance(m.criterion.logit.temperature, LearnableTemperature)
    assert "temperature" in m.scalars()
    with pytest.raises(ConfigError, match="embed_base=none has no temperature"):  # no logit loss: nothing to learn
        RunConfig.from_dict(dict(fast_cfg, method="embed", ctkd=True))


def test_bad_embed_base_is_one_line():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(dict(method="embed", embed_base="fitnet"))
    assert "embed_base" in str(e.value) and "none, kd, dkd" in str(e.value)
