"""Pure gap and feature metrics: tensors or arrays in, python floats or numpy arrays out.

Every function accepts ``torch.Tensor`` or ``numpy`` input (any float dtype), computes in
float64 on the CPU and never modifies its arguments. Conventions:

* logits are ``(N, K)`` with examples as rows; labels are ``(N,)`` integers in ``[0, K)``;
* features are ``(N, D)``, examples as rows; two feature matrices compared with each other
  (CKA) must have the same rows (the same examples in the same order) but may differ in width;
* accuracies are fractions in ``[0, 1]`` (multiply by 100 for percent);
* a metric that is undefined for the input (e.g. CKA of a constant feature matrix) is
  ``nan``; :class:`workbench.engine.metrics.MetricsLog` writes it as ``null``.

Definitions follow ``docs/published.md`` ("Gap metrics"): accuracy gap, agreement,
predictive KL(p_teacher || p_student), linear CKA, DIST inter/intra-class correlation gaps,
class-mean logit difference, plus the feature-space quality numbers used by the
discriminability probe and the feature maps (kNN accuracy, separability ratio,
trustworthiness).
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import unknown_choice

KNN_METRICS = ("euclidean", "cosine")
_EPS = 1e-12  # guards divisions by a norm/variance that is exactly zero


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    """A float64 (or ``dtype``) numpy copy of a tensor/array, detached and on the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # also makes bfloat16/half convertible
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _labels(y) -> np.ndarray:
    y = to_numpy(y, dtype=None)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    return y.astype(np.int64)


def _logits(z, name="logits") -> np.ndarray:
    z = to_numpy(z)
    if z.ndim != 2:
        raise ValueError(f"{name} must be (N, K), got shape {z.shape}")
    return z


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what} shapes differ: {a.shape} vs {b.shape}")


def log_softmax(z: np.ndarray, T: float = 1.0) -> np.ndarray:
    """Numerically stable ``log softmax(z / T)`` over the last axis."""
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T!r}")
    z = np.asarray(z, dtype=np.float64) / T
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z, T: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(to_numpy(z), T))


# ---------------------------------------------------------------------------- logit gaps
def accuracy(logits, y) -> float:
    """Top-1 accuracy: fraction of rows whose argmax equals the label."""
    z, y = _logits(logits), _labels(y)
    if len(z) != len(y):
        raise ValueError(f"{len(z)} logit rows but {len(y)} labels")
    if len(y) == 0:
        return math.nan
    return float(np.mean(z.argmax(axis=1) == y))


def accuracy_gap(logits_teacher, logits_student, y) -> float:
    """``accuracy(teacher) - accuracy(student)`` (positive when the teacher is ahead)."""
    return accuracy(logits_teacher, y) - accuracy(logits_student, y)


def agreement(logits_teacher, logits_student) -> float:
    """Fraction of examples on which both models predict the same class (argmax)."""
    zt, zs = _logits(logits_teacher), _logits(logits_student)
    _same_shape(zt, zs, "logit")
    if len(zt) == 0:
        return math.nan
    return float(np.mean(zt.argmax(axis=1) == zs.argmax(axis=1)))


def predictive_kl(logits_teacher, logits_student, T: float = 1.0) -> float:
    """Mean over examples of KL(p_t || p_s) in nats, p = softmax(logits / T). >= 0, 0 iff equal."""
    zt, zs = _logits(logits_teacher), _logits(logits_student)
    _same_shape(zt, zs, "logit")
    lt, ls = log_softmax(zt, T), log_softmax(zs, T)
    kl = (np.exp(lt) * (lt - ls)).sum(axis=1)
    return float(np.maximum(kl, 0.0).mean()) if len(kl) else math.nan


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between matching rows of a and b (nan for a constant row)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > _EPS, (a * b).sum(axis=1) / np.maximum(den, _EPS), np.nan)


