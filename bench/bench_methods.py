"""Training throughput per method through the real training path, as ratios measured in ONE run.

    python bench/bench_methods.py            # full run (~8 min on an idle 2-core CPU; longer when shared)
    python bench/bench_methods.py --quick    # smoke run (~2 min idle): ce, kd, gpd base=kd, 1 step, 2 rounds

What is measured (CIFAR-100 shapes: 3x32x32 inputs, 100 classes, synthetic data, batch 64,
teacher resnet32x4 -> student resnet8x4; weights are random, which does not change the cost):

* per method (ce, kd, dkd, kd+dot, kd+ctkd, gpd base=kd/dkd/none) the images/s of
  ``workbench.engine.Trainer.train_epoch`` (the project's real loop: lr schedule, loss dict,
  NaN check, optimizer step) on a method from ``workbench.methods.build_method``;
* a *reference loop* written the way the classic CIFAR KD codebases (RepDistiller, mdistiller)
  write it: SGD, batch 64, teacher forward under ``no_grad``, one summed loss, one backward,
  ``loss.item()`` and a top-1 count per batch for the meters; on the same data in the same run.
  Ratio = method images/s / reference images/s (KD target: >= 1.0);
* the GPD step time against the SUM of its parts, each timed alone on the same batches:
  static-teacher forward (no grad), T_d forward+backward, student-view forward+backward
  (target: GPD step <= 1.15 x the sum), and against a KD step.

Noise control: every measurement is warmed up once, then all measurements are repeated in
``rounds`` interleaved rounds (the order rotates each round); ratios are computed inside each
round (neighbours in time) and the median over rounds is printed with its min..max spread.

On CUDA (``device=auto`` picks it) every method is measured twice: plain fp32 and with the fast
path (config keys ``amp=bf16`` -- fp16 where bf16 is unsupported: what ``amp=auto`` picks for
non-GPD methods, spelled out because GPD's ``auto`` is fp32 --, ``channels_last=on``,
``compile=true``, ``device_data=on``); timings are bracketed
by ``torch.cuda.synchronize()``. On CPU (where ``channels_last=auto`` is on at 32x32) an extra
``kd [contiguous]`` row shows that knob.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from workbench import data, models
from workbench.config import RunConfig
from workbench.engine import Trainer
from workbench.engine.device import select_device
from workbench.methods import build_method
from workbench.presets import CIFAR_METHODS

NUM_CLASSES, IMAGE_SIZE, BATCH = 100, 32, 64
TEACHER, STUDENT = "resnet32x4", "resnet8x4"
KD_T, KD_CE_WEIGHT, KD_WEIGHT = 4.0, 0.1, 0.9  # mdistiller's KD defaults (also ours)
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
KD_TARGET, GPD_PARTS_TARGET = 1.0, 1.15

# name -> config overrides on top of the common settings: the presets' method entries.
METHODS = {label: CIFAR_METHODS[key] for label, key in (
    ("ce", "ce"), ("kd", "kd"), ("dkd", "dkd"), ("kd+dot", "kd_dot"), ("kd+ctkd", "kd_ctkd"),
    ("gpd base=kd", "gpd_kd"), ("gpd base=dkd", "gpd_dkd"), ("gpd base=none", "gpd_scratch"))}
QUICK_METHODS = ("ce", "kd", "gpd base=kd")
PLAIN = dict(amp="off", channels_last="off", compile=False, device_data="off")
FAST = dict(channels_last="on", compile=True, device_data="on")  # plus fast_amp() (CUDA only)


def fast_amp() -> str:
    """The autocast dtype ``amp=auto`` means for non-GPD methods on this GPU, named explicitly so
    that the GPD rows (where ``auto`` is fp32, as in the reference) time the fast path too."""
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


CPU_EXTRA = {"kd [contiguous]": dict(method="kd", channels_last="off"),  # auto is channels_last at 32x32 on CPU
             "kd [device_data]": dict(method="kd", device_data="on")}
REFERENCE = "reference KD loop"


# ----------------------------------------------------------------------------- timing helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Wall seconds of ``fn()``, with the device queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


@dataclass
class Bench:
    """One measurement: ``run()`` processes ``images`` images; lower seconds = faster."""
    name: str
    run: Callable[[], None]
    images: int


# ----------------------------------------------------------------------------- set-up
def machine_line(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"machine: {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"python {platform.python_version()}{gpu}")


def make_data(steps: int, device: torch.device):
    """``steps`` batches of CIFAR-100-shaped synthetic data (a TensorDataset, on the CPU)."""
    return data.build("synthetic", "train", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                      size=steps * BATCH, seed=0)


def make_config(overrides: dict, out_dir: str) -> RunConfig:
    return RunConfig.from_dict({
        "dataset": "synthetic", "teacher": TEACHER, "student": STUDENT, "batch_size": BATCH,
        "epochs": 240, "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
        "workers": 0, "progress": False, "probe_every": 0, "device": "auto",
        "out_dir": out_dir, **overrides})


def trainer_bench(name: str, overrides: dict, teacher, train_set, out_dir: str) -> tuple[Bench, Trainer]:
    """A Trainer around ``build_method`` for one method; one ``train_epoch`` = one measurement."""
    cfg = make_config(overrides, out_dir)
    torch.manual_seed(0)
    student = models.build(STUDENT, NUM_CLASSES, 3, image_size=IMAGE_SIZE)
    example = torch.stack([train_set[i][0] for i in range(2)])
    method = build_method(cfg, student, teacher if cfg.uses_teacher else None, example_input=example)
    trainer = Trainer(cfg, method, train_set, train_set, run_dir=f"{out_dir}/{len(name)}_{abs(hash(name))}")
    trainer._start_epoch(1)  # warm-ups/curricula at epoch 1, as fit() would set them
    return Bench(name, lambda: trainer.train_epoch(1), len(train_set)), trainer


def reference_bench(teacher, train_set, device: torch.device) -> Bench:
    """The classic CIFAR KD loop (RepDistiller/mdistiller style), our own code."""
    student = models.build(STUDENT, NUM_CLASSES, 3, image_size=IMAGE_SIZE).to(device)
    teacher = teacher.to(device)
    optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True, num_workers=0,
                                         pin_memory=device.type == "cuda")

    def kd(zs, zt):
        p_t = F.softmax(zt / KD_T, dim=1)
        return F.kl_div(F.log_softmax(zs / KD_T, dim=1), p_t, reduction="sum") * KD_T**2 / zs.shape[0]

    def epoch():
        student.train()
        teacher.eval()
        losses, correct = 0.0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            zs = student(x)
            with torch.no_grad():
                zt = teacher(x)
            loss = KD_CE_WEIGHT * F.cross_entropy(zs, y) + KD_WEIGHT * kd(zs, zt)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses += loss.item()  # the meters of the classic loops
            correct += int((zs.argmax(1) == y).sum())

    return Bench(REFERENCE, epoch, len(train_set))


def gpd_part_benches(trainer: Trainer, train_set) -> list[Bench]:
    """GPD's parts, each alone, on the same batches: T_s forward, T_d f+b, student view f+b."""
    method, device = trainer.method, trainer.device
    dt, teacher = method.dt, method.teacher
    batches = [(x.to(device), y.to(device)) for x, y in
               torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=False)]

    def teacher_fwd():
        with torch.no_grad():
            for x, _ in batches:
                teacher(x)

    def fwd_bwd(view: str):
        def run():
            dt.train()
            for x, y in batches:
                F.cross_entropy(dt(x, view=view), y).backward()
                dt.zero_grad(set_to_none=True)
        return run

    n = len(train_set)
    return [Bench("part: T_s forward", teacher_fwd, n), Bench("part: T_d fwd+bwd", fwd_bwd("teacher"), n),
            Bench("part: S view fwd+bwd", fwd_bwd("student"), n)]


