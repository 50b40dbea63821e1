"""DeiT and CSKD on the method seams: DeiT's token losses and CSKD's per-position losses against
hand computations, the method's loss terms against a composition written out here (dense teacher
logits by hand, grid pooling by reshape, the fused target of the epoch), the fusion schedule's
endpoints inside the method, inference = the averaged heads, the refusals (GPD base, students
without a distillation token, ViT teachers, CTKD, the CTC add-on, the teacher-logit cache), the ViT recipe's
weight-decay groups, and one tiny run whose ``student.pt`` reloads as the run evaluated it."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import models
from workbench.config import ConfigError, RunConfig
from workbench.losses import deit_hard_loss, deit_soft_loss
from workbench.losses_spatial import dense_hard_loss, dense_soft_loss
from workbench.methods import build_method
from workbench.methods.cskd import CSKD
from workbench.methods.deit import TokenDistiller
from workbench.models import vit
from workbench.models.inherit import recalibrate_bn

from conftest import float_tol

torch.set_num_threads(1)

K = 5


def _kl64(p_logits, q_logits, t):
    """KL(softmax(p/t) || softmax(q/t)) of one logit vector, in float64 by the definition."""
    p = [math.exp(v / t) for v in p_logits]
    q = [math.exp(v / t) for v in q_logits]
    sp, sq = sum(p), sum(q)
    return sum((a / sp) * (math.log(a / sp) - math.log(b / sq)) for a, b in zip(p, q))


def _ce64(logits, target):
    return -(logits[target] - math.log(sum(math.exp(v) for v in logits)))


# ------------------------------------------------------------------ the losses by hand
def test_deit_token_losses_by_hand():
    torch.manual_seed(0)
    s, t = torch.randn(3, K, dtype=torch.float64), torch.randn(3, K, dtype=torch.float64)
    hard = sum(_ce64(s[n].tolist(), int(t[n].argmax())) for n in range(3)) / 3
    tau = 2.0
    soft = sum(_kl64(t[n].tolist(), s[n].tolist(), tau) for n in range(3)) * tau**2 / (3 * K)  # / numel
    tol = float_tol(torch.float64, 3 * K)  # float64 reductions of 15 terms against the float64 loops
    assert deit_hard_loss(s, t).item() == pytest.approx(hard, rel=tol)
    assert deit_soft_loss(s, t, tau).item() == pytest.approx(soft, rel=tol)


def test_per_position_losses_by_hand():
    """Hard: the mean over batch and positions of CE against the target's top class at that
    position; soft: KL summed over classes and positions, batch mean, times T^2."""
    torch.manual_seed(1)
    n, h, w = 2, 2, 3
    s, t = torch.randn(n, K, h, w, dtype=torch.float64), torch.randn(n, K, h, w, dtype=torch.float64)
    cells = [(b, i, j) for b in range(n) for i in range(h) for j in range(w)]
    hard = sum(_ce64(s[b, :, i, j].tolist(), int(t[b, :, i, j].argmax())) for b, i, j in cells) / len(cells)
    tau = 1.5
    soft = sum(_kl64(t[b, :, i, j].tolist(), s[b, :, i, j].tolist(), tau) for b, i, j in cells) * tau**2 / n
    tol = float_tol(torch.float64, len(cells) * K)
    assert dense_hard_loss(s, t).item() == pytest.approx(hard, rel=tol)
    assert dense_soft_loss(s, t, tau).item() == pytest.approx(soft, rel=tol)
    with pytest.raises(ValueError, match="align the grids first"):
        dense_hard_loss(s, t[:, :, :1])


# ------------------------------------------------------------------ the method's terms
SIDE = 32


def _pair(student_patch=2, **student_kw):
    """vit_nano_dist (1 block) with patch 2 on 32 px: a 16x16 patch grid, pooled 2x2 onto the 8x8
    last map of a resnet8 teacher (BN statistics of real activations, eval mode)."""
    torch.manual_seed(0)
    student = models.build("vit_nano_dist", K, depth=1, patch_size=student_patch, **student_kw)
    teacher = models.build("resnet8", K)
    recalibrate_bn(teacher, [torch.randn(16, 3, SIDE, SIDE)]).eval()
    return student, teacher


def _cskd(epochs=4, **kw):
    student, teacher = _pair(eval_heads=vit.CSKD_EVAL_HEADS)  # what the cskd build asks for (student_options)
    m = CSKD(student, teacher, **kw)
    m.on_epoch_start(1, epochs)
    return m


def _teacher_by_hand(teacher, x):
    """(global logits, dense logits) written out for a CIFAR ResNet: classifier at every position
    of layer3's output (the map its global pool averages)."""
    m = teacher
    fmap = m.layer3(m.layer2(m.layer1(m.relu(m.bn1(m.conv1(x))))))
    dense = torch.einsum("nchw,kc->nkhw", fmap, m.fc.weight) + m.fc.bias[:, None, None]
    return m(x), dense


