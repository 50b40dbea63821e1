"""Model EMA (GPD reference: decay 0.99996 per step, raw and EMA evaluated, max reported): the
update rule by hand, the eval records and summary, resume, and the GPD defaults."""
import pytest
import torch
from torch import nn

from workbench.config import ConfigError, RunConfig
from workbench.methods.gpd import GPD_EMA_DECAY
from workbench.engine import read_metrics
from workbench.engine.ema import ModelEMA
from workbench.experiment import run
from workbench.methods.gpd import resolved_scale_init


def test_update_rule_by_hand():
    """e <- d * e + (1 - d) * m for floating entries (params and BN stats); integers copied.
    Values are exact in binary (d = 0.75), so the comparison is exact."""
    net = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    ema = ModelEMA(net, decay=0.75)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        net[0].weight.fill_(5.0)
        net[1].running_mean.fill_(2.0)
        net[1].num_batches_tracked.fill_(7)
    ema.update(net)
    assert torch.all(ema.module[0].weight == 0.75 * 1.0 + 0.25 * 5.0)
    assert ema.module[1].running_mean.item() == 0.75 * 0.0 + 0.25 * 2.0
    assert ema.module[1].num_batches_tracked.item() == 7
    ema.update(net)
    assert torch.all(ema.module[0].weight == 0.75 * 2.0 + 0.25 * 5.0)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="ema decay must be in"):
        ModelEMA(nn.Linear(1, 1), decay)


def test_config_defaults_and_bad_values():
    assert RunConfig.from_dict(dict(method="gpd")).resolved_ema_decay == GPD_EMA_DECAY == 0.99996
    assert RunConfig.from_dict(dict(method="kd")).resolved_ema_decay == 0.0
    assert RunConfig.from_dict(dict(method="kd", ema_decay="0.9")).resolved_ema_decay == 0.9
    assert RunConfig.from_dict(dict(method="gpd", ema_decay=0)).resolved_ema_decay == 0.0
    with pytest.raises(ConfigError, match=r"ema_decay: value 1.0 is outside the allowed range \[0.0, 0.999"):
        RunConfig.from_dict(dict(method="gpd", ema_decay=1.0))


def test_scale_init_auto_follows_the_setting():
    """The reference's per-setting init: one/zero when fine-tuning a pre-trained student."""
    assert resolved_scale_init(RunConfig.from_dict(dict(method="gpd"))) == "reference"
    assert resolved_scale_init(RunConfig.from_dict(dict(method="gpd", init="s.pt"))) == "one_zero"
    assert resolved_scale_init(RunConfig.from_dict(dict(method="gpd", init="s.pt", scale_init="reference"))) == "reference"
    with pytest.raises(ConfigError, match="widening.*full_scale"):
        RunConfig.from_dict(dict(method="gpd", widening="half"))


def test_ema_roles_are_evaluated_and_the_better_is_reported(fast_cfg):
    """A fast-moving EMA (decay 0.5) so raw and EMA differ within two epochs."""
    res = run(dict(fast_cfg, method="kd", ema_decay=0.5))
    evals = [r for r in read_metrics(res.run_dir) if r["kind"] == "eval"]
    assert {r["role"] for r in evals} == {"student", "student_ema", "teacher"}
    by = {(r["epoch"], r["role"]): r for r in evals}
    for epoch in (0, 1, 2):
        raw, ema = by[(epoch, "student")], by[(epoch, "student_ema")]
        assert raw["top1_reported"] == max(raw["top1"], ema["top1"])
        assert "top1_reported" not in ema and "top1_reported" not in by[(epoch, "teacher")]
    assert by[(0, "student")]["top1"] == by[(0, "student_ema")]["top1"]  # EMA starts at the weights
    s = res.summary["student"]
    assert s["last_top1_reported"] == by[(2, "student")]["top1_reported"]
    assert s["best_top1_reported"] == max(by[(e, "student")]["top1_reported"] for e in (1, 2))
    assert (res.run_dir / "student_ema.pt").exists()


def test_ema_eval_every_skips_the_ema_twins_between_due_epochs_only(fast_cfg):
    """``ema_eval_every=2`` over 3 epochs: EMA twins at epochs 0 and 2 and at the last (3), not at 1;
    where they are evaluated their records equal the every-epoch run's (the EMA is updated every
    step either way), and epoch 1 reports the raw top-1."""
    cfg = dict(fast_cfg, method="kd", ema_decay=0.5, epochs=3)
    every = run(dict(cfg, name="every"))
    sparse = run(dict(cfg, name="sparse", ema_eval_every=2))
    recs = {name: {(r["epoch"], r["role"]): r for r in read_metrics(res.run_dir) if r["kind"] == "eval"}
            for name, res in (("every", every), ("sparse", sparse))}
    assert sorted(e for e, role in recs["sparse"] if role == "student_ema") == [0, 2, 3]
    assert sorted(e for e, role in recs["every"] if role == "student_ema") == [0, 1, 2, 3]
    for key, rec in recs["sparse"].items():
        assert rec["top1"] == recs["every"][key]["top1"], key  # same training, same weights
    assert recs["sparse"][(1, "student")]["top1_reported"] == recs["sparse"][(1, "student")]["top1"]  # raw there
    assert recs["sparse"][(3, "student")]["top1_reported"] == recs["every"][(3, "student")]["top1_reported"]
    assert sparse.summary["student"]["last_top1_reported"] == every.summary["student"]["last_top1_reported"]


class _Crash(Exception):
    pass


def test_ema_resumes_exactly(fast_cfg, tmp_path, monkeypatch):
    """A run stopped right after its epoch-1 checkpoint and resumed ends with the same EMA
    weights and EMA records as an uninterrupted run (the EMA state is in the checkpoint)."""
    from workbench.engine.trainer import Trainer

    cfg = dict(fast_cfg, method="kd", ema_decay=0.5, augment=False)
    whole = run(dict(cfg, out_dir=str(tmp_path / "whole")))
    save = Trainer.save

    def save_then_crash(self, epoch, top1):
        save(self, epoch, top1)
        if epoch == 1:
            raise _Crash

    monkeypatch.setattr(Trainer, "save", save_then_crash)
    with pytest.raises(_Crash):
        run(dict(cfg, out_dir=str(tmp_path / "cut")))
    monkeypatch.setattr(Trainer, "save", save)
    resumed = run(dict(cfg, out_dir=str(tmp_path / "cut")))
    ema_a, ema_b = (torch.load(r.run_dir / "student_ema.pt", weights_only=True)["model"] for r in (whole, resumed))
    assert ema_a.keys() == ema_b.keys() and all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    ema_recs = [[r for r in read_metrics(x.run_dir) if r.get("role") == "student_ema" and r["kind"] == "eval"]
                for x in (whole, resumed)]
    assert [r["top1"] for r in ema_recs[0]] == [r["top1"] for r in ema_recs[1]]
