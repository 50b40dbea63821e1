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