@pytest.mark.parametrize("epoch", [1, 3])
def test_cskd_terms_equal_the_composition_written_out(epoch):
    m = _cskd(epochs=4)
    m.on_epoch_start(epoch, 4)
    m.train()
    x, y = torch.randn(3, 3, SIDE, SIDE), torch.tensor([0, 1, 4])
    logits, losses = m(x, y)
    assert set(losses) == {"loss_ce", "loss_deit", "loss_cskd"}
    with torch.no_grad():
        parts = m.student.forward_parts(x)
        z_t, dense = _teacher_by_hand(m.teacher, x)
        patch = m.student.head_dist(parts["patches"])  # (N, 256, K), row-major 16x16 grid
        grid = patch.reshape(3, 16, 16, K).permute(0, 3, 1, 2)
        pooled = grid.reshape(3, K, 8, 2, 8, 2).mean((3, 5))  # 2x2 blocks -> resnet8's 8x8 map
        d = 1 - (epoch - 1) / 4  # the public code's 0-based epoch over E
        target = d * dense + (1 - d) * z_t[:, :, None, None]
        want = {"loss_ce": 0.5 * F.cross_entropy(parts["cls"], y),
                "loss_deit": 0.5 * F.cross_entropy(parts["dist"], z_t.argmax(1)),
                "loss_cskd": F.cross_entropy(pooled, target.argmax(1))}
        avg = (parts["cls"] + parts["dist"] + patch.mean(1)) / 3
    # float32: the same values reduced in other orders (pooling: 4 terms; teacher classifier: 64
    # channels; CE: 8x8 positions x 3 images of K-term log-sum-exps)
    tol = float_tol(torch.float32, 64 + 8 * 8 * 3 * K)
    for k, v in want.items():
        torch.testing.assert_close(losses[k].detach(), v, rtol=tol, atol=tol)
    torch.testing.assert_close(logits.detach(), avg, rtol=tol, atol=tol)
    assert m.scalars() == {"dense_weight": d}


def test_soft_variants_and_weights():
    m = _cskd(alpha=0.3, token_loss="soft", tau=2.0, dense_loss="soft", weight=0.7)
    x, y = torch.randn(2, 3, SIDE, SIDE), torch.tensor([2, 3])
    _, losses = m(x, y)
    with torch.no_grad():
        parts = m.student.forward_parts(x)
        z_t, dense = _teacher_by_hand(m.teacher, x)
        grid = m.student.head_dist(parts["patches"]).reshape(2, 16, 16, K).permute(0, 3, 1, 2)
        pooled = grid.reshape(2, K, 8, 2, 8, 2).mean((3, 5))
        want = {"loss_ce": 0.7 * F.cross_entropy(parts["cls"], y),
                "loss_deit": 0.3 * deit_soft_loss(parts["dist"], z_t, 2.0),
                "loss_cskd": 0.7 * dense_soft_loss(pooled, dense, 2.0)}  # epoch 1: the dense map itself
    tol = float_tol(torch.float32, 64 + 8 * 8 * 2 * K)
    for k, v in want.items():
        torch.testing.assert_close(losses[k].detach(), v, rtol=tol, atol=tol)


@pytest.mark.parametrize("schedule, last", [("linear", 1 / 5), ("squared", (1 / 5) ** 2),
                                            ("cosine", math.cos(math.pi / 2 * 4 / 5))])
