"""explore.ipynb: find runs under a folder, list them, and an interactive explorer of their gap
curves and top-1 (ipywidgets + plotly FigureWidget).

Runs are named ``<dataset>_<teacher>-<student>_<method>_s<seed>-<hash of the settings>``: two
runs of one recipe that differ in, say, ``epochs`` differ only by that hash. Lists and legends
therefore name each run by what sets it apart from its namesakes (:func:`run_labels`: ``...
(epochs=30)``), and say which runs are still training (a live lock holder, :func:`run_state`);
the explorer's *refresh* (or *follow*) re-reads the folder, so runs started or advanced since
show up."""
from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config import RUNTIME_KEYS
from ..engine.roles import gap_pairs, role_labels
from ..engine.lock import LOCK_FILE  # held, with the holder's pid in it, while a run trains
from ..probes.figures import WHOLE_EPOCH_TICKS_UP_TO, axis_label
from .tables import Table

TOP1 = "top1"  # pseudo-metric of the explorer: test top-1 of S, T_d, T_s
ON_STYLE = "info"  # ipywidgets button style of a pair toggle that is on
HASH_SUFFIX = re.compile(r"-[0-9a-f]{8}$")  # the settings hash ending a derived run name
#: keys shown first when runs of one name differ (what a researcher changes most)
FIRST_KEYS = ("epochs", "method", "base", "dot", "ctkd", "grad_clip", "ratio", "branches", "gpd_lambda",
              "teacher", "student", "lr", "batch_size", "schedule", "ema_decay")
MAX_SHOWN_KEYS = 4
FOLLOW_S = 10.0  # the explorer's follow mode re-reads the runs this often while one is training


def find_runs(root) -> dict[str, Path]:
    """``{name relative to root: run dir}`` of every folder under ``root`` with a metrics log,
    except the teacher cache (``<root>/teachers/``: teachers trained for other runs). A run
    still training is listed as soon as its first record is written."""
    from ..engine.metrics import METRICS_FILE
    from ..experiment import TEACHERS_DIR

    root = Path(root)
    if not root.is_dir():
        return {}
    return {str(p.parent.relative_to(root)): p.parent for p in sorted(root.rglob(METRICS_FILE))
            if p.relative_to(root).parts[0] != TEACHERS_DIR}


def run_config(run_dir) -> dict[str, Any]:
    """The run's ``config.json`` as one flat dict (nested sections as ``section.key``); {} if absent."""
    try:
        data = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    return flat(data) if isinstance(data, dict) else {}


def _key_order(key: str) -> tuple:
    base = key.rsplit(".", 1)[-1]
    return (FIRST_KEYS.index(base) if base in FIRST_KEYS else len(FIRST_KEYS), key)


