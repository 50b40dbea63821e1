"""Online group distillation (issue 26, part 2): the seam for a method training several networks
(``methods/group.py``), DML and ORC. Losses against hand computations in float64; checkpoints
hold every network and its optimiser state; a run stopped by SIGTERM or killed with kill -9 in
the middle of an epoch resumes to the uninterrupted run bit for bit; bad values are one line
before any training. (DDP parity for DML: tests/test_distributed.py.)
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.config import ConfigError, RunConfig
from workbench.engine import Preempted, read_metrics
from workbench.engine.checkpoint import LAST, STUDENT, load_checkpoint
from workbench.engine.roles import gap_pairs, role_label
from workbench.experiment import run
from workbench.methods import dml, orc
from workbench.methods.group import GroupDistiller

from test_integrity2 import QUIET, _env, _signal_at_step, assert_same_run

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


# ------------------------------------------------------------------ hand computations
def softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):  # KL(p || q) of two probability lists
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def ce(row, label):
    return -math.log(softmax(row)[label])


def hand_kd(s_rows, t_rows, T):  # T^2 * batch mean of KL(p_t^T || p_s^T)
    return T * T * sum(kl(softmax(t, T), softmax(s, T)) for s, t in zip(s_rows, t_rows)) / len(s_rows)


def hand_ce(rows, labels):
    return sum(ce(r, y) for r, y in zip(rows, labels)) / len(rows)


class Fixed(nn.Module):
    """A 'network' whose logits are a float64 parameter (the same for any input batch of its size)."""

    def __init__(self, rows):
        super().__init__()
        self.z = nn.Parameter(torch.tensor(rows, dtype=F64))

    def forward(self, x):
        return self.z * 1.0


LOGITS = [[[1.0, -0.5, 0.3], [0.2, 0.8, -1.1]],
          [[-0.3, 1.4, 0.0], [0.9, -0.2, 0.4]],
          [[0.5, 0.5, -2.0], [-1.0, 0.3, 1.2]]]
Y = [0, 1]


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_dml_losses_are_the_papers_against_a_hand_computation(T):
    """Network k: CE + mean over j != k of T^2 KL(p_j^T || p_k^T) (float64, three networks)."""
    nets = [Fixed(z) for z in LOGITS]
    method = dml.DML(nets, T)
    logits, losses = method(torch.zeros(2, 1), torch.tensor(Y))
    assert torch.equal(logits, nets[0].z)
    roles = ["student", "peer1", "peer2"]
    for k, role in enumerate(roles):
        others = [j for j in range(3) if j != k]
        want_kl = sum(hand_kd(LOGITS[k], LOGITS[j], T) for j in others) / len(others)
        suffix = "" if role == "student" else f"_{role}"
        # float64, a few exp/log per term: 1e-12 is ~10^4 ulps of headroom
        assert losses[f"loss_dml{suffix}"].item() == pytest.approx(want_kl, rel=1e-12, abs=1e-14)
        assert losses[f"loss_ce{suffix}"].item() == pytest.approx(hand_ce(LOGITS[k], Y), rel=1e-12)


def test_dml_targets_are_detached_so_each_network_gets_only_its_own_gradient():
    nets = [Fixed(z) for z in LOGITS[:2]]
    _, losses = dml.DML(nets)(torch.zeros(2, 1), torch.tensor(Y))
    losses["loss_dml"].backward()  # the student's mimicry term
    assert nets[1].z.grad is None and nets[0].z.grad.abs().sum() > 0


def test_orc_terms_against_a_hand_computation():
    """Ranking, private teaching of the temporary teacher by PT, group teaching of the other
    students by TT and PT separately, intensive teaching of PT on the misclassified samples with
    mixup -- every loss key against float64 arithmetic by hand."""
    beta, T, a = 0.3, 2.0, 0.7
    students = [Fixed(LOGITS[0]), Fixed(LOGITS[1])]
    pt_rows = [[2.0, 0.1, -0.4], [0.3, 1.7, 0.2]]

    class Pivot(nn.Module):  # fixed teaching logits; on a (mixed) batch, a linear map of the inputs
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.2, -0.7]], dtype=F64))

        def forward(self, x):
            return pt_rows_t if not self.training else x @ self.w

    pt_rows_t = torch.tensor(pt_rows, dtype=F64)
    method = orc.ORC(students, Pivot(), beta=beta, temperature=T, pivot_lr=0.01, mix_alpha=a)
    x = torch.tensor([[1.0, 2.0], [-0.5, 0.25]], dtype=F64)
    y = torch.tensor(Y)
    torch.manual_seed(3)
    _, losses = method(x, y)
    # ranking: CE of each student on the batch; the lowest is the temporary teacher
    ces = [hand_ce(LOGITS[k], Y) for k in range(2)]
    tt = min(range(2), key=lambda k: ces[k])
    other = 1 - tt
    assert method.promoted.tolist() == [int(tt == 0), int(tt == 1)]
    # private (TT <- PT) and group (S <- TT, S <- PT) teaching
    want_ce = (1 - beta) * (ces[0] + ces[1])
    want_kd_pt = beta * (hand_kd(LOGITS[tt], pt_rows, T) + hand_kd(LOGITS[other], pt_rows, T))
    want_kd_tt = beta * hand_kd(LOGITS[other], LOGITS[tt], T)
    assert losses["loss_ce"].item() == pytest.approx(want_ce, rel=1e-12)
    assert losses["loss_kd_pivot"].item() == pytest.approx(want_kd_pt, rel=1e-12)
    assert losses["loss_kd_temporary"].item() == pytest.approx(want_kd_tt, rel=1e-12)
    # intensive teaching: samples misclassified by any student, mixed with a Beta(a, a) lambda
    wrong = [i for i in range(2) if any(max(range(3), key=lambda c: LOGITS[k][i][c]) != Y[i] for k in range(2))]
    assert len(wrong) == 2  # this case exercises the mixup (student 0 misses sample 1, student 1 sample 0)
    torch.manual_seed(3)
    lam = float(torch.distributions.Beta(a, a).sample())
    perm = torch.randperm(len(wrong)).tolist()
    w = method.pivot.w.detach().tolist()
    xs = x.tolist()
    mixed = [[lam * xs[wrong[i]][d] + (1 - lam) * xs[wrong[perm[i]]][d] for d in range(2)] for i in range(len(wrong))]
    z = [[sum(m[d] * w[d][c] for d in range(2)) for c in range(3)] for m in mixed]
    ya = [Y[i] for i in wrong]
    yb = [Y[wrong[perm[i]]] for i in range(len(wrong))]
    want_pt = lam * hand_ce(z, ya) + (1 - lam) * hand_ce(z, yb)
    assert losses["loss_ce_pivot"].item() == pytest.approx(want_pt, rel=1e-12)
    assert method.intensive.tolist() == [2, 2]


def test_orc_helpers_on_their_own():
    assert orc.rank_students(torch.tensor([0.7, 0.2, 0.2])) == 1  # the lowest CE, the first on ties
    z = [torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [1.0, 0.0]])]
    assert orc.misclassified(z, torch.tensor([0, 1])).tolist() == [False, True]  # any student wrong
    ce_part, kd_part = orc.student_losses(torch.tensor([LOGITS[0][0]], dtype=F64), torch.tensor([0]),
                                          [torch.tensor([LOGITS[1][0]], dtype=F64),
                                           torch.tensor([LOGITS[2][0]], dtype=F64)], beta=0.25, T=3.0)
    assert ce_part.item() == pytest.approx(0.75 * ce(LOGITS[0][0], 0), rel=1e-12)
    assert kd_part.item() == pytest.approx(0.25 * (hand_kd([LOGITS[0][0]], [LOGITS[1][0]], 3.0)
                                                   + hand_kd([LOGITS[0][0]], [LOGITS[2][0]], 3.0)), rel=1e-12)


def test_orc_counters_survive_a_mid_epoch_resume_and_reset_at_a_new_epoch():
    method = orc.ORC([Fixed(LOGITS[0]), Fixed(LOGITS[1])], Fixed(LOGITS[2]))
    method.on_epoch_start(1, 3)
    method.promoted += torch.tensor([2, 1])
    state = {k: v.clone() for k, v in method.state().items()}
    again = orc.ORC([Fixed(LOGITS[0]), Fixed(LOGITS[1])], Fixed(LOGITS[2]))
    again.load_state(state)
    again.on_epoch_start(1, 3)  # the trainer calls it again when it resumes inside epoch 1
    assert again.promoted.tolist() == [2, 1]
    assert again.scalars()["tt_share_student"] == pytest.approx(2 / 3)  # a ratio of two small counts
    again.on_epoch_start(2, 3)
    assert again.promoted.tolist() == [0, 0]


# ------------------------------------------------------------------ the seam
def test_group_seam_param_groups_per_network_and_roles():
    nets = [nn.Linear(2, 3), nn.Linear(2, 3), nn.Linear(2, 3)]
    g = GroupDistiller(nets, ("student", "peer1", "pivot_teacher"), lrs=[None, None, 0.01])
    groups = g.param_groups(0.1, 5e-4)
    assert [gr["lr"] for gr in groups] == [0.1, 0.1, 0.01]
    assert [set(map(id, gr["params"])) for gr in groups] == [set(map(id, n.parameters())) for n in nets]
    assert g.deployable_student() is nets[0] and g.trained_module() is g.nets
    assert list(g.eval_models()) == ["student", "peer1", "pivot_teacher"]
    twin = nn.ModuleList([nn.Linear(2, 3) for _ in nets])  # the EMA copy of the whole group
    assert g.eval_models(twin)["peer1"] is twin[1] and g.deployable_student(twin) is twin[0]
    assert "P1-S" in gap_pairs() and "T_p-S" in gap_pairs() and role_label("peer1_ema") == "P1_ema"


GROUP = dict(epochs=2, probe_every=0)
DML_RUN = dict(GROUP, method="dml")
ORC_RUN = dict(GROUP, method="orc", orc_students=2)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Uninterrupted DML and ORC runs (the tests below stop and resume copies of them)."""
    from conftest import FAST

    out = tmp_path_factory.mktemp("group") / "runs"
    base = dict(FAST, out_dir=str(out))
    return {name: (dict(base, **values), run(dict(base, **values, name=f"{name}_ref"), **QUIET).run_dir)
            for name, values in (("dml", DML_RUN), ("orc", ORC_RUN))}


