"""``orc``: Online Role Change (Choi et al., ICCV 2023): a student group trained online with a
teacher group made of a pre-trained *pivot teacher* PT (the static teacher, fine-tuned online)
and a *temporary teacher* TT (the best student of the current batch).

ORC's code was never released (its repository holds a README only). What follows is the
paper's description; every choice marked *ours* is not recoverable from it.

Per batch (x, y), students S_1..S_K (``orc_students``; S_1 is the reported student):

1. *Ranking*: CE(S_k(x), y) of every student on the batch, from the same forward that trains
   them (no update in between); TT = the student with the lowest CE (the first on ties, *ours*),
   promoted for this iteration only. Under DDP the CE is of the whole global batch (summed over
   ranks), so every rank promotes the same student.
2. *Intensive teaching* (PT's fine-tuning): the batch's samples that the student group
   misclassifies -- misclassified by *any* student (*ours*: the paper says "the students'
   misclassified samples") -- mixup-augmented, lambda ~ Beta(a, a) (``orc_mix_alpha``, *ours*: 1,
   mixup's CIFAR value), partners a random permutation of those samples:
   L_PT = lambda CE(PT(x~), y_a) + (1 - lambda) CE(PT(x~), y_b), PT in train mode, at its own lr
   (``orc_pivot_lr``, *ours*: a tenth of the run's lr, fine-tuning; the run's schedule scales it).
   Fewer than two such samples on a rank: no PT step from that rank (*ours*: BatchNorm needs
   two samples; the term is 0).
3. *Private teaching*: PT teaches TT: L_TT = (1 - beta) CE(TT(x), y) + beta KD(TT, PT).
4. *Group teaching*: every other student S: L_S = (1 - beta) CE(S(x), y) + beta [KD(S, TT) + KD(S, PT)]
   -- the two teachers separately, not averaged logits.

KD(a, b) = T^2 KL(p_b^T || p_a^T) (Hinton's), batch mean, targets detached. PT's teaching logits
come from PT in eval mode without gradient (*ours*: a teacher teaches as the workbench's static
teacher does; PT's BatchNorm statistics move only with its own fine-tuning batches). beta
(``orc_beta``), T (``orc_T``) and K are not given in a recoverable form: keys, *ours*: beta 0.5,
T 4 (Hinton / mdistiller's CIFAR temperature), K 2 (the smallest group with a role change;
the CPU budget of the demo). Every step sums all the losses above and takes one optimizer step
for the students and PT together (*ours*: the order of updates within an iteration is not given).

Records: every student by role (``student``, ``peer1`` ...) and the fine-tuned pivot teacher
(``pivot_teacher``, T_p); the static teacher before fine-tuning is epoch 0's T_p. The train
record has ``tt_share_<role>`` (the fraction of the epoch's steps each student was TT) and
``orc_intensive_fraction`` (the fraction of training samples PT was fine-tuned on; both counted
over the global batch, so every rank keeps the same counters).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..engine import distributed as dist
from ..engine.method import MethodNeeds
from ..engine.roles import register_role
from ..keys import opt, snapshot_epoch
from ..losses import kd_loss
from .group import MAX_GROUP, GroupDistiller, build_network, group_roles, refuse_extensions
from .spec import TEACHER_REQUIRED, method

#: the pivot teacher, fine-tuned online (the static teacher's starting point, rank just below T_s)
PIVOT_TEACHER = register_role("pivot_teacher", "T_p", 90, "ORC's pivot teacher (the static teacher, fine-tuned online)").name

ORC_BETA, ORC_T, ORC_STUDENTS, ORC_MIX_ALPHA = 0.5, 4.0, 2, 1.0
PIVOT_LR_FACTOR = 0.1  # orc_pivot_lr unset: a tenth of the run's lr
MIN_INTENSIVE = 2  # BatchNorm in train mode needs two samples

KEYS = {
    "orc_students": opt(ORC_STUDENTS, f"ORC: number of students in the student group (2..{MAX_GROUP - 1}; ours: 2)",
                        low=2, high=MAX_GROUP - 1),
    "orc_beta": opt(ORC_BETA, "ORC: weight beta of the distillation terms; CE gets 1 - beta (ours: 0.5)",
                    low=0.0, high=1.0),
    "orc_T": opt(ORC_T, "ORC: temperature of the KD terms (ours: 4)", low=1e-6),
    "orc_pivot_lr": opt(None, "ORC: learning rate of the pivot teacher's online fine-tuning (None: a tenth of lr)",
                        low=0.0, kind="Optional[float]"),
    "orc_mix_alpha": opt(ORC_MIX_ALPHA, "ORC: Beta(a, a) of the mixup in intensive teaching (ours: 1)", low=1e-6),
}


def rank_students(ce_sums: torch.Tensor) -> int:
    """The temporary teacher: the student with the lowest CE (summed over the batch; the first on ties)."""
    return int(torch.argmin(ce_sums))


def misclassified(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Mask of the samples at least one student gets wrong."""
    wrong = torch.zeros_like(y, dtype=torch.bool)
    for z in logits:
        wrong |= z.detach().argmax(1) != y
    return wrong


