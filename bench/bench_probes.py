"""Cost of the gap probes and of the 2-D feature maps, measured side by side in one run.

    python bench/bench_probes.py                 # (a) probes on digits + (b) maps on 10k x 256
    python bench/bench_probes.py --n 2000        # smaller maps
    python bench/bench_probes.py --skip-maps     # (a) only

(a) A GPD (base=kd) trainer on the embedded digits set (the demo's models, resnet8 -> resnet8):
    one evaluation pass WITHOUT probes (probe_every=0: no feature taps, no callbacks) and one WITH
    the default probes (probe_every=1: penultimate features of probe_samples examples, GapProbe,
    DiscriminabilityProbe) on the same trainer, interleaved over ``--rounds`` rounds (median),
    plus one training epoch. Prints the probe cost as a fraction of the eval pass and of an
    epoch (train + eval); target: < 5 % of an epoch at the default frequency.
(b) UMAP (umap-learn), t-SNE (openTSNE) and scikit-learn's t-SNE (reference) on ``--n`` x 256
    float32 features drawn around 10 cluster centres. UMAP's first call in a process pays the
    numba JIT: it is timed separately on a tiny input first. Target: <= 60 s each on 2 cores.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from workbench import data, models
from workbench.config import RunConfig
from workbench.engine import Trainer
from workbench.experiment import default_callbacks
from workbench.methods import build_method

FEATURE_DIM, CLUSTERS, CLUSTER_SPREAD = 256, 10, 3.0
MAP_TARGET_S, PROBE_TARGET = 60.0, 0.05
DIGITS = dict(dataset="digits", teacher="resnet8", student="resnet8", method="gpd", base="kd", grad_clip=5.0,
              batch_size=64, epochs=60, progress=False, workers=0, device="cpu")


def probe_cost(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_probes_") as out:
        cfg = RunConfig.from_dict(dict(DIGITS, out_dir=out))
        opts = cfg.dataset_options()
        train, test = data.build("digits", "train", **opts), data.build("digits", "test", **opts)
        info = data.info("digits", **opts)
        torch.manual_seed(0)
        teacher = models.build(cfg.teacher, info.num_classes, info.in_channels, image_size=info.image_size)
        student = models.build(cfg.student, info.num_classes, info.in_channels, image_size=info.image_size)
        method = build_method(cfg, student, teacher, example_input=torch.stack([train[i][0] for i in range(2)]))
        probes = default_callbacks(cfg, info)
        with_probes = Trainer(cfg, method, train, test, f"{out}/probes", probes)
        plain = Trainer(cfg.replace(probe_every=0), method, train, test, f"{out}/plain", [])

        def eval_plain():
            plain.evaluate(1)

        def eval_probes():
            _, outputs = with_probes.evaluate(1)
            for cb in probes:
                cb.on_eval_end(with_probes, 1, outputs)
                cb.on_epoch_end(with_probes, 1)

        t_train = _time(lambda: with_probes.train_epoch(1))
        eval_plain(), eval_probes()  # warm-up
        a, b = [], []
        for _ in range(rounds):
            a.append(_time(eval_plain))
            b.append(_time(eval_probes))
        ep, eb = statistics.median(a), statistics.median(b)
        extra = eb - ep
        print(f"(a) digits: {len(train)} train / {len(test)} test images, probes {[type(c).__name__ for c in probes]}, "
              f"probe_samples {cfg.probe_samples}, {rounds} rounds")
        print(f"    train epoch {t_train:7.2f} s | eval pass plain {ep:6.2f} s | with probes {eb:6.2f} s")
        frac = extra / (t_train + ep)
        print(f"    probes add {extra:6.2f} s = {100 * extra / ep:5.1f} % of an eval pass, "
              f"{100 * frac:5.1f} % of an epoch (train + eval)  target < {100 * PROBE_TARGET:.0f} %: "
              f"{'OK' if frac < PROBE_TARGET else 'ABOVE TARGET'}")


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, CLUSTER_SPREAD, (CLUSTERS, FEATURE_DIM))
    y = rng.integers(0, CLUSTERS, n)
    return (centres[y] + rng.normal(0, 1, (n, FEATURE_DIM))).astype(np.float32), y


def map_cost(n: int, threads: int, skip_sklearn: bool) -> None:
    X, _ = clustered(n)
    print(f"(b) {n} x {FEATURE_DIM} clustered features, {threads} threads")
    t0 = time.perf_counter()
    import umap

    print(f"    import umap                 {time.perf_counter() - t0:7.1f} s")
    small, _ = clustered(200, seed=1)
    t = _time(lambda: umap.UMAP(random_state=0).fit_transform(small))
    print(f"    UMAP first call (JIT, 200 pts) {t:5.1f} s")
    runs = {"UMAP (umap-learn)": lambda: umap.UMAP(random_state=0, n_jobs=threads).fit_transform(X)}
    from openTSNE import TSNE as OpenTSNE

    runs["t-SNE (openTSNE)"] = lambda: np.asarray(OpenTSNE(n_jobs=threads, random_state=0).fit(X))
    if not skip_sklearn:
        from sklearn.manifold import TSNE

        runs["t-SNE (scikit-learn)"] = lambda: TSNE(random_state=0, init="pca").fit_transform(X)
    for name, fn in runs.items():
        t = _time(fn)
        print(f"    {name:26s} {t:7.1f} s  target <= {MAP_TARGET_S:.0f} s: {'OK' if t <= MAP_TARGET_S else 'ABOVE'}",
              flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="points for the maps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-maps", action="store_true")
    p.add_argument("--skip-probes", action="store_true")
    p.add_argument("--skip-sklearn", action="store_true", help="skip scikit-learn's t-SNE (slowest)")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_probes:
        probe_cost(args.rounds)
    if not args.skip_maps:
        map_cost(args.n, torch.get_num_threads(), args.skip_sklearn)


if __name__ == "__main__":
    main()
