"""How a run shows progress: a :class:`Progress` wraps the loops (one bar per loop) and receives
one summary line per finished epoch. The trainer knows nothing else about displays.

- :class:`TerminalProgress` (default): transient tqdm bars in a terminal or notebook, one
  printed line per epoch ending with the phase's overall ETA (:class:`EpochClock`); in logs (no
  tty, papermill) no bars, just the lines.
- ``workbench.nb.progress.NotebookProgress``: one display per phase updated in place (works in
  JupyterLab, papermill and nbconvert; no widgets, so saved notebooks keep a readable static
  record instead of dead widget models).
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Optional

SECONDS_PER_MINUTE = 60
MINUTES_PER_HOUR = 60


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on)."""
    m, s = divmod(int(round(seconds)), SECONDS_PER_MINUTE)
    if m < MINUTES_PER_HOUR:
        return f"{m}:{s:02d}"
    h, m = divmod(m, MINUTES_PER_HOUR)
    return f"{h}:{m:02d}:{s:02d}"


class EpochClock:
    """Elapsed time of a phase and the ETA of its remaining epochs, from the mean time of the
    epochs finished so far in this process, counted from the start of the first one (the set-up
    and the evaluation before epoch 1 are not an epoch's cost). A resumed run counts from the
    epoch it resumed at: the epochs done before are neither time spent nor time left."""

    def __init__(self, epochs: int, start: int = 1):
        self.epochs, self.start = epochs, start
        self.done = 0
        self.t0 = time.perf_counter()
        self.t_first: Optional[float] = None

    def epoch_started(self) -> None:
        """A training epoch begins (only the first call counts)."""
        if self.t_first is None:
            self.t_first = time.perf_counter()

    def tick(self) -> None:
        """One more epoch finished."""
        self.done += 1

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining_epochs(self) -> int:
        return max(0, self.epochs - (self.start - 1) - self.done)

    def eta(self) -> Optional[float]:
        """Seconds left, or None before the first finished epoch."""
        if not self.done:
            return None
        spent = time.perf_counter() - (self.t0 if self.t_first is None else self.t_first)
        return spent / self.done * self.remaining_epochs()

    def text(self) -> str:
        """``elapsed 1:02, ETA 3:10`` (``ETA -`` before the first epoch, ``done`` after the last)."""
        eta = self.eta()
        left = "done" if self.done and not self.remaining_epochs() else \
            ("ETA -" if eta is None else f"ETA {clock(eta)}")
        return f"elapsed {clock(self.elapsed())}, {left}"


def interactive() -> bool:
    """Per-step bars in terminals and notebooks; logs get one line per epoch instead."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class Progress:
    """The interface (and a silent implementation)."""

    def phase(self, title: str, epochs: int, start: int = 1) -> None:
        """A training phase starts (``title`` e.g. "teacher resnet20" or "gpd resnet8")."""

    def bar(self, iterable: Iterable, desc: str, total: Optional[int] = None, epoch: int = 0) -> Iterable:
        """Wrap one loop (an epoch's steps, an eval pass); ``epoch`` is 0 outside training."""
        return iterable

    def postfix(self, **values) -> None:
        """Latest step values (e.g. the loss) of the running loop."""

    def line(self, msg: str) -> None:
        """One finished epoch, summarised."""

    def close(self) -> None:
        """The phase ended (normally or not)."""


class TerminalProgress(Progress):
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None
        self.clock: Optional[EpochClock] = None

    def phase(self, title: str, epochs: int, start: int = 1) -> None:
        """A header line, so the teacher phase and the distillation phase read apart."""
        self.clock = EpochClock(epochs, start)
        self._write(f"== {title}: epochs {start}..{epochs} ==" if start <= epochs else f"== {title} ==")

    def bar(self, iterable, desc, total=None, epoch=0):
        if epoch and self.clock is not None:
            self.clock.epoch_started()
        if not (self.enabled and interactive()):
            return iterable
        from tqdm.auto import tqdm

        self._bar = tqdm(iterable, leave=False, dynamic_ncols=True, mininterval=0.5, desc=desc, total=total)
        return self._bar

    def postfix(self, **values) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def line(self, msg: str) -> None:
        """The epoch's line and the phase's overall time: elapsed and ETA of the remaining epochs."""
        if self.clock is not None:
            self.clock.tick()
            msg = f"{msg}  | {self.clock.text()}"
        self._write(msg)

    def _write(self, msg: str) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        tqdm.write(msg)