def dist_inter_gap(logits_teacher, logits_student, T: float = 1.0) -> float:
    """DIST inter-class gap: 1 - mean over examples of the Pearson correlation between the
    teacher's and the student's softmax vectors (correlation across classes, per example).
    0 when predictions agree up to an affine map, up to 2 when anti-correlated."""
    zt, zs = _logits(logits_teacher), _logits(logits_student)
    _same_shape(zt, zs, "logit")
    r = _pearson_rows(softmax(zt, T), softmax(zs, T))
    return float(1.0 - np.nanmean(r)) if np.isfinite(r).any() else math.nan


def dist_intra_gap(logits_teacher, logits_student, T: float = 1.0) -> float:
    """DIST intra-class gap: 1 - mean over classes of the Pearson correlation between the
    teacher's and the student's probabilities of that class across examples."""
    zt, zs = _logits(logits_teacher), _logits(logits_student)
    _same_shape(zt, zs, "logit")
    r = _pearson_rows(softmax(zt, T).T, softmax(zs, T).T)
    return float(1.0 - np.nanmean(r)) if np.isfinite(r).any() else math.nan


def class_mean_logit_diff(logits_teacher, logits_student, y, num_classes: int | None = None) -> np.ndarray:
    """``(K, K)`` matrix ``M[k, j]`` = mean over examples of true class ``k`` of
    ``logit_teacher[j] - logit_student[j]``. Rows of classes with no example are ``nan``."""
    zt, zs, y = _logits(logits_teacher), _logits(logits_student), _labels(y)
    _same_shape(zt, zs, "logit")
    if len(y) != len(zt):
        raise ValueError(f"{len(zt)} logit rows but {len(y)} labels")
    K = num_classes or zt.shape[1]
    d = zt - zs
    out = np.full((K, zt.shape[1]), np.nan)
    for k in range(K):
        rows = d[y == k]
        if len(rows):
            out[k] = rows.mean(axis=0)
    return out


# ------------------------------------------------------------------------ representation
def _centre(X) -> np.ndarray:
    X = to_numpy(X)
    if X.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {X.shape}")
    return X - X.mean(axis=0, keepdims=True)


def linear_cka(X, Y) -> float:
    """Linear CKA (Kornblith et al. 2019) between ``X (n, d1)`` and ``Y (n, d2)``:
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc, Yc``.

    In ``[0, 1]``; 1 for identical inputs; invariant to orthogonal transforms and isotropic
    scaling of either side. ``nan`` if either side has no variance. Uses the n x n Gram form
    when ``n`` is smaller than the widths (same value, cheaper)."""
    Xc, Yc = _centre(X), _centre(Y)
    if len(Xc) != len(Yc):
        raise ValueError(f"CKA needs the same examples on both sides: {len(Xc)} vs {len(Yc)} rows")
    n = len(Xc)
    if n < 2:
        return math.nan
    if n < max(Xc.shape[1], Yc.shape[1]):
        Kx, Ky = Xc @ Xc.T, Yc @ Yc.T
        cross, nx, ny = (Kx * Ky).sum(), np.linalg.norm(Kx), np.linalg.norm(Ky)
    else:
        cross = np.linalg.norm(Yc.T @ Xc) ** 2
        nx, ny = np.linalg.norm(Xc.T @ Xc), np.linalg.norm(Yc.T @ Yc)
    if nx < _EPS or ny < _EPS:
        return math.nan
    return float(cross / (nx * ny))


