"""Progress in notebooks: one display per training phase (teacher, distillation), updated in
place -- a bar with epoch/step/ETA and the latest epoch's summary line -- and, optionally, the
gap curves redrawn after each epoch. No widgets: JupyterLab, papermill and nbconvert all show
the same thing, outputs never pile up (JupyterLab folds long outputs, which froze the visible
progress and hid errors), and a saved notebook keeps a compact record of each phase.

A notebook run headless (``make demo``: papermill) shows nothing until it ends; with
``WORKBENCH_TERMINAL_PROGRESS=1`` in the environment the phases' header and epoch lines (with the
phase's ETA) are also written to the terminal the kernel was started from (:func:`terminal_echo`),
not into the notebook."""
from __future__ import annotations

import html
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from ..keys import FALSE_WORDS
from ..engine.callbacks import Callback
from ..engine.roles import gap_pairs
from ..engine.progress import EpochClock, Progress, clock

MIN_UPDATE_S = 0.5  # at most two in-place updates per second (each is a message to the front end)
BAR_WIDTH_PX = 240
ECHO_ENV = "WORKBENCH_TERMINAL_PROGRESS"
OFF_WORDS = ("",) + FALSE_WORDS  # unset, or a word the config reads as false


def terminal_echo() -> Optional[Callable[[str], None]]:
    """With ``WORKBENCH_TERMINAL_PROGRESS`` set (not 0/false/no/off): a function writing one line
    to the process's real stderr -- in a kernel, the terminal papermill or JupyterLab was started
    from (ipykernel's ``sys.stderr.fileno()`` is a copy of that descriptor; what is written there
    does not reach the notebook). None otherwise."""
    if os.environ.get(ECHO_ENV, "").strip().lower() in OFF_WORDS:
        return None
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fd = sys.__stderr__.fileno()

    def write(line: str) -> None:
        try:
            os.write(fd, (line + "\n").encode("utf-8", "replace"))
        except OSError:  # the terminal went away: the notebook's own record stays
            pass

    return write


def _display(obj, handle=None):
    from IPython.display import display

    if handle is None:
        return display(obj, raw=isinstance(obj, dict), display_id=True)
    handle.update(obj, raw=isinstance(obj, dict))
    return handle


class NotebookProgress(Progress):
    """A :class:`workbench.engine.progress.Progress` for notebooks (see the module docstring).
    ``echo``: also write each phase's header and epoch lines there (:func:`terminal_echo`)."""

    def __init__(self, echo: Optional[Callable[[str], None]] = None):
        self.echo = echo
        self.handle = None
        self.title, self.epochs, self.start = "", 0, 1
        self.epoch = self.step = self.steps = self.done = 0
        self.training = False
        self.desc, self.last_line, self.postfix_text = "", "", ""
        self.t0 = self._shown = 0.0
        self.finished = False
        self.clock: Optional[EpochClock] = None

    # -- Progress --------------------------------------------------------------------------------
    def phase(self, title: str, epochs: int, start: int = 1) -> None:
        self.handle = None  # a new display for each phase
        self.title, self.epochs, self.start = title, epochs, start
        self.epoch, self.step, self.steps, self.done, self.desc = start - 1, 0, 0, 0, "evaluating"
        self.training = False
        self.last_line, self.postfix_text, self.finished = "", "", False
        self.t0 = time.perf_counter()
        self.clock = EpochClock(epochs, start)
        if self.echo:
            self.echo(f"== {title}: epochs {start}..{epochs} ==" if start <= epochs else
                      f"== {title}: already complete ({epochs} epochs) ==")
        self._show(force=True)

    def bar(self, iterable, desc, total=None, epoch=0):
        self.training = bool(epoch)
        if epoch:
            self.epoch = epoch
            if self.clock is not None:
                self.clock.epoch_started()
        self.desc, self.step = desc, 0
        self.steps = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else 0)
        return self._iterate(iterable)

    def postfix(self, **values) -> None:
        self.postfix_text = "  ".join(f"{k} {v}" for k, v in values.items())

    def line(self, msg: str) -> None:
        self.last_line, self.done, self.training = msg, self.done + 1, False
        if self.clock is not None:
            self.clock.tick()
            if self.echo:
                self.echo(f"{msg}  | {self.clock.text()}")
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

    def _within(self) -> float:
        return self.step / self.steps if (self.training and self.steps) else 0.0

    def fraction(self) -> float:
        """Done share of the phase's epochs, counting those finished before a resume: a run resumed
        at epoch 7 of 10 starts its bar at 60 %, not at 0."""
        if self.epochs <= 0:
            return 1.0
        return min(1.0, (self.start - 1 + self.done + self._within()) / self.epochs)

    def eta(self) -> Optional[float]:
        """Seconds left, from this session's pace (epochs done before a resume took no time here)."""
        todo = self.epochs - self.start + 1
        session = (self.done + self._within()) / todo if todo > 0 else 1.0
        if session <= 0:
            return None
        return (time.perf_counter() - self.t0) * (1 - min(1.0, session)) / session

    def status(self) -> tuple[str, str]:
        """(plain text, HTML) of the current state."""
        elapsed = time.perf_counter() - self.t0
        frac = self.fraction()
        if self.finished:
            state = (f"done: {self.epoch}/{self.epochs} epochs" if self.epoch >= self.epochs
                     else f"stopped at epoch {self.epoch}/{self.epochs}") + f" in {clock(elapsed)}"
        else:
            eta = self.eta()
            eta_text = f", ETA {clock(eta)}" if eta is not None else ""
            task = "train" if self.training else self.desc  # the epoch is said once, in front
            where = f"{task} step {self.step}/{self.steps}" if self.steps else task
            state = f"epoch {max(self.epoch, 0)}/{self.epochs} · {where} · {clock(elapsed)}{eta_text}"
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
        for pair in gap_pairs():
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
SVG_TICKS = 4  # about this many intervals per axis
NICE_STEPS = (1, 2, 2.5, 5, 10)  # tick steps are one of these times a power of ten
MAX_TICK_DECIMALS = 6


