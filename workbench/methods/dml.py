"""``dml``: Deep Mutual Learning (Zhang et al., CVPR 2018): K networks trained together, no
static teacher. Network k minimises

    L_k = CE(z_k, y) + 1/(K-1) sum_{j != k} T^2 KL(p_j^T || p_k^T)

with p_j = softmax(z_j / T) of the *other* networks detached (targets, not paths for gradient).
The group is ``dml_nets`` (architectures, the first the reported student, saved as
``student.pt``) or ``dml_k`` copies of the student; each network has its own initialisation
(drawn from the run's seed) and its own optimiser state (``methods/group.py``).

As the paper: the mean over the other networks of KL(p_other || p_self), temperature 1 (the
``dml_T`` default), every network's CE at weight 1. Ours: all K networks step together on the
same forward (the paper's Algorithm 1 updates them one after the other, each with the others'
predictions recomputed after the previous update; the common implementations do as we do);
T^2 on the KL term, which is 1 at the paper's temperature and keeps the gradient scale of
Hinton's KD for ``dml_T > 1``.

Loss keys: ``loss_ce`` / ``loss_dml`` for the student, ``loss_ce_peer<i>`` / ``loss_dml_peer<i>``
for the others; records evaluate every network (roles ``student``, ``peer1`` ...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..keys import opt
from ..losses import kl_along_classes
from .group import MAX_GROUP, GroupDistiller, build_network, group_roles, refuse_extensions, suffixed
from .spec import TEACHER_NONE, method

DML_T = 1.0  # the paper's temperature
DML_K = 2  # the paper's main setting: two networks

KEYS = {
    "dml_nets": opt("", "DML: the group's architectures, comma-separated, the first being the reported student "
                    "(the run's student); empty: dml_k copies of the student", list_value=True),
    "dml_k": opt(DML_K, f"DML: number of networks when dml_nets is empty (2..{MAX_GROUP}; paper: 2)",
                 low=2, high=MAX_GROUP),
    "dml_T": opt(DML_T, "DML: temperature of the mutual KL terms (paper: 1)", low=1e-6),
}


def mutual_kl(logits: list[torch.Tensor], k: int, temperature: float) -> torch.Tensor:
    """Network ``k``'s mimicry term: the mean over the other networks j of T^2 KL(p_j^T || p_k^T),
    batch mean, the others detached."""
    t = temperature
    log_pk = F.log_softmax(logits[k] / t, dim=1)
    others = [j for j in range(len(logits)) if j != k]
    kls = [kl_along_classes(F.log_softmax(logits[j].detach() / t, dim=1), log_pk).mean() for j in others]
    return torch.stack(kls).mean() * t**2


class DML(GroupDistiller):
    def __init__(self, nets, temperature: float = DML_T):
        super().__init__(nets, group_roles(len(nets)))
        self.temperature = float(temperature)

    def forward(self, x, y, index=None, teacher_logits=None):
        logits = [net(x) for net in self.nets]
        losses = {}
        for k, role in enumerate(self.roles):
            losses[suffixed("loss_ce", role)] = F.cross_entropy(logits[k], y)
            losses[suffixed("loss_dml", role)] = mutual_kl(logits, k, self.temperature)
        return logits[0], losses

    def scalars(self) -> dict[str, float]:
        return {"temperature": self.temperature}


def architectures(cfg) -> list[str]:
    """The group's architectures, the student's first."""
    names = [n.strip() for n in cfg.dml_nets.split(",") if n.strip()]
    return names or [cfg.student] * cfg.dml_k


def _validate(cfg) -> None:
    from .. import models

    archs = architectures(cfg)
    if len(archs) < 2:
        raise ValueError(f"dml_nets: DML trains at least two networks together, got {cfg.dml_nets!r}; name two "
                         f"or more (e.g. dml_nets={cfg.student},{cfg.student}) or leave it empty for dml_k copies")
    if len(archs) > MAX_GROUP:
        raise ValueError(f"dml_nets: at most {MAX_GROUP} networks, got {len(archs)} ({cfg.dml_nets})")
    if archs[0] != cfg.student:
        raise ValueError(f"dml_nets: the first network is the reported student and must be student={cfg.student}, "
                         f"got {archs[0]!r}")
    for a in archs:
        if a not in models.MODELS:
            raise ValueError(f"dml_nets: unknown architecture {a!r}; valid: {', '.join(models.available())}")
    refuse_extensions(cfg)


def _size_factor(cfg) -> float:
    return float(len(architectures(cfg)))  # a checkpoint holds every network (same-size copies by default)


@method("dml", summary="Zhang et al. 2018: K networks, each CE + mean KL to the others (no teacher)", keys=KEYS,
        teacher=TEACHER_NONE, validate=_validate, size_factor=_size_factor,
        not_a_base="it trains a group of networks with its own forward, not a loss on one student")
def build_dml(ctx):
    cfg = ctx.cfg
    nets = [ctx.student] + [build_network(cfg, a) for a in architectures(cfg)[1:]]
    return DML(nets, cfg.dml_T)
