"""Shared fixtures: tiny, fast settings (2 CPU cores)."""

import pytest
import torch

# One thread: the suite is many small ops, where OpenMP's barriers cost more than a second thread
# gains, and on shared cores they spin: one MobileNetV2 exactness test took 131 s with 2 threads
# on a busy 2-core machine, 0.5 s with 1. (Several test modules also set 1 at import, so a full
# run was single-threaded already; this makes single-file runs and `make test`'s second numerics
# pass behave the same.)
TEST_THREADS = 1
torch.set_num_threads(TEST_THREADS)

FAST = dict(dataset="digits", train_per_class=10, teacher="resnet8", student="resnet8", epochs=2,
            teacher_epochs=2, batch_size=32, lr=0.05, schedule="cosine", eval_batch_size=512,
            probe_samples=200, progress=False)


@pytest.fixture
def fast_cfg(tmp_path):
    """Config values for a seconds-long digits run writing under tmp_path."""
    return dict(FAST, out_dir=str(tmp_path / "runs"))


# ------------------------------------------------------------------ float tolerances
# Every float comparison in the suite takes its tolerance from `float_tol` or says in a comment
# why it needs no more (exact arithmetic, float64 scalar math, a count of examples, ...).
# Two computations of one float quantity differ by rounding only: each elementwise operation
# rounds once (at most u = eps/2 relative) and a sum of n terms accumulates at most
# (n - 1) * u * sum|x_i| whatever the summation order (Higham, Accuracy and Stability of
# Numerical Algorithms, 2nd ed., eq. 4.4). The summation order is what changes between
# ATEN_CPU_CAPABILITY=default, avx2 and avx512 (vector widths, fused multiply-adds), so a tolerance
# from this bound holds on every x86-64 vector unit, while one below it (rtol 1e-6 on a float32
# sum of 800 terms) holds for one summation order only. `make test` re-runs the numerics tests
# under ATEN_CPU_CAPABILITY=default to keep it so.
ELEMENTWISE_OPS = 4  # exp/log/div/mul per term before the sum (softmax, log-softmax, KL)


def float_tol(dtype: torch.dtype, terms: int, ops: int = ELEMENTWISE_OPS) -> float:
    """Relative tolerance for comparing two computations (any order, any vector unit) of a value
    reduced from ``terms`` terms in ``dtype``, each term made by ``ops`` rounding operations:
    both sides err by at most (terms + ops) * u, so they differ by at most (terms + ops) * eps.
    Relative to the value when the terms share one sign; with cancellation the caller says so."""
    return (terms + ops) * torch.finfo(dtype).eps
