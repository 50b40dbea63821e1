"""``ctc``: Contrastive Temporal Coding (Cui et al., ECCV 2022, "Discriminability-Transferability
Trade-Off: An Information-Theoretic Perspective"), the remedy that paper proposes for the
over-compression our transferability probe measures. Alone (``method=ctc``, no teacher) or as an
add-on term of any method (``ctc_alpha > 0`` with kd, dkd, gpd, ...: on the student, for GPD its
student view).

Stage 1 (epochs 1..E, E = ``ctc_stage_epoch``, default 2/3 of the epochs: the paper's 200 of 300):
instance discrimination against a memory bank M with one row per training image,

    v_i = norm(P f_i),  P = Linear(d, 128)  (f: the penultimate feature)
    L_ins = CE(v_i M^T / tau_ins, i)        (softmax over all N rows, target the image's own row)
    M_i <- norm(m M_i + (1 - m) v_i)        (after the step's loss, momentum m = 0.9)

    L = CE + alpha * L_ins,  weight decay x2.

At the end of epoch E a frozen snapshot S of the model is taken (``Distiller.enable_snapshot``)
and both stage-2 memories are refreshed from it (one pass over the training data:
M^s_i = norm(H_s f^S_i), M^t_i = norm(H_t f^S_i)). Stage 2 (epochs E+1..): two trained heads
H_s (current model) and H_t (snapshot), u_i = norm(H_s f_i), w_i = norm(H_t f^S_i), and a
contrast in both directions with the same image as positive and images of other classes as
negatives,

    L_nce = NCE(u_i; M^t, i) + NCE(w_i; M^s, i),  then M^s_i <- norm(m M^s_i + (1-m) u_i), same for M^t
    L = CE + beta * L_nce,  weight decay x1, lr restarted: the run's schedule over the remaining
    epochs from lr x 0.1 (``engine.schedule.TwoStageSchedule``).

NCE: ``ctc_nce=exact`` (default) is the exact InfoNCE, softmax cross-entropy over the positive
and K negatives, K = ``ctc_nce_k`` capped at what the dataset has (with K >= the other-class
images, all of them: no sampling); ``ctc_nce=crd`` is the paper's (CRD's) estimator: K negatives
drawn from the other classes, scores exp(<., .>/tau) divided by a normaliser Z = mean score x N
estimated once on the first stage-2 batch and kept, and the binary NCE loss with noise
probability 1/N.

Follows the public code (DTennant/dt-tradeoff: train_ctc.py, ctc/instance.py, ctc/memory.py,
ctc/criterion.py) in: 128-d projector and heads (Linear + L2 norm), memory init uniform in
+-1/sqrt(128/3), momentum update of normalised rows, instance loss over all rows, memory refresh
from the snapshot at the boundary (``--update_memory_bank``), doubled weight decay in stage 1
only (``--weight_decay_coef 2``), stage-2 lr x 0.1, CRD loss and Z rule, negatives from other
classes, the two presets (transferability: alpha 0.5, tau_ins 0.1, tau_nce 0.1; discriminability:
alpha 0.1, tau_ins 0.5, tau_nce 0.4; momentum 0.9, beta 1).
Ours (adaptations): the exact InfoNCE as the default on small data; the lr schedule is the run's
own (per step) restarted at the boundary, where the reference computes a per-epoch cosine with
(E + 1) in the denominator; the stage-1 projector is trained with the model by default
(``ctc_projector=trained``; the reference builds it inside ``LinearAverage``, a criterion it never
hands to the optimizer, so there it stays a fixed random projection: ``ctc_projector=fixed``, which
the ``cifar100/ctc/*`` presets use); the add-on use with other methods; under DDP features and indices are
all-gathered before every memory update (and Z is the mean over ranks), so each rank keeps the
same banks a single process would; under mixed precision the similarities with the memory rows
(and CRD's exp of them) are computed in float32 (:func:`similarities`): the reference runs in
float32, a bf16 dot product carries ~1e-3 of error into logits divided by tau, and in float16
exp(<., .>/tau) overflows once the cosine exceeds ~11 tau (tau 0.07: cosine 0.78).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..keys import opt
from ..engine.distributed import all_reduce_mean, gather_rows
from ..engine.schedule import TwoStageSchedule
from ..models.hooks import PENULTIMATE, classifier_path
from .base import AuxTerm, Distiller
from .spec import TEACHER_NONE, Extension, method, register_extension

#: the public code's settings (train_ctc.py arguments, README commands)
EMBED_DIM = 128  # --instance_dim / --contrast_feat_dim
PROJECTORS = ("trained", "fixed")
STAGE1_FRACTION = 2.0 / 3.0  # --stage_two_epoch 200 of --epochs 300
STAGE2_LR = 0.1  # --stage_two_decay_rate
WD_FACTOR = 2.0  # --weight_decay_coef (stage 1 only)
MOMENTUM = 0.9  # --instance_m / --nce_m in both README commands
NCE_K = 16384  # --nce_k
CRD_EPS = 1e-7  # ctc/criterion.py eps
PRESETS = {  # README: "emphasizing transferability" / "emphasizing discriminability"
    "transferability": dict(ctc_alpha=0.5, ctc_tau_ins=0.1, ctc_tau_nce=0.1),
    "discriminability": dict(ctc_alpha=0.1, ctc_tau_ins=0.5, ctc_tau_nce=0.4),
}
DEFAULT_ALPHA = PRESETS["transferability"]["ctc_alpha"]
NCE_MODES = ("exact", "crd")
SCHEDULES = ("two_stage", "run")


def _normed(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=1)


def similarities(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``<v_i, rows_j>`` for every pair, (B, N), in float32 also inside an autocast region (see
    the module docstring: mixed precision)."""
    with torch.autocast(v.device.type, enabled=False):
        return v.float() @ rows.float().t()