@pytest.mark.parametrize("name", ["dml", "orc"])
def test_group_run_records_every_network_and_saves_the_student(refs, name):
    cfg, ref = refs[name]
    records = read_metrics(ref)
    roles = {r["role"] for r in records if r["kind"] == "eval"}
    assert roles == ({"student", "peer1"} | ({"pivot_teacher"} if name == "orc" else set()))
    ckpt = load_checkpoint(ref / LAST)
    n = 3 if name == "orc" else 2
    assert {k.split(".")[1] for k in ckpt["method"] if k.startswith("student.")} == {str(i) for i in range(n)}
    # one optimizer over the group: every parameter of every network has its own momentum
    params = sum(1 for k, v in ckpt["method"].items() if k.startswith("student.") and v.is_floating_point()
                 and not any(b in k for b in ("running_", "num_batches")))
    assert len(ckpt["optimizer"]["state"]) == params
    saved = torch.load(ref / STUDENT, weights_only=True)["model"]
    assert all(torch.equal(v, ckpt["method"][f"student.0.{k}"]) for k, v in saved.items())
    train = [r for r in records if r["kind"] == "train"]
    if name == "orc":
        assert all(r["tt_share_student"] + r["tt_share_peer1"] == pytest.approx(1.0) for r in train)  # shares of steps
        assert all(0.0 <= r["orc_intensive_fraction"] <= 1.0 for r in train)
        assert {"loss_ce", "loss_kd_pivot", "loss_kd_temporary", "loss_ce_pivot"} <= set(train[0])
    else:
        assert {"loss_ce", "loss_dml", "loss_ce_peer1", "loss_dml_peer1"} <= set(train[0])


