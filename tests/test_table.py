"""The results table: numbers equal hand-computed means and sample stds of the runs' records,
runs that differ in anything but the seed are never averaged together, and a published number
appears only where a row was trained exactly with its protocol's settings."""
import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import published, table
from workbench.config import RunConfig
from workbench.engine.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def fake_run(root: Path, values: dict, student: dict, teacher=None, dynamic=None) -> Path:
    """A finished run folder as the trainer leaves it (config.json + summary.json)."""
    cfg = RunConfig.from_dict(dict(values, out_dir=str(root)))
    d = cfg.run_dir()
    d.mkdir(parents=True)
    (d / "config.json").write_text(cfg.to_json())
    summary = {"student": dict({"kind": "summary", "role": "student", "epoch": cfg.epochs, "best_epoch": 1}, **student)}
    if teacher is not None:
        summary["teacher"] = {"role": "teacher", "epoch": cfg.epochs, "best_top1": teacher, "last_top1": teacher}
    if dynamic is not None:
        summary["dynamic_teacher"] = {"role": "dynamic_teacher", "epoch": cfg.epochs, "best_top1": dynamic,
                                      "last_top1": dynamic}
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def sample_std(xs):
    """By hand: sqrt(sum (x - mean)^2 / (n - 1))."""
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


KD = {"preset": "cifar100/r32x4_r8x4/kd"}
BEST, LAST, T_S = [73.9, 74.6, 73.2], [73.5, 74.1, 72.8], 79.3


def test_means_and_sample_stds_by_hand_and_the_published_kd_row(tmp_path):
    for seed, (b, l) in enumerate(zip(BEST, LAST)):
        fake_run(tmp_path, dict(KD, seed=seed), {"best_top1": b, "last_top1": l}, teacher=T_S)
    t = table.build([tmp_path])
    assert len(t.rows) == 1
    row = t.rows[0]
    assert (row.dataset, row.pair, row.method, row.seeds) == ("cifar100", "resnet32x4 -> resnet8x4", "kd", [0, 1, 2])
    m, s, n = row.stat("s_best")
    # float64 sums of three numbers: a few ulps at most
    assert n == 3 and math.isclose(m, sum(BEST) / 3, rel_tol=1e-12) and math.isclose(s, sample_std(BEST), rel_tol=1e-12)
    gaps = [T_S - x for x in LAST]
    m, s, _ = row.stat("gap_ts")
    assert math.isclose(m, sum(gaps) / 3, rel_tol=1e-12) and math.isclose(s, sample_std(gaps), rel_tol=1e-12)
    # KD's published CIFAR number is a last-epoch one: diff on the last-epoch mean
    assert row.published.top1 == 73.33 and row.published.statistic == "last"
    assert math.isclose(row.diff(), sum(LAST) / 3 - 73.33, rel_tol=1e-12)
    md = t.markdown()
    cell = f"{sum(BEST) / 3:.2f} +- {sample_std(BEST):.2f}"
    assert f"| cifar100 | resnet32x4 -> resnet8x4 | kd | 240 | 3 | 0,1,2 | {cell} |" in md
    assert "73.33 (last) [DKD]" in md and f"{sum(LAST) / 3 - 73.33:+.2f}" in md
    assert "sample std (n - 1)" in md and "Zhao et al., Decoupled Knowledge Distillation" in md
    rows = list(csv.DictReader(io.StringIO(t.csv())))
    assert float(rows[0]["s_last_mean"]) == row.stat("s_last")[0] and rows[0]["published"] == "73.33"
    assert rows[0]["seeds"] == "0 1 2" and len(rows[0]["run_dirs"].split(";")) == 3
    tex = t.latex()
    assert r"\toprule" in tex and r"resnet32x4 $\to$ resnet8x4" in tex and rf"{sum(BEST) / 3:.2f} $\pm$" in tex


def test_runs_differing_beyond_the_seed_are_never_averaged(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path, dict(KD, seed=seed), {"best_top1": 70.0 + seed, "last_top1": 70.0}, teacher=T_S)
        fake_run(tmp_path, dict(KD, seed=seed, lr=0.1), {"best_top1": 60.0 + seed, "last_top1": 60.0}, teacher=T_S)
    fake_run(tmp_path, dict(KD, seed=0, epochs=2), {"best_top1": 10.0, "last_top1": 9.0}, teacher=T_S)
    t = table.build([tmp_path])
    by = {r.settings: r for r in t.rows}
    assert set(by) == {"epochs=240 lr=0.05", "epochs=240 lr=0.1", "epochs=2 lr=0.05"}, set(by)
    assert by["epochs=240 lr=0.1"].stat("s_best")[0] == 60.5 and by["epochs=240 lr=0.05"].stat("s_best")[0] == 70.5
    # only the run with exactly the preset's settings gets the published number
    assert by["epochs=240 lr=0.05"].published is not None
    assert by["epochs=240 lr=0.1"].published is None and by["epochs=2 lr=0.05"].published is None


