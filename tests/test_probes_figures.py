"""Plotly builders: traces, facets, dropdown masks, frames and sliders from tidy records."""
import numpy as np
import pytest

from workbench.engine.metrics import MetricsLog
from workbench.probes import figures as F

PAIRS3 = ("T_s-S", "T_d-S", "T_s-T_d")
METRICS = ("acc_gap", "agreement", "kl")


def run_records(offset=0.0, epochs=3):
    recs = []
    for e in range(epochs + 1):
        for role, acc in (("student", 50 + 10 * e), ("dynamic_teacher", 55 + 10 * e), ("teacher", 80)):
            recs.append({"kind": "eval", "epoch": e, "split": "test", "role": role, "top1": acc + offset})
        for i, pair in enumerate(PAIRS3):
            for m in METRICS:
                recs.append({"kind": "gap", "epoch": e, "pair": pair, "metric": m, "value": e + i + offset})
        recs.append({"kind": "probe", "probe": "transferability", "role": "student", "metric": "linear_top1",
                     "value": 70 - e + offset, "epoch": e, "target": "digits[5-9]"})
    return recs


def emb_record(name, seed=0, n=30, k=3, frame=None):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rec = {"panel": name, "coords": rng.normal(size=(n, 2)) + seed, "labels": y, "predictions": (y + 1) % k,
           "index": np.arange(n) + 100, "method": "tsne",
           "quality": {"knn_features": 0.9, "knn_embedding": 0.8, "trustworthiness": 0.95}}
    if frame is not None:
        rec["frame"] = frame
    return rec


def test_gap_curves_facets_one_line_per_pair_and_metric():
    fig = F.gap_curves(run_records())
    assert len(fig.data) == len(PAIRS3) * len(METRICS)
    # panel titles say what each metric is, with its unit; every axis has a title
    assert [a.text for a in fig.layout.annotations] == [F.METRIC_LABELS[m] for m in METRICS]
    assert "(percentage points)" in F.METRIC_LABELS["acc_gap"] and "(nats)" in F.METRIC_LABELS["kl"]
    # the y axes give the unit (the panel title spells the metric out), never a raw record key
    assert [fig.layout[f"yaxis{i if i > 1 else ''}"].title.text for i in range(1, len(METRICS) + 1)] == \
        [F.axis_unit(m) for m in METRICS]
    assert F.axis_unit("acc_gap") == "percentage points" and F.axis_unit("kl") == "nats"
    kl_td = [t for t in fig.data if t.meta["metric"] == "kl" and t.meta["pair"] == "T_d-S"][0]
    assert list(kl_td.x) == [0, 1, 2, 3] and list(kl_td.y) == [1, 2, 3, 4]
    assert sum(t.showlegend for t in fig.data) == len(PAIRS3)  # one legend entry per pair
    assert len({t.yaxis for t in fig.data}) == len(METRICS)


def test_gap_curves_dropdown_masks_select_one_metric():
    fig = F.gap_curves(run_records(), mode="dropdown", pairs=("T_d-S", "T_s-S"))
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == list(METRICS)
    for b in buttons:
        mask = b.args[0]["visible"]
        assert [t.meta["metric"] == b.label for t in fig.data] == mask
        assert sum(mask) == 2
    assert [t.visible for t in fig.data].count(True) == 2
    with pytest.raises(ValueError, match="valid choices"):
        F.gap_curves(run_records(), mode="grid")


def test_several_runs_from_directories(tmp_path):
    for name, off in (("kd", 0.0), ("gpd", 0.5)):
        MetricsLog(tmp_path / name).append(run_records(off))
    fig = F.gap_curves([tmp_path / "kd", tmp_path / "gpd"], metrics=("kl",))
    assert len(fig.data) == 2 * len(PAIRS3)
    assert {t.meta["run"] for t in fig.data} == {"kd", "gpd"}
    assert any(t.name == "T_d-S (gpd)" for t in fig.data)
    # several runs (compare.ipynb: one per method): a colour per run, a dash per pair
    colors = {t.meta["run"]: {t2.line.color for t2 in fig.data if t2.meta["run"] == t.meta["run"]} for t in fig.data}
    assert len(colors["kd"]) == len(colors["gpd"]) == 1 and colors["kd"] != colors["gpd"]
    assert len({t.line.dash for t in fig.data if t.meta["run"] == "kd"}) == len(PAIRS3)
    top = F.top1_curves({"kd": tmp_path / "kd", "gpd": run_records(1.0)})
    assert len(top.data) == 6 and {t.meta["role"] for t in top.data} == {"student", "dynamic_teacher", "teacher"}


def test_top1_curves_one_line_per_role():
    fig = F.top1_curves(run_records())
    assert [t.name for t in fig.data] == ["S", "T_s", "T_d"]
    s = fig.data[0]
    assert list(s.y) == [50, 60, 70, 80]


