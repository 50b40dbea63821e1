"""2-D feature maps: t-SNE / UMAP / PCA embeddings that are comparable across panels and epochs.

Comparability guarantees
- Fixed ``seed`` everywhere; the same call returns the same array (openTSNE runs single-
  threaded by default because its multi-threaded gradient sums are not bit-reproducible).
- Every embedding starts from a PCA initialisation of its own features computed one fixed way
  (centred SVD, signs fixed so each component's largest loading is positive), rescaled to the
  scale the method expects (t-SNE: std 1e-4 on the first axis; UMAP: coordinates within +-10).
- Side-by-side panels (:func:`feature_maps`) hold the SAME examples in the same order. By default
  (``init="shared"``) every panel starts from the same initial layout -- the PCA of the reference
  panel's features -- and the same seed, so each example starts at the same place in every
  panel; ``init="own"`` starts each panel from the PCA of its own features instead (no layout
  borrowed from another model). Either way each finished panel is then rotated/reflected onto
  the reference panel (orthogonal Procrustes over the shared rows). Rotation, reflection and
  translation keep every distance in a panel, so the map's meaning is unchanged while the same
  classes land in the same place on screen.
- Epoch animations (:func:`aligned_embeddings`) initialise frame ``t`` from frame ``t-1``'s
  coordinates and Procrustes-align the result to it. Why not umap's ``AlignedUMAP``: it works
  for UMAP only and fits all frames jointly, so a new epoch refits everything and per-frame
  results cannot be cached; warm starts work for every backend (openTSNE, scikit-learn, UMAP,
  cuML), need no relation dicts (rows are the same examples in every frame), and each frame is
  cached under a key that includes its initialisation.

Every map carries quality numbers (:func:`embedding_quality`): leave-one-out kNN accuracy in
feature space and in the embedding, and scikit-learn's trustworthiness.

Backends: ``tsne`` -> openTSNE, else scikit-learn; ``umap`` -> umap-learn (first call per process
costs ~20 s of numba JIT); both -> cuML when ``backend="cuml"`` or ``backend="auto"`` with
``device`` on CUDA and cuML importable. ``pca`` is the instant fallback.
"""
from __future__ import annotations

import importlib.util
from typing import Optional, Sequence, Union

import numpy as np

from ..registry import Registry, unknown_choice
from . import cache as C
from .features import FeatureSet
from .metrics import knn_accuracy, to_numpy, trustworthiness

METHODS = ("tsne", "umap", "pca")
BACKENDS = ("auto", "opentsne", "sklearn", "umap-learn", "cuml", "numpy")
TSNE_INIT_STD = 1e-4  # t-SNE convention (openTSNE, scikit-learn) for the initial layout
UMAP_INIT_MAX = 10.0  # umap-learn scales its own initialisations into [-10, 10]
DEFAULT_PERPLEXITY = 30.0
DEFAULT_QUALITY_K = 10
EMBEDDERS = Registry("embedding backend")


# ------------------------------------------------------------------------ PCA and align
def pca(X, n_components: int = 2) -> np.ndarray:
    """Deterministic PCA scores: centred SVD, each component's largest |loading| positive."""
    X = to_numpy(X)
    Xc = X - X.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    vt = vt[:n_components]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    Z = Xc @ (vt * signs[:, None]).T
    if Z.shape[1] < n_components:  # fewer features than components: pad with zeros
        Z = np.pad(Z, ((0, 0), (0, n_components - Z.shape[1])))
    return Z


