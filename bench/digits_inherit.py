"""Weight inheritance before any training, on the embedded `digits` data: test top-1 of the
student at random init, right after inheritance from a trained teacher, and after BatchNorm
recalibration on the training images (mean +- std over teacher seeds).

    python bench/digits_inherit.py [pairs=resnet56:resnet20,vgg13:vgg8] [seeds=0,1,2] [epochs=30]

Each seed trains its own teacher (plain SGD + cosine on the 70/30 split at 8x8, the dataset's
random shifts), builds the student with the same seed, and measures the three numbers. Not a
timed test: a study script whose output goes into the closing notes.
"""
from __future__ import annotations

import math
import statistics
import sys
import time

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from workbench import data, models
from workbench.models.inherit import inherit, recalibrate_bn

PAIRS = ("resnet56:resnet20", "resnet110:resnet32", "resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2",
         "vgg13:vgg8")
SETTINGS = dict(seeds="0,1,2", epochs=30, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
                recal_batch_size=128)


def evaluate(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return 100.0 * correct / total


def train(model, loader, epochs: int, s: dict) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    steps, step = epochs * len(loader), 0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = s["lr"] * 0.5 * (1 + math.cos(math.pi * step / steps))
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1


def main(argv) -> dict:
    s = dict(SETTINGS, pairs=",".join(PAIRS))
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in s:
            raise SystemExit(f"unknown setting {key!r}; valid: {', '.join(s)}")
        s[key] = type(s[key])(value)
    seeds = [int(v) for v in s["seeds"].split(",")]
    train_set, test_set = data.build("digits", "train"), data.build("digits", "test")
    plain_train = data.build("digits", "train", augment=False)
    test_loader = DataLoader(test_set, batch_size=512)
    recal_loader = DataLoader(plain_train, batch_size=s["recal_batch_size"], shuffle=True)
    print(f"settings: {s}; {len(train_set)} train / {len(test_set)} test images (8x8)")
    rows = {}
    for pair in s["pairs"].split(","):
        t_name, s_name = pair.split(":")
        res = {k: [] for k in ("teacher", "random", "inherited", "recalibrated")}
        t0 = time.time()
        for seed in seeds:
            torch.manual_seed(seed)
            teacher = models.build(t_name, 10, in_channels=1, image_size=8)
            loader = DataLoader(train_set, batch_size=s["batch_size"], shuffle=True)
            train(teacher, loader, s["epochs"], s)
            torch.manual_seed(seed)
            student = models.build(s_name, 10, in_channels=1, image_size=8)
            res["teacher"].append(evaluate(teacher, test_loader))
            res["random"].append(evaluate(student, test_loader))
            inherit(student, teacher)
            res["inherited"].append(evaluate(student, test_loader))
            recalibrate_bn(student, recal_loader)
            res["recalibrated"].append(evaluate(student, test_loader))
        rows[pair] = res
        cells = "  ".join(f"{k} {statistics.mean(v):5.1f} +- {statistics.stdev(v) if len(v) > 1 else 0:4.1f}"
                          for k, v in res.items())
        print(f"{t_name:>10s} -> {s_name:9s} {cells}  ({time.time() - t0:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    torch.set_num_threads(2)
    main(sys.argv[1:])
