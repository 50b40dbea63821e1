"""Multi-process plumbing on PyTorch's own engine (``torch.distributed`` + DDP, launched by
``torchrun``). With one process every helper here is a no-op, so the trainer has one code path.

Data order: :class:`GlobalBatchSampler` draws one permutation per epoch (same on every rank)
and gives rank r the elements ``r::world`` of each *global* batch, so N processes with batch
B/N see exactly the examples one process with batch B would see, step for step. Evaluation
shards the test set as ``r::world`` (no padding, no duplicates) and :func:`gather_cat`
re-interleaves, so metrics cover the full eval set in the single-process order.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as tdist
from torch.utils.data import Sampler


def is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def init_from_env() -> bool:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    if is_dist() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_dist()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    if is_dist():
        tdist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    if is_dist() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


#: a module class attribute: True when the method keeps that module's own buffers identical on
#: every rank itself (built from the run's seed, updated from all-gathered values: CTC's memory
#: banks), so DDP need not re-broadcast them from rank 0 before every forward
SELF_SYNCED = "ddp_self_synced"


def self_synced_buffers(module: torch.nn.Module) -> list[str]:
    """Names (DDP's fully qualified form) of the buffers of every ``SELF_SYNCED`` submodule."""
    return [f"{path}.{name}" if path else name
            for path, m in module.named_modules() if getattr(m, SELF_SYNCED, False)
            for name, _ in m.named_buffers(recurse=False)]


def wrap(module: torch.nn.Module, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """DDP around the method when running distributed. Normally all trained parameters take part
    in every forward (GPD computes both views in one call), so no ``find_unused_parameters``; a
    method with stage-dependent parameters (CTC's heads) asks for it (``find_unused``): DDP then
    leaves the gradients of parameters no rank used at None, as one process would.

    DDP broadcasts rank 0's buffers before every forward (``broadcast_buffers``): BatchNorm
    statistics. Buffers the method keeps in sync itself (:data:`SELF_SYNCED`) are left out --
    CTC's three memory banks are N x 128 floats each (77 MB for CIFAR, 2 GB for ImageNet), which
    would otherwise cross the interconnect every step for nothing."""
    if not is_dist():
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    synced = self_synced_buffers(module)
    if synced:  # PyTorch's (underscored) way to exclude named buffers from DDP's synchronisation
        DDP._set_params_and_buffers_to_ignore_for_model(module, synced)
    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, find_unused_parameters=find_unused)


def no_sync(model):
    return model.no_sync() if hasattr(model, "no_sync") and is_dist() else contextlib.nullcontext()


class GlobalBatchSampler(Sampler):
    """Per-epoch seeded permutation; rank r takes ``r::world`` of every global batch."""

    def __init__(self, n: int, global_batch: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.shuffle = n, global_batch, shuffle
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch_seed = seed
        self.skip = 0  # global batches of this epoch already consumed (a mid-epoch resume)

    def set_epoch_seed(self, seed: int, skip: int = 0) -> None:
        """This epoch's order; ``skip``: leave out its first ``skip`` global batches (a run resumed
        mid-epoch continues with the batch it stopped before; the skipped indices are never
        loaded, so no augmentation is drawn for them)."""
        self.epoch_seed, self.skip = seed, int(skip)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.epoch_seed)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        order = self._order()
        for start in range(self.skip * self.batch, self.n, self.batch):
            yield from order[start:start + self.batch][self.rank::self.world]

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch)
        full -= min(self.skip, full)
        if self.skip * self.batch >= self.n:
            rest = 0
        return full * len(range(self.rank, self.batch, self.world)) + len(range(self.rank, rest, self.world))


def sampler(dataset, train: bool, seed: int, global_batch: int | None = None) -> Sampler:
    n = len(dataset)
    if train:
        return GlobalBatchSampler(n, global_batch, True, seed, rank(), world_size())
    return GlobalBatchSampler(n, n, False, seed, rank(), world_size())  # shard r::world


def set_sampler_epoch(loader, seed: int, skip: int = 0) -> None:
    s = loader.sampler
    if isinstance(s, GlobalBatchSampler):
        s.set_epoch_seed(seed, skip)
    elif skip:
        raise ValueError("a mid-epoch resume needs the trainer's GlobalBatchSampler")


def all_reduce_sum(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not is_dist():
        return values
    keys = sorted(values)
    flat = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=_comm_device()).reshape(()) for k in keys])
    tdist.all_reduce(flat)
    return {k: flat[i] for i, k in enumerate(keys)}


def all_reduce_grads(params, extra: dict | None = None) -> None:
    """Average ``p.grad`` (and a second gradient set, DOT's) over ranks."""
    if not is_dist():
        return
    w = world_size()
    for p in params:
        for g in (p.grad, (extra or {}).get(p)):
            if g is not None:
                tdist.all_reduce(g)
                g.div_(w)


def _comm_device() -> torch.device:
    if is_dist() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Re-assemble a tensor sharded ``r::world`` along dim 0 (sizes may differ by one)."""
    if not is_dist():
        return t
    w, dev = world_size(), _comm_device()
    sizes = [torch.zeros((), dtype=torch.long, device=dev) for _ in range(w)]
    tdist.all_gather(sizes, torch.tensor(len(t), device=dev))
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[:len(t)] = t.to(dev)
    parts = [torch.empty_like(padded) for _ in range(w)]
    tdist.all_gather(parts, padded)
    out = torch.empty((sum(sizes), *t.shape[1:]), dtype=t.dtype)
    for r, (part, size) in enumerate(zip(parts, sizes)):
        out[r::w][:size] = part[:size].cpu()
    return out


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``t`` (this step's batch shards), on ``t``'s device, in the global
    batch's order: what one process would hold. Used before updating state every rank keeps a
    copy of (memory banks), so all copies stay equal. One process: ``t`` itself."""
    if not is_dist():
        return t
    return gather_cat(t.detach()).to(t.device)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a scalar over ranks (one process: ``t``)."""
    if not is_dist():
        return t
    v = t.detach().to(_comm_device(), torch.float64).clone()
    tdist.all_reduce(v)
    return (v / world_size()).to(t.device, t.dtype)


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (picklable; one process: ``obj`` itself)."""
    if not is_dist():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def barrier() -> None:
    if is_dist():
        tdist.barrier()


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (one all-reduce of one number; one process: ``flag``).
    Every rank must call it at the same point: it is how the ranks agree to stop at one step."""
    if not is_dist():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order (one process: ``[obj]``)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out
