"""CTC (Cui et al. 2022) and the seams it stands on: instance InfoNCE and memory updates by
hand, exact InfoNCE and the CRD estimator by hand, the boundary refresh, the two-stage lr/wd
schedule as the trainer applies it, the snapshot (frozen, equal to the student at the boundary,
also as ``teacher=snapshot@E``), owned modules out of ``student.pt``, the add-on on kd/gpd,
presets, config errors, and a kill -9 resume across the stage boundary."""
import copy
import signal
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import float_tol
from workbench import models
from workbench.config import ConfigError, RunConfig
from workbench.engine import Callback, read_metrics
from workbench.engine.checkpoint import LAST, load_checkpoint
from workbench.engine.schedule import TwoStageSchedule, lr_factor
from workbench.experiment import run
from workbench.methods import Outputs, build_method
from workbench.methods.ctc import (CTCTerm, MemoryBank, crd_nce, info_nce, instance_loss, negatives,
                                  sample_negatives, stage_epoch)
from workbench.models.hooks import PENULTIMATE
from workbench.presets import get_preset
from test_trainer import _args, _cli, strip

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])  # six training images, three classes
N, WIDTH, DIM = 6, 4, 3


def _term(**kw) -> CTCTerm:
    torch.manual_seed(0)
    return CTCTerm(LABELS, WIDTH, boundary=2, dim=DIM, **kw)


def _hand_bank_update(rows, index, v, m):
    new = rows.clone()
    for i, r in zip(index.tolist(), v):
        mixed = m * rows[i] + (1 - m) * r
        new[i] = mixed / mixed.norm()
    return new


def test_instance_loss_and_memory_update_match_a_hand_computation():
    term = _term(alpha=0.5, tau_ins=0.1, momentum=0.9)
    term.set_epoch(1, 4)  # stage 1
    f = torch.randn(2, WIDTH)
    index = torch.tensor([4, 1])
    rows = term.instance.rows.clone().double()
    got = term.terms(Outputs(torch.zeros(2, 3), {PENULTIMATE: f}), None, index, None)
    # by hand, float64: v = norm(W f + b); CE over the N rows at temperature 0.1, target the own row
    w, b = term.projector.weight.detach().double(), term.projector.bias.detach().double()
    v = f.double() @ w.t() + b
    v = v / v.norm(dim=1, keepdim=True)
    logits = v @ rows.t() / 0.1
    want = 0.5 * -(logits.log_softmax(1)[torch.arange(2), index]).mean()
    tol = float_tol(torch.float32, N + WIDTH)  # a float32 softmax over N rows of WIDTH-term dot products
    assert set(got) == {"loss_ctc_ins"}
    assert float(got["loss_ctc_ins"].detach()) == pytest.approx(float(want), rel=tol)
    # M_i <- norm(0.9 M_i + 0.1 v_i) for the batch rows, the other rows untouched
    expect = _hand_bank_update(rows, index, v, 0.9)
    torch.testing.assert_close(term.instance.rows.double(), expect, rtol=float_tol(torch.float32, DIM), atol=1e-7)
    untouched = [i for i in range(N) if i not in index.tolist()]
    assert torch.equal(term.instance.rows[untouched], rows[untouched].float())
    assert torch.allclose(term.instance.rows[index].norm(dim=1), torch.ones(2))  # rows stay normalised


def test_memory_bank_init_and_gradients_do_not_reach_it():
    torch.manual_seed(0)
    bank = MemoryBank(50, 128, 0.9)
    bound = 1 / (128 / 3) ** 0.5  # reference: uniform in +-1/sqrt(dim/3)
    assert bank.rows.abs().max() <= bound and bank.rows.min() < 0 < bank.rows.max()
    assert not bank.rows.requires_grad and "rows" in dict(bank.named_buffers())


def _stage2_inputs(seed=1):
    torch.manual_seed(seed)
    u, w = F.normalize(torch.randn(2, DIM), dim=1), F.normalize(torch.randn(2, DIM), dim=1)
    bank = F.normalize(torch.randn(N, DIM), dim=1)
    index = torch.tensor([0, 3])
    return u, w, bank, index


