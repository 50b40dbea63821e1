"""Where a training step's time goes: KD vs GPD (base=kd) by operator class, ONE process.

    python bench/profile_step.py [--steps 3] [--threads 1] [--methods kd,gpd_kd] [--shapes]

The same set-up as ``bench_epoch.py`` (resnet32x4 -> resnet8x4, fake CIFAR-shaped data, batch
64, the presets, the layout ``channels_last=auto`` picks). Each method's steps (batches, forward,
losses, backward, clipping, optimizer, EMA: the trainer's own ``train_epoch`` over ``--steps``
batches) run one epoch to warm up, then one under ``torch.profiler``; operators' self CPU time is
summed by class: convolution forward and backward, the multi-branch kernel folds (``bmm``: GPD's
einsums), BatchNorm, everything else.
Printed: ms per step per class, its share, and each method's step / the first method's step.
"""
from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bench_epoch import BATCH, NUM_CLASSES, SIZE, TEACHER, FakeCifar, Normalized, trainer
from workbench import models

#: operator (self time) -> class
CLASSES = {
    "aten::mkldnn_convolution": "conv forward", "aten::thnn_conv2d": "conv forward",
    "aten::_slow_conv2d_forward": "conv forward", "aten::convolution_backward": "conv backward",
    "aten::bmm": "branch folds (bmm)", "aten::native_batch_norm": "batch norm",
    "aten::native_batch_norm_backward": "batch norm",
}
SHOWN_SHAPES = 14
ORDER = ("conv forward", "conv backward", "branch folds (bmm)", "batch norm", "other")


def profile_steps(tr, steps: int, shapes: bool = False) -> dict[str, float]:
    """Seconds of self CPU time per operator class over one ``Trainer.train_epoch`` of ``steps``
    training steps (after one unprofiled epoch to warm up); ``shapes``: also print the
    convolutions' time per (input, weight) shape."""
    tr.train_epoch(1)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        tr.train_epoch(1)
    if shapes:
        rows = [e for e in prof.key_averages(group_by_input_shape=True) if CLASSES.get(e.key, "").startswith("conv")]
        for e in sorted(rows, key=lambda e: -e.self_cpu_time_total)[:SHOWN_SHAPES]:
            x, w = e.input_shapes[:2] if e.key != "aten::convolution_backward" else e.input_shapes[1:3]
            print(f"  {CLASSES[e.key]:14s} input {x} weight {w}: {e.self_cpu_time_total / 1e3 / e.count:7.1f} ms "
                  f"per call, {e.count / steps:.0f} per step")
    out = defaultdict(float)
    for ev in prof.key_averages():
        out[CLASSES.get(ev.key, "other")] += ev.self_cpu_time_total / 1e6
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="kd,gpd_kd")
    ap.add_argument("--shapes", action="store_true",
                    help="also list the convolutions by input/weight shape (recording shapes inflates the "
                         "small operators' times: read the class totals from a run without it)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = models.build(TEACHER, NUM_CLASSES, 3, image_size=SIZE).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    train_set = Normalized(FakeCifar(BATCH * a.steps, 0, None), augment=True)
    out = tempfile.mkdtemp()
    first = None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.steps} profiled steps per method")
    for key in a.methods.split(","):
        tr = trainer(key, teacher, train_set, train_set, out)
        t = profile_steps(tr, a.steps, a.shapes)
        total = sum(t.values()) / a.steps
        first = first or total
        print(f"\n{key} ({tr.memory_format}): {1e3 * total:.0f} ms per step, {total / first:.2f}x {a.methods.split(',')[0]}")
        for c in ORDER:
            print(f"  {c:20s} {1e3 * t[c] / a.steps:8.0f} ms  {100 * t[c] / a.steps / total:5.1f} %")


if __name__ == "__main__":
    main()
