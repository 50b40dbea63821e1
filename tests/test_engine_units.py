"""Schedules, DOT, determinism helpers: exact values."""
import math
import os
from pathlib import Path

import pytest
import torch

from conftest import float_tol
from workbench.engine.distributed import GlobalBatchSampler
from workbench.engine.optim import DOT
from workbench.engine.schedule import lr_factor


def test_multistep_matches_cifar_protocol():
    f = lambda e: lr_factor("multistep", e, 240, (150, 180, 210), 0.1)  # e = 0-based epoch index
    assert f(0) == 1.0 and f(149.99) == 1.0  # epochs 1..150 at the base lr
    # float64 scalar products of 0.1: a few ulp (1e-16) off the decimal; approx's default 1e-6 is ample
    assert f(150) == pytest.approx(0.1) and f(180) == pytest.approx(0.01) and f(239) == pytest.approx(0.001)


def test_cosine_and_warmup():
    assert lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0, abs=1e-12)  # float64: 0.5 * (1 + cos(pi)) ~ 1e-17
    # warm-up: linear over 2 epochs of 4 steps, reaching 1 at its end
    vals = [lr_factor("constant", s / 4, 10, warmup_epochs=2, steps_per_epoch=4) for s in range(10)]  # float64 ratios
    assert vals[:8] == pytest.approx([(s + 1) / 8 for s in range(8)]) and vals[8:] == [1.0, 1.0]
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("step", 0, 10)


def _quadratic_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    A, B = torch.randn(5, 5, generator=g), torch.randn(5, 5, generator=g)
    w0 = torch.randn(5, generator=g)
    task = lambda w: (A @ w).pow(2).sum()
    kd = lambda w: (B @ w - 1).pow(2).sum()
    return w0, task, kd


def test_dot_with_delta_zero_equals_sgd_momentum_step_for_step():
    w0, task, kd = _quadratic_problem()
    w_dot = torch.nn.Parameter(w0.clone())
    w_sgd = torch.nn.Parameter(w0.clone())
    dot = DOT([w_dot], lr=0.01, momentum=0.9, delta=0.0, weight_decay=5e-4)
    sgd = torch.optim.SGD([w_sgd], lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(20):
        dot.zero_grad()
        dot.set_distill_grads(torch.autograd.grad(kd(w_dot), [w_dot]))
        task(w_dot).backward()
        dot.step()
        sgd.zero_grad()
        (task(w_sgd) + kd(w_sgd)).backward()
        sgd.step()
        # float32: 20 steps, each adding two 5-term matvec gradients in another order than autograd's
        # single sum; atol covers entries near 0 at the scale of the O(1) weights
        tol = float_tol(torch.float32, terms=20 * 5)
        assert torch.allclose(w_dot, w_sgd, rtol=tol, atol=tol)


def test_dot_uses_separate_momenta_hand_computed():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    dot = DOT([w], lr=0.1, momentum=0.9, delta=0.1, weight_decay=0.0)
    grads = [(2.0, 3.0), (1.0, -1.0)]  # (task, distill) per step
    bt = bk = None
    expected = 1.0
    for gt, gk in grads:
        dot.zero_grad()
        dot.set_distill_grads([torch.tensor([gk])])
        w.grad = torch.tensor([gt])
        dot.step()
        bt = gt if bt is None else 0.8 * bt + gt  # task momentum 0.9 - 0.1
        bk = gk if bk is None else 1.0 * bk + gk  # distillation momentum 0.9 + 0.1
        expected -= 0.1 * (bt + bk)
        assert w.item() == pytest.approx(expected, rel=float_tol(torch.float32, terms=2 * 2))  # float32, 2 steps of 2 terms


def test_dot_rejects_delta_above_momentum():
    with pytest.raises(ValueError, match="delta"):
        DOT([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.5, delta=0.6)


def test_global_batch_sampler_splits_each_global_batch_across_ranks():
    single = list(GlobalBatchSampler(10, 4, True, 0))
    single_ = GlobalBatchSampler(10, 4, True, 0)
    single_.set_epoch_seed(7)
    assert sorted(single) == list(range(10)) and list(single_) != single
    ranks = [list(GlobalBatchSampler(10, 4, True, 0, r, 2)) for r in range(2)]
    assert [len(r) for r in ranks] == [len(GlobalBatchSampler(10, 4, True, 0, r, 2)) for r in range(2)] == [5, 5]
    # each global batch of the single process = union of the ranks' local batches of 2
    for b in range(3):
        glob = single[4 * b: 4 * b + 4]
        local = ranks[0][2 * b: 2 * b + 2] + ranks[1][2 * b: 2 * b + 2]
        assert sorted(glob) == sorted(local)


def test_release_freed_memory_returns_heap_blocks_to_the_os():
    """Blocks freed into glibc's heap stay resident until trimmed; the trim the trainer runs
    between phases hands them back (the measured cut in bench/README.md)."""
    from workbench.engine.memory import release_freed_memory

    statm = Path("/proc/self/statm")
    if not statm.exists() or not release_freed_memory():
        pytest.skip("needs Linux with glibc's malloc_trim")
    rss = lambda: int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")  # noqa: E731
    mib, n = 2**20, 64
    big = torch.ones(16 * mib // 4)
    del big  # a freed 16 MiB mmapped block lifts glibc's mmap threshold above 2 MiB
    before = rss()
    blocks = [torch.ones(2 * mib // 4) for _ in range(n)]  # heap blocks of 2 MiB, touched
    keep = blocks[-1]  # the heap's top stays in use: no automatic trim
    del blocks
    retained = rss() - before
    if retained < n * mib / 2:
        pytest.skip(f"this allocator returned the blocks by itself ({retained / mib:.0f} MiB kept)")
    release_freed_memory()
    assert before + retained - rss() > n * mib / 2  # at least half of the freed 126 MiB went back
    del keep


def test_auto_channels_last_follows_device_and_input_size():
    from workbench.engine.device import use_channels_last

    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert [use_channels_last(cpu, "auto", s) for s in ((1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 224, 224))] == \
        [False, True, True, True]  # digits stays contiguous: a measured tie there (bench/bench_layout.py)
    assert not use_channels_last(cpu, "auto", None) and not use_channels_last(cpu, "auto", (64,))  # not an image
    assert use_channels_last(cuda, "auto", (1, 8, 8)) and not use_channels_last(mps, "auto", (3, 32, 32))
    assert use_channels_last(cpu, "on", (1, 8, 8)) and not use_channels_last(cuda, "off", (3, 32, 32))