def test_negatives_are_the_other_classes_and_sampling_respects_them():
    index = torch.tensor([0, 3])
    neg = negatives(LABELS, LABELS[index], index)
    assert neg.tolist() == [[False, False, True, True, True, True], [True, True, False, False, True, True]]
    torch.manual_seed(0)
    idx, real = sample_negatives(neg, 3)  # 4 available: 3 distinct negatives per row
    assert real.all() and all(neg[r, idx[r]].all() and len(set(idx[r].tolist())) == 3 for r in range(2))
    idx, real = sample_negatives(neg, 5)  # more than available: the extra column is marked filler
    assert real.sum(1).tolist() == [4, 4] and all(neg[r, idx[r][real[r]]].all() for r in range(2))
    idx, real = sample_negatives(neg, 7, replace=True)  # CRD: K > available draws with replacement
    assert idx.shape == (2, 7) and all(neg[r, idx[r]].all() for r in range(2))


def test_exact_info_nce_matches_a_hand_computation():
    u, _, bank, index = _stage2_inputs()
    neg = negatives(LABELS, LABELS[index], index)
    got = info_nce(u, bank, index, neg, tau=0.4, k=16384)  # K > what the dataset has: all 4 negatives
    want = 0.0
    for r, i in enumerate(index.tolist()):
        cols = [i] + [j for j in range(N) if LABELS[j] != LABELS[i]]  # positive first, then other classes
        s = torch.stack([u[r].double() @ bank[j].double() for j in cols]) / 0.4
        want += -(s[0] - torch.logsumexp(s, 0)) / 2
    assert float(got) == pytest.approx(float(want), rel=float_tol(torch.float32, N + DIM))
    # with K below what is there, the same formula over the sampled columns (replayed draws)
    torch.manual_seed(5)
    got_k = info_nce(u, bank, index, neg, tau=0.4, k=2)
    torch.manual_seed(5)
    idx, _ = sample_negatives(neg, 2)
    want_k = 0.0
    for r, i in enumerate(index.tolist()):
        s = torch.stack([u[r].double() @ bank[j].double() for j in [i] + idx[r].tolist()]) / 0.4
        want_k += -(s[0] - torch.logsumexp(s, 0)) / 2
    assert float(got_k) == pytest.approx(float(want_k), rel=float_tol(torch.float32, N + DIM))


def test_crd_nce_matches_the_formula_and_fixes_its_normaliser_once():
    u, _, bank, index = _stage2_inputs()
    neg = negatives(LABELS, LABELS[index], index)
    z = torch.full((1,), -1.0)
    k, tau = 3, 0.1
    torch.manual_seed(7)
    got = crd_nce(u, bank, index, neg, tau, k, z, N)
    torch.manual_seed(7)
    idx, _ = sample_negatives(neg, k)
    scores = torch.stack([torch.exp(torch.stack([u[r].double() @ bank[j].double() for j in [i] + idx[r].tolist()]) / tau)
                          for r, i in enumerate(index.tolist())])  # (B, K+1)
    z_hand = scores.mean() * N  # set on the first call: mean score x N
    p, noise = scores / z_hand, k / N
    want = -(torch.log(p[:, 0] / (p[:, 0] + noise + 1e-7)).sum() + torch.log(noise / (p[:, 1:] + noise + 1e-7)).sum()) / 2
    rel = float_tol(torch.float32, 2 * (k + 1) + DIM, ops=8)  # exp of a float32 dot product, then a mean
    assert float(z) == pytest.approx(float(z_hand), rel=rel)
    assert float(got) == pytest.approx(float(want), rel=10 * rel)  # the normaliser's rounding enters every term
    z_first = float(z)
    crd_nce(u, bank.flip(0), index, neg, tau, k, z, N)  # other scores: Z stays what it was
    assert float(z) == z_first


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_similarities_with_the_memory_stay_float32_under_autocast(dtype):
    """Mixed precision (CPU autocast casts matmuls to ``dtype`` as CUDA's does): the instance loss,
    the exact InfoNCE and CRD's NCE (with its normaliser) equal their float32 values. Each sample's
    own row is close to it (cosine ~0.95), so at tau 0.07 (the reference's default nce_t) a float16
    exp(<., .>/tau) = exp(13.6) would overflow to inf."""
    torch.manual_seed(3)
    n, dim = 40, 128
    v = F.normalize(torch.randn(4, dim), dim=1)
    bank = F.normalize(torch.randn(n, dim), dim=1)
    bank[:4] = F.normalize(bank[:4] + 3 * v, dim=1)
    labels, index = torch.arange(n) % 5, torch.arange(4)
    neg = negatives(labels, labels[index], index)

    def losses():
        torch.manual_seed(0)  # the same CRD draws each time
        z = torch.full((1,), -1.0)
        return (instance_loss(v, bank, index, 0.1), info_nce(v, bank, index, neg, 0.07, 16384),
                crd_nce(v, bank, index, neg, 0.07, 8, z, n), z)

    want = losses()
    with torch.autocast("cpu", dtype=dtype):
        got = losses()
    tol = float_tol(torch.float32, dim + n)  # float32 dot products, then a softmax / mean over <= n terms
    for name, g, w in zip(("instance", "info_nce", "crd", "crd Z"), got, want):
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        assert float(g) == pytest.approx(float(w), rel=tol), name


