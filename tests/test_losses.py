"""Loss functions against hand computations (plain math on scalars) and against the reference
definitions (mdistiller's formulations written out independently here)."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import float_tol
from workbench.losses import dkd_loss, kd_loss, sce_loss

F32 = torch.float32


def softmax(z, T=1.0):
    e = [math.exp(v / T) for v in z]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_kd_loss_hand_value_T4():
    s, t, T = [1.0, 2.0, 3.0], [3.0, 2.0, 0.5], 4.0
    expected = kl(softmax(t, T), softmax(s, T)) * T**2
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), T)
    assert got.item() == pytest.approx(expected, rel=float_tol(F32, 3))  # float32, 3-class sum vs float64 hand value
    # batch mean of per-sample values
    s2, t2 = [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]
    e2 = kl(softmax(t2, T), softmax(s2, T)) * T**2
    got = kd_loss(torch.tensor([s, s2]), torch.tensor([t, t2]), T)
    assert got.item() == pytest.approx((expected + e2) / 2, rel=float_tol(F32, 2 * 3))


def test_kd_loss_matches_kl_div_reference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 100, generator=g), torch.randn(8, 100, generator=g)
    ref = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="none").sum(1).mean() * 16
    # float32, 8 x 100 terms summed in another order by F.kl_div (the sum's order, hence its last
    # bits, differ between vector units: rtol 1e-6 failed under AVX-512). Mild cancellation: the
    # KL terms of T=4 logits are mostly of one sign.
    assert torch.allclose(kd_loss(s, t, 4.0), ref, rtol=float_tol(F32, 8 * 100), atol=0)
    # identical inputs: each of the 100 terms is p * (rounding of log p), times T^2 = 16
    assert kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=16 * float_tol(F32, 100))


def test_dkd_hand_value():
    s, t, y, T, a, b = [1.0, 2.0, 0.5], [2.0, 0.0, 1.0], 0, 2.0, 1.0, 8.0
    ps, pt = softmax(s, T), softmax(t, T)
    tckd = kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]])
    nckd = kl(softmax(t[1:], T), softmax(s[1:], T))
    expected = (a * tckd + b * nckd) * T**2
    got = dkd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), a, b, T)
    assert got.item() == pytest.approx(expected, rel=float_tol(F32, 3))  # float32, 3 classes vs float64


def _dkd_reference(s, t, y, alpha, beta, T):
    """mdistiller's formulation (masking with -1000 and binary 'cat_mask' probabilities)."""
    gt = F.one_hot(y, s.shape[1]).bool()
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    ps2 = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], 1)
    pt2 = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], 1)
    tckd = F.kl_div(torch.log(ps2), pt2, reduction="sum") * T**2 / s.shape[0]
    pt_nt = F.softmax(t / T - 1000.0 * gt, 1)
    log_ps_nt = F.log_softmax(s / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_ps_nt, pt_nt, reduction="sum") * T**2 / s.shape[0]
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_matches_reference_formulation(T):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(16, 100, generator=g), torch.randn(16, 100, generator=g)
    y = torch.randint(0, 100, (16,), generator=g)
    # float32, 16 x 100 terms, summed in another order by the reference (masking, kl_div "sum")
    assert torch.allclose(dkd_loss(s, t, y, 1.0, 8.0, T), _dkd_reference(s, t, y, 1.0, 8.0, T),
                          rtol=float_tol(F32, 16 * 100), atol=0)


def test_dkd_decomposition_alpha_beta_linear():
    g = torch.Generator().manual_seed(2)
    s, t, y = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g), torch.tensor([0, 3, 9, 2])
    tckd = dkd_loss(s, t, y, 1.0, 0.0, 4.0)
    nckd = dkd_loss(s, t, y, 0.0, 1.0, 4.0)
    assert torch.allclose(dkd_loss(s, t, y, 2.0, 6.0, 4.0), 2 * tckd + 6 * nckd, rtol=float_tol(F32, 4 * 10), atol=0)
    # KD = TCKD + (1 - p_t^target) * NCKD (the DKD paper's identity)
    pt = F.softmax(t / 4.0, 1)[torch.arange(4), y]
    per_sample = [dkd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], 1.0, 0.0, 4.0)
                  + (1 - pt[i]) * dkd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], 0.0, 1.0, 4.0) for i in range(4)]
    assert torch.allclose(torch.stack(per_sample).mean(), kd_loss(s, t, 4.0), rtol=float_tol(F32, 4 * 10), atol=0)


def test_sce_hand_value():
    s, d, eps = [0.5, 1.5, -1.0], [2.0, 0.0, 0.0], 0.1
    log_ps = [math.log(p) for p in softmax(s)]
    pd = softmax(d)
    expected = (1 - eps) * -sum(a * b for a, b in zip(pd, log_ps)) + eps * -sum(log_ps) / 3
    assert sce_loss(torch.tensor([s]), torch.tensor([d]), eps).item() == pytest.approx(expected, rel=float_tol(F32, 3))


def test_sce_eps_zero_is_soft_cross_entropy():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(5, 7, generator=g, requires_grad=True)
    d = torch.randn(5, 7, generator=g)
    expected = -(F.softmax(d, 1) * F.log_softmax(s, 1)).sum(1).mean()
    assert torch.allclose(sce_loss(s, d, 0.0), expected, rtol=float_tol(F32, 5 * 7), atol=0)  # float32, 5 x 7 terms
