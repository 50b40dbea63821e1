"""Discriminability and transferability probes on a tiny model and the digits 0-4 -> 5-9 pairing."""
import numpy as np
import pytest
import torch
from torch import nn

from workbench.engine.callbacks import RoleOutputs
from workbench.probes import metrics as M
from workbench.probes.transfer import (DiscriminabilityProbe, TransferabilityProbe, checkpoint_curve,
                                       discriminability_records, linear_probe, target_datasets, target_label)

torch.set_num_threads(1)


def tiny(seed=0, width=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5))


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.fixture(scope="module")
def target():
    return target_datasets("digits", classes=(5, 6, 7, 8, 9), train_per_class=40)


def separable(n=120, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return rng.normal(size=(n, d)) * 0.3 + 3 * np.eye(d)[y], y


def test_linear_probe_protocols_on_separable_features():
    X, y = separable()
    Xt, yt = separable(seed=1)
    res = linear_probe(X, y, Xt, yt)
    assert res == {"linear_top1": 1.0, "linear_train_top1": 1.0}
    sgd = linear_probe(X, y, Xt, yt, protocol="sgd", epochs=5, batch_size=32)
    assert sgd["linear_top1"] == 1.0 and 1 <= sgd["linear_best_epoch"] <= 5
    assert linear_probe(X, y, Xt, yt, protocol="sgd", epochs=5, batch_size=32) == sgd  # seeded
    noise = linear_probe(X, np.random.default_rng(0).permutation(y), Xt, yt)  # labels carry nothing
    assert noise["linear_top1"] < 0.6
    with pytest.raises(ValueError, match="valid choices"):
        linear_probe(X, y, Xt, yt, protocol="closed-form")
    with pytest.raises(ValueError, match="valid choices"):
        linear_probe(X, y, Xt, yt, protocol="sgd", lr_typo=1)


def test_transferability_keeps_the_backbone_frozen(target):
    tr, te = target
    model = tiny()
    model.train()
    before = bn_state(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    probe = TransferabilityProbe(tr, te, target=target_label("digits", (5, 6, 7, 8, 9)), max_test=150)
    recs = probe.compute(model, role="student", epoch=4)
    after = model.state_dict()
    for k, v in weights.items():
        assert torch.equal(after[k], v), k  # BN buffers and weights bit-identical
    assert model.training and all(m.training for m in model.modules())
    r = {x["metric"]: x for x in recs}
    assert set(r) == {"linear_top1", "linear_train_top1"}
    top = r["linear_top1"]
    assert top["kind"] == "probe" and top["probe"] == "transferability" and top["role"] == "student"
    assert top["target"] == "digits[5-9]" and top["bn"] == "frozen" and top["protocol"] == "lbfgs"
    assert top["epoch"] == 4 and top["n_train"] == 200 and top["n_test"] == 150
    assert 20.0 < top["value"] <= 100.0  # percent; random 8-wide features already beat chance (20 %)
    assert before.keys() == bn_state(model).keys()


def test_bn_adaptation_changes_features_and_restores_every_buffer(target):
    tr, te = target
    model = tiny(seed=1)
    with torch.no_grad():  # source-like stats that do not match the target data
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.7)
                m.running_var.fill_(3.0)
                m.num_batches_tracked.fill_(17)
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()
    before = bn_state(model)
    frozen_rec = TransferabilityProbe(tr, te, max_test=100).compute(model)
    adapt = TransferabilityProbe(tr, te, max_test=100, bn="adapt")
    from workbench.probes.transfer import _features, adapted_bn

    trin, _ = adapt._target_inputs()
    plain = _features(model, trin, None)
    with adapted_bn(model, trin) as dev:
        bn1 = model[1]
        assert not torch.allclose(bn1.running_mean, torch.full_like(bn1.running_mean, 0.7))
        assert not model.training
        adapted = _features(model, trin, dev)
    assert not np.allclose(plain, adapted)
    adapt_rec = adapt.compute(model)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == momenta
    assert not model.training
    assert adapt_rec[0]["bn"] == "adapt" and frozen_rec[0]["bn"] == "frozen"


def test_probe_as_callback_uses_trainer_models_and_schedule(target):
    tr, te = target
    models = {"student": tiny(0), "dynamic_teacher": tiny(1, width=12)}

    class FakeTrainer:
        epochs, device = 6, torch.device("cpu")

        def eval_models(self):
            return models

    probe = TransferabilityProbe(tr, te, target="digits[5-9]", roles=("student", "dynamic_teacher", "teacher"),
                                 every=3, max_train=100, max_test=60)
    assert probe.on_eval_end(FakeTrainer(), 1, {}) == []
    recs = probe.on_eval_end(FakeTrainer(), 3, {})
    assert {(r["role"], r["metric"]) for r in recs} == {(ro, m) for ro in models for m in ("linear_top1", "linear_train_top1")}
    assert all(r["n_train"] == 100 and r["n_test"] == 60 for r in recs)
    with pytest.raises(ValueError, match="valid choices"):
        TransferabilityProbe(tr, te, bn="train")
    with pytest.raises(ValueError, match="valid choices"):
        TransferabilityProbe(tr, te, roles=("stduent",))
    with pytest.raises(ValueError, match="lbfgs probe option 'epochs'"):
        TransferabilityProbe(tr, te, epochs=30)  # an SGD option with the default L-BFGS protocol


def test_discriminability_records_by_hand():
    feats = torch.tensor([[0.0, 1.0], [0.1, 1.0], [0.0, 1.1], [1.0, 0.0], [1.1, 0.1], [1.0, 0.1]])
    y = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 1, 1, 0, 0]), 2).float()  # 6/8 right
    outs = {"student": RoleOutputs(logits, y, feats), "teacher": RoleOutputs(logits, y, None)}
    recs = discriminability_records(outs, epoch=2, k=1)
    by = {(r["role"], r["metric"]): r["value"] for r in recs}
    # percentages of 4 or 8 examples and a float64 ratio: approx default 1e-6 (these four checks)
    assert by[("student", "top1")] == pytest.approx(75.0)
    assert by[("student", "knn_top1")] == pytest.approx(100.0)
    assert by[("student", "separability")] == pytest.approx(M.separability_ratio(feats, y[:6]))
    assert ("teacher", "knn_top1") not in by and by[("teacher", "top1")] == pytest.approx(75.0)
    assert all(r["epoch"] == 2 and r["probe"] == "discriminability" for r in recs)

    class FakeTrainer:
        epochs = 4

    probe = DiscriminabilityProbe(every=4, roles=("student",), k=1)
    assert probe.on_eval_end(FakeTrainer(), 2, outs) == []
    assert {r["role"] for r in probe.on_eval_end(FakeTrainer(), 4, outs)} == {"student"}


def test_checkpoint_curve_after_the_fact(tmp_path, target):
    tr, te = target
    from workbench import data

    source = data.build("digits", "test", classes=(0, 1, 2, 3, 4), augment=False)
    ckpts = {}
    for epoch in (2, 4):
        path = tmp_path / f"e{epoch}.pth"
        torch.save(tiny(epoch).state_dict(), path)
        ckpts[epoch] = path

    def loader(p):
        net = tiny()
        net.load_state_dict(torch.load(p))
        return net

    probe = TransferabilityProbe(tr, te, target="digits[5-9]", max_train=100, max_test=60)
    recs = checkpoint_curve(ckpts, source, probe, probe_samples=80, cache_dir=tmp_path / "cache", loader=loader)
    got = {(r["epoch"], r["probe"], r["metric"]) for r in recs}
    for e in (2, 4):
        assert {(e, "discriminability", m) for m in ("top1", "knn_top1", "separability")} <= got
        assert (e, "transferability", "linear_top1") in got


def test_target_labels():
    assert target_label("digits", (5, 6, 7, 8, 9)) == "digits[5-9]"
    assert target_label("digits", (1, 3)) == "digits[1,3]"
    assert target_label("cifar10") == "cifar10"