def test_stage2_contrasts_both_directions_and_updates_both_memories():
    term = _term(beta=1.0, tau_nce=0.4, momentum=0.9)
    term.set_epoch(3, 4)  # stage 2 (boundary 2)
    f, f_snap = torch.randn(2, WIDTH), torch.randn(2, WIDTH)
    index = torch.tensor([0, 3])
    ms, mt = term.memory_s.rows.clone(), term.memory_t.rows.clone()
    got = term.terms(Outputs(torch.zeros(2, 3), {PENULTIMATE: f}), None, index,
                     Outputs(torch.zeros(2, 3), {PENULTIMATE: f_snap}))
    u = F.normalize(term.head_s(f), dim=1).detach()
    w = F.normalize(term.head_t(f_snap), dim=1).detach()
    neg = negatives(LABELS, LABELS[index], index)
    want = info_nce(u, mt, index, neg, 0.4, 16384) + info_nce(w, ms, index, neg, 0.4, 16384)
    assert set(got) == {"loss_ctc_nce"}
    assert float(got["loss_ctc_nce"].detach()) == pytest.approx(float(want), rel=float_tol(torch.float32, N + DIM))
    tol = dict(rtol=float_tol(torch.float32, DIM), atol=1e-7)
    torch.testing.assert_close(term.memory_s.rows.double(), _hand_bank_update(ms.double(), index, u.double(), 0.9), **tol)
    torch.testing.assert_close(term.memory_t.rows.double(), _hand_bank_update(mt.double(), index, w.double(), 0.9), **tol)
    # gradients reach both heads and the features, never the banks
    f.requires_grad_(True)
    term.terms(Outputs(torch.zeros(2, 3), {PENULTIMATE: f}), None, index,
               Outputs(torch.zeros(2, 3), {PENULTIMATE: f_snap}))["loss_ctc_nce"].backward()
    assert f.grad.abs().sum() > 0 and term.head_s.weight.grad.abs().sum() > 0 and term.head_t.weight.grad.abs().sum() > 0
    assert term.projector.weight.grad is None  # the stage-1 projector sits stage 2 out


def test_boundary_refresh_fills_both_memories_from_the_snapshot():
    term = _term()
    assert term.wants_data_pass(2) and not term.wants_data_pass(1) and not term.wants_data_pass(3)
    f_snap = torch.randn(6, WIDTH)
    term.observe(Outputs(torch.zeros(6, 3), {PENULTIMATE: f_snap}), None, torch.arange(6))
    exact = dict(rtol=float_tol(torch.float32, WIDTH), atol=1e-7)
    torch.testing.assert_close(term.memory_s.rows, F.normalize(term.head_s(f_snap), dim=1).detach(), **exact)
    torch.testing.assert_close(term.memory_t.rows, F.normalize(term.head_t(f_snap), dim=1).detach(), **exact)
    assert not _term(refresh=False).wants_data_pass(2)