def test_fusion_endpoints_inside_the_method(schedule, last):
    """Epoch 1: the target is the teacher's dense map exactly; the last epoch E: d = the
    schedule at (E - 1) / E (the public code never reaches the pure global target)."""
    m = _cskd(epochs=5, schedule=schedule)
    x = torch.randn(2, 3, SIDE, SIDE)
    targets = m.teacher_targets(x)
    s_map = torch.randn(2, K, 8, 8)
    _, fused = m.fused_target(s_map, targets)
    assert m.dense_share() == 1.0
    torch.testing.assert_close(fused, targets["dense"], rtol=0, atol=0)
    m.on_epoch_start(5, 5)
    assert m.dense_share() == pytest.approx(last, rel=1e-12)  # float64 scalar math


def test_deit_terms_and_averaged_inference():
    student, teacher = _pair()
    m = TokenDistiller(student, teacher)
    x, y = torch.randn(2, 3, SIDE, SIDE), torch.tensor([0, 1])
    logits, losses = m(x, y)
    assert set(losses) == {"loss_ce", "loss_deit"}
    with torch.no_grad():
        parts = student.forward_parts(x)
        z_t = teacher(x)
    torch.testing.assert_close(losses["loss_deit"].detach(), 0.5 * F.cross_entropy(parts["dist"], z_t.argmax(1)),
                               rtol=0, atol=0)
    torch.testing.assert_close(logits.detach(), (parts["cls"] + parts["dist"]) / 2, rtol=0, atol=0)


@pytest.mark.parametrize("name, heads", [("deit", vit.DEIT_EVAL_HEADS), ("cskd", vit.CSKD_EVAL_HEADS)])
def test_build_sets_the_methods_inference_heads_and_readout(tmp_path, name, heads):
    from workbench.experiment import student_options

    cfg = RunConfig.from_dict(dict(method=name, student="vit_nano_dist", teacher="resnet8", dataset="digits"))
    student = models.build("vit_nano_dist", K, in_channels=1, image_size=8, **student_options(cfg))
    teacher = models.build("resnet8", K, in_channels=1).eval()
    m = build_method(cfg, student, teacher, example_input=torch.randn(2, 1, 8, 8))
    evaluated = m.eval_models()["student"].eval()
    assert evaluated.eval_heads == heads
    assert models.readout(evaluated) == {"logits_from": "+".join(heads), "features_from": "cls_token"}
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        p = evaluated.forward_parts(x)
        by_hand = {"cls": p["cls"], "dist": p["dist"], "dense": evaluated.head_dist(p["patches"]).mean(1)}
        torch.testing.assert_close(evaluated(x), sum(by_hand[h] for h in heads) / len(heads),
                                   rtol=float_tol(torch.float32, 16), atol=float_tol(torch.float32, 16))
    custom = cfg.replace(vit_eval_heads="cls")
    assert student_options(custom) == {"eval_heads": ("cls",)}


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("kw, words", [
    (dict(method="gpd", base="deit"), ["base: method 'deit' cannot be the base loss of method=gpd",
                                       "distillation-token", "train method=deit on its own"]),
    (dict(method="gpd", base="cskd"), ["base: method 'cskd' cannot be the base loss of method=gpd",
                                       "distillation-token", "train method=cskd on its own"]),
    (dict(method="ctkd", base="cskd"), ["base: method 'cskd'"]),
    (dict(method="cskd", student="resnet8"), ["student", "distillation token", "'resnet8'"]),
    (dict(method="cskd", teacher="vit_small"), ["teacher", "dense logits", "'vit_small' is a ViT", "method=deit"]),
    (dict(method="cskd", ctkd=True), ["ctkd", "ctkd=false"]),
    (dict(method="cskd", ctc_alpha=0.5, epochs=2), ["ctc_alpha", "method cskd", "leave ctc_alpha unset or 0"]),
    (dict(method="deit", ctc_alpha=0.1, epochs=2), ["ctc_alpha", "method deit", "leave ctc_alpha unset or 0"]),
    (dict(method="cskd", cache_teacher=True, augment=False), ["cache_teacher", "dense logits"]),
    (dict(method="cskd", cskd_schedule="exp"), ["cskd_schedule", "'exp'", "linear, squared, cosine"]),
    (dict(method="deit", vit_eval_heads="cls,patch"), ["vit_eval_heads", "cls, dist, dense"]),
])
def test_refusals_are_one_line_with_the_reason(kw, words):
    values = dict(dict(student="vit_nano_dist", teacher="resnet8"), **kw)
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(values)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_deit_may_use_a_vit_teacher_and_cskd_needs_a_pooled_map():
    RunConfig.from_dict(dict(method="deit", student="vit_nano_dist", teacher="vit_small"))
    student, _ = _pair()
    with pytest.raises(ValueError, match="cskd: the teacher ViT has no dense logits"):
        CSKD(student, models.build("vit_nano", K, depth=1))
    with pytest.raises(ValueError, match="needs a ViT with a distillation token"):
        TokenDistiller(models.build("vit_nano", K, depth=1), models.build("resnet8", K))


