"""GapProbe / gap_records on synthetic RoleOutputs: pairs, metrics, values, scheduling, errors."""
import json

import numpy as np
import pytest
import torch

from conftest import float_tol
from workbench.engine.callbacks import RoleOutputs
from workbench.engine.roles import gap_pairs

from workbench.engine.metrics import MetricsLog, read_metrics
from workbench.probes import metrics as M
from workbench.probes.gap import GapProbe, gap_records, logit_diff_matrix

PAIRS = gap_pairs()  # the probes import the methods: GPD has registered T_d

N, K, D = 40, 4, 6


def _outputs(roles=("student", "teacher", "dynamic_teacher"), features=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=g)
    out = {}
    for i, role in enumerate(roles):
        logits = torch.randn(N, K, generator=g) + (2.0 + i) * torch.nn.functional.one_hot(y, K)
        feats = torch.randn(20, D + i, generator=g) if features else None
        out[role] = RoleOutputs(logits, y.clone(), feats)
    return out


def test_records_for_every_pair_and_metric_with_exact_values():
    outs = _outputs()
    recs = gap_records(outs, epoch=3)
    present = [p for p, roles in PAIRS.items() if set(roles) <= set(outs)]  # other methods' roles are absent here
    assert len(present) == 3 and len(recs) == len(present) * 4
    assert {r["pair"] for r in recs} == set(present)
    for r in recs:
        assert r["kind"] == "gap" and r["epoch"] == 3 and isinstance(r["value"], float)
        t, s = (outs[role] for role in PAIRS[r["pair"]])
        expected = {"acc_gap": 100 * (M.accuracy(t.logits, t.targets) - M.accuracy(s.logits, s.targets)),
                    "agreement": M.agreement(t.logits, s.logits),
                    "kl": M.predictive_kl(t.logits, s.logits),
                    "cka": M.linear_cka(t.features, s.features)}[r["metric"]]
        assert r["value"] == pytest.approx(expected, rel=1e-12)  # the same float64 computation (probes work in float64)


def test_acc_gap_is_first_minus_second_in_points():
    y = torch.tensor([0, 1, 0, 1])
    right = torch.nn.functional.one_hot(y, 2).float()
    half = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0]])  # 2 of 4 correct
    outs = {"teacher": RoleOutputs(right, y), "student": RoleOutputs(half, y)}
    recs = {r["metric"]: r["value"] for r in gap_records(outs, metrics=("acc_gap", "agreement", "kl", "cka"))}
    assert recs["acc_gap"] == pytest.approx(50.0)  # float64 fractions of 4 examples: exact
    assert recs["agreement"] == pytest.approx(0.5)
    assert "cka" not in recs  # no features -> no CKA record, never a fake value
    assert "epoch" not in gap_records(outs)[0]


def test_only_pairs_with_both_roles_and_optional_dist():
    outs = _outputs(roles=("student", "dynamic_teacher"))
    recs = gap_records(outs, 1, metrics=("kl", "dist_inter", "dist_intra"))
    assert {r["pair"] for r in recs} == {"T_d-S"}
    assert [r["metric"] for r in recs] == ["kl", "dist_inter", "dist_intra"]
    t, s = outs["dynamic_teacher"], outs["student"]
    assert recs[1]["value"] == pytest.approx(M.dist_inter_gap(t.logits, s.logits))  # same float64 computation
    assert gap_records({"student": outs["student"]}, 1) == []


def test_probe_schedule_and_records_roundtrip(tmp_path):
    class FakeTrainer:
        epochs = 5

    probe = GapProbe(every=2, metrics=("agreement", "cka"), pairs=("T_d-S",))
    outs = _outputs()
    due = {e: bool(probe.on_eval_end(FakeTrainer(), e, outs)) for e in range(6)}
    assert due == {0: True, 1: False, 2: True, 3: False, 4: True, 5: True}
    recs = probe.on_eval_end(FakeTrainer(), 2, outs)
    assert [(r["pair"], r["metric"]) for r in recs] == [("T_d-S", "agreement"), ("T_d-S", "cka")]
    assert probe.compute(outs, 1) == gap_records(outs, 1, ("agreement", "cka"), ("T_d-S",))
    log = MetricsLog(tmp_path)
    log.append(recs)
    back = read_metrics(tmp_path, kind="gap")
    assert back == json.loads(json.dumps(recs))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="valid choices"):
        GapProbe(metrics=("acc_gap", "cka2"))
    with pytest.raises(ValueError, match="valid choices"):
        GapProbe(pairs=("S-T",))
    with pytest.raises(ValueError, match="every"):
        GapProbe(every=0)
    outs = _outputs()
    outs["teacher"] = RoleOutputs(outs["teacher"].logits, outs["teacher"].targets.roll(1))
    with pytest.raises(ValueError, match="different examples"):
        gap_records(outs, 1)


def test_logit_diff_matrix_is_first_minus_second():
    outs = _outputs()
    m = logit_diff_matrix(outs, "T_s-S")
    t, s = outs["teacher"], outs["student"]
    y = t.targets.numpy()
    d = (t.logits - s.logits).numpy()
    assert m.shape == (K, K)
    np.testing.assert_allclose(m[1], d[y == 1].mean(0), rtol=float_tol(torch.float32, terms=len(y)))  # float32 class means
    with pytest.raises(ValueError, match="valid choices"):
        logit_diff_matrix({"student": s}, "T_s-S")


def test_gap_pairs_come_from_the_registered_roles():
    """The engine knows S and T_s; GPD registers T_d in its own file (no generic code names it),
    DML/ORC their group's networks and ORC's pivot teacher in theirs."""
    core = {"T_s-S": ("teacher", "student"), "T_d-S": ("dynamic_teacher", "student"),
            "T_s-T_d": ("teacher", "dynamic_teacher")}
    assert {p: PAIRS[p] for p in core} == core
    assert PAIRS["P1-S"] == ("peer1", "student") and PAIRS["T_p-S"] == ("pivot_teacher", "student")
    from workbench.engine.roles import register_role, role_label

    register_role("peer", "P", 10, "a test role")  # a method's own role: paired by rank, labelled everywhere
    try:
        pairs = gap_pairs()
        assert pairs["P-S"] == ("peer", "student") and pairs["T_d-P"] == ("dynamic_teacher", "peer")
        assert role_label("peer_ema") == "P_ema"
    finally:
        from workbench.engine import roles

        roles._ROLES.pop("peer")