def test_two_stage_schedule_restarts_the_runs_schedule():
    sched = TwoStageSchedule(boundary=20, stage2_lr=0.1, stage1_wd=2.0, stage2_wd=1.0)

    def cosine(p, n):
        return lr_factor("cosine", p, n)

    assert sched.lr_factor(0.0, 30, cosine) == 1.0  # exact: cos(0)
    assert sched.lr_factor(10.0, 30, cosine) == pytest.approx(0.5)  # halfway through stage 1 (20 epochs)
    assert sched.lr_factor(20.0, 30, cosine) == pytest.approx(0.1)  # restart at x0.1
    assert sched.lr_factor(25.0, 30, cosine) == pytest.approx(0.05)  # halfway through stage 2 (10 epochs)
    assert [sched.weight_decay_factor(e) for e in (1, 20, 21, 30)] == [2.0, 2.0, 1.0, 1.0]


class _Capture(Callback):
    """Records the student's weights and the optimizer's lr / weight decay after each epoch."""

    def __init__(self):
        self.students, self.seen = {}, []

    def on_epoch_end(self, state, epoch):
        self.students[epoch] = copy.deepcopy(state.eval_models()["student"].state_dict())
        return []


def train_set_labels(cfg: dict) -> torch.Tensor:
    from workbench import data

    c = RunConfig.from_dict(cfg)
    return data.labels(data.build(c.dataset, "train", **c.dataset_options()))


def test_ctc_run_snapshot_is_frozen_at_the_boundary_and_modules_stay_out_of_student_pt(fast_cfg):
    cap = _Capture()
    res = run(dict(fast_cfg, method="ctc", epochs=3, probe_every=0, weight_decay=1e-3), extra_callbacks=[cap])
    cfg = RunConfig.from_dict(dict(fast_cfg, method="ctc", epochs=3))
    assert stage_epoch(cfg) == 2  # 2/3 of 3 epochs
    last = load_checkpoint(res.run_dir / LAST)
    state = last["method"]
    snap = {k[len("snapshot.model."):]: v for k, v in state.items() if k.startswith("snapshot.model.")}
    assert snap and bool(state["snapshot.taken"])
    for k, v in cap.students[2].items():  # the snapshot is the student at the end of epoch 2 ...
        assert torch.equal(snap[k], v), k
    assert any(not torch.equal(snap[k], v) for k, v in cap.students[3].items() if v.is_floating_point())  # ... not later
    # owned state in last.pt, never in the deployable student
    owned = ("aux_terms.0.projector.weight", "aux_terms.0.head_s.weight", "aux_terms.0.head_t.weight",
             "aux_terms.0.instance.rows", "aux_terms.0.memory_s.rows", "aux_terms.0.memory_t.rows", "aux_terms.0.z")
    assert all(k in state for k in owned)
    n_train = len(state["aux_terms.0.instance.rows"])  # one row per training image, 128-d (the paper's width)
    assert n_train == len(train_set_labels(fast_cfg))
    assert state["aux_terms.0.projector.weight"].shape == state["aux_terms.0.head_s.weight"].shape == (128, 64)
    assert all(state[f"aux_terms.0.{b}.rows"].shape == (n_train, 128) for b in ("instance", "memory_s", "memory_t"))
    student = torch.load(res.run_dir / "student.pt", weights_only=True)["model"]
    assert set(student) == set(models.build("resnet8", 10, 1).state_dict())
    # the records: stage 1 trains the instance term, stage 2 the contrast, lr restarts at x0.1 of the base
    train = [r for r in read_metrics(res.run_dir) if r["kind"] == "train"]
    assert [("loss_ctc_ins" in r, "loss_ctc_nce" in r) for r in train] == [(True, False), (True, False), (False, True)]


