"""Engine callbacks: how probes hook into training without reaching into a method's internals.

The trainer calls, in order: ``on_fit_start`` once, then per epoch ``on_eval_end`` (after the
evaluation pass, with every evaluated model's outputs on the test set) and ``on_epoch_end``;
finally ``on_fit_end``. Every hook receives a :class:`FitState` -- what a callback may know of
the run (epochs, folder, metrics file, device, the models by role) -- never the trainer. Hooks
that return records (list of dicts, schema in :mod:`workbench.engine.metrics`) get them
appended to ``metrics.jsonl`` by the trainer; the trainer fills in ``epoch`` if a record lacks
it. ``every`` is the frequency in epochs; epoch 0 (before training) and the last epoch always run
when ``on_eval_end`` runs there. A callback with ``needs_features`` makes the evaluation keep
penultimate features -- only on the epochs it is due.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .roles import EMA_SUFFIX, role_label  # noqa: F401  (re-exported: the records' roles live in engine.roles)


@dataclass
class RoleOutputs:
    """One evaluated model's outputs over the eval set (CPU, float32, same example order for
    every role). ``features`` is the penultimate pooled feature (input of the classifier),
    kept for at most ``probe_samples`` examples (the first ones) or None if not requested."""

    logits: torch.Tensor  # (N, K)
    targets: torch.Tensor  # (N,)
    features: Optional[torch.Tensor] = None  # (M, D), M <= N
    #: which outputs these are, for models that say (``models.readout``; ViTs:
    #: ``{"logits_from": "cls+dist", "features_from": "cls_token"}``), copied into their records
    readout: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FitState:
    """What a callback may know of the run."""

    epochs: int
    run_dir: Path
    metrics_path: Path
    device: Any
    eval_models: Callable[[], dict]  # role -> plain model (the same ones the evaluation runs)


class Callback:
    every: int = 1
    needs_features: bool = False

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch == 0 or epoch == last_epoch or epoch % max(1, self.every) == 0

    def on_fit_start(self, state: FitState) -> None:
        pass

    def on_eval_end(self, state: FitState, epoch: int, outputs: dict[str, RoleOutputs]) -> list[dict]:
        return []

    def on_epoch_end(self, state: FitState, epoch: int) -> list[dict]:
        return []

    def on_fit_end(self, state: FitState) -> None:
        pass
