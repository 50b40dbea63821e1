"""Learning-rate schedules as pure functions of training progress (so resuming needs no
scheduler state: the factor is recomputed from the epoch and step).

``progress`` is the fractional epoch index at the start of a step, in [0, epochs):
``epoch_index + step / steps_per_epoch``.
"""
from __future__ import annotations

import math

SCHEDULES = ("multistep", "cosine", "constant")


def lr_factor(schedule: str, progress: float, epochs: int, milestones=(), decay: float = 0.1,
              warmup_epochs: float = 0.0, steps_per_epoch: int = 1) -> float:
    """Multiplier of the base lr. multistep: ``decay ** #(milestones passed)`` with milestones
    in 1-based epochs as in the CIFAR KD codebases (epoch m+1 is the first decayed one);
    cosine: half-cosine from 1 to 0 over ``epochs``; warm-up: linear ramp over
    ``warmup_epochs``, reaching 1 at its end (per iteration)."""
    if schedule == "multistep":
        epoch_index = math.floor(progress + 1e-9)
        f = decay ** sum(epoch_index >= m for m in milestones)
    elif schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * progress / epochs))
    elif schedule == "constant":
        f = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}; valid choices: {', '.join(SCHEDULES)}")
    if warmup_epochs > 0 and progress < warmup_epochs:
        f *= min(1.0, (progress + 1.0 / steps_per_epoch) / warmup_epochs)
    return f


class TwoStageSchedule:
    """A method's per-epoch rescaling of the run's schedule (the trainer's ``Distiller.schedule``
    seam): the run's lr schedule runs over epochs 1..E (``boundary``) and restarts at epoch E + 1
    over the remaining epochs, scaled by ``stage2_lr`` (a configured warm-up runs again there);
    weight decay is multiplied by
    ``stage1_wd`` in the first stage and by ``stage2_wd`` in the second. (CTC, Cui et al. 2022:
    a cosine over each stage, the second from lr x 0.1, weight decay doubled in stage 1.)"""

    def __init__(self, boundary: int, stage2_lr: float = 1.0, stage1_wd: float = 1.0, stage2_wd: float = 1.0):
        self.boundary, self.stage2_lr = int(boundary), float(stage2_lr)
        self.stage1_wd, self.stage2_wd = float(stage1_wd), float(stage2_wd)

    def lr_factor(self, progress: float, epochs: int, run_factor) -> float:
        """``run_factor(progress, epochs)`` is the run's own schedule; ``progress`` as in
        :func:`lr_factor` (fractional 0-based epoch)."""
        if progress < self.boundary:
            return run_factor(progress, self.boundary)
        return self.stage2_lr * run_factor(progress - self.boundary, epochs - self.boundary)

    def weight_decay_factor(self, epoch: int) -> float:
        """Factor for 1-based ``epoch``."""
        return self.stage1_wd if epoch <= self.boundary else self.stage2_wd
