"""Progress in notebooks: one display per training phase (teacher, distillation), updated in
place -- a bar with epoch/step/ETA and the latest epoch's summary line -- and, optionally, the
gap curves redrawn after each epoch. No widgets: JupyterLab, papermill and nbconvert all show
the same thing, outputs never pile up (JupyterLab folds long outputs, which froze the visible
progress and hid errors), and a saved notebook keeps a compact static record of each phase."""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Optional

from ..engine.callbacks import PAIRS, Callback
from ..engine.progress import Progress

MIN_UPDATE_S = 0.5  # at most two in-place updates per second (each is a message to the front end)
BAR_WIDTH_PX = 240
SECONDS_PER_MINUTE = 60


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), SECONDS_PER_MINUTE)
    return f"{m}:{s:02d}"


def _display(obj, handle=None):
    from IPython.display import display

    if handle is None:
        return display(obj, raw=isinstance(obj, dict), display_id=True)
    handle.update(obj, raw=isinstance(obj, dict))
    return handle


class NotebookProgress(Progress):
    """A :class:`workbench.engine.progress.Progress` for notebooks (see the module docstring)."""

    def __init__(self):
        self.handle = None
        self.title, self.epochs, self.start = "", 0, 1
        self.epoch = self.step = self.steps = self.done = 0
        self.training = False
        self.desc, self.last_line, self.postfix_text = "", "", ""
        self.t0 = self._shown = 0.0
        self.finished = False

    # -- Progress --------------------------------------------------------------------------------
    def phase(self, title: str, epochs: int, start: int = 1) -> None:
        self.handle = None  # a new display for each phase
        self.title, self.epochs, self.start = title, epochs, start
        self.epoch, self.step, self.steps, self.done, self.desc = start - 1, 0, 0, 0, "evaluating"
        self.training = False
        self.last_line, self.postfix_text, self.finished = "", "", False
        self.t0 = time.perf_counter()
        self._show(force=True)

    def bar(self, iterable, desc, total=None, epoch=0):
        self.training = bool(epoch)
        if epoch:
            self.epoch = epoch
        self.desc, self.step = desc, 0
        self.steps = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else 0)
        return self._iterate(iterable)

    def postfix(self, **values) -> None:
        self.postfix_text = "  ".join(f"{k} {v}" for k, v in values.items())

    def line(self, msg: str) -> None:
        self.last_line, self.done, self.training = msg, self.done + 1, False
        self._show(force=True)

    def close(self) -> None:
        self.finished = True
        self._show(force=True)

    # -- rendering -------------------------------------------------------------------------------
    def _iterate(self, iterable):
        for item in iterable:
            yield item
            self.step += 1
            self._show()

    def fraction(self) -> float:
        """Done share of this phase's epochs (counted from where it started: resumed runs too)."""
        todo = self.epochs - self.start + 1
        if todo <= 0:
            return 1.0
        within = self.step / self.steps if (self.training and self.steps) else 0.0
        return min(1.0, (self.done + within) / todo)

    def status(self) -> tuple[str, str]:
        """(plain text, HTML) of the current state."""
        elapsed = time.perf_counter() - self.t0
        frac = self.fraction()
        if self.finished:
            state = (f"done: {self.epoch}/{self.epochs} epochs" if self.epoch >= self.epochs
                     else f"stopped at epoch {self.epoch}/{self.epochs}") + f" in {_clock(elapsed)}"
        else:
            eta = f", ETA {_clock(elapsed * (1 - frac) / frac)}" if frac > 0 else ""
            where = f"{self.desc} step {self.step}/{self.steps}" if self.steps else self.desc
            state = f"epoch {max(self.epoch, 0)}/{self.epochs} · {where} · {_clock(elapsed)}{eta}"
            if self.postfix_text:
                state += f" · {self.postfix_text}"
        text = f"{self.title} | {state}" + (f"\n  {self.last_line}" if self.last_line else "")
        bar = (f'<progress value="{frac:.4f}" max="1" style="width:{BAR_WIDTH_PX}px;vertical-align:middle">'
               f"</progress> {100 * frac:.0f}% ")
        last = f'<pre style="margin:2px 0">{html.escape(self.last_line)}</pre>' if self.last_line else ""
        page = (f'<div class="wb-progress"><b>{html.escape(self.title)}</b> {bar}'
                f"{html.escape(state)}{last}</div>")
        return text, page

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._shown < MIN_UPDATE_S:
            return
        self._shown = now
        text, page = self.status()
        self.handle = _display({"text/plain": text, "text/html": page}, self.handle)