def mixup_ce(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float) -> torch.Tensor:
    """Intensive teaching's loss: lambda CE(logits, y_a) + (1 - lambda) CE(logits, y_b)."""
    return lam * F.cross_entropy(logits, y_a) + (1.0 - lam) * F.cross_entropy(logits, y_b)


def student_losses(z: torch.Tensor, y: torch.Tensor, teachers: list[torch.Tensor], beta: float, T: float) -> tuple:
    """One student's ``((1 - beta) CE, beta * sum over teachers of KD)``: private teaching with
    ``teachers=[PT]``, group teaching with ``[TT, PT]`` (targets detached)."""
    kd = sum(kd_loss(z, t.detach(), T) for t in teachers)
    return (1.0 - beta) * F.cross_entropy(z, y), beta * kd


class ORC(GroupDistiller):
    def __init__(self, students, pivot, beta=ORC_BETA, temperature=ORC_T, pivot_lr=None, mix_alpha=ORC_MIX_ALPHA):
        roles = (*group_roles(len(students)), PIVOT_TEACHER)
        super().__init__([*students, pivot], roles, lrs=[None] * len(students) + [pivot_lr])
        self.beta, self.T, self.mix_alpha = float(beta), float(temperature), float(mix_alpha)
        self.k = len(students)
        # per-epoch counters (checkpointed; ``counted_epoch`` keeps a mid-epoch resume from resetting them)
        self.register_buffer("promoted", torch.zeros(self.k, dtype=torch.long))
        self.register_buffer("intensive", torch.zeros(2, dtype=torch.long))  # samples used, samples seen
        self.register_buffer("counted_epoch", torch.zeros((), dtype=torch.long))

    @property
    def pivot(self):
        return self.nets[self.k]

    def needs(self) -> MethodNeeds:
        # PT gets no gradient in a step where no rank has two misclassified samples
        return MethodNeeds(find_unused_parameters=True, sync_bn_modules=(self.nets,))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        if int(self.counted_epoch) != epoch:
            self.promoted.zero_()
            self.intensive.zero_()
            self.counted_epoch.fill_(epoch)

    def teaching_logits(self, x: torch.Tensor) -> torch.Tensor:
        pt, was = self.pivot, self.pivot.training
        pt.eval()
        with torch.no_grad():
            z = pt(x)
        pt.train(was)
        return z

    def forward(self, x, y, index=None, teacher_logits=None):
        students = list(self.nets)[: self.k]
        logits = [s(x) for s in students]
        wrong = misclassified(logits, y)
        sums = {f"ce{i}": F.cross_entropy(z.detach().float(), y, reduction="sum") for i, z in enumerate(logits)}
        sums.update(wrong=wrong.sum().float(), seen=torch.tensor(float(len(y)), device=y.device))
        sums = dist.all_reduce_sum(sums)  # the global batch's (one process: this batch's)
        tt = rank_students(torch.stack([sums[f"ce{i}"] for i in range(self.k)]))
        with torch.no_grad():
            self.promoted[tt] += 1
            self.intensive += torch.stack([sums["wrong"], sums["seen"]]).round().long().to(self.intensive.device)
        z_pt = self.teaching_logits(x)
        losses = {"loss_ce": 0.0, "loss_kd_pivot": 0.0, "loss_kd_temporary": 0.0}
        for i, z in enumerate(logits):
            ce, kd_pt = student_losses(z, y, [z_pt], self.beta, self.T)  # private (TT) or group teaching by PT
            losses["loss_ce"] = losses["loss_ce"] + ce
            losses["loss_kd_pivot"] = losses["loss_kd_pivot"] + kd_pt
            if i != tt:  # group teaching by TT
                losses["loss_kd_temporary"] = losses["loss_kd_temporary"] + self.beta * kd_loss(z, logits[tt].detach(), self.T)
        losses["loss_ce_pivot"] = self.intensive_teaching(x, y, wrong)
        if not torch.is_tensor(losses["loss_kd_temporary"]):
            losses["loss_kd_temporary"] = logits[0].new_zeros(())
        return logits[0], losses

    def intensive_teaching(self, x, y, wrong) -> torch.Tensor:
        """PT's loss on this rank's misclassified samples (``wrong``), mixed; 0 below two."""
        n = int(wrong.sum())
        if n < MIN_INTENSIVE:
            return x.new_zeros(())
        xm, ym = x[wrong], y[wrong]
        lam = float(torch.distributions.Beta(self.mix_alpha, self.mix_alpha).sample())
        perm = torch.randperm(n, device=x.device)
        mixed = lam * xm + (1.0 - lam) * xm[perm]
        return mixup_ce(self.pivot(mixed), ym, ym[perm], lam)

    def scalars(self) -> dict[str, float]:
        steps = max(int(self.promoted.sum()), 1)
        out = {f"tt_share_{role}": int(c) / steps for role, c in zip(self.roles, self.promoted)}
        out["orc_intensive_fraction"] = int(self.intensive[0]) / max(int(self.intensive[1]), 1)
        return out


