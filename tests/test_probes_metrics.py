"""Every probe metric against a hand computation, plus CKA / separability invariances."""
import math

import numpy as np
import pytest
import torch

from conftest import float_tol
from workbench.probes import metrics as M

RNG = np.random.default_rng(0)


def _orthogonal(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# Probe metrics compute in float64 (numpy): hand values of a few terms agree to ~1e-16, so
# rel=1e-12 (sums of <= 40 x 50 terms) and rel=1e-9 (after an orthogonal rotation and QR) are
# far above rounding on any vector unit; approx's default 1e-6 is used for exact fractions.


def test_accuracy_agreement_and_gap_by_hand():
    lt = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # predicts 0, 1, 0
    ls = np.array([[0.0, 1.0], [0.0, 3.0], [0.0, 1.0]])  # predicts 1, 1, 1
    y = torch.tensor([0, 1, 1])
    assert M.accuracy(lt, y) == pytest.approx(2 / 3)
    assert M.accuracy(ls, y) == pytest.approx(2 / 3)
    assert M.accuracy_gap(lt, ls, torch.tensor([0, 1, 0])) == pytest.approx(1.0 - 1 / 3)
    assert M.agreement(lt, ls) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        M.agreement(lt, ls[:2])


def test_predictive_kl_by_hand():
    lt = np.array([[0.0, 0.0]])  # p = (1/2, 1/2)
    ls = np.array([[math.log(3.0), 0.0]])  # q = (3/4, 1/4)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = 0.5 ln(4/3)
    assert M.predictive_kl(lt, ls) == pytest.approx(expected, rel=1e-12)
    # temperature divides the logits; mean over rows; invariance to per-row logit shifts
    assert M.predictive_kl(2 * lt, 2 * ls, T=2.0) == pytest.approx(expected, rel=1e-12)
    two = np.vstack([lt, lt]), np.vstack([ls, lt + 5.0])
    assert M.predictive_kl(*two) == pytest.approx(expected / 2, rel=1e-12)
    z = torch.randn(6, 5)
    assert M.predictive_kl(z, z + 3.0) == pytest.approx(0.0, abs=1e-12)
    assert M.predictive_kl(z, torch.randn(6, 5)) > 0
    with pytest.raises(ValueError, match="temperature"):
        M.predictive_kl(z, z, T=0)


def _cka_reference(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X, "fro") ** 2 / (np.linalg.norm(X.T @ X, "fro") * np.linalg.norm(Y.T @ Y, "fro"))


def test_linear_cka_by_hand_and_vs_numpy():
    X = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    Y = np.array([[1.0], [-1], [0], [0]])
    # X^T X = 2 I (norm 2 sqrt 2), Y^T Y = 2, Y^T X = (2, 0): CKA = 4 / (2 sqrt 2 * 2)
    assert M.linear_cka(X, Y) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    A, B = RNG.normal(size=(40, 6)), RNG.normal(size=(40, 9))
    assert M.linear_cka(A, B) == pytest.approx(_cka_reference(A, B), rel=1e-10)
    # n < width: the Gram-matrix path gives the same value as the definition
    A, B = RNG.normal(size=(8, 30)), RNG.normal(size=(8, 50))
    assert M.linear_cka(A, B) == pytest.approx(_cka_reference(A, B), rel=1e-10)
    # float32 input B (rounded by 6e-8 each) enters 8 x 50 products: float_tol(float32, 400) ~ 5e-5
    assert M.linear_cka(torch.tensor(A), torch.tensor(B, dtype=torch.float32)) == pytest.approx(
        _cka_reference(A, B), rel=float_tol(torch.float32, terms=8 * 50))


@pytest.mark.parametrize("n,d", [(50, 8), (6, 20)])
def test_linear_cka_invariances(n, d):
    X = RNG.normal(size=(n, d))
    Y = X @ RNG.normal(size=(d, 5)) + 0.3 * RNG.normal(size=(n, 5))
    base = M.linear_cka(X, Y)
    assert 0.0 < base < 1.0
    assert M.linear_cka(X, X) == pytest.approx(1.0, rel=1e-12)
    assert M.linear_cka(X @ _orthogonal(d), Y) == pytest.approx(base, rel=1e-9)
    assert M.linear_cka(X, Y @ _orthogonal(5, 1)) == pytest.approx(base, rel=1e-9)
    assert M.linear_cka(7.5 * X, 0.01 * Y) == pytest.approx(base, rel=1e-9)
    assert M.linear_cka(X + 4.0, Y - 2.0) == pytest.approx(base, rel=1e-9)  # columns are centred
    assert M.linear_cka(Y, X) == pytest.approx(base, rel=1e-12)
    assert math.isnan(M.linear_cka(np.ones((n, 3)), Y))
    with pytest.raises(ValueError, match="same examples"):
        M.linear_cka(X, Y[:-1])


def test_dist_gaps_by_hand():
    # two classes: each softmax row is (p, 1-p); the per-row Pearson correlation is +1 when
    # both models lean the same way and -1 otherwise.
    lt = np.array([[1.0, 0.0], [1.0, 0.0]])
    ls = np.array([[2.0, 0.0], [0.0, 2.0]])
    assert M.dist_inter_gap(lt, lt) == pytest.approx(0.0, abs=1e-12)
    assert M.dist_inter_gap(lt, ls) == pytest.approx(1.0 - (1 + -1) / 2)
    assert M.dist_inter_gap(lt, ls[[1, 1]]) == pytest.approx(2.0)
    # intra-class: correlation of each class's probability across examples
    lt = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    ls = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])  # same ordering of examples in both classes
    pt, ps = M.softmax(lt), M.softmax(ls)
    r = [np.corrcoef(pt[:, k], ps[:, k])[0, 1] for k in range(2)]
    assert M.dist_intra_gap(lt, ls) == pytest.approx(1 - np.mean(r), rel=1e-12)
    assert M.dist_intra_gap(lt, ls[::-1]) == pytest.approx(1 - np.mean(
        [np.corrcoef(pt[:, k], ps[::-1, k])[0, 1] for k in range(2)]), rel=1e-12)
    assert M.dist_intra_gap(lt, ls[::-1]) > 1.5