def _value(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def run_labels(runs: dict[str, Path]) -> dict[str, str]:
    """``{run name: label}``: the name without its settings hash, plus -- where several runs share
    that name -- the settings that tell them apart (``epochs`` and the method keys first, at most
    :data:`MAX_SHOWN_KEYS`). The full name stays where no setting tells two runs apart."""
    stems = {name: HASH_SUFFIX.sub("", name) for name in runs}
    labels = {}
    for stem in dict.fromkeys(stems.values()):
        group = [n for n in runs if stems[n] == stem]
        if len(group) == 1:
            labels[group[0]] = stem
            continue
        configs = {n: run_config(runs[n]) for n in group}
        keys = sorted({k for c in configs.values() for k in c}, key=_key_order)
        differ = [k for k in keys if k.rsplit(".", 1)[-1] not in RUNTIME_KEYS
                  and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs.values()}) > 1]
        for n in group:
            shown = [f"{k}={_value(configs[n].get(k))}" for k in differ[:MAX_SHOWN_KEYS]]
            more = f", +{len(differ) - MAX_SHOWN_KEYS} more" if len(differ) > MAX_SHOWN_KEYS else ""
            labels[n] = f"{stem} ({', '.join(shown)}{more})" if shown else n
    counts = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {n: (label if counts[label] == 1 else n) for n, label in labels.items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def training(run_dir) -> bool:
    """Whether a live process holds the run's lock (reads the holder's pid; never takes the
    lock, so a run starting meanwhile is not disturbed). A lock left by a killed run names a
    dead pid: not training."""
    try:
        pid = int((Path(run_dir) / LOCK_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return _alive(pid)


def run_state(run_dir, records: list[dict]) -> str:
    """``training``, ``done`` or ``stopped`` (no summary and nobody training it)."""
    if training(run_dir):
        return "training"
    return "done" if any(r.get("kind") == "summary" for r in records) else "stopped"


def runs_table(root) -> Table:
    """One row per run: its label (what sets it apart), state, epochs done of planned, S top-1."""
    from ..engine.metrics import read_metrics

    runs = find_runs(root)
    labels = run_labels(runs)
    rows = []
    for name, path in runs.items():
        recs = read_metrics(path)
        s = [r for r in recs if r.get("kind") == "summary" and r.get("role") == "student"]
        epochs = max((r["epoch"] for r in recs if r.get("kind") == "train"), default=0)
        planned = run_config(path).get("epochs")
        last = max((r for r in recs if r.get("kind") == "eval" and r.get("role") == "student"),
                   key=lambda r: r["epoch"], default=None)
        rows.append((labels[name], run_state(path, recs), f"{epochs}/{planned}" if planned else epochs,
                     s[0]["best_top1"] if s else None, s[0]["last_top1"] if s else (last["top1"] if last else None)))
    return Table(["run", "state", "epochs", "best S top-1", "last S top-1"], rows, title=f"runs under {root}")


class Explorer:
    """Interactive run explorer (ipywidgets + plotly FigureWidget): pick runs and a metric, toggle
    the pairs T_s-S / T_d-S / T_s-T_d, scrub epochs with a slider (a marker line and a readout
    of the values at that epoch); *refresh* re-reads the runs folder (new runs, new epochs of
    runs still training), *follow* does so every :data:`FOLLOW_S` seconds while one trains.
    All state changes go through :meth:`redraw` (testable headless)."""

    def __init__(self, root, selected: Optional[Sequence[str]] = None):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.root = Path(root)
        self.run_select = W.SelectMultiple(description="runs", layout=W.Layout(width="60%"))
        self.metric = W.Dropdown(description="metric")
        self.refresh_button = W.Button(description="refresh", icon="refresh",
                                       tooltip="re-read the runs folder: new runs, new epochs of running ones")
        self.follow = W.ToggleButton(value=False, description="follow", icon="eye",
                                     tooltip=f"refresh every {FOLLOW_S:g} s while a run is training")
        self._follower: Optional[threading.Thread] = None
        self._busy = True  # no redraws while the controls are filled in
        self.load(selected)
        self.pairs = {p: W.ToggleButton(value=True, description=p, icon="check", button_style=ON_STYLE)
                      for p in gap_pairs()}
        top = max((r["epoch"] for recs in self.records.values() for r in recs), default=0)
        self.epoch = W.IntSlider(value=top, min=0, max=max(1, top), description="epoch", continuous_update=True)
        self.readout = W.HTML()
        # legend below the plot: long run names must not squeeze the plot area
        self.fig = go.FigureWidget(layout=dict(height=460, xaxis_title="epoch", margin=dict(t=40),
                                               legend=dict(orientation="h", yanchor="top", y=-0.18, x=0)))
        for w in (self.run_select, self.metric, self.epoch, *self.pairs.values()):
            w.observe(lambda _change: self.redraw(), names="value")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.follow.observe(lambda change: self._start_following() if change["new"] else None, names="value")
        self._busy = False
        self.redraw()

    def load(self, selected: Optional[Sequence[str]] = None) -> None:
        """(Re-)read the runs folder: runs, their records, labels and states; keeps the selection
        (``selected`` on the first load) and the metric where they still exist."""
        from ..engine.metrics import read_metrics

        self.runs = find_runs(self.root)
        self.records = {name: read_metrics(p) for name, p in self.runs.items()}
        self.labels = run_labels(self.runs)
        self.states = {name: run_state(p, self.records[name]) for name, p in self.runs.items()}
        keep = [n for n in (selected if selected is not None else self.run_select.value) if n in self.runs]
        first = [n for n in self.runs if any(r.get("kind") == "gap" for r in self.records[n])][:1] or list(self.runs)[:1]
        self.run_select.options = [(self.labels[n] + (" [training]" if self.states[n] == "training" else ""), n)
                                   for n in self.runs]
        self.run_select.rows = min(8, max(2, len(self.runs)))
        self.run_select.value = tuple(keep or first)
        options = sorted({r["metric"] for recs in self.records.values() for r in recs if r.get("kind") == "gap"}) + [TOP1]
        current = self.metric.value
        self.metric.options = options
        self.metric.value = current if current in options else ("acc_gap" if "acc_gap" in options else options[0])

    def refresh(self) -> None:
        """Re-read the folder and redraw (the refresh button; follow mode calls it periodically)."""
        self._busy = True
        try:
            self.load()
        finally:
            self._busy = False
        self.redraw()

    def training(self) -> list[str]:
        """Names of the listed runs still training."""
        return [n for n, state in self.states.items() if state == "training"]

    def _start_following(self) -> None:
        if self._follower is not None and self._follower.is_alive():
            return
        self._follower = threading.Thread(target=self._follow_loop, daemon=True)
        self._follower.start()

    def _follow_loop(self) -> None:
        while self.follow.value:
            time.sleep(FOLLOW_S)
            if not (self.follow.value and self.follow_tick()):
                break

    def follow_tick(self) -> bool:
        """One step of follow mode: refresh; follow ends (toggle off) once nothing is training.
        Returns whether it goes on."""
        self.refresh()
        if not self.training():
            self.follow.value = False
        return self.follow.value

    def series(self) -> dict[str, tuple[list, list]]:
        """``{trace name: (epochs, values)}`` for the current selection."""
        out = {}
        several = len(self.run_select.value) > 1
        for run in self.run_select.value:
            recs = self.records[run]
            name = self.labels.get(run, run)
            if self.metric.value == TOP1:
                for role, label in role_labels().items():
                    pts = sorted((r["epoch"], r["top1"]) for r in recs if r.get("kind") == "eval" and r.get("role") == role)
                    if pts:
                        out[f"{label} ({name})" if several else label] = ([e for e, _ in pts], [v for _, v in pts])
                continue
            for pair, button in self.pairs.items():
                if not button.value:
                    continue
                pts = sorted((r["epoch"], r["value"]) for r in recs if r.get("kind") == "gap"
                             and r.get("pair") == pair and r.get("metric") == self.metric.value and r.get("value") is not None)
                if pts:
                    out[f"{pair} ({name})" if several else pair] = ([e for e, _ in pts], [v for _, v in pts])
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
            last = max((x for xs, _ in series.values() for x in xs), default=0)
            self.fig.layout.xaxis.dtick = 1 if last <= WHOLE_EPOCH_TICKS_UP_TO else None  # no 0.5 epochs
            self.fig.layout.yaxis.title = label
            self.fig.layout.title = f"{label} vs epoch"
        rows = []
        for name, (x, y) in series.items():
            at = dict(zip(x, y))
            rows.append((name, at.get(self.epoch.value)))
        self.readout.value = Table(["curve", f"value at epoch {self.epoch.value}"], rows, float_format=".3f")._repr_html_()

    def widget(self):
        import ipywidgets as W

        controls = W.HBox([self.run_select, W.VBox([self.metric, W.HBox(list(self.pairs.values())), self.epoch,
                                                    W.HBox([self.refresh_button, self.follow])])])
        return W.VBox([controls, self.fig, self.readout])