def test_trainer_applies_the_two_stage_lr_and_weight_decay(fast_cfg):
    from workbench import data
    from workbench.engine import Trainer

    cfg = RunConfig.from_dict(dict(fast_cfg, method="ctc", epochs=3, weight_decay=1e-3, lr=0.05))
    train, test = (data.build("digits", s, train_per_class=10) for s in ("train", "test"))
    method = build_method(cfg, models.build("resnet8", 10, 1), train_labels=data.labels(train))
    trainer = Trainer(cfg, method, train, test, fast_cfg["out_dir"] + "/t")
    groups = trainer.optimizer.param_groups
    trainer._start_epoch(1)
    trainer._set_lr(0.0, 4)
    assert [g["weight_decay"] for g in groups] == [2e-3] * len(groups)  # doubled in stage 1 (float: 2 * 1e-3 exactly)
    assert groups[0]["lr"] == 0.05
    trainer._start_epoch(3)
    trainer._set_lr(2.0, 4)
    assert [g["weight_decay"] for g in groups] == [1e-3] * len(groups)
    assert groups[0]["lr"] == pytest.approx(0.005)  # restarted from lr x 0.1
    # every owned parameter is optimised; the snapshot is not
    optimised = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) in optimised for p in method.aux_terms.parameters())
    assert not any(id(p) in optimised or p.requires_grad for p in method.snapshot.parameters())


@pytest.mark.parametrize("projector", ["trained", "fixed"])
def test_stage1_projector_is_trained_or_stays_at_its_init(fast_cfg, projector):
    """``ctc_projector=fixed`` (the public code): the projector is not optimised and ends a stage-1
    epoch at its initial weights while the backbone moves; ``trained`` (ours): it moves too."""
    from workbench import data
    from workbench.engine import Trainer

    cfg = RunConfig.from_dict(dict(fast_cfg, method="ctc", epochs=3, ctc_projector=projector, probe_every=0))
    train, test = (data.build("digits", s, train_per_class=10) for s in ("train", "test"))
    torch.manual_seed(0)
    method = build_method(cfg, models.build("resnet8", 10, 1), train_labels=data.labels(train))
    trainer = Trainer(cfg, method, train, test, fast_cfg["out_dir"] + "/p")
    proj = method.aux_terms[0].projector
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all((id(p) in optimised) == (projector == "trained") for p in proj.parameters())
    before = copy.deepcopy(proj.state_dict())
    trainer._start_epoch(1)
    trainer.train_epoch(1)
    moved = [not torch.equal(before[k], v) for k, v in proj.state_dict().items()]
    assert all(moved) if projector == "trained" else not any(moved)


def test_ctc_as_an_add_on_to_kd_and_gpd(fast_cfg):
    kd = run(dict(fast_cfg, method="kd", ctc_alpha=0.1, epochs=3, probe_every=0))
    assert "+ctc" in kd.run_dir.name
    train = [r for r in read_metrics(kd.run_dir) if r["kind"] == "train"]
    assert {"loss_kd", "loss_ctc_ins"} <= set(train[0]) and {"loss_kd", "loss_ctc_nce"} <= set(train[2])
    dkd = build_method(RunConfig.from_dict(dict(fast_cfg, method="dkd", ctc_alpha=0.1, epochs=3)),
                       models.build("resnet8", 10, 1), models.build("resnet8", 10, 1), train_labels=torch.arange(40) % 10)
    dkd.on_epoch_start(1, 3)
    _, losses = dkd(torch.randn(4, 1, 8, 8), torch.arange(4), torch.arange(4))
    assert {"loss_ce", "loss_dkd", "loss_ctc_ins"} <= set(losses) and dkd.aux_terms[0].alpha == 0.1
    assert dkd.schedule is not None and dkd.schedule.boundary == 2  # the two-stage schedule comes with the add-on
    cfg = RunConfig.from_dict(dict(fast_cfg, method="gpd", base="kd", ctc_alpha=0.5, epochs=3, branches=0))
    x = torch.randn(4, 1, 8, 8)
    m = build_method(cfg, models.build("resnet8", 10, 1), models.build("resnet8", 10, 1), example_input=x[:2],
                     train_labels=torch.arange(40) % 10)
    m.on_epoch_start(1, 3)
    _, losses = m(x, torch.arange(4), torch.arange(4))
    assert {"loss_ctc_ins", "loss_sce", "loss_kd", "loss_kd_dt"} <= set(losses)
    assert m.aux_terms[0].projector.in_features == 64  # the student view's width, not T_d's 128
    assert m.snapshot.model.__class__ is models.build("resnet8", 10, 1).__class__  # a plain student
    # no CTC unless asked for
    assert not len(build_method(RunConfig.from_dict(dict(fast_cfg, method="kd")), models.build("resnet8", 10, 1),
                                models.build("resnet8", 10, 1)).aux_terms)