@pytest.mark.parametrize("mode", ["twin", "panels"])
def test_disc_transfer_two_series_per_run(mode):
    recs = {"a": run_records(), "b": run_records(2.0)}
    fig = F.disc_transfer_curves(recs, mode=mode)
    assert len(fig.data) == 4
    disc = [t for t in fig.data if t.meta["series"] == "discriminability"]
    trans = [t for t in fig.data if t.meta["series"] == "transferability"]
    assert list(disc[0].y) == [50, 60, 70, 80]  # falls back to eval top-1
    assert list(trans[0].y) == [70, 69, 68, 67]
    assert {t.yaxis for t in disc} == {"y"} and {t.yaxis for t in trans} == {"y2"}  # separate axes
    assert disc[0].line.color == trans[0].line.color != disc[1].line.color
    if mode == "twin":  # both axes titled with meaning and unit, ticks with one decimal
        assert fig.layout.yaxis.title.text == "discriminability: top-1 (%)"
        assert fig.layout.yaxis2.title.text == "transferability: linear-probe top-1 on the target (%)"
        assert fig.layout.yaxis.tickformat == fig.layout.yaxis2.tickformat == ".1f"


@pytest.mark.parametrize("mode", ["twin", "panels"])
def test_disc_transfer_without_a_target_has_one_axis_and_says_why(mode):
    """Issue 29 item 8: no transfer target drew an empty right axis (twin) or panel and no word."""
    recs = [r for r in run_records() if r["kind"] != "probe"]
    fig = F.disc_transfer_curves(recs, mode=mode)
    assert [t.meta["series"] for t in fig.data] == ["discriminability"]
    assert "yaxis2" not in fig.layout.to_plotly_json()  # no second axis or panel at all
    notes = [a.text for a in fig.layout.annotations]
    assert len(notes) == 1 and "no transferability target" in notes[0] and "source_classes" in notes[0], notes
    assert "no transferability target" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "discriminability: top-1 (%)"
    # with a target the note is absent
    assert not [a for a in F.disc_transfer_curves(run_records(), mode=mode).layout.annotations
                if "no transferability" in (a.text or "")]


def test_feature_maps_name_the_classes_in_legend_and_hover():
    rec = emb_record("student")
    fig = F.feature_map_panels([rec], class_names=["Sneaker", "Bag", "Coat"])
    assert [t.name for t in fig.data] == ["Sneaker", "Bag", "Coat"]
    hover = np.asarray(fig.data[0].customdata)
    assert list(hover[0]) == [100, "Sneaker", "Bag"]  # index, label, prediction (class 0 predicted as 1)


def test_feature_map_hover_and_panels():
    rec = emb_record("student")
    fig = F.feature_map(rec)
    assert [t.name for t in fig.data] == ["0", "1", "2"]
    t0 = fig.data[0]
    np.testing.assert_array_equal(np.asarray(t0.customdata)[:, 0], np.arange(0, 30, 3) + 100)
    np.testing.assert_array_equal(np.asarray(t0.customdata)[:, 2], 1)  # predictions of class-0 points
    assert "prediction" in t0.hovertemplate and "kNN map 80.0%" in fig.layout.title.text
    panels = F.feature_map_panels([rec, emb_record("dynamic_teacher", 1)], class_names=["a", "b", "c"])
    assert len(panels.data) == 6 and sum(t.showlegend for t in panels.data) == 3
    assert [t.name for t in panels.data[:3]] == ["a", "b", "c"]
    assert "trust 0.950" in panels.layout.annotations[1].text
    assert {t.xaxis for t in panels.data} == {"x", "x2"}
    four = F.feature_map_panels([emb_record(f"m{i}", i) for i in range(4)])
    assert four.layout.width is None and four.layout.legend.orientation == "h"  # fills the column, nothing cut


def test_many_classes_use_one_continuous_trace():
    rec = emb_record("c100", n=300, k=100)
    fig = F.feature_map(rec)
    assert len(fig.data) == 1 and fig.data[0].marker.colorscale is not None


def test_animation_frames_and_slider():
    recs = [emb_record(f"epoch {e}", seed=e, frame=e) for e in (0, 5, 10)]
    fig = F.feature_map_animation(recs)
    assert [f.name for f in fig.frames] == ["0", "5", "10"]
    assert all(len(f.data) == 3 for f in fig.frames)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["0", "5", "10"]
    assert fig.layout.updatemenus[0].buttons[0].label == "play"
    lo, hi = fig.layout.xaxis.range
    allx = np.concatenate([r["coords"][:, 0] for r in recs])
    assert lo < allx.min() and hi > allx.max()  # fixed axes cover every frame


def test_logit_diff_heatmap():
    M = np.array([[0.0, 1.5], [-2.0, 0.0]])
    fig = F.logit_diff_heatmap(M, class_names=["cat", "dog"])
    hm = fig.data[0]
    np.testing.assert_array_equal(np.asarray(hm.z), M)
    assert list(hm.x) == ["cat", "dog"] and hm.zmid == 0.0
    with pytest.raises(ValueError, match="2-D"):
        F.logit_diff_heatmap(np.zeros(3))


def test_short_runs_tick_whole_epochs():
    """A 2-epoch run's axes read 0, 0.5, 1, 1.5, 2 epochs (plotly's own ticks)."""
    short = run_records(epochs=2)
    for fig in (F.gap_curves(short), F.top1_curves(short), F.disc_transfer_curves(short)):
        assert {ax.dtick for ax in fig.select_xaxes()} == {1}
    assert {ax.dtick for ax in F.top1_curves(run_records(epochs=40)).select_xaxes()} == {None}  # plotly's round ticks
