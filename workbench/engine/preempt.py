"""Preemption: a scheduler's stop signal ends a run at the next safe point, with a checkpoint.

SLURM sends SIGTERM on preemption and at the time limit (and, when configured with
``--signal``, SIGUSR1/SIGUSR2 some time before it); other schedulers do the same. While a run
is active (:func:`watch`, held by :func:`workbench.experiment.run` and ``Trainer.fit``) these
signals only set a flag; the trainer looks at it at its safe points:

- after every optimizer step: it writes a *mid-epoch* checkpoint (the weights after that step,
  the position in the epoch, the RNG states at that step, the epoch's partial loss/accuracy
  sums), so the epoch's work is kept;
- after every epoch's checkpoint: a signal that came during evaluation, probes, a data pass or
  the checkpoint write itself stops there, with the normal epoch-end checkpoint;

then raises :class:`Preempted` (signal, epoch, step, checkpoint path). Rerunning the same command
resumes; the resumed run is bit-identical to an uninterrupted one (see ``Trainer``'s docstring
for the DataLoader-worker limit). Under DDP the ranks agree on the flag after every step (one
all-reduce of a single number, :func:`workbench.engine.distributed.any_true`), so all stop at
the same step; rank 0 writes.

The previous handlers are restored when the outermost :func:`watch` ends (another program in the
process -- submitit, a notebook -- may have its own).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Optional

#: the signals that stop a run with a checkpoint (SIGINT keeps Python's KeyboardInterrupt)
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; rerun the same command to resume.

    ``signal``: its name (``"SIGTERM"``); ``epoch``: the epoch it stopped in (or after, when
    ``step`` is None); ``step``: the optimizer steps of that epoch done and saved (None: it stopped
    at the epoch end); ``steps``: the epoch's step count; ``checkpoint``: the checkpoint to resume
    from (None when the run stopped before writing any)."""

    def __init__(self, signal: str, epoch: int, step: Optional[int], steps: Optional[int],
                 checkpoint: Optional[Path], epochs: Optional[int] = None):
        self.signal, self.epoch, self.step, self.steps = signal, epoch, step, steps
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        of = f"/{epochs}" if epochs else ""
        if step is not None:
            where = f"in epoch {epoch}{of} after step {step}/{steps}"
        elif epoch > 0:
            where = f"after epoch {epoch}{of}"
        else:
            where = "before training"
        saved = f"checkpoint {self.checkpoint}" if self.checkpoint is not None else "no checkpoint yet"
        super().__init__(f"stopped by {signal} {where} ({saved}); rerun the same command to resume")


_lock = threading.Lock()
_state = {"depth": 0, "signal": None, "previous": {}}


def _handler(signum, _frame) -> None:
    if _state["signal"] is None:
        _state["signal"] = signal.Signals(signum).name


def requested() -> Optional[str]:
    """The name of the stop signal received while watching, or None."""
    return _state["signal"]


@contextlib.contextmanager
def watch():
    """Turn the stop signals into a flag for the ``with`` block (nested blocks share the outermost
    one's handlers; the previous handlers come back when it ends). Outside the main thread
    signals cannot be handled by Python: then it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        if _state["depth"] == 0:
            _state["signal"] = None
            for name in SIGNALS:
                if hasattr(signal, name):
                    _state["previous"][name] = signal.signal(getattr(signal, name), _handler)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                for name, previous in _state["previous"].items():
                    signal.signal(getattr(signal, name), previous if previous is not None else signal.SIG_DFL)
                _state["previous"] = {}
                _state["signal"] = None
