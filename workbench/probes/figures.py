"""Plotly figures built from the tidy records (and from embedding records of
:mod:`workbench.probes.embed`). Every builder returns a ``plotly.graph_objects.Figure``.

``source`` arguments accept: a list of record dicts; a run directory or ``metrics.jsonl``
path; a list of run directories; or ``{run_name: records_or_path}``. With several runs each
record gets a ``run`` key and every curve is drawn once per run (line dash per run, colour per
pair/role), so runs can be compared on one figure.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .. import methods  # noqa: F401  (every method registers the roles it evaluates)
from ..engine.roles import by_rank, gap_pairs, role_label, roles as known_roles
from ..engine.metrics import read_metrics
from ..registry import unknown_choice



def pair_color(pair: str):
    """One colour per gap pair (T_s-S, T_d-S, T_s-T_d, ...: their order in ``gap_pairs``)."""
    pairs = list(gap_pairs())
    return qualitative.Plotly[pairs.index(pair) % len(qualitative.Plotly)] if pair in pairs else None


def role_color(role: str):
    """One colour per role (S, T_d, T_s, ...: their order from the student up)."""
    roles = list(by_rank())
    return qualitative.Plotly[roles.index(role) % len(qualitative.Plotly)] if role in roles else None


DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
PANEL_HEIGHT_PX = 340  # feature-map panels
LEGEND_ROOM_PX = 60
RUN_COLORS = qualitative.D3  # one colour per run/method when several are overlaid
CLASS_PALETTE = qualitative.Plotly + qualitative.Light24  # 34 distinct colours
MAX_CLASS_TRACES = 24  # above this, one trace coloured by a continuous scale (no legend per class)
WEBGL_POINTS = 5000  # switch to Scattergl above this many points
GAP_MODES = ("facet", "dropdown")
DT_MODES = ("twin", "panels")
Source = Union[list, dict, str, os.PathLike]


# ------------------------------------------------------------------------------ loading
def load_records(source: Source) -> list[dict]:
    """Normalise any ``source`` form to one list of records (``run`` key set for several runs)."""
    if isinstance(source, (str, os.PathLike)):
        return read_metrics(source)
    if isinstance(source, dict):
        out = []
        for run, src in source.items():
            out += [{**r, "run": str(run)} for r in load_records(src)]
        return out
    source = list(source)
    if source and all(isinstance(s, (str, os.PathLike)) for s in source):
        return load_records({Path(s).name if Path(s).is_dir() else Path(s).parent.name: s for s in source})
    if not all(isinstance(r, dict) for r in source):
        raise ValueError("source must be records (dicts), a run directory, a list of run directories or {run: source}")
    return source


def _runs(records: list[dict]) -> list:
    runs = []
    for r in records:
        if r.get("run") not in runs:
            runs.append(r.get("run"))
    return runs


#: axis titles with meaning and unit, by metric name (gap metrics, probe metrics, top-1)
METRIC_LABELS = {
    "acc_gap": "top-1 gap (percentage points)",
    "agreement": "top-1 agreement (fraction of test images)",
    "kl": "KL(p_teacher || p_student) (nats)",
    "cka": "linear CKA of penultimate features (0-1)",
    "dist_inter": "DIST inter-class correlation gap (1 - Pearson)",
    "dist_intra": "DIST intra-class correlation gap (1 - Pearson)",
    "top1": "top-1 (%)",
    "knn_top1": "kNN top-1 on penultimate features (%)",
    "separability": "class separability (between / within variance)",
    "linear_top1": "linear-probe top-1 on the target (%)",
    "linear_train_top1": "linear-probe train top-1 on the target (%)",
    "linear_best_epoch": "linear-probe best epoch",
}
PERCENT_TICKS = ".1f"  # percent axes: one decimal (plotly's auto ticks gave 84.08, 84.89, ...)


def axis_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def axis_unit(metric: str) -> str:
    """The unit of a metric's label (its last parenthesised part: "percentage points", "nats"), for
    the y axis of a panel whose title already spells the metric out; the whole label if it has none."""
    label = axis_label(metric)
    if label.endswith(")") and " (" in label:
        return label[label.rindex(" (") + 2:-1]
    return label


WHOLE_EPOCH_TICKS_UP_TO = 10  # short runs: one tick per epoch (plotly's own ticks read 0.5, 1.5 epochs)


def _whole_epochs(fig: go.Figure) -> go.Figure:
    """Epoch axes tick at whole epochs: one tick per epoch for short runs (longer runs get
    plotly's own round ticks, whole numbers already)."""
    last = max((x for t in fig.data for x in (t.x or ()) if isinstance(x, (int, float))), default=0)
    if last <= WHOLE_EPOCH_TICKS_UP_TO:
        fig.update_xaxes(dtick=1)
    return fig


def _series(records: Iterable[dict], x: str = "epoch", y: str = "value") -> tuple[list, list]:
    pts = sorted((r[x], r[y]) for r in records if r.get(x) is not None and r.get(y) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def _line(own_color: str, run_index: int, item_index: int, several: bool) -> dict:
    """One run: colour per pair/role. Several runs (e.g. one per method in compare.ipynb): colour
    per run, dash per pair/role -- so each method has its own colour."""
    if several:
        return dict(color=RUN_COLORS[run_index % len(RUN_COLORS)], dash=DASHES[item_index % len(DASHES)])
    return dict(color=own_color)


def _name(label: str, run, several: bool) -> str:
    return f"{label} ({run})" if several and run is not None else label


# ------------------------------------------------------------------------------ curves
def gap_curves(source: Source, metrics: Optional[Sequence[str]] = None, pairs: Optional[Sequence[str]] = None,
               mode: str = "facet") -> go.Figure:
    """Gap metric vs epoch, one line per pair (and run). ``mode="facet"``: one stacked panel
    per metric; ``"dropdown"``: one panel with a menu choosing the metric."""
    if mode not in GAP_MODES:
        raise ValueError(unknown_choice("gap figure mode", mode, list(GAP_MODES)))
    recs = [r for r in load_records(source) if r.get("kind") == "gap"]
    metrics = list(metrics) if metrics else list(dict.fromkeys(r["metric"] for r in recs))
    pairs = list(pairs) if pairs else [p for p in gap_pairs() if any(r["pair"] == p for r in recs)]
    runs = _runs(recs)
    several = len(runs) > 1
    if mode == "facet":
        fig = make_subplots(rows=max(1, len(metrics)), cols=1, shared_xaxes=True,
                            subplot_titles=[axis_label(m) for m in metrics], vertical_spacing=0.08)
    else:
        fig = go.Figure()
    owner = []  # metric of each trace, for the dropdown masks
    for i, metric in enumerate(metrics):
        for j, run in enumerate(runs):
            for pair in pairs:
                x, y = _series(r for r in recs if r["metric"] == metric and r["pair"] == pair and r.get("run") == run)
                if not x:
                    continue
                tr = go.Scatter(x=x, y=y, mode="lines+markers", name=_name(pair, run, several),
                                legendgroup=_name(pair, run, several),
                                showlegend=(i == 0 or mode == "dropdown"),
                                line=_line(pair_color(pair), j, pairs.index(pair), several),
                                meta=dict(metric=metric, pair=pair, run=run),
                                visible=True if mode == "facet" or i == 0 else False)
                if mode == "facet":
                    fig.add_trace(tr, row=i + 1, col=1)
                else:
                    fig.add_trace(tr)
                owner.append(metric)
    if mode == "facet":
        fig.update_xaxes(title_text="epoch", row=max(1, len(metrics)), col=1)
        for i, metric in enumerate(metrics):
            fig.update_yaxes(title_text=axis_unit(metric), row=i + 1, col=1)  # the panel title spells it out
        fig.update_layout(height=max(320, 230 * len(metrics)))
    else:
        buttons = [dict(label=m, method="update",
                        args=[{"visible": [o == m for o in owner]}, {"yaxis": {"title": {"text": axis_label(m)}}}])
                   for m in metrics]
        fig.update_layout(updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.15)],
                          xaxis_title="epoch", yaxis_title=axis_label(metrics[0]) if metrics else "")
    fig.update_layout(title="Teacher-student gaps", legend_title_text="pair")
    return _whole_epochs(fig)