def instance_loss(v: torch.Tensor, rows: torch.Tensor, index: torch.Tensor, tau: float) -> torch.Tensor:
    """Stage 1: CE(<v_i, M_j>/tau over all N rows, target the image's own row i), mean over the batch."""
    return F.cross_entropy(similarities(v, rows) / tau, index)


class MemoryBank(nn.Module):
    """One L2-normalised ``dim``-row per training image (``rows``: a buffer, so it is moved,
    checkpointed and restored with the method). Init: uniform in +-1/sqrt(dim/3) (reference).
    Under DDP every rank builds the same rows (the run's seed) and applies the same all-gathered
    updates, so DDP does not broadcast them (``engine.distributed.SELF_SYNCED``)."""

    ddp_self_synced = True

    def __init__(self, n: int, dim: int, momentum: float):
        super().__init__()
        bound = 1.0 / math.sqrt(dim / 3.0)
        self.register_buffer("rows", torch.rand(n, dim).mul_(2 * bound).add_(-bound))
        self.momentum = float(momentum)

    @torch.no_grad()
    def update(self, index: torch.Tensor, v: torch.Tensor, momentum: float | None = None) -> None:
        """``rows[i] <- norm(m rows[i] + (1 - m) v)`` for every rank's batch rows (all-gathered)."""
        m = self.momentum if momentum is None else momentum
        index, v = gather_rows(index), gather_rows(v.detach().float())
        mixed = self.rows.index_select(0, index).mul_(m).add_(v * (1.0 - m))
        self.rows.index_copy_(0, index, F.normalize(mixed, dim=1))


def negatives(labels: torch.Tensor, batch_labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N) mask: the rows of other classes than each sample's (its own row excluded)."""
    mask = batch_labels[:, None] != labels[None, :]
    mask[torch.arange(len(index), device=index.device), index] = False
    return mask


