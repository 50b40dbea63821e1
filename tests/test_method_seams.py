"""The method seams: batch transforms (mixup / CutMix by hand), soft targets through every
method, the feature seam (hook-tapped features with gradients), owned trainable modules
(optimised, checkpointed, not deployable), callbacks that get features only when due, and the
README's "Adding a method" recipe executed in a fresh copy of the package."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import models
from workbench.engine import Callback, read_metrics
from workbench.engine.batch import BATCH_TRANSFORMS, cutmix, mixup
from workbench.experiment import run
from workbench.methods import Criterion, Distiller, Outputs, hard_labels
from workbench.methods.base import run_with_features
from workbench.models.hooks import FeatureTap

ROOT = Path(__file__).resolve().parents[1]
K = 5
SUBPROCESS_TIMEOUT = 600


def _batch(n=6, side=8):
    # image i is filled with the value i + 1: every mixed pixel tells which two images it holds
    x = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, side, side).clone()
    y = torch.arange(n) % K
    return x, y


def test_mixup_matches_a_hand_computation():
    x, y = _batch()
    torch.manual_seed(3)
    xm, ym = mixup(x, y, K, alpha=0.4)
    torch.manual_seed(3)  # replay the draws in the documented order: lam ~ Beta(a, a), then the partner permutation
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(len(x))
    onehot = F.one_hot(y, K).float()
    # exact: one multiply-add of small integers per element in float32, same two operations on both sides
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm], rtol=0, atol=0)
    torch.testing.assert_close(ym, lam * onehot + (1 - lam) * onehot[perm], rtol=0, atol=0)
    assert torch.allclose(ym.sum(1), torch.ones(len(x)))  # soft targets stay distributions (one rounding)


def test_cutmix_pastes_the_partner_box_and_weights_targets_by_its_area():
    x, y = _batch(side=16)
    torch.manual_seed(5)
    xm, ym = cutmix(x, y, K, alpha=1.0)
    torch.manual_seed(5)
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    perm = torch.randperm(len(x))
    from workbench.engine.batch import cut_box

    top, bottom, left, right = cut_box(16, 16, lam)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    for i in range(len(x)):
        assert torch.equal(xm[i, 0][inside], x[perm[i], 0][inside])  # pasted from the partner
        assert torch.equal(xm[i, 0][~inside], x[i, 0][~inside])  # untouched elsewhere
    kept = 1 - inside.sum().item() / 256
    onehot = F.one_hot(y, K).float()
    torch.testing.assert_close(ym, kept * onehot + (1 - kept) * onehot[perm], rtol=0, atol=0)
    assert torch.equal(x, _batch(side=16)[0])  # the input batch is not modified in place


def test_no_mix_is_identity_and_hard_labels_read_soft_targets():
    x, y = _batch()
    xm, ym = BATCH_TRANSFORMS.get("none")(x, y, K, 1.0)
    assert xm is x and ym is y
    soft = 0.7 * F.one_hot(y, K).float() + 0.3 * F.one_hot((y + 1) % K, K).float()
    assert torch.equal(hard_labels(soft), y) and torch.equal(hard_labels(y), y)


@pytest.mark.parametrize("method, extra", [("kd", {}), ("dkd", {}), ("gpd", {"base": "dkd"}), ("ce", {})])
def test_every_method_trains_on_mixed_targets(fast_cfg, method, extra):
    res = run(dict(fast_cfg, method=method, mix="cutmix", mix_alpha=1.0, epochs=1, **extra))
    train = [r for r in read_metrics(res.run_dir) if r["kind"] == "train"]
    assert len(train) == 1 and all(torch.isfinite(torch.tensor(v)) for k, v in train[0].items() if k.startswith("loss"))
    assert 0 <= train[0]["top1"] <= 100  # training accuracy against the mixed targets' argmax


def test_mix_draws_are_seeded_per_epoch(fast_cfg):
    """Same config, two runs: identical mixes, so identical training records (a resumed run
    re-seeds each epoch the same way)."""
    a = run(dict(fast_cfg, method="kd", mix="mixup", epochs=2, name="a"))
    b = run(dict(fast_cfg, method="kd", mix="mixup", epochs=2, name="b"))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in rs]  # noqa: E731
    assert strip(read_metrics(a.run_dir)) == strip(read_metrics(b.run_dir))


class HintLoss(Criterion):
    """Test criterion: an owned projector from the student's penultimate features to the
    teacher's, and one stage feature of each."""

    student_features = ("penultimate", "stages")
    teacher_features = ("penultimate",)

    def __init__(self, s_dim, t_dim):
        super().__init__()
        self.proj = nn.Linear(s_dim, t_dim)
        self.seen = {}

    def terms(self, s, t, y):
        self.seen = {"s": s, "t": t}
        return {"loss_hint": F.mse_loss(self.proj(s.features["penultimate"]), t.features["penultimate"])}


def _hint_distiller():
    torch.manual_seed(0)
    student, teacher = models.build("resnet8", K, 1), models.build("resnet8x4", K, 1)
    return Distiller(student, teacher, HintLoss(64, 256), ce_weight=0.0)