def test_snapshot_teacher_teaches_from_its_epoch_on(fast_cfg):
    cap = _Capture()
    res = run(dict(fast_cfg, method="kd", teacher="snapshot@1", epochs=3, probe_every=1), extra_callbacks=[cap])
    assert res.run_dir.name.startswith("digits_snapshot1-resnet8_kd")
    recs = read_metrics(res.run_dir)
    train = [r for r in recs if r["kind"] == "train"]
    assert "loss_kd" not in train[0] and all("loss_kd" in r for r in train[1:])  # CE only before the snapshot
    ev = {(r["epoch"], r["role"]): r["top1"] for r in recs if r["kind"] == "eval"}
    assert (0, "teacher") not in ev  # no teacher before it is taken
    assert ev[(1, "teacher")] == ev[(1, "student")]  # the teacher IS the student of epoch 1 (exact: same weights)
    assert ev[(3, "teacher")] == ev[(1, "teacher")]  # and stays frozen
    assert {r["pair"] for r in recs if r["kind"] == "gap"} == {"T_s-S"}
    state = load_checkpoint(res.run_dir / LAST)["method"]
    assert any(k.startswith("snapshot.model.") for k in state) and not any(k.startswith("teacher.") for k in state)
    # the frozen teacher after epoch 3 is, tensor for tensor (BN statistics included), the student of epoch 1
    snap = {k[len("snapshot.model."):]: v for k, v in state.items() if k.startswith("snapshot.model.")}
    assert snap.keys() == cap.students[1].keys()
    for k, v in cap.students[1].items():
        assert torch.equal(snap[k], v), k
    assert any(not torch.equal(snap[k], v) for k, v in cap.students[3].items() if v.is_floating_point())


@pytest.mark.parametrize("kw, words", [
    (dict(method="kd", teacher="snapshot@0"), ["snapshot@0", "[1, 2]"]),
    (dict(method="kd", teacher="snapshot@3"), ["snapshot@3", "[1, 2]"]),
    (dict(method="kd", teacher="snapshot@ten"), ["snapshot@ten", "positive integer"]),
    (dict(method="kd", teacher="snapshot@1", augment=False, cache_teacher=True), ["cache_teacher", "snapshot"]),
    (dict(method="ctc", epochs=1), ["ctc", "epochs >= 2"]),
    (dict(method="ctc", ctc_stage_epoch=3), ["ctc_stage_epoch", "[1, 2]"]),
    (dict(method="kd", ctc_alpha=0.5, ctc_stage_epoch=5), ["ctc_stage_epoch", "[1, 2]"]),
    (dict(method="ctc", ctc_nce="cpc"), ["ctc_nce", "'cpc'", "exact, crd"]),
])
def test_bad_ctc_and_snapshot_settings_are_one_line(kw, words):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"dataset": "digits", "epochs": 3, **kw})
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_ctc_presets_carry_the_papers_two_settings():
    t, d = get_preset("cifar100/ctc/transferability"), get_preset("cifar100/ctc/discriminability")
    assert (t["ctc_alpha"], t["ctc_tau_ins"], t["ctc_tau_nce"]) == (0.5, 0.1, 0.1)
    assert (d["ctc_alpha"], d["ctc_tau_ins"], d["ctc_tau_nce"]) == (0.1, 0.5, 0.4)
    for p in (t, d):
        cfg = RunConfig.from_dict(p)
        assert (cfg.method, cfg.epochs, stage_epoch(cfg), cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.schedule) == \
            ("ctc", 300, 200, 0.05, 5e-4, 64, "cosine")
        assert (cfg.ctc_nce, cfg.ctc_nce_k, cfg.ctc_momentum, cfg.ctc_beta) == ("crd", 16384, 0.9, 1.0)
        assert cfg.ctc_projector == "fixed"  # the public code never optimises its stage-1 projector
    small = RunConfig.from_dict({"preset": "fashion/ctc/transferability"})
    assert small.ctc_nce == "exact" and small.ctc_alpha == 0.5 and small.teacher == "none"


