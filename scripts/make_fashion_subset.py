"""Make the embedded Fashion-MNIST subset (``fashion_mnist_subset.npz``) and its ``PROVENANCE.md``
from the full IDX files.

    apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb pkg
    python scripts/make_fashion_subset.py pkg/usr/share/datasets/fashion-mnist \\
        --source-label "Debian dataset-fashion-mnist <version>"

Rule (:func:`workbench.data.fashion_mnist.select`, the rule ``train_per_class`` also uses): for
each file, a NumPy generator ``default_rng(seed)`` permutes the indices of each class 0..9 in
turn and keeps the first ``--train-per-class`` (training file) or ``--test-per-class`` (test
file). Kept images are stored
in their original file order, with their original indices (``train_index``, ``test_index``), so
anyone with the full files can check every image. Then update ``EMBEDDED_SHA256`` in
``workbench/data/fashion_files.py`` with the printed checksum.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

from workbench.data import fashion_files as ff
from workbench.data.fashion_mnist import select

DEFAULT_TRAIN_PER_CLASS = 600
DEFAULT_TEST_PER_CLASS = 200
DEFAULT_SEED = 0
INDEX_DTYPE = np.uint16  # the official files hold 60,000 and 10,000 images


def subset(folder: Path, train_per_class: int, test_per_class: int, seed: int) -> dict[str, np.ndarray]:
    full = ff.load_full(folder)
    out = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = full[split]
        keep = select(labels, range(ff.NUM_CLASSES), per_class, seed=seed)
        out[f"{split}_images"], out[f"{split}_labels"] = images[keep], labels[keep]
        out[f"{split}_index"] = keep.astype(INDEX_DTYPE)
    return out


def provenance(folder: Path, label: str, arrays: dict, args, digest: str) -> str:
    sources = "\n".join(f"| `{p.name}` | `{ff.sha256(p)}` |" for p in sorted(folder.iterdir())
                        if p.name.split(".")[0] in {s for pair in ff.FILES.values() for s in pair})
    counts = {s: np.bincount(arrays[f"{s}_labels"], minlength=ff.NUM_CLASSES).tolist() for s in ff.FILES}
    return f"""# Provenance of `{ff.EMBEDDED_FILE.name}`

A seeded, class-balanced subset of Fashion-MNIST (Zalando SE, 2017; MIT licence, notice in
`LICENSE-fashion-mnist.txt` beside this file), made by `scripts/make_fashion_subset.py`.

- Source: {label}, files read from `{folder}`:

| file | sha256 |
|---|---|
{sources}

- Rule (`workbench.data.fashion_mnist.select`): for each file, `numpy.random.default_rng({args.seed})`
  permutes the indices of class 0, then class 1, ... 9; the first {args.train_per_class} per class
  of the training file and the first {args.test_per_class} per class of the test file (`t10k`) are
  kept, in their original file order.
- Contents (uint8): `train_images` {arrays['train_images'].shape}, `train_labels`, `train_index`
  (indices into the official training file), `test_images` {arrays['test_images'].shape},
  `test_labels`, `test_index`. Images per class: train {counts['train']}, test {counts['test']}.
- Command: `python scripts/make_fashion_subset.py <folder> --train-per-class
  {args.train_per_class} --test-per-class {args.test_per_class} --seed {args.seed}`
- sha256 of `{ff.EMBEDDED_FILE.name}`: `{digest}` (checked on every load:
  `workbench/data/fashion_files.py`, `EMBEDDED_SHA256`).
- Made: {datetime.date.today().isoformat()} with NumPy {np.__version__} (`np.savez_compressed`; re-running the
  command on the same files gave the same bytes).
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="folder with the four official IDX files (plain or .gz)")
    p.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS)
    p.add_argument("--test-per-class", type=int, default=DEFAULT_TEST_PER_CLASS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--source-label", default="the official Fashion-MNIST IDX files")
    p.add_argument("--out", type=Path, default=ff.EMBEDDED_FILE)
    args = p.parse_args(argv)
    arrays = subset(args.folder, args.train_per_class, args.test_per_class, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    digest = ff.sha256(args.out)
    (args.out.parent / "PROVENANCE.md").write_text(provenance(args.folder, args.source_label, arrays, args, digest))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB), sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