def sample_negatives(neg: torch.Tensor, k: int, replace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` negative columns per row of mask ``neg`` and whether each is a real negative (rows with
    fewer than ``k`` negatives get filler columns marked False, unless ``replace`` draws with
    replacement). Uses the global torch RNG (seeded per epoch by the trainer)."""
    if replace:
        idx = torch.multinomial(neg.float(), k, replacement=True)
        return idx, torch.ones_like(idx, dtype=torch.bool)
    scores = torch.rand(neg.shape, device=neg.device).masked_fill_(~neg, -1.0)
    idx = scores.topk(k, dim=1).indices
    return idx, neg.gather(1, idx)


def info_nce(v: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, neg: torch.Tensor, tau: float,
             k: int) -> torch.Tensor:
    """Exact InfoNCE: -log softmax of <v_i, bank_i>/tau against K negatives of row i (all of them
    when K >= their number: no sampling), mean over the batch."""
    logits = similarities(v, bank) / tau  # (B, N)
    if k >= int(neg.sum(1).max()):
        return F.cross_entropy(logits.masked_fill(~(neg | _own(neg, index)), float("-inf")), index)
    idx, real = sample_negatives(neg, k)
    pos = logits.gather(1, index[:, None])
    neg_logits = logits.gather(1, idx).masked_fill(~real, float("-inf"))
    return F.cross_entropy(torch.cat([pos, neg_logits], 1), torch.zeros_like(index))


def _own(neg: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    own = torch.zeros_like(neg)
    own[torch.arange(len(index), device=index.device), index] = True
    return own


def crd_nce(v: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, neg: torch.Tensor, tau: float, k: int,
            z: torch.Tensor, n_data: int) -> torch.Tensor:
    """CRD's NCE estimate (Tian et al. 2020, eq. 18; the CTC code's ContrastMemory +
    ContrastLoss): P = exp(<v, bank_j>/tau) / Z over [own row, K negatives], Z = mean(P * Z) x N
    set on the first call (``z``: a one-element buffer, < 0 = unset), loss
    -(sum log P_pos/(P_pos + K/N) + sum log (K/N)/(P_neg + K/N)) / B."""
    avail = int(neg.sum(1).min())
    idx, _ = sample_negatives(neg, k, replace=k > avail)
    cols = torch.cat([index[:, None], idx], 1)  # (B, K + 1), the positive first
    with torch.autocast(v.device.type, enabled=False):  # float32: exp(<., .>/tau) overflows float16
        scores = torch.exp(torch.bmm(bank[cols].float(), v.float()[:, :, None]).squeeze(2) / tau)
    if float(z) < 0:
        z.fill_(float(all_reduce_mean(scores.mean().detach())) * n_data)
    p = scores / float(z)
    noise = k / n_data
    log_pos = torch.log(p[:, 0] / (p[:, 0] + noise + CRD_EPS))
    log_neg = torch.log(noise / (p[:, 1:] + noise + CRD_EPS))
    return -(log_pos.sum() + log_neg.sum()) / len(v)


class CTCTerm(AuxTerm):
    """Both CTC stages on the student's penultimate feature; owns the projector, the two heads and
    the three memory banks (trained / checkpointed with the method, never in ``student.pt``). Its
    own buffers (the labels, CRD's normalisers: set from all-reduced means) are the same on every
    rank, so DDP does not broadcast them either."""

    ddp_self_synced = True
    student_features = snapshot_features = (PENULTIMATE,)
    needs_index = needs_snapshot = True
    intermittent = True  # stage-1 projector and stage-2 heads each sit out one stage

    def __init__(self, labels: torch.Tensor, width: int, boundary: int, alpha: float = DEFAULT_ALPHA,
                 beta: float = 1.0, dim: int = EMBED_DIM, tau_ins: float = 0.1, tau_nce: float = 0.1,
                 momentum: float = MOMENTUM, nce: str = "exact", k: int = NCE_K, refresh: bool = True,
                 train_projector: bool = True):
        super().__init__()
        n = len(labels)
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.long).clone(), persistent=False)
        self.boundary, self.alpha, self.beta = int(boundary), float(alpha), float(beta)
        self.tau_ins, self.tau_nce, self.nce, self.k, self.refresh = tau_ins, tau_nce, nce, int(k), refresh
        self.projector = nn.Linear(width, dim)  # stage 1
        self.projector.requires_grad_(train_projector)  # fixed: the reference's (never optimised)
        self.instance = MemoryBank(n, dim, momentum)
        self.head_s = nn.Linear(width, dim)  # stage 2: the current model's features
        self.head_t = nn.Linear(width, dim)  # stage 2: the snapshot's features
        self.memory_s = MemoryBank(n, dim, momentum)  # of head_s embeddings (reference memory_v1)
        self.memory_t = MemoryBank(n, dim, momentum)  # of head_t embeddings (reference memory_v2)
        self.register_buffer("z", torch.full((2,), -1.0))  # CRD normalisers, one per direction
        self.epoch = 1

    @property
    def n_data(self) -> int:
        return len(self.labels)

    def stage(self) -> int:
        return 1 if self.epoch <= self.boundary else 2

    def terms(self, s, y, index, snap):
        f = s.features[PENULTIMATE]
        if self.stage() == 1:
            v = _normed(self.projector(f))
            loss = instance_loss(v, self.instance.rows.clone(), index, self.tau_ins)
            self.instance.update(index, v)
            return {"loss_ctc_ins": self.alpha * loss}
        if snap is None:
            raise ValueError(f"ctc: stage 2 (epoch {self.epoch}) without the snapshot of epoch {self.boundary}")
        u = _normed(self.head_s(f))
        w = _normed(self.head_t(snap.features[PENULTIMATE]))
        neg = negatives(self.labels, self.labels[index], index)
        bank_s, bank_t = self.memory_s.rows.clone(), self.memory_t.rows.clone()
        if self.nce == "exact":
            loss = info_nce(u, bank_t, index, neg, self.tau_nce, self.k) + \
                info_nce(w, bank_s, index, neg, self.tau_nce, self.k)
        else:
            loss = crd_nce(u, bank_t, index, neg, self.tau_nce, self.k, self.z[0:1], self.n_data) + \
                crd_nce(w, bank_s, index, neg, self.tau_nce, self.k, self.z[1:2], self.n_data)
        self.memory_s.update(index, u)
        self.memory_t.update(index, w)
        return {"loss_ctc_nce": self.beta * loss}

    def wants_data_pass(self, epoch: int) -> bool:
        return self.refresh and epoch == self.boundary

    def observe(self, snap, y, index) -> None:
        """The boundary refresh: both stage-2 memories <- the (untrained) heads on the snapshot's features."""
        f = snap.features[PENULTIMATE]
        self.memory_s.update(index, _normed(self.head_s(f)), momentum=0.0)
        self.memory_t.update(index, _normed(self.head_t(f)), momentum=0.0)

    def extra_repr(self) -> str:
        return (f"N={self.n_data}, boundary=epoch {self.boundary}, alpha={self.alpha}, beta={self.beta}, "
                f"tau_ins={self.tau_ins}, tau_nce={self.tau_nce}, nce={self.nce}, K={self.k}")


KEYS = {
    "ctc_alpha": opt(None, "CTC: weight of the stage-1 instance InfoNCE (None: 0.5 for method=ctc, the paper's "
                     "transferability preset; for other methods None/0 = no CTC, > 0 adds CTC's terms)",
                     low=0.0, kind="Optional[float]"),
    "ctc_beta": opt(1.0, "CTC: weight of the stage-2 contrast against the snapshot (paper: 1)", low=0.0),
    "ctc_stage_epoch": opt(0, "CTC: last epoch of stage 1, where the snapshot is taken (0 = 2/3 of the epochs, "
                           "the paper's 200 of 300)", low=0),
    "ctc_dim": opt(EMBED_DIM, "CTC: width of the projector, the heads and the memory banks", low=1),
    "ctc_projector": opt("trained", "CTC: the stage-1 projector is trained with the model (ours) or stays at its "
                         "random init (fixed: the public code, which never gives it to the optimizer)",
                         PROJECTORS),
    "ctc_tau_ins": opt(0.1, "CTC: temperature of the stage-1 instance InfoNCE", low=1e-6),
    "ctc_tau_nce": opt(0.1, "CTC: temperature of the stage-2 contrast", low=1e-6),
    "ctc_momentum": opt(MOMENTUM, "CTC: momentum of the memory-bank updates", low=0.0, high=1.0),
    "ctc_nce": opt("exact", "CTC: stage-2 estimator: exact (InfoNCE over K negatives, capped at what the dataset "
                   "has) or crd (the paper's fixed-normaliser NCE with K sampled negatives)", NCE_MODES),
    "ctc_nce_k": opt(NCE_K, "CTC: negatives per sample in stage 2 (paper: 16384)", low=1),
    "ctc_refresh": opt(True, "CTC: refill the stage-2 memories from the snapshot at the boundary (paper)"),
    "ctc_schedule": opt("two_stage", "CTC: two_stage (the run's lr schedule restarted at the boundary from "
                        "lr x ctc_stage2_lr, weight decay x ctc_wd_factor in stage 1: the paper) or run "
                        "(the run's schedule and weight decay unchanged)", SCHEDULES),
    "ctc_stage2_lr": opt(STAGE2_LR, "CTC: lr factor of stage 2 (paper: 0.1)", low=0.0),
    "ctc_wd_factor": opt(WD_FACTOR, "CTC: weight-decay factor of stage 1 (paper: 2)", low=0.0),
}


def resolved_alpha(cfg) -> float:
    if cfg.ctc_alpha is not None:
        return cfg.ctc_alpha
    return DEFAULT_ALPHA if cfg.method == "ctc" else 0.0


def active(cfg) -> bool:
    """CTC's terms are on: ``method=ctc``, or ``ctc_alpha > 0`` on another method."""
    return cfg.method == "ctc" or resolved_alpha(cfg) > 0


def stage_epoch(cfg) -> int:
    """The last epoch of stage 1 (the snapshot's epoch)."""
    return cfg.ctc_stage_epoch or max(1, round(STAGE1_FRACTION * cfg.epochs))


def _check(cfg) -> None:
    if not active(cfg):
        return
    if cfg.epochs < 2:
        raise ValueError(f"ctc: needs two stages, so epochs >= 2 (epochs={cfg.epochs})")
    e = stage_epoch(cfg)
    if not 1 <= e < cfg.epochs:
        raise ValueError(f"ctc_stage_epoch: {e} must be in [1, {cfg.epochs - 1}] (epochs={cfg.epochs}): stage 2 "
                         f"runs after it")


FLOAT_BYTES, INDEX_BYTES, MASK_BYTES = 4, 8, 1
BANKS = 3  # instance memory, memory_s, memory_t
SOFTMAX_COPIES = 3  # the (B, N) similarities, their softmax and its gradient


def memory_needed(n: int, dim: int, width: int, k: int, nce: str, batch: int) -> int:
    """Bytes CTC holds besides the model on each process -- a lower bound of its peak: the three
    banks plus the copies a stage-2 step reads (N x dim floats each), the projector and heads
    (weights, gradients, momentum), and one step's largest tensors: the (B, N) similarities with
    their softmax and gradient and the negatives mask; with ``crd`` the (B, K + 1) gathered bank
    rows, sampled indices and scores of both directions."""
    banks = (BANKS + 2) * n * dim * FLOAT_BYTES
    heads = BANKS * 3 * width * dim * FLOAT_BYTES
    step = batch * n * (SOFTMAX_COPIES * FLOAT_BYTES + MASK_BYTES)
    if nce == "crd":
        step += 2 * batch * (k + 1) * ((dim + SOFTMAX_COPIES) * FLOAT_BYTES + INDEX_BYTES)
    return banks + heads + step


def _check_memory(cfg, student: nn.Module, example_input, train_size) -> None:
    """``ctc_dim`` / ``ctc_nce_k`` that cannot fit: one line before any folder is made (instead of an
    allocation error, or the OOM killer, after the teacher phase)."""
    from ..engine import distributed as dist
    from ..engine.device import select_device
    from ..engine.memory import available_bytes

    device = dist.local_device(select_device(cfg.device))
    avail = available_bytes(device)
    if avail is None:
        return
    n, batch = train_size(), max(1, cfg.batch_size // dist.world_size())
    need = memory_needed(n, cfg.ctc_dim, feature_width(student), cfg.ctc_nce_k, cfg.ctc_nce, batch)
    if need > avail:
        gib = 2**30
        raise ValueError(f"ctc_dim={cfg.ctc_dim}, ctc_nce_k={cfg.ctc_nce_k}: CTC's memory banks ({BANKS} x {n} training "
                         f"images x ctc_dim floats) and one step's similarities/negatives need about "
                         f"{need / gib:.1f} GiB, more than the {avail / gib:.1f} GiB available on {device}; lower "
                         f"ctc_dim (paper: {EMBED_DIM}) or ctc_nce_k (paper: {NCE_K})")


def feature_width(model: nn.Module) -> int:
    """Width of the penultimate feature (the classifier's input)."""
    return model.get_submodule(classifier_path(model)).in_features


def attach(distiller: Distiller, ctx) -> CTCTerm:
    """Add CTC's terms (and, with ``ctc_schedule=two_stage``, its schedule) to a built method."""
    cfg = ctx.cfg
    if ctx.train_labels is None:
        raise ValueError("ctc: the memory banks need the training set's labels: "
                         "build_method(..., train_labels=workbench.data.labels(train_set))")
    boundary = stage_epoch(cfg)
    distiller.enable_snapshot(boundary)
    term = distiller.add_term(CTCTerm(ctx.train_labels, feature_width(distiller.deployable_student()), boundary,
                                      resolved_alpha(cfg), cfg.ctc_beta, cfg.ctc_dim, cfg.ctc_tau_ins,
                                      cfg.ctc_tau_nce, cfg.ctc_momentum, cfg.ctc_nce, cfg.ctc_nce_k, cfg.ctc_refresh,
                                      cfg.ctc_projector == "trained"))
    if cfg.ctc_schedule == "two_stage":
        if distiller.schedule is not None:
            raise ValueError("ctc_schedule=two_stage: this method already rescales its schedule; use ctc_schedule=run")
        distiller.schedule = TwoStageSchedule(boundary, cfg.ctc_stage2_lr, cfg.ctc_wd_factor, 1.0)
    return term


# the add-on (ctc_alpha > 0 on another method); its check runs for every config, method=ctc included
register_extension(Extension("ctc", {}, active=lambda cfg: cfg.method != "ctc" and active(cfg),
                             apply=lambda built, cfg, ctx: attach(built, ctx), validate=_check,
                             check_build=_check_memory))


@method("ctc", summary="Contrastive Temporal Coding (Cui et al. 2022): instance InfoNCE, then contrast with a "
        "snapshot", teacher=TEACHER_NONE, keys=KEYS, check_build=_check_memory)
def build_ctc(ctx):
    distiller = Distiller(ctx.student, None, None, ctx.cfg.ce_weight)
    attach(distiller, ctx)
    return distiller