def procrustes_align(Z, reference) -> np.ndarray:
    """``Z`` rotated/reflected (orthogonal R) and translated to best match ``reference`` row by
    row in least squares. Pairwise distances within ``Z`` are unchanged."""
    Z, R = np.asarray(Z, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if Z.shape != R.shape:
        raise ValueError(f"cannot align {Z.shape} to {R.shape}: panels must hold the same examples")
    zm, rm = Z.mean(axis=0), R.mean(axis=0)
    u, _, vt = np.linalg.svd((Z - zm).T @ (R - rm))
    return (Z - zm) @ (u @ vt) + rm


def _scale_init(init: np.ndarray, method: str) -> np.ndarray:
    init = np.asarray(init, dtype=np.float64)
    init = init - init.mean(axis=0)
    if method == "tsne":
        std = init[:, 0].std()
        return init * (TSNE_INIT_STD / std) if std > 0 else init
    if method == "umap":
        m = np.abs(init).max()
        return init * (UMAP_INIT_MAX / m) if m > 0 else init
    return init


# ------------------------------------------------------------------------------ backends
def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda(device) -> bool:
    return device is not None and str(device).startswith("cuda")


def choose_backend(method: str, backend: str = "auto", device=None) -> str:
    """The concrete backend ``embed`` will use (raises a ValueError for impossible choices)."""
    if method not in METHODS:
        raise ValueError(unknown_choice("embedding method", method, list(METHODS)))
    if backend not in BACKENDS:
        raise ValueError(unknown_choice("embedding backend", backend, list(BACKENDS)))
    valid = {"tsne": ("opentsne", "sklearn", "cuml"), "umap": ("umap-learn", "cuml"), "pca": ("numpy",)}[method]
    if backend == "auto":
        if method != "pca" and _cuda(device) and _has("cuml"):
            return "cuml"
        if method == "tsne":
            return "opentsne" if _has("openTSNE") else "sklearn"
        return valid[0]
    if backend not in valid:
        raise ValueError(unknown_choice(f"{method} backend", backend, list(valid)))
    return backend


def _perplexity(n: int, perplexity: float) -> float:
    return float(max(1.0, min(perplexity, (n - 1) / 3.0)))  # t-SNE needs 3*perplexity < n


@EMBEDDERS.register("numpy")
def _pca_backend(X, init, n_components, seed, params):
    return pca(X, n_components)


@EMBEDDERS.register("opentsne")
def _opentsne(X, init, n_components, seed, params):
    from openTSNE import TSNE

    p = dict(params)
    p["perplexity"] = _perplexity(len(X), p.get("perplexity", DEFAULT_PERPLEXITY))
    p.setdefault("n_jobs", 1)
    if n_components > 2:
        p.setdefault("negative_gradient_method", "bh")
    return np.asarray(TSNE(n_components=n_components, initialization=init, random_state=seed, **p).fit(X))


@EMBEDDERS.register("sklearn")
def _sklearn_tsne(X, init, n_components, seed, params):
    from sklearn.manifold import TSNE

    p = dict(params)
    p.pop("n_jobs", None)
    p["perplexity"] = _perplexity(len(X), p.get("perplexity", DEFAULT_PERPLEXITY))
    method = "barnes_hut" if n_components <= 3 else "exact"
    return TSNE(n_components=n_components, init=init, random_state=seed, method=method, **p).fit_transform(X)


@EMBEDDERS.register("umap-learn")
def _umap(X, init, n_components, seed, params):
    import umap

    p = dict(params)
    p["n_neighbors"] = min(p.get("n_neighbors", 15), len(X) - 1)
    return umap.UMAP(n_components=n_components, init=init, random_state=seed, **p).fit_transform(X)


@EMBEDDERS.register("cuml")
def _cuml(X, init, n_components, seed, params):  # pragma: no cover - needs a GPU with cuML
    method = params.pop("_method")
    if method == "tsne":
        from cuml.manifold import TSNE

        return np.asarray(TSNE(n_components=n_components, random_state=seed, **params).fit_transform(X))
    from cuml.manifold import UMAP

    return np.asarray(UMAP(n_components=n_components, init=init, random_state=seed, **params).fit_transform(X))


def embed(X, method: str = "tsne", n_components: int = 2, seed: int = 0,
          init: Union[str, np.ndarray] = "pca", backend: str = "auto", device=None,
          cache_dir: C.CacheDir = None, **params) -> np.ndarray:
    """Embed the rows of ``X`` into ``n_components`` dimensions; returns ``(N, n_components)``.

    ``init``: ``"pca"`` (deterministic PCA of ``X``) or an ``(N, n_components)`` array (e.g. the
    previous epoch's map), rescaled to the method's convention. Extra ``params`` go to the
    backend (``perplexity``, ``n_neighbors``, ``min_dist``, ``n_jobs``...). Results are cached on
    disk under a key of (hash of X, method, backend, n_components, seed, init, params)."""
    X = to_numpy(X, dtype=np.float32)
    if X.ndim != 2 or len(X) < 4:
        raise ValueError(f"embed needs a (N >= 4, D) feature matrix, got shape {X.shape}")
    chosen = choose_backend(method, backend, device)
    if isinstance(init, str):
        if init != "pca":
            raise ValueError(unknown_choice("embedding init", init, ["pca", "<array>"]))
        init_arr = pca(X, n_components)
    else:
        init_arr = np.asarray(init, dtype=np.float64)
        if init_arr.shape != (len(X), n_components):
            raise ValueError(f"init has shape {init_arr.shape}, expected {(len(X), n_components)}")
    init_arr = _scale_init(init_arr, method)
    cache_dir = C.resolve_cache_dir(cache_dir)
    key = C.make_key(x=C.hash_arrays(X), method=method, backend=chosen, n=n_components, seed=seed,
                     init=C.hash_arrays(init_arr), params=params)
    hit = C.load(cache_dir, "embeddings", key)
    if hit is not None:
        return hit["coords"]
    p = dict(params, _method=method) if chosen == "cuml" else dict(params)
    Z = np.asarray(EMBEDDERS.get(chosen)(X, init_arr.astype(np.float32), n_components, seed, p), dtype=np.float64)
    C.save(cache_dir, "embeddings", key, coords=Z)
    return Z


def embedding_quality(X, Z, labels, k: int = DEFAULT_QUALITY_K) -> dict:
    """``{"knn_features", "knn_embedding", "trustworthiness"}``: leave-one-out k-NN accuracy
    in the feature space and in the embedding (same k), and trustworthiness (k neighbours)."""
    X, Z, y = to_numpy(X), to_numpy(Z), np.asarray(labels)
    k = max(1, min(k, len(X) - 1))
    return {"knn_features": knn_accuracy(X, y, k=k), "knn_embedding": knn_accuracy(Z, y, k=k),
            "trustworthiness": trustworthiness(X, Z, n_neighbors=k)}


# -------------------------------------------------------------------------------- panels
def _as_set(panel, labels) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray], np.ndarray]:
    if isinstance(panel, FeatureSet):
        return panel.features, panel.labels, panel.predictions, panel.index
    X = to_numpy(panel, dtype=np.float32)
    if labels is None:
        raise ValueError("plain feature arrays need labels=")
    return X, np.asarray(labels), None, np.arange(len(X))


