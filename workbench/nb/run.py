"""Running from a notebook: train (in this kernel or under torchrun), capture the trained models,
live curves that update after each epoch, and the re-check of the saved plain student."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional, Sequence

from .. import experiment
from ..config import ConfigError, RunConfig
from ..data import DatasetNotFoundError
from ..engine.callbacks import Callback
from ..engine.roles import gap_pairs
from .errors import RunError
from .progress import LiveGapFigure, NotebookProgress, terminal_echo
from .tables import Table


class CaptureModels(Callback):
    """Keeps the trained models (``{role: module}``, CPU/eval untouched) at the end of a fit so the
    notebook can draw feature maps of S, T_d and T_s without re-building the method."""

    def __init__(self):
        self.models: dict = {}

    def on_fit_end(self, state) -> None:
        self.models = dict(state.eval_models())


def in_kernel() -> bool:
    import sys

    return "ipykernel" in sys.modules


def show_traceback(exc: BaseException) -> None:
    """The full traceback of ``exc`` in a collapsed section (one click away), so that the error
    line that follows it stays the visible end of the cell."""
    import traceback

    from IPython.display import HTML, display

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    display(HTML(f"<details><summary>traceback ({html.escape(type(exc).__name__)})</summary>"
                 f"<pre>{html.escape(text)}</pre></details>"))


def train(cfg: RunConfig, nproc: int = 1, extra_callbacks: Sequence = (), echo=print, live_curves: bool = True):
    """Run (or resume) ``cfg``: in this process for ``nproc == 1`` (models captured for feature
    maps), under torchrun otherwise. Returns ``(RunResult, {role: module})`` -- the dict is
    empty for multi-process runs (the models live in the torchrun workers).

    In a notebook each phase (teacher, distillation) shows one display updated in place
    (:class:`NotebookProgress`; with ``WORKBENCH_TERMINAL_PROGRESS=1`` its lines also go to the
    terminal the kernel was started from, as ``make demo`` does) and, with ``live_curves`` and
    probes on, the gap curves are redrawn after each epoch. A failure ends the cell with one line saying what failed and what
    to do (:class:`RunError`), its traceback collapsed just above."""
    from ..engine import CheckpointError, NonFiniteLossError, Preempted
    from ..launch import DistributedRunError

    kernel = in_kernel()
    try:
        if nproc > 1:
            from ..launch import run_distributed

            return run_distributed(cfg, nproc, echo=echo), {}
        cap = CaptureModels()
        extra = [cap, *extra_callbacks]
        if kernel and live_curves and cfg.probe_every > 0:
            extra.append(LiveGapFigure())
        terminal = terminal_echo() if kernel else None  # make demo: progress in the terminal too
        log = echo if terminal is None else (lambda msg: (echo(msg), terminal(msg)))
        progress = NotebookProgress(echo=terminal) if kernel and cfg.progress else None
        result = experiment.run(cfg, extra_callbacks=extra, log=log, progress=progress)
        return result, cap.models
    except (Preempted, DistributedRunError) as e:  # a stop signal, or the workers' own one line
        raise RunError(str(e)) from None
    except (ConfigError, CheckpointError, DatasetNotFoundError, NonFiniteLossError) as e:
        if kernel:
            show_traceback(e)
        raise RunError(e.in_notebook() if isinstance(e, DatasetNotFoundError) else str(e)) from None
    except KeyboardInterrupt:
        raise RunError("interrupted; rerun the same command to resume") from None
    except Exception as e:  # an unexpected failure: still one visible line, traceback one click away
        if not kernel:
            raise
        show_traceback(e)
        raise RunError(f"{type(e).__name__}: {e} (full traceback in the collapsed section above)") from None


def test_set(cfg: RunConfig):
    from .. import data

    return data.build(cfg.dataset, "test", **cfg.dataset_options())


def eval_set(cfg: RunConfig):
    """What the run evaluated on: its test split, or under ``eval_on=val`` its validation split
    (the test set is then not built here either)."""
    from .. import data

    if cfg.eval_on == "val":
        return data.validation_split(cfg.dataset, cfg.dataset_options(), cfg.val_per_class, cfg.val_seed)
    return test_set(cfg)


def check_student(cfg: RunConfig, run_dir, records: list[dict]) -> Table:
    """Load the saved plain student (``student.pt``) into the ordinary architecture (strict) and
    re-evaluate it on the run's evaluation set (:func:`eval_set`); its top-1 must equal the logged
    last-epoch student top-1."""
    import torch

    from .. import data, models
    from ..engine.checkpoint import STUDENT

    info = data.info(cfg.dataset, **cfg.dataset_options())
    path = Path(run_dir) / STUDENT
    student = models.load(cfg.student, path, info.num_classes, info.in_channels, image_size=info.image_size,
                          **experiment.student_options(cfg)).eval()
    correct = total = 0
    loader = torch.utils.data.DataLoader(eval_set(cfg), batch_size=cfg.eval_batch_size)
    with torch.no_grad():
        for x, y in loader:
            correct += (student(x).argmax(1) == y).sum().item()
            total += len(y)
    logged = [r for r in records if r.get("kind") == "summary" and r.get("role") == "student"]
    params = sum(p.numel() for p in student.parameters())
    return Table(["file", "architecture", "parameters", "re-evaluated top-1", "logged last top-1"],
                 [(str(path), cfg.student, params, 100.0 * correct / max(1, total),
                   logged[0]["last_top1"] if logged else None)], title="extracted plain student")


class LiveCurves(Callback):
    """Updates a plotly ``FigureWidget`` after every epoch from the run's ``metrics.jsonl``: one
    trace per (pair) of ``metric`` gaps plus the student's top-1 (when ``top1=True``)."""

    def __init__(self, widget, metric: str = "acc_gap", pairs: Optional[Sequence[str]] = None):
        self.widget, self.metric, self.pairs = widget, metric, list(pairs if pairs is not None else gap_pairs())
        self.updates = 0

    def on_epoch_end(self, state, epoch: int) -> list[dict]:
        from ..engine.metrics import read_metrics

        recs = read_metrics(state.metrics_path) if Path(state.metrics_path).exists() else []
        self.update(recs)
        return []

    def update(self, recs: list[dict]) -> None:
        series = {p: sorted((r["epoch"], r["value"]) for r in recs if r.get("kind") == "gap"
                            and r.get("metric") == self.metric and r.get("pair") == p) for p in self.pairs}
        with self.widget.batch_update():
            for tr in self.widget.data:
                pts = series.get(tr.name, [])
                tr.x = [e for e, _ in pts]
                tr.y = [v for _, v in pts]
        self.updates += 1


def live_figure(title: str = "live: gaps as epochs finish", metric: str = "acc_gap"):
    """An empty FigureWidget with one trace per pair, for :class:`LiveCurves`."""
    import plotly.graph_objects as go

    fig = go.FigureWidget(layout=dict(title=title, xaxis_title="epoch", yaxis_title=metric, height=380))
    for p in gap_pairs():
        fig.add_scatter(x=[], y=[], mode="lines+markers", name=p)
    return fig
