"""Issue 5 end to end: a short digits KD run (source digits 0-4, transfer target digits 5-9)
writes gap and discriminability/transferability records to metrics.jsonl, and the figure
builders render exactly the traces those records call for."""
import math

import pytest

from workbench.engine import read_metrics
from workbench.experiment import run
from workbench import data
from workbench.probes import figures

SOURCE_TEST_IMAGES = len(data.build("digits", "test", train_per_class=10, classes=(0, 1, 2, 3, 4)))


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = dict(dataset="digits", train_per_class=10, teacher="resnet8", student="resnet8", epochs=2,
               teacher_epochs=2, batch_size=32, lr=0.05, schedule="cosine", eval_batch_size=512,
               probe_samples=150, progress=False, method="kd", source_classes="0,1,2,3,4",
               probe_every=1, out_dir=str(out))
    return run(cfg).run_dir


def test_records_per_epoch(kd_run):
    recs = read_metrics(kd_run)
    epochs = (0, 1, 2)
    gap = {(r["epoch"], r["pair"], r["metric"]) for r in recs if r["kind"] == "gap"}
    for e in epochs:
        for metric in ("acc_gap", "agreement", "kl", "cka"):
            assert (e, "T_s-S", metric) in gap
    probe = [r for r in recs if r["kind"] == "probe"]
    disc = {(r["epoch"], r["metric"]) for r in probe if r["role"] == "student"}
    for e in epochs:
        assert {(e, "knn_top1"), (e, "separability"), (e, "linear_top1")} <= disc
    for r in recs:
        if r["kind"] in ("gap", "probe"):
            assert math.isfinite(r["value"])
            if r.get("metric") in ("agreement", "knn_top1", "linear_top1"):
                assert 0.0 <= r["value"] <= 100.0
            if r.get("metric") == "cka":
                assert 0.0 <= r["value"] <= 1.0 + 1e-6  # a cosine-like ratio in float32: may round a few ulp above 1
    # the accuracy gap is the difference of the logged eval accuracies
    top1 = {(r["epoch"], r["role"]): r["top1"] for r in recs if r["kind"] == "eval"}
    for r in recs:
        if r["kind"] == "gap" and r["metric"] == "acc_gap":
            # percentages of counts (float32 vs float64): one rounding each, approx default 1e-6
            assert r["value"] == pytest.approx(top1[(r["epoch"], "teacher")] - top1[(r["epoch"], "student")])
    # source = digits 0-4 only: the eval set holds the test images of those five classes
    assert {r["n"] for r in recs if r["kind"] == "eval"} == {SOURCE_TEST_IMAGES}


def test_figures_render_the_recorded_traces(kd_run):
    fig = figures.gap_curves(kd_run)
    names = {t.name for t in fig.data}
    assert names == {"T_s-S"} and len(fig.data) == 4  # one line per metric panel
    assert all(list(t.x) == [0, 1, 2] for t in fig.data)
    top = figures.top1_curves(kd_run)
    assert [t.name for t in top.data] == ["S", "T_s"] and all(list(t.x) == [0, 1, 2] for t in top.data)
    dt = figures.disc_transfer_curves(kd_run, mode="panels")
    assert len(dt.data) == 2 and all(len(t.x) == 3 for t in dt.data)
    dt.to_json()  # serialisable for notebooks / HTML reports
