"""Engine callbacks: how probes hook into training without reaching into a method's internals.

The trainer calls, in order: ``on_fit_start`` once, then per epoch ``on_eval_end`` (after the
evaluation pass, with every evaluated model's outputs on the test set) and ``on_epoch_end``;
finally ``on_fit_end``. Hooks that return records (list of dicts, schema in
:mod:`workbench.engine.metrics`) get them appended to ``metrics.jsonl`` by the trainer; the
trainer fills in ``epoch`` if a record lacks it. ``every`` is the frequency in epochs; epoch 0
(before training) and the last epoch always run when ``on_eval_end`` runs there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

ROLES = ("student", "teacher", "dynamic_teacher")
PAIRS = {"T_s-S": ("teacher", "student"), "T_d-S": ("dynamic_teacher", "student"),
         "T_s-T_d": ("teacher", "dynamic_teacher")}


@dataclass
class RoleOutputs:
    """One evaluated model's outputs over the eval set (CPU, float32, same example order for
    every role). ``features`` is the penultimate pooled feature (input of the classifier),
    kept for at most ``probe_samples`` examples (the first ones) or None if not requested."""

    logits: torch.Tensor  # (N, K)
    targets: torch.Tensor  # (N,)
    features: Optional[torch.Tensor] = None  # (M, D), M <= N


class Callback:
    every: int = 1

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch == 0 or epoch == last_epoch or epoch % max(1, self.every) == 0

    def on_fit_start(self, trainer: "Trainer") -> None:
        pass

    def on_eval_end(self, trainer: "Trainer", epoch: int, outputs: dict[str, RoleOutputs]) -> list[dict]:
        return []

    def on_epoch_end(self, trainer: "Trainer", epoch: int) -> list[dict]:
        return []

    def on_fit_end(self, trainer: "Trainer") -> None:
        pass