def top1_curves(source: Source, split: Optional[str] = None, roles: Optional[Sequence[str]] = None) -> go.Figure:
    """Top-1 vs epoch of S, T_d and T_s (``eval`` records of ``split``; ``train`` records when
    ``split="train"``), one line per role and run. ``split=None``: the split the eval records
    are on (``test``, or ``val`` for a run with ``eval_on=val``; ``test`` when none says)."""
    records = load_records(source)
    if split is None:
        split = next((r["split"] for r in records if r.get("kind") == "eval" and r.get("split")), "test")
    kind = "train" if split == "train" else "eval"
    recs = [r for r in records if r.get("kind") == kind and r.get("split", split) == split]
    roles = list(roles) if roles else [ro for ro in known_roles() if any(r.get("role") == ro for r in recs)]
    runs = _runs(recs)
    fig = go.Figure()
    for j, run in enumerate(runs):
        for role in roles:
            x, y = _series((r for r in recs if r.get("role") == role and r.get("run") == run), y="top1")
            if x:
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers",
                                         name=_name(role_label(role), run, len(runs) > 1),
                                         line=_line(role_color(role), j, roles.index(role), len(runs) > 1),
                                         meta=dict(role=role, run=run)))
    fig.update_layout(title=f"Top-1 ({split})", xaxis_title="epoch", yaxis_title=axis_label("top1"), legend_title_text="model",
                      yaxis_tickformat=PERCENT_TICKS)
    return _whole_epochs(fig)


