"""Online group distillation: the seam for a method that trains several networks together (DML,
ORC; ``methods/dml.py``, ``methods/orc.py``).

A :class:`GroupDistiller` owns N trainable networks in one ``nn.ModuleList`` -- its
``trained_module()`` -- and fits the engine's interface (:class:`workbench.engine.method.TrainedMethod`)
unchanged:

- *optimiser state per network*: one optimizer over the ModuleList; SGD's momentum (Adam's
  moments) is kept per parameter, so each network's entries are that network's own state.
  :meth:`param_groups` gives each network its own groups (a network may have its own lr: ORC's
  pivot teacher), ordered by network;
- *checkpoint / resume*: the ModuleList is the method's state (``nets.<i>.*``), the optimizer's
  state is the trainer's, so epoch-end and mid-epoch checkpoints (kill -9, SIGTERM) hold every
  network and its optimiser state; per-epoch counters a method keeps are buffers (checkpointed
  with it) that remember their epoch, so a mid-epoch resume does not reset them;
- *evaluation per network*: :meth:`eval_models` returns every network by role (``student``,
  ``peer1`` ..., registered below, plus a method's own, e.g. ORC's ``pivot_teacher``), from the
  live group or the EMA copy of the whole group;
- *the reported student*: network 0 (the run's ``student`` architecture and ``init``), saved
  as ``student.pt`` by :meth:`deployable_student`;
- *DDP*: the trainer wraps the whole method; every network's gradients are averaged together.

Nothing was added to the engine's interface for groups: everything above is expressed with the
eleven members it already had.

The training forward returns network 0's logits (the train record's top-1 is the student's)
and one loss dict summed over the networks; per-network terms carry the network's role as a
suffix (``loss_ce_peer1``), so the train record shows each network's losses. As the networks
share no parameters and every cross-network target is detached, the gradient of the sum with
respect to one network is the gradient of that network's own loss.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..engine.roles import STUDENT, register_role
from ..models.params import exempt_parameter_ids
from .base import Distiller

#: the most networks a group may hold (the peer roles below are registered for all of them)
MAX_GROUP = 4
#: the other networks of a group: DML's peers, ORC's other students (rank 1: they stand beside
#: the student, closer to it than any teacher)
PEERS = tuple(register_role(f"peer{i}", f"P{i}", 1, f"network {i} of a trained group (DML peer, ORC student)").name
              for i in range(1, MAX_GROUP))


def group_roles(n: int) -> tuple[str, ...]:
    """The roles of an ``n``-network group: ``student``, ``peer1`` ... ``peer{n-1}``."""
    if not 1 <= n <= MAX_GROUP:
        raise ValueError(f"a group holds 1 to {MAX_GROUP} networks, got {n}")
    return (STUDENT.name, *PEERS[: n - 1])


def build_network(cfg, arch: str):
    """A freshly initialised ``arch`` for the run's dataset (another member of the group; a ViT
    gets the run's ``patch_size``), its weights drawn from the global RNG (the run's seed)."""
    from .. import data, models

    info = data.info(cfg.dataset, **cfg.dataset_options())
    opts = {"patch_size": cfg.patch_size} if cfg.patch_size and models.family(arch) == "vit" else {}
    return models.build(arch, info.num_classes, info.in_channels, image_size=info.image_size, **opts).train()


def refuse_extensions(cfg) -> None:
    """Group methods run their own forward: add-ons that hook into the single-student forward
    (CTKD's temperature, CTC's terms, ...) would never run there -- refused, one line."""
    from .spec import EXTENSIONS

    for name in EXTENSIONS.names():
        ext = EXTENSIONS.get(name)
        if ext.active(cfg):
            raise ValueError(f"{name}: the {name} add-on is not wired into method {cfg.method}'s group forward "
                             f"(it would never run); switch it off with method={cfg.method}")


class GroupDistiller(Distiller):
    """N networks trained together (see the module docstring); ``roles``: one per network, the
    first ``student``; ``lrs``: per-network learning rates (None = the run's lr)."""

    def __init__(self, nets: Sequence[nn.Module], roles: Sequence[str], lrs: Sequence[float | None] | None = None):
        if len(nets) != len(roles) or roles[0] != STUDENT.name:
            raise ValueError(f"a group needs one role per network, the first {STUDENT.name!r}; got {list(roles)}")
        super().__init__(nn.ModuleList(nets))
        self.roles = tuple(roles)
        self.lrs = tuple(lrs) if lrs is not None else (None,) * len(nets)

    @property
    def nets(self) -> nn.ModuleList:
        return self.student  # the trained module is the whole group

    # -- the engine's interface ------------------------------------------------------------------
    def eval_models(self, trained: nn.Module | None = None) -> dict[str, nn.Module]:
        group = self.nets if trained is None else trained
        return dict(zip(self.roles, group))

    def deployable_student(self, trained: nn.Module | None = None) -> nn.Module:
        return (self.nets if trained is None else trained)[0]

    def param_groups(self, lr: float, weight_decay: float, wd_exempt: bool = False) -> list[dict]:
        """Per network, in order: one group at its lr (the run's unless set), split into a decayed
        and a non-decayed part with ``wd_exempt`` (as :meth:`Distiller.param_groups`)."""
        exempt = exempt_parameter_ids(self) if wd_exempt else set()
        out = []
        for net, own_lr in zip(self.nets, self.lrs):
            group_lr = lr if own_lr is None else own_lr
            params = [p for p in net.parameters() if p.requires_grad]
            decay = [p for p in params if id(p) not in exempt]
            flat = [p for p in params if id(p) in exempt]
            out += [{"params": decay, "lr": group_lr, "weight_decay": weight_decay}] if decay else []
            out += [{"params": flat, "lr": group_lr, "weight_decay": 0.0}] if flat else []
        return out

    def scalars(self) -> dict[str, float]:
        return {}


def suffixed(name: str, role: str) -> str:
    """A per-network loss key: ``loss_ce`` for the student, ``loss_ce_peer1`` for peer 1."""
    return name if role == STUDENT.name else f"{name}_{role}"