def _record(name, X, Z, y, pred, index, method, quality_k, **extra) -> dict:
    rec = {"panel": name, "coords": Z, "labels": np.asarray(y), "predictions": pred,
           "index": np.asarray(index), "method": method}
    rec.update(extra)
    rec["quality"] = embedding_quality(X, Z, y, quality_k) if quality_k else {}
    return rec


PANEL_INITS = ("shared", "own")


def feature_maps(panels: dict, labels=None, method: str = "tsne", seed: int = 0, init: str = "shared",
                 align: bool = True, reference: Optional[str] = None,
                 quality_k: int = DEFAULT_QUALITY_K, **embed_kw) -> list[dict]:
    """One embedding record per panel (e.g. one per method or role), comparable side by side.

    ``panels``: ``{name: FeatureSet}`` or ``{name: (N, D) array}`` (then ``labels=``); all
    panels must hold the same examples in the same order. Returns a list of dicts
    ``{"panel", "coords" (N, 2), "labels", "predictions" (None for arrays), "index", "method",
    "quality"}`` in the order given. ``init``: ``"shared"`` (PCA layout of the reference panel
    for every panel) or ``"own"``; ``align`` rotates each panel onto ``reference`` (default: the
    first)."""
    if init not in PANEL_INITS:
        raise ValueError(unknown_choice("panel init", init, list(PANEL_INITS)))
    if not panels:
        raise ValueError("feature_maps needs at least one panel")
    sets = {name: _as_set(p, labels) for name, p in panels.items()}
    ref = reference if reference is not None else next(iter(sets))
    if ref not in sets:
        raise ValueError(unknown_choice("reference panel", ref, list(sets)))
    idx0 = sets[ref][3]
    for name, (_, _, _, idx) in sets.items():
        if len(idx) != len(idx0) or not np.array_equal(idx, idx0):
            raise ValueError(f"panel {name!r} holds different examples than panel {ref!r}")
    n_components = embed_kw.pop("n_components", 2)
    start = pca(sets[ref][0], n_components) if init == "shared" else "pca"
    coords = {name: embed(X, method=method, seed=seed, init=start, n_components=n_components, **embed_kw)
              for name, (X, *_rest) in sets.items()}
    if align:
        coords = {name: (Z if name == ref else procrustes_align(Z, coords[ref])) for name, Z in coords.items()}
    return [_record(name, X, coords[name], y, pred, idx, method, quality_k)
            for name, (X, y, pred, idx) in sets.items()]


def aligned_embeddings(frames: Union[dict, Sequence], labels=None, method: str = "tsne", seed: int = 0,
                       quality_k: int = DEFAULT_QUALITY_K, **embed_kw) -> list[dict]:
    """Embeddings for an epoch animation: frame t starts from frame t-1's layout and is then
    Procrustes-aligned to it. ``frames``: ``{epoch: FeatureSet | array}`` (in epoch order) or a
    list of ``(epoch, FeatureSet | array)``; every frame holds the same examples. Records as in
    :func:`feature_maps`, with ``"frame"`` = the epoch and ``"panel"`` = ``"epoch <e>"``."""
    items = list(frames.items()) if isinstance(frames, dict) else list(frames)
    if not items:
        raise ValueError("aligned_embeddings needs at least one frame")
    out, prev, idx0 = [], None, None
    for epoch, frame in items:
        X, y, pred, idx = _as_set(frame, labels)
        if idx0 is None:
            idx0 = idx
        elif not np.array_equal(idx, idx0):
            raise ValueError(f"frame {epoch!r} holds different examples than the first frame")
        Z = embed(X, method=method, seed=seed, init="pca" if prev is None else prev, **embed_kw)
        if prev is not None:
            Z = procrustes_align(Z, prev)
        out.append(_record(f"epoch {epoch}", X, Z, y, pred, idx, method, quality_k, frame=epoch))
        prev = Z
    return out