#: train-record prefix of a group method's temporary-teacher shares (ORC: ``tt_share_<role>``)
TT_SHARE = "tt_share_"


def temporary_teacher_shares(source: Source) -> go.Figure:
    """ORC's role change per epoch: the fraction of the epoch's steps each student was the
    temporary teacher (train records' ``tt_share_<role>``), stacked bars per epoch (one panel
    row of bars per run when several are given, grouped by run)."""
    records = [r for r in load_records(source) if r.get("kind") == "train"]
    runs = _runs(records)
    roles = [ro for ro in known_roles() if any(TT_SHARE + ro in r for r in records)]
    fig = go.Figure()
    for j, run in enumerate(runs):
        for role in roles:
            x, y = _series((r for r in records if r.get("run") == run), y=TT_SHARE + role)
            if x:
                fig.add_trace(go.Bar(x=x, y=[100.0 * v for v in y], name=_name(role_label(role), run, len(runs) > 1),
                                     marker_color=role_color(role), offsetgroup=str(run),
                                     meta=dict(role=role, run=run)))
    fig.update_layout(title="Temporary teacher per epoch (ORC)", xaxis_title="epoch",
                      yaxis_title="steps as temporary teacher (%)", barmode="stack" if len(runs) <= 1 else "relative",
                      legend_title_text="student")
    return _whole_epochs(fig)


def _disc_series(recs, role, metric, run):
    pr = [r for r in recs if r.get("kind") == "probe" and r.get("probe") == "discriminability"
          and r.get("role") == role and r.get("metric") == metric and r.get("run") == run]
    if pr or metric != "top1":
        return _series(pr)
    return _series((r for r in recs if r.get("kind") == "eval" and r.get("role") == role and r.get("run") == run),
                   y="top1")


NO_TARGET_NOTE = ("no transferability target in this run: on digits / fashion_mnist set source_classes "
                  "(the other classes become the target), or transfer=&lt;dataset&gt;")


def _transfer_records(recs, role, metric, run, target):
    return [r for r in recs if r.get("kind") == "probe" and r.get("probe") == "transferability"
            and r.get("role") == role and r.get("metric") == metric and r.get("run") == run
            and (target is None or r.get("target") == target)]


def disc_transfer_curves(source: Source, role: str = "student", disc_metric: str = "top1",
                         transfer_metric: str = "linear_top1", mode: str = "twin",
                         target: Optional[str] = None) -> go.Figure:
    """Discriminability (solid, left axis / top panel) and transferability (dashed, right axis /
    bottom panel) over epochs, colour per run. ``disc_metric="top1"`` falls back to the eval
    records when no discriminability probe ran. Runs without a transferability target get one
    axis (no empty right axis or panel) and a note in the figure saying so."""
    if mode not in DT_MODES:
        raise ValueError(unknown_choice("disc/transfer figure mode", mode, list(DT_MODES)))
    recs = load_records(source)
    runs = _runs(recs)
    several = len(runs) > 1
    transfer = {run: _transfer_records(recs, role, transfer_metric, run, target) for run in runs}
    has_target = any(transfer.values())
    if not has_target:
        fig = go.Figure()
    elif mode == "twin":
        fig = make_subplots(specs=[[{"secondary_y": True}]])
    else:
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True,
                            subplot_titles=(f"discriminability: {axis_label(disc_metric)}",
                                            f"transferability: {axis_label(transfer_metric)}"))
    for j, run in enumerate(runs):
        color = qualitative.Plotly[j % len(qualitative.Plotly)]
        x, y = _disc_series(recs, role, disc_metric, run)
        d = go.Scatter(x=x, y=y, mode="lines+markers", name=_name(f"discriminability ({disc_metric})", run, several),
                       line=dict(color=color), meta=dict(series="discriminability", run=run))
        if not has_target:
            fig.add_trace(d)
            continue
        tr = transfer[run]
        xt, yt = _series(tr)
        label = tr[0].get("target", "") if tr else ""
        t = go.Scatter(x=xt, y=yt, mode="lines+markers",
                       name=_name(f"transferability ({transfer_metric}{', ' + label if label else ''})", run, several),
                       line=dict(color=color, dash="dash"), meta=dict(series="transferability", run=run))
        if mode == "twin":
            fig.add_trace(d, secondary_y=False)
            fig.add_trace(t, secondary_y=True)
        else:
            fig.add_trace(d, row=1, col=1)
            fig.add_trace(t, row=2, col=1)
    if not has_target:
        fig.update_yaxes(title_text=f"discriminability: {axis_label(disc_metric)}", tickformat=PERCENT_TICKS)
        fig.add_annotation(text=NO_TARGET_NOTE, xref="paper", yref="paper", x=0, y=1.0, xanchor="left",
                           yanchor="bottom", showarrow=False, font=dict(size=11, color="gray"))
    elif mode == "twin":
        fig.update_yaxes(title_text=f"discriminability: {axis_label(disc_metric)}", secondary_y=False,
                         tickformat=PERCENT_TICKS)
        fig.update_yaxes(title_text=f"transferability: {axis_label(transfer_metric)}", secondary_y=True,
                         tickformat=PERCENT_TICKS, showgrid=False)
    fig.update_xaxes(title_text="epoch")
    title = f"Discriminability vs transferability ({role_label(role)})" if has_target else \
        f"Discriminability ({role_label(role)}; no transferability target)"
    fig.update_layout(title=title)
    return _whole_epochs(fig)


