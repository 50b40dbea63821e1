"""Handing memory freed by one phase back to the operating system before the next.

A training epoch and an evaluation pass allocate and free many activation-sized blocks. glibc's
malloc serves blocks up to its (dynamic, at most 32 MiB on 64-bit) mmap threshold from its
heap, and memory freed there stays in the process (resident) until the heap's top is free: a
phase's fragmented leftovers are still counted when the next phase (an eval pass at 4x the
training batch) reaches its own peak. Measured on a CIFAR-shaped GPD run (resnet32x4 ->
resnet8x4, batch 64, eval batch 256; ``bench/bench_memory.py --cifar``), the process peak fell
from 2.93 to 2.42 GB with a trim between phases, KD's from 1.61 to 1.44 GB (bench/README.md).

:func:`release_freed_memory` calls glibc's ``malloc_trim(0)``, which returns every free page of
every arena (the remedy Dask documents for the same effect: "Memory not released back to the
OS", ``distributed`` worker memory docs). It costs milliseconds and changes no value; where the C
library has no ``malloc_trim`` (macOS, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import sys


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return freed heap memory to the OS (glibc); True if the C library could be asked."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


MEMINFO = "/proc/meminfo"


def available_bytes(device) -> int | None:
    """Memory a run on ``device`` can still take: free device memory (CUDA), else the host's
    ``MemAvailable`` (Linux); None where it cannot be told (the caller then skips its check)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open(MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None