def test_gpd_columns_reported_top1_and_td_and_the_published_statistic(tmp_path):
    for seed, (raw, rep, td) in enumerate([(70.0, 71.0, 72.0), (70.5, 71.4, 72.2)]):
        fake_run(tmp_path, {"preset": "cifar100/r32x4_r8x4/gpd_dkd", "seed": seed},
                 {"best_top1": raw, "last_top1": raw, "best_top1_reported": rep, "last_top1_reported": rep},
                 teacher=T_S, dynamic=td)
        fake_run(tmp_path, {"preset": "cifar100/r32x4_r8x4/dkd", "seed": seed, "epochs": 3},
                 {"best_top1": 50.0, "last_top1": 49.0}, teacher=T_S)
    t = table.build([tmp_path])
    gpd = next(r for r in t.rows if r.method == "gpd (dkd)")
    assert gpd.stat("s_rep_best")[0] == pytest.approx(71.2, rel=1e-12) and gpd.stat("t_d")[0] == 72.1
    assert gpd.stat("gap_td")[0] == pytest.approx(((72.0 - 70.0) + (72.2 - 70.5)) / 2, rel=1e-12)
    assert gpd.published is None  # no CIFAR-100 GPD number is published
    dkd = next(r for r in t.rows if r.method == "dkd")
    assert dkd.published is None  # 3 epochs: not the protocol
    assert "S rep. best" in t.markdown() and "T_d-S" in t.markdown()
    # a DKD row at the protocol compares the best epoch
    fake_run(tmp_path / "p", {"preset": "cifar100/r32x4_r8x4/dkd", "seed": 0}, {"best_top1": 76.0, "last_top1": 75.0},
             teacher=T_S)
    row = table.build([tmp_path / "p"]).rows[0]
    assert row.published.statistic == "best" and row.diff() == pytest.approx(76.0 - 76.32, rel=1e-12)


def test_every_published_number_names_an_existing_preset():
    for p in published.PUBLISHED:
        RunConfig.from_dict({"preset": p.preset})
        assert p.source in published.SOURCES and p.statistic in table.COMPARED


def test_table_of_real_runs_equals_their_records(tmp_path):
    """Two digits runs through a debug sweep: the table's mean/std are those of the records."""
    from workbench.sweep import launch, plan

    p = plan(["dataset=digits", "method=ce", "teacher=none", "student=resnet8", "epochs=2", "train_per_class=5",
              "probe_every=0", "seed=0:2", f"out_dir={tmp_path}"], executor="debug", name="t")
    launch(p, monitor=lambda: None)
    t = table.build([p.dir])
    assert len(t.rows) == 1 and t.rows[0].seeds == [0, 1]
    best, last = [], []
    for c in p.cells:
        ev = [r for r in read_metrics(c.run_dir, kind="eval") if r["role"] == "student" and r["epoch"] > 0]
        best.append(max(r["top1"] for r in ev))
        last.append(ev[-1]["top1"])
    for key, xs in (("s_best", best), ("s_last", last)):
        m, s, n = t.rows[0].stat(key)
        assert n == 2 and math.isclose(m, sum(xs) / 2, rel_tol=1e-12)
        assert math.isclose(s, sample_std(xs), rel_tol=1e-12, abs_tol=1e-12)


def test_cli_table_formats_and_errors(tmp_path):
    fake_run(tmp_path, dict(KD, seed=0), {"best_top1": 70.0, "last_top1": 69.0}, teacher=T_S)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text(RunConfig.from_dict(dict(KD, seed=5)).to_json())
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "workbench", "table", *args], capture_output=True, text=True,
                               env=env, cwd=ROOT)

    r = run(str(tmp_path), "--format", "csv")
    assert r.returncode == 0 and r.stdout.startswith("dataset,pair,method,settings,epochs,n,seeds,s_best_mean")
    r = run(str(tmp_path))
    assert r.returncode == 0 and "1 run folder(s) without summary.json (not finished) left out" in r.stdout
    assert "| 70.00 |" in r.stdout  # one seed: its value, no invented spread
    r = run(str(tmp_path), "--format=latex")
    assert r.returncode == 0 and r"\bottomrule" in r.stdout
    r = run(str(tmp_path), "--format", "xls")
    assert r.returncode == 2 and r.stderr.strip() == "error: --format: unknown format 'xls'; valid choices: md, csv, latex"
    r = run(str(tmp_path / "nothing"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
