"""Own terms: loss terms on the trained model's own outputs that need no static teacher (CTC's
contrastive terms), added to any method with :meth:`workbench.methods.Distiller.add_term` (GPD: on
its student view). Together they may need the batch's dataset indices, the snapshot's outputs,
and one no-grad pass over the training data after an epoch (:class:`DataPass`)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .outputs import Outputs
from .snapshot import Snapshot


class AuxTerm(nn.Module):
    """A loss term on the trained model's own outputs, without a static teacher (attached with
    :meth:`Distiller.add_term`). ``terms(s, y, index, snap)`` gets the student's :class:`Outputs`
    (with ``student_features`` tapped), the targets, the batch's dataset indices (when
    ``needs_index``) and the snapshot's :class:`Outputs` on the same batch (with
    ``snapshot_features``; None until the snapshot is taken or when ``needs_snapshot`` is off).
    ``intermittent``: some of its parameters are unused in some steps (DDP must know).
    ``set_epoch`` is called at every epoch start like a criterion's."""

    student_features: tuple[str, ...] = ()
    snapshot_features: tuple[str, ...] = ()
    needs_index = False
    needs_snapshot = False
    intermittent = False

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def terms(self, s: Outputs, y: torch.Tensor, index, snap: Outputs | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def wants_data_pass(self, epoch: int) -> bool:
        """Whether the trainer should run :meth:`observe` over the training data after ``epoch``."""
        return False

    def observe(self, snap: Outputs | None, y: torch.Tensor, index: torch.Tensor) -> None:
        """One batch of that no-grad pass (``snap``: the snapshot's outputs, if it is taken)."""


class OwnTerms(nn.ModuleList):
    """A method's own terms, and what they need together."""

    @property
    def needs_index(self) -> bool:
        """A term keeps per-image state: the trainer feeds each batch's dataset indices."""
        return any(t.needs_index for t in self)

    @property
    def intermittent(self) -> bool:
        """Some parameters sit out some steps (stage-dependent heads): DDP must look for unused ones."""
        return any(t.intermittent for t in self)

    def features(self) -> tuple[str, ...]:
        """The student features the terms read."""
        return tuple(n for t in self for n in t.student_features)

    def losses(self, s: Outputs, x: torch.Tensor, y: torch.Tensor, index, snapshot: Optional[Snapshot]) -> dict:
        """Every term's losses on the student's outputs ``s`` for batch ``(x, y, index)``."""
        losses: dict[str, torch.Tensor] = {}
        if not len(self):
            return losses
        if index is None and self.needs_index:
            raise ValueError("an own loss term needs the batch's dataset indices (forward(x, y, index))")
        snap = snapshot_outputs(snapshot, self, x)
        for t in self:
            losses.update(t.terms(s, y, index, snap))
        return losses

    def data_pass(self, epoch: int, snapshot: Optional[Snapshot]) -> Optional["DataPass"]:
        """The pass over the training data the terms want after ``epoch``, or None."""
        terms = [t for t in self if t.wants_data_pass(epoch)]
        return DataPass(terms, snapshot) if terms else None


class DataPass:
    """One no-grad pass over the training data after an epoch for the terms that asked (CTC's
    memory refresh from the snapshot at its stage boundary): call it with each batch."""

    def __init__(self, terms: list[AuxTerm], snapshot: Optional[Snapshot]):
        self.terms, self.snapshot = terms, snapshot

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> None:
        snap = snapshot_outputs(self.snapshot, self.terms, x)
        for t in self.terms:
            t.observe(snap, y, index)


def snapshot_outputs(snapshot: Optional[Snapshot], terms, x: torch.Tensor) -> Optional[Outputs]:
    """The snapshot's outputs on ``x`` with the features the terms that need it read (None when
    none does or the snapshot is not taken yet)."""
    wanted = [t for t in terms if t.needs_snapshot]
    if not wanted or snapshot is None or not snapshot.ready:
        return None
    return snapshot.outputs(x, [n for t in wanted for n in t.snapshot_features])