def knn_predict(train_feats, train_y, test_feats=None, k: int = 5, metric: str = "euclidean") -> np.ndarray:
    """Majority vote of the ``k`` nearest training points (ties -> smallest class index).

    ``test_feats=None``: leave-one-out on the training set (a point never votes for itself,
    duplicates of it do). ``metric``: ``euclidean`` or ``cosine`` (rows L2-normalised)."""
    if metric not in KNN_METRICS:
        raise ValueError(unknown_choice("kNN metric", metric, list(KNN_METRICS)))
    Xtr, ytr = to_numpy(train_feats), _labels(train_y)
    loo = test_feats is None
    Xte = Xtr if loo else to_numpy(test_feats)
    if Xtr.ndim != 2 or Xte.ndim != 2 or Xtr.shape[1] != Xte.shape[1]:
        raise ValueError(f"feature shapes do not match: {Xtr.shape} vs {Xte.shape}")
    if len(Xtr) != len(ytr):
        raise ValueError(f"{len(Xtr)} training rows but {len(ytr)} labels")
    avail = len(Xtr) - (1 if loo else 0)
    if not 1 <= k <= avail:
        raise ValueError(f"k={k} must be in [1, {avail}] for {len(Xtr)} training points")
    if metric == "cosine":
        Xtr = Xtr / np.maximum(np.linalg.norm(Xtr, axis=1, keepdims=True), _EPS)
        Xte = Xte / np.maximum(np.linalg.norm(Xte, axis=1, keepdims=True), _EPS)
    K = int(ytr.max()) + 1
    preds = np.empty(len(Xte), dtype=np.int64)
    chunk = 1024  # bounds the (chunk, n_train) distance matrix
    sq_tr = (Xtr * Xtr).sum(axis=1)
    for s in range(0, len(Xte), chunk):
        q = Xte[s:s + chunk]
        d = (q * q).sum(axis=1)[:, None] + sq_tr[None, :] - 2 * q @ Xtr.T
        if loo:
            d[np.arange(len(q)), np.arange(s, s + len(q))] = np.inf
        nn = np.argsort(d, axis=1, kind="stable")[:, :k]
        votes = np.zeros((len(q), K))
        np.add.at(votes, (np.repeat(np.arange(len(q)), k), ytr[nn].ravel()), 1.0)
        preds[s:s + len(q)] = votes.argmax(axis=1)
    return preds


def knn_accuracy(train_feats, train_y, test_feats=None, test_y=None, k: int = 5,
                 metric: str = "euclidean") -> float:
    """Accuracy of :func:`knn_predict` (leave-one-out on the training set when no test set)."""
    if (test_feats is None) != (test_y is None):
        raise ValueError("give both test_feats and test_y, or neither (leave-one-out)")
    pred = knn_predict(train_feats, train_y, test_feats, k=k, metric=metric)
    y = _labels(train_y if test_y is None else test_y)
    return float(np.mean(pred == y))


def separability_ratio(feats, y) -> float:
    """Fisher class separability ``tr(S_B) / tr(S_W)``:
    ``S_B = sum_k n_k (mu_k - mu)(mu_k - mu)^T``, ``S_W = sum_k sum_{i in k} (x_i - mu_k)(...)^T``.
    Invariant to rotations, translations and isotropic scaling; ``inf`` if every class
    collapses to a point, ``nan`` if there are no points."""
    X, y = to_numpy(feats), _labels(y)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} feature rows but {len(y)} labels")
    if len(X) == 0:
        return math.nan
    mu = X.mean(axis=0)
    sb = sw = 0.0
    for k in np.unique(y):
        Xk = X[y == k]
        mk = Xk.mean(axis=0)
        sb += len(Xk) * float(((mk - mu) ** 2).sum())
        sw += float(((Xk - mk) ** 2).sum())
    if sw < _EPS:
        return math.inf if sb > 0 else math.nan
    return sb / sw


def trustworthiness(X_high, X_low, n_neighbors: int = 5) -> float:
    """scikit-learn's trustworthiness of an embedding (1 = no false neighbours)."""
    from sklearn.manifold import trustworthiness as _tw

    X, Z = to_numpy(X_high), to_numpy(X_low)
    if len(X) != len(Z):
        raise ValueError(f"{len(X)} points but {len(Z)} embedded points")
    n_neighbors = min(n_neighbors, (len(X) - 1) // 2)  # sklearn requires k < n/2
    if n_neighbors < 1:
        return math.nan
    return float(_tw(X, Z, n_neighbors=n_neighbors))