def nice_ticks(lo: float, hi: float, target: int = SVG_TICKS, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi] (steps 1, 2, 2.5 or 5 x 10^k; whole numbers when
    ``integer``), about ``target`` intervals; the first and last tick bound the axis."""
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in NICE_STEPS if m * mag >= raw * (1 - 1e-9))
    if integer:
        step = max(1, round(step)) if step >= 1 else 1
    first, last = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int(round((last - first) / step)) + 1)]


def _tick_text(v: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = next(d for d in range(MAX_TICK_DECIMALS + 1) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)
                    or d == MAX_TICK_DECIMALS)  # as many as the step has: 25 -> 0, 2.5 -> 1, 0.25 -> 2
    text = f"{v:.{decimals}f}"
    return "0" if float(text) == 0 else text


def svg_chart(series: dict[str, list[tuple[int, float]]], epochs: Optional[int] = None,
              title: str = "live: top-1 gap (percentage points) vs epoch") -> str:
    """A dependency-free line chart: one polyline per series, round y ticks with a zero line,
    x from 0 to ``epochs``."""
    xs = [e for pts in series.values() for e, _ in pts]
    ys = [v for pts in series.values() for _, v in pts]
    x1 = max(epochs or 0, max(xs), 1)  # the axis ends at the last epoch; round ticks inside it
    xticks = [t for t in nice_ticks(0, x1, integer=True) if t <= x1]
    if xticks[-1] != x1:  # the last epoch is labelled; a round tick crowding it is left out
        if len(xticks) > 1 and x1 - xticks[-1] < (xticks[1] - xticks[0]) / 2:
            xticks.pop()
        xticks.append(x1)
    yticks = nice_ticks(min(ys + [0.0]), max(ys + [0.0]))
    y0, y1 = yticks[0], yticks[-1]
    w, h = SVG_W - SVG_PAD_L - SVG_PAD_R, SVG_H - SVG_PAD_T - SVG_PAD_B

    def px(e):
        return SVG_PAD_L + w * e / x1

    def py(v):
        return SVG_PAD_T + h * (y1 - v) / (y1 - y0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="{SVG_PAD_L}" y="14" font-size="12">{html.escape(title)}</text>',
             f'<rect x="{SVG_PAD_L}" y="{SVG_PAD_T}" width="{w}" height="{h}" fill="#f4f6fb"/>']
    for v in yticks:
        zero = v == 0
        stroke = 'stroke="#667" stroke-width="1.2" class="wb-zero-line"' if zero else 'stroke="#dde"'
        parts.append(f'<line x1="{SVG_PAD_L}" x2="{SVG_PAD_L + w}" y1="{py(v):.1f}" y2="{py(v):.1f}" {stroke}/>'
                     f'<text x="{SVG_PAD_L - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{_tick_text(v, yticks)}</text>')
    for e in xticks:
        parts.append(f'<text x="{px(e):.1f}" y="{SVG_PAD_T + h + 14}" text-anchor="middle">{int(e)}</text>')
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
