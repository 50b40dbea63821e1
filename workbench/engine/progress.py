"""How a run shows progress: a :class:`Progress` wraps the loops (one bar per loop) and receives
one summary line per finished epoch. The trainer knows nothing else about displays.

- :class:`TerminalProgress` (default): transient tqdm bars in a terminal or notebook, one
  printed line per epoch; in logs (no tty, papermill) no bars, just the lines.
- ``workbench.nb.progress.NotebookProgress``: one display per phase updated in place (works in
  JupyterLab, papermill and nbconvert; no widgets, so saved notebooks keep a readable static
  record instead of dead widget models).
"""
from __future__ import annotations

import sys
from typing import Iterable, Optional


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

    def phase(self, title: str, epochs: int, start: int = 1) -> None:
        """A header line, so the teacher phase and the distillation phase read apart."""
        if self.enabled:
            self.line(f"== {title}: epochs {start}..{epochs} ==" if start <= epochs else f"== {title} ==")

    def bar(self, iterable, desc, total=None, epoch=0):
        if not (self.enabled and interactive()):
            return iterable
        from tqdm.auto import tqdm

        self._bar = tqdm(iterable, leave=False, dynamic_ncols=True, mininterval=0.5, desc=desc, total=total)
        return self._bar

    def postfix(self, **values) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def line(self, msg: str) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        tqdm.write(msg)