# -------------------------------------------------------------------------- feature maps
def _quality_text(q: dict) -> str:
    if not q:
        return ""
    parts = []
    if "knn_embedding" in q:
        parts.append(f"kNN map {100 * q['knn_embedding']:.1f}% / feat {100 * q['knn_features']:.1f}%")
    if "trustworthiness" in q:
        parts.append(f"trust {q['trustworthiness']:.3f}")
    return " · ".join(parts)


def _class_name(c, class_names):
    return str(class_names[c]) if class_names is not None else str(c)


def _hover_data(idx, y, pred, class_names) -> np.ndarray:
    """Per point: test index, label and prediction -- by class name when the dataset has names."""
    if class_names is None:
        return np.stack([idx, y, pred], axis=1)
    named = [[_class_name(int(c), class_names) if c >= 0 else "-" for c in col] for col in (y, pred)]
    return np.array(list(zip(idx.tolist(), *named)), dtype=object)


def _scatter_traces(rec: dict, class_names=None, show_legend: bool = True, classes=None) -> list:
    """Traces of one map: one per class (<= MAX_CLASS_TRACES classes) or one coloured trace.
    ``classes`` fixes the class list so every panel/frame has the same traces in the same order."""
    Z, y = np.asarray(rec["coords"]), np.asarray(rec["labels"])
    pred = rec.get("predictions")
    pred = np.full(len(y), -1) if pred is None else np.asarray(pred)
    idx = np.asarray(rec.get("index", np.arange(len(y))))
    classes = sorted(np.unique(y).tolist()) if classes is None else list(classes)
    Scatter = go.Scattergl if len(y) > WEBGL_POINTS else go.Scatter
    hover = "index %{customdata[0]}<br>label %{customdata[1]}<br>prediction %{customdata[2]}<extra></extra>"
    if len(classes) > MAX_CLASS_TRACES:
        custom = _hover_data(idx, y, pred, class_names)
        return [Scatter(x=Z[:, 0], y=Z[:, 1], mode="markers", name=rec.get("panel", "map"), customdata=custom,
                        hovertemplate=hover, showlegend=False,
                        marker=dict(size=4, color=y, colorscale="Turbo", showscale=show_legend))]
    traces = []
    for c in classes:
        m = y == c
        traces.append(Scatter(x=Z[m, 0], y=Z[m, 1], mode="markers", name=_class_name(c, class_names),
                              legendgroup=f"class {c}", showlegend=show_legend,
                              customdata=_hover_data(idx[m], y[m], pred[m], class_names), hovertemplate=hover,
                              marker=dict(size=5, color=CLASS_PALETTE[c % len(CLASS_PALETTE)])))
    return traces


