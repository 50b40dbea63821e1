"""A whole epoch (train + evaluation + default probes) vs a peer-style loop, ratios in ONE run.

    python bench/bench_epoch.py                      # 320 train / 256 test images, 2 rounds
    python bench/bench_epoch.py --train 1280 --test 512 --rounds 3 [--threads 1]

Measured (resnet32x4 -> resnet8x4, 3x32x32, 100 classes, batch 64, random weights):

* **peer**: the loop the classic CIFAR KD codebases (mdistiller, RepDistiller) run per epoch:
  torchvision ``DataLoader`` over uint8 images with the standard CIFAR augmentation
  (``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``), SGD,
  KD loss (T=4, 0.1 CE + 0.9 KD), ``loss.item()`` + top-1 meters per batch, then a plain
  validation pass of the student (``no_grad``, top-1) over the test images;
* **ours KD**: ``Trainer.train_epoch`` + ``Trainer._eval_and_callbacks`` (evaluation of every
  role + the default probes, ``probe_every=1``: due every epoch, the dearest setting) on a
  ``kd`` method from ``build_method``; the same fake images, our augmentation (translate+flip);
* **ours GPD**: the same for ``gpd`` base=kd (the preset).

After each of our epochs (and outside its time) the roles that change (KD: the student; GPD:
S, T_d and their EMA twins) run one bare no-grad forward over the test set each, in the
trainer's layout: ``eval+probes / plain forwards`` <= 1 says the evaluation with its records
and default probes costs no more than a plain forward per changing role.

The fake data are made here (seeded uint8 images, random labels). Each measurement is warmed
up once (the static teacher's eval outputs are cached from then on, as in a real run after
epoch 0), then rounds interleave the three with a rotating order; ratios are taken inside each
round and printed as median (min..max).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from workbench import data, models
from workbench.config import RunConfig
from workbench.engine import Trainer
from workbench.experiment import default_callbacks
from workbench.gpd.branches import fold_once
from workbench.methods import build_method
from workbench.presets import CIFAR_METHODS

NUM_CLASSES, SIZE, BATCH = 100, 32, 64
TEACHER, STUDENT = "resnet32x4", "resnet8x4"
MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # CIFAR-100's, as mdistiller


class FakeCifar(torch.utils.data.Dataset):
    """CIFAR-shaped uint8 images + labels; ``transform`` on PIL images like torchvision's CIFAR."""

    def __init__(self, n, seed, transform):
        g = np.random.default_rng(seed)
        self.x = g.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        self.y = g.integers(0, NUM_CLASSES, n).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


class Normalized(torch.utils.data.Dataset):
    """The fake images as normalized float tensors; ``augment``: our TranslateFlip(4, flip)."""

    def __init__(self, ds: FakeCifar, augment: bool):
        from workbench.data.augment import TranslateFlip
        self.x = (torch.from_numpy(ds.x).permute(0, 3, 1, 2).float() / 255
                  - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        self.y = torch.tensor(ds.y)
        self.t = TranslateFlip(4, True) if augment else None

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i]
        return (self.t(x) if self.t else x), self.y[i]


def peer(teacher, train_n, test_n):
    train_t = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    test_t = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    train = torch.utils.data.DataLoader(FakeCifar(train_n, 0, train_t), batch_size=BATCH, shuffle=True, num_workers=0)
    test = torch.utils.data.DataLoader(FakeCifar(test_n, 1, test_t), batch_size=BATCH, shuffle=False, num_workers=0)
    torch.manual_seed(0)
    student = models.build(STUDENT, NUM_CLASSES, 3, image_size=SIZE)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def epoch():
        student.train()
        teacher.eval()
        for x, y in train:
            zs = student(x)
            with torch.no_grad():
                zt = teacher(x)
            kd = F.kl_div(F.log_softmax(zs / 4, 1), F.softmax(zt / 4, 1), reduction="batchmean") * 16
            loss = 0.1 * F.cross_entropy(zs, y) + 0.9 * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            int((zs.argmax(1) == y).sum())
        student.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += int((student(x).argmax(1) == y).sum())
        student.train()
    return epoch


def trainer(method_key, teacher, train_set, test_set, out_dir, extra=None) -> Trainer:
    """Our ``Trainer`` for preset ``method_key`` (+ ``extra`` keys) on the fake data, with the
    default probes, started and at epoch 1 (bench_epoch, profile_step)."""
    cfg = RunConfig.from_dict({
        "dataset": "synthetic", "teacher": TEACHER, "student": STUDENT, "batch_size": BATCH,
        "epochs": 240, "lr": 0.05, "workers": 0, "progress": False, "probe_every": 1,
        "transfer": "none", "out_dir": out_dir, **CIFAR_METHODS[method_key], **(extra or {})})
    torch.manual_seed(0)
    student = models.build(STUDENT, NUM_CLASSES, 3, image_size=SIZE)
    example = torch.stack([train_set[i][0] for i in range(2)])
    method = build_method(cfg, student, teacher, example_input=example)
    info = data.DatasetInfo("synthetic", NUM_CLASSES, 3, SIZE)
    tr = Trainer(cfg, method, train_set, test_set, run_dir=f"{out_dir}/{method_key}",
                 callbacks=default_callbacks(cfg, info), log=lambda *a, **k: None)
    tr.run_dir.mkdir(parents=True, exist_ok=True)
    for cb in tr.callbacks:
        cb.on_fit_start(tr.state())
    tr._start_epoch(1)
    return tr