def _kill_after_checkpoint(cmd_args, last, epoch: int) -> dict:
    """Start a run, SIGKILL it once ``last`` holds epoch >= ``epoch``, return that checkpoint."""
    killed = _cli(cmd_args)
    deadline = time.time() + 300
    while time.time() < deadline:
        if last.exists() and load_checkpoint(last)["epoch"] >= epoch:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (last.parent / "summary.json").exists(), "the run finished before the kill"
    return load_checkpoint(last)


def test_killed_ctc_run_resumes_across_the_boundary_to_the_same_state(tmp_path):
    """Killed twice: inside epoch 3, after the boundary checkpoint of epoch 2 (snapshot taken,
    stage-2 memories refreshed, CRD's normalisers not yet set), and inside epoch 4, after the
    epoch-3 checkpoint (normalisers set on epoch 3's first batch: a resume that lost them would
    set them again from epoch 4's). The snapshot, the three memory banks and the normalisers come
    back from last.pt, so the twice-resumed run ends exactly where the uninterrupted one does."""
    base = dict(method="ctc", ctc_nce="crd", ctc_nce_k=50, dataset="digits", train_per_class=20, student="resnet8",
                epochs=4, ctc_stage_epoch=2, batch_size=16, lr=0.05, schedule="cosine", probe_every=0,
                out_dir=tmp_path, progress="false")
    ref = _cli(_args(dict(base, name="ref")))
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    last = tmp_path / "killed" / LAST
    at_boundary = _kill_after_checkpoint(_args(dict(base, name="killed")), last, 2)
    assert bool(at_boundary["method"]["snapshot.taken"])
    in_stage2 = _kill_after_checkpoint(_args(dict(base, name="killed")), last, 3)  # resumed, killed again
    assert in_stage2["epoch"] == 3 and (in_stage2["method"]["aux_terms.0.z"] > 0).all()
    resumed = _cli(_args(dict(base, name="killed")))
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    a, b = load_checkpoint(tmp_path / "ref" / LAST), load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 4 and a["method"].keys() == b["method"].keys()
    for key, value in a["method"].items():
        assert torch.equal(value, b["method"][key]), key
    assert strip(read_metrics(tmp_path / "ref")) == strip(read_metrics(tmp_path / "killed"))


def test_ddp_leaves_the_memory_banks_to_the_method_and_still_broadcasts_batchnorm(fast_cfg, tmp_path):
    """Under DDP the banks (and CTCTerm's labels/normalisers) are kept identical by the method's
    all-gathered updates, so DDP must not re-broadcast them every step; BN statistics still are.
    A one-process gloo group builds the real DDP wrapper (correctness across two processes is the
    parity test in test_distributed.py)."""
    import torch.distributed as tdist
    from workbench.engine import distributed

    method = build_method(RunConfig.from_dict(dict(fast_cfg, method="kd", ctc_alpha=0.1, epochs=3)),
                          models.build("resnet8", 10, 1), models.build("resnet8", 10, 1),
                          train_labels=torch.arange(40) % 10)
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = distributed.wrap(method, torch.device("cpu"), find_unused=True)
        broadcast = {id(b) for b in ddp.modules_buffers}
    finally:
        tdist.destroy_process_group()
    term = method.aux_terms[0]
    own = [term.instance.rows, term.memory_s.rows, term.memory_t.rows, term.labels, term.z]
    assert not any(id(b) in broadcast for b in own)
    bn = [b for m in method.student.modules() if isinstance(m, torch.nn.BatchNorm2d) for b in m.buffers()]
    assert bn and all(id(b) in broadcast for b in bn)
    names = distributed.self_synced_buffers(method)
    assert len(names) == len(own) and all(n.startswith("aux_terms.0.") for n in names)