def test_vit_recipe_exempts_norms_biases_and_tokens_from_weight_decay():
    student, teacher = _pair()
    m = CSKD(student, teacher)
    groups = m.param_groups(lr=1e-3, weight_decay=0.05, wd_exempt=True)
    flat = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    names = {n for n, p in m.student.named_parameters() if id(p) in flat}
    norms = {n for n, mod in m.student.named_modules() if isinstance(mod, nn.LayerNorm)}
    by_hand = {n for n, _ in m.student.named_parameters()
               if n.endswith(".bias") or n.rpartition(".")[0] in norms or n in ("cls_token", "dist_token", "pos_embed")}
    assert names == by_hand and {"dist_token", "head_dist.bias", "norm.weight"} <= names
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert {id(m.student.head_dist.weight), id(m.student.patch_embed.proj.weight)} <= decayed
    assert not (flat | decayed) & {id(p) for p in teacher.parameters()}


# ------------------------------------------------------------------ one tiny run
def test_cskd_run_records_and_reloaded_student(tmp_path):
    """Fashion-MNIST 28 px, patch 4: a 7x7 grid, the shipped resnet20's last map."""
    from workbench.experiment import run
    from workbench.nb.run import check_student

    values = dict(method="cskd", student="vit_nano_dist", teacher="embedded:fashion_resnet20", dataset="fashion_mnist",
                  data_source="embedded", train_per_class=4, patch_size=4, epochs=2, batch_size=20, optimizer="adamw",
                  lr=1e-3, weight_decay=0.05, wd_exempt=True, warmup_epochs=1, schedule="cosine",
                  eval_batch_size=500, probe_samples=100, progress=False, out_dir=str(tmp_path), name="c")
    res = run(values, log=lambda *_: None)
    train = [r for r in res.records if r["kind"] == "train"]
    assert [r["dense_weight"] for r in train] == [1.0, 0.5]
    assert all(r["loss_cskd"] > 0 and r["loss_deit"] > 0 for r in train)
    evals = [r for r in res.records if r["kind"] == "eval" and r["role"] == "student"]
    assert {r["logits_from"] for r in evals} == {"cls+dist+dense"} and {r["features_from"] for r in evals} == {"cls_token"}
    knn = [r for r in res.records if r["kind"] == "probe" and r.get("metric") == "knn_top1" and r["role"] == "student"]
    assert knn and all(r["features_from"] == "cls_token" for r in knn)
    table = check_student(RunConfig.from_dict(values), res.run_dir, res.records)
    (_, arch, _, again, logged), = table.rows
    # same model, same 1000 images: equal up to the float32 mean of the logged record; one image
    # more or less right would be 0.1 points
    assert arch == "vit_nano_dist" and again == pytest.approx(logged, abs=0.01)


def test_transfer_probe_records_say_which_token_they_read():
    from torch.utils.data import TensorDataset

    from workbench.probes import TransferabilityProbe

    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(24, 1, 8, 8, generator=g), torch.arange(24) % 2)
    probe = TransferabilityProbe(ds, ds, target="toy")
    vit_recs = probe.compute(models.build("vit_nano_dist", 2, in_channels=1, image_size=8, depth=1))
    cnn_recs = probe.compute(models.build("resnet8", 2, in_channels=1))
    assert vit_recs and all(r["features_from"] == "cls_token" for r in vit_recs)
    assert cnn_recs and all("features_from" not in r for r in cnn_recs)
