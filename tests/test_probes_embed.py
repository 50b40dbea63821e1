"""Embeddings: shapes, determinism under the fixed seed, cache hits, alignment, quality numbers."""
import numpy as np
import pytest

from workbench.probes import embed as E
from workbench.probes.features import FeatureSet

N_PER, K, D = 40, 4, 10  # 160 points


def blobs(seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(K, D))
    y = np.repeat(np.arange(K), N_PER)
    return (centres[y] + spread * rng.normal(size=(len(y), D))).astype(np.float32), y


def rotation(d, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


class CountingEmbedders:
    """Wraps EMBEDDERS.get so each backend call is counted."""

    def __init__(self, monkeypatch):
        self.calls = []
        orig = E.EMBEDDERS.get

        def get(name):
            fn = orig(name)

            def counted(X, init, *a):
                self.calls.append((name, init.copy()))
                return fn(X, init, *a)
            return counted
        monkeypatch.setattr(E.EMBEDDERS, "get", get)


@pytest.mark.parametrize("method,backend", [("tsne", "opentsne"), ("tsne", "sklearn"), ("pca", "auto")])
def test_shapes_and_determinism(method, backend):
    X, _ = blobs()
    a = E.embed(X, method=method, backend=backend, seed=3, cache_dir=False)
    b = E.embed(X, method=method, backend=backend, seed=3, cache_dir=False)
    assert a.shape == (len(X), 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_cache_hit_does_not_recompute(tmp_path, monkeypatch):
    counter = CountingEmbedders(monkeypatch)
    X, _ = blobs()
    a = E.embed(X, method="tsne", seed=0, cache_dir=tmp_path)
    b = E.embed(X, method="tsne", seed=0, cache_dir=tmp_path)
    assert len(counter.calls) == 1
    np.testing.assert_array_equal(a, b)
    E.embed(X, method="tsne", seed=1, cache_dir=tmp_path)  # other seed -> other key
    E.embed(X, method="tsne", seed=0, cache_dir=tmp_path, perplexity=10)  # other params
    E.embed(X[:-1], method="tsne", seed=0, cache_dir=tmp_path)  # other data
    assert len(counter.calls) == 4
    assert len(list((tmp_path / "embeddings").glob("*.npz"))) == 4


def test_pca_matches_sklearn_up_to_sign_and_fixes_signs_by_loadings():
    from sklearn.decomposition import PCA

    X, _ = blobs()
    Z = E.pca(X)
    ref = PCA(n_components=2, svd_solver="full").fit_transform(X.astype(np.float64))
    # float32 features vs scikit-learn's float64 SVD: coordinates are sums of D=10 products of
    # float32 inputs (~6e-8 relative each) of O(1-10) values
    np.testing.assert_allclose(np.abs(Z), np.abs(ref), rtol=1e-5, atol=1e-5)
    Xc = X - X.mean(0)
    loadings = np.linalg.pinv(Xc) @ Z  # (D, 2): Z = Xc @ loadings
    for k in range(2):
        assert loadings[np.abs(loadings[:, k]).argmax(), k] > 0
    # the rule depends on the directions, not on the data's orientation: -X gives -Z exactly
    np.testing.assert_allclose(E.pca(-X), -Z, rtol=1e-5, atol=1e-5)  # same float32 bound as above
    assert Z[:, 0].var() >= Z[:, 1].var()


def test_procrustes_recovers_a_rotated_reflected_copy():
    Z, _ = blobs()
    Z = Z[:, :2].astype(float)
    th = 0.7
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag([1, -1])
    moved = Z @ R + 5.0
    np.testing.assert_allclose(E.procrustes_align(moved, Z), Z, atol=1e-9)  # float64 2x2 SVD of 160-point sums: ~1e-13
    d = lambda A: np.linalg.norm(A[:, None] - A[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(E.procrustes_align(moved * 2, Z)), d(moved * 2), atol=1e-9)  # float64, as above


def test_feature_maps_panels_are_aligned_and_carry_quality():
    X, y = blobs()
    sets = {"A": FeatureSet(X, y, np.eye(K)[y], np.arange(len(y))),
            "B": FeatureSet(X @ rotation(D).astype(np.float32), y, np.eye(K)[(y + 1) % K], np.arange(len(y)))}
    recs = E.feature_maps(sets, method="pca", cache_dir=False)
    assert [r["panel"] for r in recs] == ["A", "B"]
    # B's features are a rotation of A's, so after alignment the two maps coincide
    np.testing.assert_allclose(recs[1]["coords"], recs[0]["coords"], atol=1e-4)  # float32 rotation of D=10 features, then PCA
    np.testing.assert_array_equal(recs[1]["predictions"], (y + 1) % K)
    q = recs[0]["quality"]
    assert set(q) == {"knn_features", "knn_embedding", "trustworthiness"}
    assert q["knn_features"] == 1.0 and q["knn_embedding"] > 0.95 and 0.8 < q["trustworthiness"] <= 1.0
    with pytest.raises(ValueError, match="different examples"):
        E.feature_maps({"A": sets["A"], "C": FeatureSet(X, y, np.eye(K)[y], np.arange(len(y)) + 1)},
                       method="pca", cache_dir=False)


def test_panels_share_one_initial_layout_unless_asked_not_to(monkeypatch):
    counter = CountingEmbedders(monkeypatch)
    X, y = blobs()
    other = blobs(seed=5)[0]  # a different "model": its own PCA layout differs
    E.feature_maps({"A": X, "B": other}, labels=y, method="tsne", cache_dir=False, quality_k=0)
    (_, init_a), (_, init_b) = counter.calls
    np.testing.assert_array_equal(init_a, init_b)
    np.testing.assert_allclose(init_a, E._scale_init(E.pca(X), "tsne"), rtol=1e-4, atol=1e-9)  # float32 PCA, rescaled
    E.feature_maps({"A": X, "B": other}, labels=y, method="tsne", cache_dir=False, quality_k=0, init="own")
    (_, own_a), (_, own_b) = counter.calls[2:]
    np.testing.assert_array_equal(own_a, init_a)
    assert not np.allclose(own_b, init_a)
    with pytest.raises(ValueError, match="valid choices"):
        E.feature_maps({"A": X}, labels=y, init="random", cache_dir=False)


def test_tsne_map_separates_blobs_and_scrambled_labels_score_low():
    X, y = blobs()
    rec = E.feature_maps({"m": X}, labels=y, method="tsne", cache_dir=False)[0]
    assert rec["quality"]["knn_embedding"] > 0.95
    assert rec["predictions"] is None
    bad = E.embedding_quality(X, rec["coords"], np.random.default_rng(0).permutation(y))
    assert bad["knn_features"] < 0.5 and bad["knn_embedding"] < 0.5


def test_aligned_embeddings_warm_start_from_previous_frame(monkeypatch):
    counter = CountingEmbedders(monkeypatch)
    X, y = blobs()
    frames = {0: X, 5: X + 0.05 * np.random.default_rng(1).normal(size=X.shape).astype(np.float32), 10: X}
    recs = E.aligned_embeddings(frames, labels=y, method="tsne", cache_dir=False)
    assert [r["frame"] for r in recs] == [0, 5, 10] and [r["panel"] for r in recs] == ["epoch 0", "epoch 5", "epoch 10"]
    # frame t's initialisation is frame t-1's map (rescaled to the t-SNE convention)
    for (_, init), prev in zip(counter.calls[1:], recs[:-1]):
        expected = E._scale_init(prev["coords"], "tsne")
        np.testing.assert_allclose(init, expected, rtol=1e-4, atol=1e-9)  # float32 map rescaled: a std over 160 points
    # consecutive frames of nearly identical features stay close after alignment
    spread = np.ptp(recs[0]["coords"], axis=0).max()
    assert np.abs(recs[1]["coords"] - recs[0]["coords"]).mean() < 0.1 * spread


def test_bad_choices_raise():
    X, _ = blobs()
    with pytest.raises(ValueError, match="valid choices"):
        E.embed(X, method="isomap", cache_dir=False)
    with pytest.raises(ValueError, match="valid choices"):
        E.embed(X, method="tsne", backend="umap-learn", cache_dir=False)
    with pytest.raises(ValueError, match="init has shape"):
        E.embed(X, method="tsne", init=np.zeros((3, 2)), cache_dir=False)
    assert E.choose_backend("umap", "auto", device="cpu") == "umap-learn"


@pytest.mark.slow
def test_umap_backend_deterministic():
    X, y = blobs()
    a = E.embed(X, method="umap", seed=0, cache_dir=False)
    b = E.embed(X, method="umap", seed=0, cache_dir=False)
    np.testing.assert_array_equal(a, b)
    assert E.embedding_quality(X, a, y)["knn_embedding"] > 0.95
