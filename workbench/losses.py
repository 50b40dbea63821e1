"""Pure loss functions (no state). Every method uses these; there is no second copy.

Conventions: logits are (B, K); every loss is a batch mean; temperatures may be Python floats
or 0-dim tensors (CTKD passes a learnable one).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices of a target batch: ``y`` itself, or the most probable class of soft targets
    (N, K) from a mixing batch transform."""
    return y if y.dim() == 1 else y.argmax(1)


def kl_along_classes(p_log_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_k p_k (log p_k - log q_k) along dim 1 (the classes), from log-probabilities:
    (N, K) -> (N,), (N, K, H, W) -> (N, H, W). Terms with p_k = 0 contribute 0 (as ``F.kl_div`` does)."""
    p = p_log_target.exp()
    return torch.where(p > 0, p * (p_log_target - log_q), torch.zeros_like(p)).sum(dim=1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature) -> torch.Tensor:
    """Hinton KD: batch mean of KL(p_t^T || p_s^T) summed over classes, times T^2."""
    t = temperature
    log_ps = F.log_softmax(student_logits / t, dim=1)
    log_pt = F.log_softmax(teacher_logits / t, dim=1)
    return kl_along_classes(log_pt, log_ps).mean() * t**2


def _binary_log_probs(log_p: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """(B, 2) log-probabilities of [target class, all non-target classes]."""
    log_gt = (log_p * target_mask).sum(1)
    log_other = torch.logsumexp(log_p.masked_fill(target_mask.bool(), float("-inf")), dim=1)
    return torch.stack([log_gt, log_other], dim=1)


def _non_target(logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """(B, K-1) logits with the target class removed."""
    b, k = logits.shape
    return logits[~target_mask.bool()].view(b, k - 1)


def dkd_loss(student_logits, teacher_logits, target, alpha, beta, temperature):
    """Decoupled KD (Zhao et al., CVPR 2022): alpha * TCKD + beta * NCKD, each times T^2.

    TCKD = KL between the binary (target vs. non-target) distributions of teacher and student;
    NCKD = KL between their distributions over the non-target classes only."""
    t = temperature
    mask = F.one_hot(target, student_logits.shape[1]).to(student_logits.dtype)
    log_ps = F.log_softmax(student_logits / t, dim=1)
    log_pt = F.log_softmax(teacher_logits / t, dim=1)
    tckd = kl_along_classes(_binary_log_probs(log_pt, mask), _binary_log_probs(log_ps, mask)).mean()
    log_ps_nt = F.log_softmax(_non_target(student_logits, mask) / t, dim=1)
    log_pt_nt = F.log_softmax(_non_target(teacher_logits, mask) / t, dim=1)
    nckd = kl_along_classes(log_pt_nt, log_ps_nt).mean()
    return (alpha * tckd + beta * nckd) * t**2


def sce_loss(student_logits: torch.Tensor, target_logits: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """GPD's smoothed soft cross-entropy (spec §4), temperature 1:
    (1-eps) * (-sum_k softmax(d)_k log softmax(s)_k) + eps * (-(1/K) sum_k log softmax(s)_k).
    The caller passes ``target_logits`` already detached (stop-gradient)."""
    log_ps = F.log_softmax(student_logits, dim=1)
    soft = -(F.softmax(target_logits, dim=1) * log_ps).sum(1)
    uniform = -log_ps.mean(1)
    return ((1 - eps) * soft + eps * uniform).mean()


def deit_hard_loss(dist_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DeiT's hard distillation (Touvron et al., ICML 2021): cross-entropy of the distillation
    head against the teacher's most probable class, batch mean."""
    return F.cross_entropy(dist_logits, teacher_logits.argmax(dim=1))


def deit_soft_loss(dist_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature) -> torch.Tensor:
    """DeiT's soft distillation with its public code's normalisation: KL(p_t^T || p_s^T) summed
    over the batch and the classes, times T^2, divided by the number of logits N * K (so it is
    :func:`kd_loss` / K)."""
    return kd_loss(dist_logits, teacher_logits, temperature) / dist_logits.shape[1]


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


# ---------------------------------------------------------------------------------------------
# Distances between two batches of representations, rows = examples: ``a`` the student's (N, ...),
# ``b`` the teacher's (N, ...), both flattened to (N, D) rows. Every distance is 0 for identical
# inputs and is a batch mean (``cka_distance``: one number for the whole batch). Used by the
# composed distiller (``methods/composed.py``); KL is :func:`kd_loss`.
#: guards a zero norm / variance (a constant row or a constant batch) against 0/0
DISTANCE_EPS = 1e-12


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def mse_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over every element of (a - b)^2 (``F.mse_loss``'s mean: FitNet's and AT's reduction)."""
    return F.mse_loss(a, b)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batch mean of 1 - cos(a_i, b_i) over flattened rows (in [0, 2])."""
    a, b = _rows(a), _rows(b)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(DISTANCE_EPS)
    return (1.0 - cos).mean()


def pearson_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batch mean of 1 - r(a_i, b_i), r the Pearson correlation of two flattened rows (the cosine
    of the rows centred on their own means; in [0, 2]; DIST's inter-class term uses it on
    probabilities)."""
    a, b = _rows(a), _rows(b)
    return cosine_distance(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True))


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear CKA (Kornblith et al. 2019) of two batches of flattened rows, widths free:
    ||B^T A||_F^2 / (||A^T A||_F ||B^T B||_F) with the columns centred over the batch, computed
    from the (N, N) Gram matrices (K = A A^T, L = B B^T: <K, L> / (||K|| ||L||)), so wide
    feature maps cost N^2 * D, not D^2."""
    a, b = _rows(a), _rows(b)
    a, b = a - a.mean(0, keepdim=True), b - b.mean(0, keepdim=True)
    k, l = a @ a.T, b @ b.T
    return (k * l).sum() / (k.norm() * l.norm()).clamp_min(DISTANCE_EPS)


def cka_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - linear CKA of the batch (in [0, 1]): compares the batch's similarity structure, so the
    student's and the teacher's widths and map sizes may differ (no projector needed)."""
    return 1.0 - linear_cka(a, b)