def test_class_mean_logit_diff_by_hand():
    lt = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ls = np.zeros((3, 2))
    out = M.class_mean_logit_diff(lt, ls, [0, 0, 1])
    np.testing.assert_allclose(out, [[2.0, 3.0], [5.0, 6.0]])
    out3 = M.class_mean_logit_diff(lt, ls + 1.0, [0, 0, 1], num_classes=3)
    np.testing.assert_allclose(out3[:2], [[1.0, 2.0], [4.0, 5.0]])
    assert np.isnan(out3[2]).all()


def test_knn_accuracy_by_hand():
    Xtr = np.array([[0.0], [1], [2], [10], [11], [12]])
    ytr = np.array([0, 0, 0, 1, 1, 1])
    Xte = np.array([[0.5], [11.5], [5.9], [6.1]])
    # k=3: 5.9 -> {2, 10, 1} -> class 0; 6.1 -> {10, 2, 11} -> class 1
    np.testing.assert_array_equal(M.knn_predict(Xtr, ytr, Xte, k=3), [0, 1, 0, 1])
    assert M.knn_accuracy(Xtr, ytr, Xte, [0, 1, 1, 1], k=3) == pytest.approx(0.75)
    # leave-one-out, k=1; ties go to the lower index: 0 ok, 1 -> 1.5 wrong, 2 -> 1.5 wrong,
    # 10 ok, 11 ok, 12 ok, 1.5 -> 1 (class 0) wrong: 4/7
    Xl, yl = np.vstack([Xtr, [[1.5]]]), np.append(ytr, 1)
    assert M.knn_accuracy(Xl, yl, k=1) == pytest.approx(4 / 7)
    # a point never votes for itself (with k=1, LOO of two far-apart singletons is always wrong)
    assert M.knn_accuracy(np.array([[0.0], [100.0]]), [0, 1], k=1) == 0.0
    with pytest.raises(ValueError, match="k=7"):
        M.knn_accuracy(Xl, yl, k=7)
    with pytest.raises(ValueError, match="valid choices"):
        M.knn_accuracy(Xl, yl, k=1, metric="manhattan")


def test_knn_cosine_uses_direction_only():
    Xtr = np.array([[10.0, 0.0], [0.0, 1.0]])
    Xte = np.array([[1.0, 0.9]])  # 42 degrees: closer in angle to (10, 0), in distance to (0, 1)
    assert M.knn_accuracy(Xtr, [0, 1], Xte, [0], k=1, metric="cosine") == 1.0
    assert M.knn_accuracy(Xtr, [0, 1], Xte, [0], k=1, metric="euclidean") == 0.0


def test_separability_ratio_by_hand_and_invariances():
    X = np.array([[0.0], [2.0], [10.0], [12.0]])
    y = [0, 0, 1, 1]
    # mu = 6, class means 1 and 11: S_B = 2*25 + 2*25 = 100, S_W = 4 * 1 = 4
    assert M.separability_ratio(X, y) == pytest.approx(25.0)
    F = RNG.normal(size=(60, 5)) + np.repeat(np.eye(5)[:3] * 3, 20, axis=0)
    yy = np.repeat([0, 1, 2], 20)
    base = M.separability_ratio(F, yy)
    assert M.separability_ratio(F @ _orthogonal(5) * 3.0 + 1.0, yy) == pytest.approx(base, rel=1e-10)
    assert M.separability_ratio(F, RNG.permutation(yy)) < base
    assert M.separability_ratio(np.array([[0.0], [0.0], [1.0]]), [0, 0, 1]) == math.inf


def test_trustworthiness():
    X = RNG.normal(size=(60, 2))
    assert M.trustworthiness(X, X, n_neighbors=5) == pytest.approx(1.0)
    assert M.trustworthiness(np.hstack([X, np.zeros((60, 3))]), X) == pytest.approx(1.0)
    assert M.trustworthiness(X, RNG.permutation(X), n_neighbors=5) < 0.8