def feature_map(rec: dict, class_names: Optional[Sequence[str]] = None, title: Optional[str] = None) -> go.Figure:
    """Scatter of one embedding record, coloured by class; hover shows index, label, prediction;
    the title carries the quality numbers."""
    fig = go.Figure(_scatter_traces(rec, class_names))
    q = _quality_text(rec.get("quality", {}))
    fig.update_layout(title=title or f"{rec.get('panel', '')} ({rec.get('method', '')})" + (f"<br><sub>{q}</sub>" if q else ""),
                      legend_title_text="class", xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
    return fig


def feature_map_panels(recs: Sequence[dict], class_names: Optional[Sequence[str]] = None,
                       cols: Optional[int] = None) -> go.Figure:
    """Side-by-side maps (e.g. one per method or role), same class colours, one legend, quality
    numbers in each panel title."""
    recs = list(recs)
    if not recs:
        raise ValueError("feature_map_panels needs at least one embedding record")
    cols = cols or len(recs)
    rows = -(-len(recs) // cols)
    titles = [f"{r.get('panel', '')}<br><sub>{_quality_text(r.get('quality', {}))}</sub>" for r in recs]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.04, vertical_spacing=0.12)
    classes = sorted(set().union(*(np.unique(np.asarray(r["labels"])).tolist() for r in recs)))
    for i, rec in enumerate(recs):
        for tr in _scatter_traces(rec, class_names, show_legend=(i == 0), classes=classes):
            fig.add_trace(tr, row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    # no fixed width: the figure fills the notebook/report column (a fixed 380 px per panel cut
    # the 4th panel and the legend); the legend goes below the panels, in one row
    fig.update_layout(title=f"Feature maps ({recs[0].get('method', '')})", legend_title_text="class",
                      height=PANEL_HEIGHT_PX * rows + LEGEND_ROOM_PX, autosize=True,
                      legend=dict(orientation="h", yanchor="top", y=-0.04, xanchor="left", x=0))
    return fig


def _range(values: np.ndarray, pad: float = 0.05) -> list:
    lo, hi = float(np.min(values)), float(np.max(values))
    span = (hi - lo) or 1.0
    return [lo - pad * span, hi + pad * span]


def feature_map_animation(recs: Sequence[dict], class_names: Optional[Sequence[str]] = None,
                          frame_ms: int = 600) -> go.Figure:
    """Epoch animation: one plotly frame per record (from :func:`embed.aligned_embeddings`),
    a slider over epochs and play/pause buttons; axes fixed to the range of all frames."""
    recs = list(recs)
    if not recs:
        raise ValueError("feature_map_animation needs at least one embedding record")
    classes = sorted(set().union(*(np.unique(np.asarray(r["labels"])).tolist() for r in recs)))
    names = [str(r.get("frame", r.get("panel", i))) for i, r in enumerate(recs)]
    frames = [go.Frame(data=_scatter_traces(r, class_names, classes=classes), name=n,
                       layout=dict(title_text=f"epoch {n}<br><sub>{_quality_text(r.get('quality', {}))}</sub>"))
              for r, n in zip(recs, names)]
    fig = go.Figure(data=frames[0].data, frames=frames)
    allz = np.concatenate([np.asarray(r["coords"]) for r in recs])
    anim = dict(frame=dict(duration=frame_ms, redraw=True), transition=dict(duration=0), mode="immediate")
    fig.update_layout(
        title=frames[0].layout.title.text, legend_title_text="class",
        xaxis=dict(range=_range(allz[:, 0]), showticklabels=False, autorange=False),
        yaxis=dict(range=_range(allz[:, 1]), showticklabels=False, autorange=False),
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.08, xanchor="left",
                          buttons=[dict(label="play", method="animate", args=[None, {**anim, "fromcurrent": True}]),
                                   dict(label="pause", method="animate",
                                        args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])])],
        sliders=[dict(active=0, currentvalue=dict(prefix="epoch "), x=0.15, len=0.85, y=-0.02,
                      steps=[dict(label=n, method="animate", args=[[n], anim]) for n in names])])
    return fig


def logit_diff_heatmap(matrix, class_names: Optional[Sequence[str]] = None,
                       title: str = "Class-mean logit difference (teacher - student)") -> go.Figure:
    """Heatmap of :func:`metrics.class_mean_logit_diff`: rows = true class, columns = logit,
    diverging colours centred on 0."""
    M = np.asarray(matrix, dtype=float)
    if M.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {M.shape}")
    labels = [str(c) for c in (class_names if class_names is not None else range(M.shape[1]))]
    rows = [str(c) for c in (class_names if class_names is not None else range(M.shape[0]))][: M.shape[0]]
    fig = go.Figure(go.Heatmap(z=M, x=labels, y=rows, colorscale="RdBu", zmid=0.0, reversescale=True,
                               hovertemplate="true %{y}<br>logit %{x}<br>diff %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="logit of class", yaxis_title="true class",
                      yaxis=dict(autorange="reversed"))
    return fig