def ours(method_key, teacher, train_set, test_set, out_dir, extra=None):
    tr = trainer(method_key, teacher, train_set, test_set, out_dir, extra)
    timings = {"train": [], "eval+probes": [], "plain forwards": []}

    def plain_forwards():
        """A bare no-grad forward over the test set per role that changes (no records, no
        features, no probes): what the evaluation pass should cost at most."""
        roles = {r: m for r, m in tr.eval_models().items() if r != "teacher"}
        with torch.no_grad(), fold_once(*roles.values()):
            for m in roles.values():
                was = m.training
                m.eval()
                if tr.channels_last:
                    m.to(memory_format=torch.channels_last)
                for x, _ in tr.test_loader:
                    m(x.contiguous(memory_format=torch.channels_last) if tr.channels_last else x)
                m.train(was)

    def epoch():
        t0 = time.perf_counter()
        tr.train_epoch(1)
        t1 = time.perf_counter()
        tr._eval_and_callbacks(1)
        t2 = time.perf_counter()
        plain_forwards()
        timings["train"].append(t1 - t0)
        timings["eval+probes"].append(t2 - t1)
        timings["plain forwards"].append(time.perf_counter() - t2)
    return epoch, timings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=320)
    ap.add_argument("--test", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-gpd", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--gpd", nargs="*", default=[], metavar="KEY=VALUE",
                    help="keys on top of the gpd_kd preset for our GPD epoch (e.g. ema_eval_every=2: "
                         "the measured epoch 1 is then one that skips the EMA twins)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; train {a.train}, test {a.test}, "
          f"batch {BATCH}, {a.rounds} rounds; load average {os.getloadavg()[0]:.1f}"
          + (f"; GPD with {' '.join(a.gpd)}" if a.gpd else ""))
    teacher = models.build(TEACHER, NUM_CLASSES, 3, image_size=SIZE).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    train_set = Normalized(FakeCifar(a.train, 0, None), augment=True)
    test_set = Normalized(FakeCifar(a.test, 1, None), augment=False)
    out = tempfile.mkdtemp()
    benches = {"peer KD epoch": peer(teacher, a.train, a.test)}
    kd, kd_t = ours("kd", teacher, train_set, test_set, out)
    benches["ours KD epoch"] = kd
    split = {"ours KD": kd_t}
    split_of = {"ours KD epoch": kd_t}
    if not a.no_gpd:
        gpd, gpd_t = ours("gpd_kd", teacher, train_set, test_set, out, dict(kv.split("=", 1) for kv in a.gpd))
        benches["ours GPD epoch"] = gpd
        split["ours GPD"] = gpd_t
        split_of["ours GPD epoch"] = gpd_t
    names = list(benches)
    secs = {n: [] for n in names}
    for n in names:  # warm-up (and the static teacher's eval cache)
        t0 = time.perf_counter(); benches[n](); print(f"warm-up {n}: {time.perf_counter() - t0:.1f}s")
    for s in split.values():
        for v in s.values():
            v.clear()
    for r in range(a.rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter(); benches[n](); secs[n].append(time.perf_counter() - t0)
            if n in split_of:  # the epoch only, not the plain-forward check timed after it
                secs[n][-1] = split_of[n]["train"][-1] + split_of[n]["eval+probes"][-1]
        print(f"round {r + 1}: " + ", ".join(f"{n} {secs[n][-1]:.1f}s" for n in names))

    def show(label, num, den):
        q = [x / y for x, y in zip(num, den)]
        print(f"{label:34s} {statistics.median(q):.2f} ({min(q):.2f}..{max(q):.2f})")
    for n in names:
        print(f"{n:34s} median {statistics.median(secs[n]):.1f}s")
    for k, s in split.items():
        print(f"{k} train / eval+probes median: {statistics.median(s['train']):.1f}s / "
              f"{statistics.median(s['eval+probes']):.1f}s")
        show(f"{k} eval+probes / plain forwards", s["eval+probes"], s["plain forwards"])
    show("ours KD epoch / peer epoch", secs["ours KD epoch"], secs["peer KD epoch"])
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if not a.no_gpd:
        show("ours GPD epoch / ours KD epoch", secs["ours GPD epoch"], secs["ours KD epoch"])


if __name__ == "__main__":
    main()
