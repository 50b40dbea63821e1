"""A frozen copy of the student taken at the end of an epoch: the static teacher of
``teacher=snapshot@E`` and what CTC's second stage contrasts against."""
from __future__ import annotations

import torch
from torch import nn

from .outputs import Outputs, freeze, run_with_features


class Snapshot(nn.Module):
    """A frozen copy of the deployable student, filled at the end of epoch ``epoch`` (1-based)
    by :meth:`take` and unchanged afterwards. The module exists from the start (so checkpoints
    before and after the boundary have the same keys); ``taken`` says whether it holds the
    snapshot yet."""

    def __init__(self, model: nn.Module, epoch: int):
        super().__init__()
        self.model = freeze(model)
        self.epoch = int(epoch)
        self.register_buffer("taken", torch.zeros((), dtype=torch.bool))

    @property
    def ready(self) -> bool:
        return bool(self.taken)

    @torch.no_grad()
    def take(self, source: nn.Module) -> None:
        self.model.load_state_dict(source.state_dict())
        self.taken.fill_(True)

    def train(self, mode: bool = True):
        super().train(False)  # always in eval mode
        return self

    def outputs(self, x: torch.Tensor, names) -> Outputs:
        with torch.no_grad():
            return run_with_features(self.model, x, dict.fromkeys(names), detach=True)
