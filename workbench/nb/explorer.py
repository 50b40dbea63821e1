"""explore.ipynb: find runs under a folder, list them, and an interactive explorer of their gap
curves and top-1 (ipywidgets + plotly FigureWidget)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..engine.callbacks import PAIRS, ROLE_LABELS
from ..probes.figures import axis_label
from .tables import Table

TOP1 = "top1"  # pseudo-metric of the explorer: test top-1 of S, T_d, T_s
ON_STYLE = "info"  # ipywidgets button style of a pair toggle that is on


def find_runs(root) -> dict[str, Path]:
    """``{name relative to root: run dir}`` of every folder under ``root`` with a metrics log,
    except the teacher cache (``<root>/teachers/``: teachers trained for other runs)."""
    from ..engine.metrics import METRICS_FILE
    from ..experiment import TEACHERS_DIR

    root = Path(root)
    if not root.is_dir():
        return {}
    return {str(p.parent.relative_to(root)): p.parent for p in sorted(root.rglob(METRICS_FILE))
            if p.relative_to(root).parts[0] != TEACHERS_DIR}


def runs_table(root) -> Table:
    from ..engine.metrics import read_metrics

    rows = []
    for name, path in find_runs(root).items():
        recs = read_metrics(path)
        s = [r for r in recs if r.get("kind") == "summary" and r.get("role") == "student"]
        epochs = max((r["epoch"] for r in recs if r.get("kind") == "train"), default=0)
        rows.append((name, epochs, s[0]["best_top1"] if s else None, s[0]["last_top1"] if s else None))
    return Table(["run", "epochs done", "best S top-1", "last S top-1"], rows, title=f"runs under {root}")


class Explorer:
    """Interactive run explorer (ipywidgets + plotly FigureWidget): pick runs and a metric, toggle
    the pairs T_s-S / T_d-S / T_s-T_d, scrub epochs with a slider (a marker line and a readout
    of the values at that epoch). All state changes go through :meth:`redraw` (testable headless)."""

    def __init__(self, root, selected: Optional[Sequence[str]] = None):
        import ipywidgets as W
        import plotly.graph_objects as go

        from ..engine.metrics import read_metrics

        self.root = Path(root)
        self.runs = find_runs(self.root)
        self.records = {name: read_metrics(p) for name, p in self.runs.items()}
        gap_metrics = sorted({r["metric"] for recs in self.records.values() for r in recs if r.get("kind") == "gap"})
        first = [n for n in self.runs if any(r.get("kind") == "gap" for r in self.records[n])][:1] or list(self.runs)[:1]
        self.run_select = W.SelectMultiple(options=list(self.runs), value=tuple(selected or first),
                                           description="runs", rows=min(8, max(2, len(self.runs))),
                                           layout=W.Layout(width="60%"))
        options = gap_metrics + [TOP1]
        self.metric = W.Dropdown(options=options, value="acc_gap" if "acc_gap" in options else options[0],
                                 description="metric")
        self.pairs = {p: W.ToggleButton(value=True, description=p, icon="check", button_style=ON_STYLE)
                      for p in PAIRS}
        top = max((r["epoch"] for recs in self.records.values() for r in recs), default=0)
        self.epoch = W.IntSlider(value=top, min=0, max=max(1, top), description="epoch", continuous_update=True)
        self.readout = W.HTML()
        # legend below the plot: long run names must not squeeze the plot area
        self.fig = go.FigureWidget(layout=dict(height=460, xaxis_title="epoch", margin=dict(t=40),
                                               legend=dict(orientation="h", yanchor="top", y=-0.18, x=0)))
        for w in (self.run_select, self.metric, self.epoch, *self.pairs.values()):
            w.observe(lambda _change: self.redraw(), names="value")
        self.redraw()

    def series(self) -> dict[str, tuple[list, list]]:
        """``{trace name: (epochs, values)}`` for the current selection."""
        out = {}
        several = len(self.run_select.value) > 1
        for run in self.run_select.value:
            recs = self.records[run]
            if self.metric.value == TOP1:
                for role, label in ROLE_LABELS.items():
                    pts = sorted((r["epoch"], r["top1"]) for r in recs if r.get("kind") == "eval" and r.get("role") == role)
                    if pts:
                        out[f"{label} ({run})" if several else label] = ([e for e, _ in pts], [v for _, v in pts])
                continue
            for pair, button in self.pairs.items():
                if not button.value:
                    continue
                pts = sorted((r["epoch"], r["value"]) for r in recs if r.get("kind") == "gap"
                             and r.get("pair") == pair and r.get("metric") == self.metric.value and r.get("value") is not None)
                if pts:
                    out[f"{pair} ({run})" if several else pair] = ([e for e, _ in pts], [v for _, v in pts])
        return out

    def _style_toggles(self) -> None:
        """On: filled with a check mark; off: plain with no icon -- tellable apart at a glance."""
        for button in self.pairs.values():
            button.button_style, button.icon = (ON_STYLE, "check") if button.value else ("", "")

    def redraw(self) -> None:
        if getattr(self, "_busy", False):
            return
        self._busy = True
        try:
            self._fit_slider()
            self._style_toggles()
            self._redraw()
        finally:
            self._busy = False

    def _fit_slider(self) -> None:
        """Slider range = epochs of the selected runs (value kept inside it)."""
        top = max((r["epoch"] for run in self.run_select.value for r in self.records[run]), default=0)
        at_end = self.epoch.value >= self.epoch.max
        self.epoch.max = max(1, top)
        if at_end or self.epoch.value > top:
            self.epoch.value = top

    def _redraw(self) -> None:
        series = self.series()
        with self.fig.batch_update():
            self.fig.data = ()
            for name, (x, y) in series.items():
                self.fig.add_scatter(x=x, y=y, mode="lines+markers", name=name)
            e = self.epoch.value
            self.fig.layout.shapes = [dict(type="line", x0=e, x1=e, xref="x", y0=0, y1=1, yref="paper",
                                           line=dict(dash="dot", color="gray"))]
            label = axis_label(self.metric.value)
            self.fig.layout.yaxis.title = label
            self.fig.layout.title = f"{label} vs epoch"
        rows = []
        for name, (x, y) in series.items():
            at = dict(zip(x, y))
            rows.append((name, at.get(self.epoch.value)))
        self.readout.value = Table(["curve", f"value at epoch {self.epoch.value}"], rows, float_format=".3f")._repr_html_()

    def widget(self):
        import ipywidgets as W

        controls = W.HBox([self.run_select, W.VBox([self.metric, W.HBox(list(self.pairs.values())), self.epoch])])
        return W.VBox([controls, self.fig, self.readout])