# ----------------------------------------------------------------------------- measuring
def measure(benches: list[Bench], rounds: int, device: torch.device, log=print) -> dict[str, list[float]]:
    """Seconds per image of every bench for each round (after one warm-up run each)."""
    for b in benches:
        t = timed(b.run, device)
        log(f"  warm-up {b.name:24s} {b.images / t:8.1f} img/s")
    out: dict[str, list[float]] = {b.name: [] for b in benches}
    for r in range(rounds):
        k = r % len(benches)
        for b in benches[k:] + benches[:k]:  # rotate the order each round
            out[b.name].append(timed(b.run, device) / b.images)
        log(f"  round {r + 1}/{rounds} done")
    return out


def ratio_stats(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median, min and max over rounds of the per-round ratio num/den."""
    rs = [a / b for a, b in zip(num, den)]
    return statistics.median(rs), min(rs), max(rs)


def report(sec: dict[str, list[float]], title: str) -> dict[str, float]:
    """Print images/s and the ratio to the reference loop; return median images/s per name."""
    ref = sec[REFERENCE]
    print(f"\n{title}")
    print(f"{'method':24s} {'img/s':>8s}  {'x reference (median, min..max over rounds)':s}")
    ips = {}
    for name, s in sec.items():
        if name.startswith("part:"):
            continue
        ips[name] = 1.0 / statistics.median(s)
        med, lo, hi = ratio_stats(ref, s)  # ratio of throughputs = inverse ratio of times
        print(f"{name:24s} {ips[name]:8.1f}  {med:5.2f}x  ({lo:.2f}..{hi:.2f})")
    return ips


def report_gpd(sec: dict[str, list[float]]) -> None:
    parts = [k for k in sec if k.startswith("part:")]
    if not parts:
        return
    gpd = sec["gpd base=kd"]
    total = [sum(sec[p][r] for p in parts) for r in range(len(gpd))]
    print("\nGPD (base=kd) step vs its parts (ms per batch of 64, median over rounds)")
    for p in parts:
        print(f"  {p:24s} {1e3 * BATCH * statistics.median(sec[p]):8.1f}")
    print(f"  {'sum of parts':24s} {1e3 * BATCH * statistics.median(total):8.1f}")
    print(f"  {'GPD step (Trainer)':24s} {1e3 * BATCH * statistics.median(gpd):8.1f}")
    print(f"  {'KD step (Trainer)':24s} {1e3 * BATCH * statistics.median(sec['kd']):8.1f}")
    med, lo, hi = ratio_stats(gpd, total)
    ok = "OK" if med <= GPD_PARTS_TARGET else "ABOVE TARGET"
    print(f"  GPD step / sum of parts = {med:.3f} ({lo:.3f}..{hi:.3f})   target <= {GPD_PARTS_TARGET}: {ok}")
    med, lo, hi = ratio_stats(gpd, sec["kd"])
    print(f"  GPD step / KD step      = {med:.2f} ({lo:.2f}..{hi:.2f})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds (smoke run)")
    p.add_argument("--steps", type=int, default=None, help="batches per measurement (default 3, quick 1; CUDA x20)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 2)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--methods", default="", help="comma list of methods to time (default: all; "
                   f"quick: {','.join(QUICK_METHODS)})")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device("auto")
    cuda = device.type == "cuda"
    steps = args.steps or (1 if args.quick else 3) * (20 if cuda else 1)
    rounds = args.rounds or (2 if args.quick else 3)
    names = [n.strip() for n in args.methods.split(",") if n.strip()] or list(QUICK_METHODS if args.quick else METHODS)
    for n in names:
        if n not in METHODS:
            from workbench.registry import unknown_choice
            raise SystemExit(unknown_choice("method", n, list(METHODS)))
    print(machine_line(device))
    print(f"settings: {TEACHER} -> {STUDENT}, {IMAGE_SIZE}x{IMAGE_SIZE}, {NUM_CLASSES} classes, batch {BATCH}, "
          f"{steps} steps per measurement, {rounds} rounds, device {device}")

    train_set = make_data(steps, device)
    torch.manual_seed(0)
    teacher = models.build(TEACHER, NUM_CLASSES, 3, image_size=IMAGE_SIZE)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_methods_") as out:
        fast = dict(FAST, amp=fast_amp()) if cuda else {}
        modes = [("fp32", PLAIN), ("fast path (amp, channels_last, compile, device_data)", fast)] if cuda else [("", {})]
        for label, mode in modes:
            benches, gpd_trainer = [reference_bench(teacher, train_set, device)], None
            variants = {n: METHODS[n] for n in names}
            if not cuda and not args.quick:
                variants.update(CPU_EXTRA)
            for n, o in variants.items():
                b, tr = trainer_bench(n, {**o, **mode}, teacher, train_set, out)
                benches.append(b)
                if n == "gpd base=kd":
                    gpd_trainer = tr
            if gpd_trainer is not None and not mode.get("compile"):
                benches += gpd_part_benches(gpd_trainer, train_set)
            print(f"\nmeasuring {label or device.type} ...")
            sec = measure(benches, rounds, device)
            report(sec, f"training throughput on {device.type}{' ' + label if label else ''}")
            if gpd_trainer is not None and not mode.get("compile") and "kd" in sec:
                report_gpd(sec)
            if "kd" in sec:
                med, lo, hi = ratio_stats(sec[REFERENCE], sec["kd"])
                ok = "OK" if med >= KD_TARGET else "BELOW TARGET"
                print(f"\nour KD / reference KD loop = {med:.3f} ({lo:.3f}..{hi:.3f})  target >= {KD_TARGET}: {ok}")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