@pytest.mark.parametrize("name", ["dml", "orc"])
def test_group_run_stopped_by_sigterm_mid_epoch_resumes_bit_identical(refs, monkeypatch, name):
    """SIGTERM after step 2 of epoch 2: the mid-epoch checkpoint holds every network, its
    optimiser state and the method's counters; the rerun equals the uninterrupted run."""
    cfg, ref = refs[name]
    _signal_at_step(monkeypatch, f"{name}_term", epoch=2, step=2)
    with pytest.raises(Preempted):
        run(dict(cfg, name=f"{name}_term"), **QUIET)
    run_dir = Path(cfg["out_dir"]) / f"{name}_term"
    assert load_checkpoint(run_dir / LAST)["position"]["step"] == 2
    monkeypatch.undo()
    run(dict(cfg, name=f"{name}_term"), **QUIET)
    assert_same_run(run_dir, ref)


KILL_SCRIPT = """
import os, signal, sys
from workbench import cli
from workbench.engine import Trainer

real, seen = Trainer._backward_step, {"n": 0}

def backward_step(self, loss, losses):  # kill -9 after the 2nd step of epoch 2 (no checkpoint can be written)
    real(self, loss, losses)
    if self.epoch == 2:
        seen["n"] += 1
        if seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
Trainer._backward_step = backward_step
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", ["dml", "orc"])
def test_group_run_killed_9_mid_epoch_resumes_bit_identical(refs, tmp_path, name):
    """kill -9 in the middle of epoch 2 (the process dies with no checkpoint of that epoch): the
    rerun continues from the epoch-1 checkpoint and ends equal to the uninterrupted run."""
    cfg, ref = refs[name]
    script = tmp_path / "kill9.py"
    script.write_text(KILL_SCRIPT)
    args = [f"{k}={v}" for k, v in {**cfg, "name": f"{name}_kill9"}.items()]
    env = dict(_env(), PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, str(script), "train", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = Path(cfg["out_dir"]) / f"{name}_kill9"
    assert load_checkpoint(run_dir / LAST)["epoch"] == 1
    again = subprocess.run([sys.executable, "-m", "workbench", "train", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_run(run_dir, ref)


# ------------------------------------------------------------------ one line before any training
@pytest.mark.parametrize("values, match", [
    (dict(method="dml", dml_nets="resnet8"), r"^dml_nets: DML trains at least two networks"),
    (dict(method="dml", dml_k=1), r"^dml_k: value 1 is outside the allowed range \[2, 4\]"),
    (dict(method="dml", dml_nets="resnet20,resnet8"), r"^dml_nets: the first network is the reported student"),
    (dict(method="dml", dml_nets="resnet8,resnet99"), r"^dml_nets: unknown architecture 'resnet99'"),
    (dict(method="dml", dml_nets="resnet8,resnet8,resnet8,resnet8,resnet8"), r"^dml_nets: at most 4 networks"),
    (dict(method="dml", ctkd=True), r"^ctkd: CTKD learns the temperature of a KD/DKD loss; method=dml"),
    (dict(method="dml", dml_T=0), r"^dml_T: value 0.0 is outside"),
    (dict(method="orc", teacher="none"), r"^teacher: method 'orc' with base 'none' needs a static teacher \(an architecture name or a checkpoint path\)$"),
    (dict(method="orc", teacher="snapshot@1"), r"^teacher: ORC fine-tunes its pivot teacher"),
    (dict(method="orc", mix="mixup"), r"^mix: ORC ranks its students"),
    (dict(method="orc", cache_teacher=True, augment=False), r"^cache_teacher: ORC fine-tunes"),
    (dict(method="orc", orc_students=1), r"^orc_students: value 1 is outside"),
    (dict(method="orc", orc_beta=1.5), r"^orc_beta: value 1.5 is outside"),
    (dict(method="orc", ctc_alpha=0.5), r"^ctc: the ctc add-on is not wired into method orc"),
    (dict(method="gpd", base="dml"), r"^base: method 'dml' cannot be the base loss of method=gpd: it trains a group"),
    (dict(method="gpd", base="orc"), r"^base: method 'orc' cannot be the base loss of method=gpd: it trains a student group"),
])
def test_bad_group_settings_are_one_line_before_training(values, match):
    from conftest import FAST

    with pytest.raises(ConfigError, match=match) as err:
        RunConfig.from_dict(dict(FAST, **values))
    assert "\n" not in str(err.value)


def test_group_roles_reach_the_table_the_figures_and_the_last_line(refs):
    """Every network's role is read from the registry by the results table, the compare
    notebook's figures and the CLI's last line; ORC's temporary-teacher shares are plotted."""
    from workbench import table
    from workbench.cli import done_line
    from workbench.probes import figures

    _, dml_dir = refs["dml"]
    _, orc_dir = refs["orc"]
    t = table.build([dml_dir, orc_dir])
    header = t.header(t.columns())
    assert "P1" in header and "T_p" in header
    assert "t_p" in table.read_run(orc_dir).values and "p1" in table.read_run(dml_dir).values
    summary = {r["role"]: r for r in read_metrics(orc_dir) if r["kind"] == "summary"}
    line = done_line(summary, orc_dir)
    assert " P1 " in line and " T_p " in line and "T_p-S" in line
    fig = figures.temporary_teacher_shares(orc_dir)
    assert [t.name for t in fig.data] == ["S", "P1"]
    per_epoch = [a + b for a, b in zip(fig.data[0].y, fig.data[1].y)]
    assert per_epoch == pytest.approx([100.0] * len(per_epoch))  # every step had one temporary teacher
    names = [tr.name for tr in figures.top1_curves(orc_dir).data]
    assert names == ["S", "P1", "T_p"]