def test_feature_seam_delivers_hooked_features_with_gradients():
    m = _hint_distiller()
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4) % K
    logits, losses = m(x, y)
    s, t = m.criterion.seen["s"], m.criterion.seen["t"]
    assert set(s.features) == {"penultimate", *models.stage_paths(m.student)} and set(t.features) == {"penultimate"}
    # the same features from an independent tap (train-mode BN: same batch, same statistics)
    with FeatureTap(m.student, ["penultimate"], detach=True) as tap:
        again = m.student(x)
    torch.testing.assert_close(s.features["penultimate"].detach(), tap["penultimate"], rtol=0, atol=0)
    torch.testing.assert_close(logits.detach(), again, rtol=0, atol=0)
    assert not t.features["penultimate"].requires_grad  # the static teacher gives no gradient
    losses["loss_hint"].backward()  # CE weight 0: every gradient below comes through the feature term
    first = next(m.student.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert m.criterion.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())


def test_every_trainable_non_teacher_parameter_is_optimised():
    m = _hint_distiller()
    groups = m.param_groups(lr=0.1, weight_decay=5e-4)
    in_groups = [p for g in groups for p in g["params"]]
    assert len(in_groups) == len({id(p) for p in in_groups})  # no parameter twice
    expected = {id(p) for n, p in m.named_parameters() if not n.startswith("teacher.")}
    assert {id(p) for p in in_groups} == expected
    assert {id(p) for p in m.criterion.proj.parameters()} <= expected
    # wd_exempt: biases and norm weights without decay, everything else decayed
    split = m.param_groups(lr=0.1, weight_decay=5e-4, wd_exempt=True)
    flat = {id(p) for g in split if g["weight_decay"] == 0 for p in g["params"]}
    assert flat == {id(p) for n, p in m.named_parameters() if not n.startswith("teacher.") and p.ndim <= 1}
    # and a step moves the projector
    opt = torch.optim.SGD(groups, lr=0.1)
    before = m.criterion.proj.weight.detach().clone()
    _, losses = m(torch.randn(4, 1, 8, 8), torch.arange(4) % K)
    sum(losses.values()).backward()
    opt.step()
    assert not torch.equal(before, m.criterion.proj.weight)


def test_wd_exempt_groups_follow_the_one_exemption_rule_for_a_vit_student():
    """``param_groups(wd_exempt=True)`` and ``models.params.decay_groups`` use one rule: the ViT's
    tokens and position embedding (3-d) are exempt along with norms and biases."""
    from workbench.models.params import decay_exempt_names

    student = models.build("vit_nano_dist", K, 1, image_size=8)
    m = Distiller(student)
    groups = m.param_groups(lr=0.1, weight_decay=0.05, wd_exempt=True)
    flat = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(student.named_parameters())
    assert flat == {id(named[n]) for n in decay_exempt_names(student)}
    assert {id(named[n]) for n in ("cls_token", "dist_token", "pos_embed")} <= flat
    assert id(named["blocks.0.attn.qkv.weight"]) not in flat


def test_run_with_features_without_names_is_the_plain_forward():
    net = models.build("resnet8", K, 1).eval()
    x = torch.randn(2, 1, 8, 8)
    out = run_with_features(net, x, ())
    assert isinstance(out, Outputs) and out.features == {}
    torch.testing.assert_close(out.logits, net(x), rtol=0, atol=0)


class FeatureSpy(Callback):
    needs_features = True

    def __init__(self, every):
        self.every = every
        self.got = {}

    def on_eval_end(self, state, epoch, outputs):
        self.got[epoch] = outputs["student"].features is not None
        return []


def test_features_are_captured_only_on_epochs_a_callback_is_due(fast_cfg):
    spy = FeatureSpy(every=2)
    run(dict(fast_cfg, method="kd", epochs=5, probe_every=2), extra_callbacks=[spy])
    # due: epoch 0, every 2nd epoch and the last (the gap probe is due every 2 epochs too)
    assert spy.got == {0: True, 1: False, 2: True, 3: False, 4: True, 5: True}


# ----------------------------------------------------------------- the README recipe, executed
def _recipe() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# workbench/methods/mykd\.py\n.*?)```", text, re.S)
    assert found, "README: the 'Adding a method' example block is missing"
    return found.group(1)


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT)


def _keys_with(obj, word, prefix=""):
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in ([f"{prefix}{key}"] if word in str(key) else [])
                + _keys_with(v, word, f"{prefix}{key}.")]
    return []


def test_readme_recipe_adds_a_method_with_one_file(tmp_path, fast_cfg):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "workbench", pkg / "workbench", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "workbench" / "methods" / "mykd.py").write_text(_recipe())
    keys = _cli(pkg, "keys")
    assert keys.returncode == 0 and "mykd_weight" in keys.stdout, keys.stderr[-2000:]
    common = [f"{k}={v}" for k, v in dict(fast_cfg, epochs=1, out_dir=tmp_path / "runs").items()]
    for name, extra in (("alone", ["method=mykd", "mykd_weight=2"]), ("gpd", ["method=gpd", "base=mykd"])):
        done = _cli(pkg, "train", *common, *extra, f"name={name}")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        run_dir = tmp_path / "runs" / name
        train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
        assert "loss_hint" in train[0] and (name != "gpd" or "loss_hint_dt" in train[0])
        last = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
        student = torch.load(run_dir / "student.pt", map_location="cpu", weights_only=False)
        # one projector alone; two under GPD (one per view, sized for each width)
        assert len([k for k in _keys_with(last, "proj") if k.endswith("weight")]) == (2 if name == "gpd" else 1)
        assert _keys_with(student, "proj") == []