class LiveGapFigure(Callback):
    """The top-1 gaps (T_s-S, T_d-S, T_s-T_d) redrawn in place after every epoch from the run's
    ``metrics.jsonl``, as a small inline SVG chart: no JavaScript, so it updates in JupyterLab
    (whose plotly renderer does not redraw updated outputs), papermill and nbconvert alike, and
    the saved notebook keeps the final chart. The full interactive figures follow in the notebook."""

    def __init__(self, metric: str = "acc_gap"):
        self.metric = metric
        self.handle = None

    def on_epoch_end(self, state, epoch: int) -> list[dict]:
        from ..engine.metrics import read_metrics

        if not Path(state.metrics_path).exists():
            return []
        self.draw(read_metrics(state.metrics_path), state.epochs)
        return []

    def series(self, records: list[dict]) -> dict[str, list[tuple[int, float]]]:
        out = {}
        for pair in PAIRS:
            pts = sorted((r["epoch"], r["value"]) for r in records if r.get("kind") == "gap"
                         and r.get("metric") == self.metric and r.get("pair") == pair and r.get("value") is not None)
            if pts:
                out[pair] = pts
        return out

    def draw(self, records: list[dict], epochs: Optional[int] = None) -> None:
        series = self.series(records)
        if series:
            last = {p: pts[-1] for p, pts in series.items()}
            text = "live top-1 gaps (points): " + ", ".join(f"{p} {v:+.2f} @ {e}" for p, (e, v) in last.items())
            self.handle = _display({"text/plain": text, "text/html": svg_chart(series, epochs)}, self.handle)


SVG_W, SVG_H, SVG_PAD_L, SVG_PAD_R, SVG_PAD_T, SVG_PAD_B = 560, 220, 52, 96, 24, 34
SVG_COLORS = ("#636efa", "#ef553b", "#00cc96")  # plotly's first colours, as the pair colours of the figures
SVG_TICKS = 4


def svg_chart(series: dict[str, list[tuple[int, float]]], epochs: Optional[int] = None,
              title: str = "live: top-1 gap (percentage points) vs epoch") -> str:
    """A dependency-free line chart: one polyline per series, y ticks, x from 0 to ``epochs``."""
    xs = [e for pts in series.values() for e, _ in pts]
    ys = [v for pts in series.values() for _, v in pts]
    x1 = max(epochs or 0, max(xs), 1)
    y0, y1 = min(ys + [0.0]), max(ys + [0.0])
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    w, h = SVG_W - SVG_PAD_L - SVG_PAD_R, SVG_H - SVG_PAD_T - SVG_PAD_B

    def px(e):
        return SVG_PAD_L + w * e / x1

    def py(v):
        return SVG_PAD_T + h * (y1 - v) / (y1 - y0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="{SVG_PAD_L}" y="14" font-size="12">{html.escape(title)}</text>',
             f'<rect x="{SVG_PAD_L}" y="{SVG_PAD_T}" width="{w}" height="{h}" fill="#f4f6fb"/>']
    for i in range(SVG_TICKS + 1):
        v = y0 + (y1 - y0) * i / SVG_TICKS
        parts.append(f'<line x1="{SVG_PAD_L}" x2="{SVG_PAD_L + w}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#dde"/>'
                     f'<text x="{SVG_PAD_L - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for e in (0, x1):
        parts.append(f'<text x="{px(e):.1f}" y="{SVG_PAD_T + h + 14}" text-anchor="middle">{e}</text>')
    parts.append(f'<text x="{SVG_PAD_L + w / 2:.1f}" y="{SVG_H - 4}" text-anchor="middle">epoch</text>')
    for k, (name, pts) in enumerate(series.items()):
        color = SVG_COLORS[k % len(SVG_COLORS)]
        line = " ".join(f"{px(e):.1f},{py(v):.1f}" for e, v in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{line}"/>')
        ly = SVG_PAD_T + 14 * (k + 1)
        parts.append(f'<line x1="{SVG_PAD_L + w + 8}" x2="{SVG_PAD_L + w + 24}" y1="{ly - 4}" y2="{ly - 4}" '
                     f'stroke="{color}" stroke-width="2"/><text x="{SVG_PAD_L + w + 28}" y="{ly}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return f'<div class="wb-live-gaps">{"".join(parts)}</div>'
