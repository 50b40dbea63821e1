"""CPU memory format per input shape and model: channels_last vs contiguous (NCHW), ratios in ONE run.

    python bench/bench_layout.py                   # every shape, 3 rounds (~15 min on 2 idle cores)
    python bench/bench_layout.py --shapes digits --rounds 5
    python bench/bench_layout.py --threads 2

For each input shape the workbench's datasets have -- ``digits`` 1x8x8, ``fashion`` 1x28x28,
``cifar`` 3x32x32 -- and the models used on it (the presets' teachers and students, the CIFAR
zoo, and GPD's dynamic teacher T_d = ``gpd.expand(student, ratio=2)`` with the default
branches), two measurements, each in both layouts:

* **train step**: forward + cross-entropy + backward + SGD step of the model alone, batch 64
  (the training batch of every preset);
* **eval**: a forward without gradients in eval mode, batch 256 (``eval_batch_size``).

Time is the process's CPU time (``time.process_time``) with ``--threads`` torch threads (default
1: the measurement machine is shared; CPU time counts this process's work only). Each case is
warmed up once per layout; rounds alternate the order of the two layouts, and the ratio
channels_last / contiguous is taken inside each round: printed as median (min..max) over rounds.
< 1 means channels_last is faster. ``workbench.engine.device.CPU_CHANNELS_LAST`` is the table
``channels_last=auto`` follows on CPU; this script prints the figures it is read from.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from workbench import gpd, models

SHAPES = {"digits": (1, 8, 10), "fashion": (1, 28, 10), "cifar": (3, 32, 100)}  # channels, size, classes
#: models measured per shape: the presets' pairs (digits resnet8x4 -> resnet8, fashion resnet20 ->
#: resnet8, the mdistiller CIFAR-100 pairs) and T_d of each student ("gpd:<student>")
MODELS = {
    "digits": ("resnet8", "resnet8x4", "gpd:resnet8"),
    "fashion": ("resnet8", "resnet20", "gpd:resnet8"),
    "cifar": ("resnet8x4", "resnet32x4", "resnet20", "resnet56", "wrn_16_2", "wrn_40_2", "vgg8", "vgg13",
              "MobileNetV2", "ShuffleV1", "ShuffleV2", "gpd:resnet8x4", "gpd:resnet20"),
}
TRAIN_BATCH, EVAL_BATCH = 64, 256
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def build(name: str, channels: int, size: int, classes: int) -> torch.nn.Module:
    if name.startswith("gpd:"):
        student = models.build(name[4:], classes, channels, image_size=size)
        return gpd.expand(student, ratio=2.0, scale_init="reference", example_input=torch.randn(2, channels, size, size))
    return models.build(name, classes, channels, image_size=size)


class Case:
    """One model on one shape in one layout: ``train()`` and ``eval()`` time one call each."""

    def __init__(self, name, shape, layout, steps):
        channels, size, classes = SHAPES[shape]
        torch.manual_seed(0)
        self.model = build(name, channels, size, classes).to(memory_format=LAYOUTS[layout])
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(TRAIN_BATCH, channels, size, size, generator=g).contiguous(memory_format=LAYOUTS[layout])
        self.y = torch.randint(0, classes, (TRAIN_BATCH,), generator=g)
        self.xe = torch.randn(EVAL_BATCH, channels, size, size, generator=g).contiguous(memory_format=LAYOUTS[layout])
        self.steps = steps

    def train(self) -> float:
        self.model.train()
        t0 = time.process_time()
        for _ in range(self.steps):
            self.opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(self.x), self.y).backward()
            self.opt.step()
        return (time.process_time() - t0) / self.steps

    def eval(self) -> float:
        self.model.eval()
        t0 = time.process_time()
        with torch.no_grad(), gpd.branches.fold_once(self.model):
            for _ in range(self.steps):
                self.model(self.xe)
        return (time.process_time() - t0) / self.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--models", default="", help="comma list to restrict the models")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="calls per timing")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{a.rounds} rounds x {a.steps} calls; load average at start {os.getloadavg()[0]:.1f}")
    print("| shape | model | train step ms (contiguous) | train cl/contig | eval ms (contiguous) | eval cl/contig |")
    print("|---|---|---|---|---|---|")
    only = set(filter(None, a.models.split(",")))
    for shape in a.shapes.split(","):
        for name in MODELS[shape]:
            if only and name not in only:
                continue
            cases = {lay: Case(name, shape, lay, a.steps) for lay in LAYOUTS}
            for c in cases.values():  # warm-up: oneDNN primitive caches, first-touch memory
                c.train(), c.eval()
            ratios = {"train": [], "eval": []}
            base = {"train": [], "eval": []}
            for r in range(a.rounds):
                order = list(LAYOUTS) if r % 2 == 0 else list(LAYOUTS)[::-1]
                for what in ratios:
                    t = {lay: getattr(cases[lay], what)() for lay in order}
                    ratios[what].append(t["channels_last"] / t["contiguous"])
                    base[what].append(t["contiguous"])

            def fmt(q):
                return f"{statistics.median(q):.2f} ({min(q):.2f}..{max(q):.2f})"
            print(f"| {shape} {'x'.join(map(str, SHAPES[shape][:2]))} | {name} | {1e3 * statistics.median(base['train']):.0f} | "
                  f"{fmt(ratios['train'])} | {1e3 * statistics.median(base['eval']):.0f} | {fmt(ratios['eval'])} |", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
