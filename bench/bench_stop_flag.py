"""What the per-step stop-flag agreement costs under DDP (workbench.engine.preempt).

After every optimizer step each rank all-reduces one number (``distributed.any_true``: did any
rank receive SIGTERM/SIGUSR1/SIGUSR2?) so that all ranks stop at the same step. This measures,
side by side in one run, a DDP training step of a CIFAR-sized ResNet and that one all-reduce, on
2 CPU processes with gloo (the only multi-process backend here), and prints the ratio.

    python bench/bench_stop_flag.py [--steps 30] [--model resnet8] [--batch 64]

On NCCL the all-reduce of 4 bytes is latency-bound (tens of microseconds within a node); the
trainer already synchronises with the GPU once per step (its finite-loss check reads the loss),
so the flag adds that latency, not a second pipeline stall.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

WARMUP = 3


def worker(rank: int, world: int, args, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    from workbench import models
    from workbench.engine import distributed as dist

    model = torch.nn.parallel.DistributedDataParallel(models.build(args.model, 100, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(args.batch // world, 3, 32, 32), torch.randint(0, 100, (args.batch // world,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def timed(fn, n):
        for _ in range(WARMUP):
            fn()
        tdist.barrier()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    step_s = timed(step, args.steps)
    flag_s = timed(lambda: dist.any_true(False), args.steps * 20)
    if rank == 0:
        out.put((step_s, flag_s))
    tdist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--model", default="resnet8")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--port", type=int, default=29517)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(worker, args=(2, args, args.port, out), nprocs=2, join=True, start_method="spawn")
    step_s, flag_s = out.get()
    print(f"2 processes, gloo, {args.model}, global batch {args.batch}: DDP step {step_s * 1e3:.2f} ms, "
          f"stop-flag all-reduce {flag_s * 1e6:.0f} us = {100 * flag_s / step_s:.2f} % of a step")


if __name__ == "__main__":
    main()