def _validate(cfg) -> None:
    if cfg.uses_teacher and snapshot_epoch(cfg.teacher) is not None:
        raise ValueError("teacher: ORC fine-tunes its pivot teacher from the first step, so it needs a pre-trained "
                         f"teacher (an architecture name or a checkpoint), not {cfg.teacher}")
    if cfg.cache_teacher:
        raise ValueError("cache_teacher: ORC fine-tunes its pivot teacher online, so its logits change every step "
                         "and cannot be cached; use cache_teacher=false")
    if cfg.mix != "none":
        raise ValueError(f"mix: ORC ranks its students and picks misclassified samples by hard labels, and mixes "
                         f"those samples itself (orc_mix_alpha); use mix=none (got mix={cfg.mix})")
    refuse_extensions(cfg)


def _size_factor(cfg) -> float:
    return float(cfg.orc_students) + 4.0  # the students and the pivot teacher (a few times a student's size)


@method("orc", summary="Choi et al. 2023 (ours, no public code): student group + fine-tuned pivot teacher + "
        "best student as temporary teacher", keys=KEYS, teacher=TEACHER_REQUIRED, validate=_validate,
        size_factor=_size_factor,
        not_a_base="it trains a student group and a pivot teacher with its own forward, not a loss on one student")
def build_orc(ctx):
    cfg = ctx.cfg
    students = [ctx.student] + [build_network(cfg, cfg.student) for _ in range(cfg.orc_students - 1)]
    pivot = copy.deepcopy(ctx.teacher).train()
    for p in pivot.parameters():
        p.requires_grad_(True)
    pivot_lr = cfg.orc_pivot_lr if cfg.orc_pivot_lr is not None else PIVOT_LR_FACTOR * cfg.lr
    return ORC(students, pivot, cfg.orc_beta, cfg.orc_T, pivot_lr, cfg.orc_mix_alpha)
