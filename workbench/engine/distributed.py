"""Multi-process plumbing on PyTorch's own engine (``torch.distributed`` + DDP, launched by
``torchrun``). With one process every helper here is a no-op, so the trainer has one code path.

Data order: :class:`GlobalBatchSampler` draws one permutation per epoch (same on every rank)
and gives rank r the elements ``r::world`` of each *global* batch, so N processes with batch
B/N see exactly the examples one process with batch B would see, step for step. Evaluation
shards the test set as ``r::world`` (no padding, no duplicates) and :func:`gather_cat`
re-interleaves, so metrics cover the full eval set in the single-process order.

A process that stops answering (frozen, killed, stuck in a long computation): every collective
waits at most ``dist_timeout`` seconds (config key; torch's default is 30 minutes), then the
surviving ranks hold a roll call through the process group's store (:func:`roll_call`) and the
lowest surviving rank prints one line naming the ranks that did not answer
(:class:`RankLostError`). With NCCL, torch's watchdog may end the processes itself at the timeout
(its own message, ``TORCH_NCCL_ASYNC_ERROR_HANDLING``), before Python sees an error.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time

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


#: seconds a collective waits by default (config key ``dist_timeout``)
DEFAULT_TIMEOUT_S = 600.0
#: the longest roll call after a timeout (the surviving ranks time out at slightly different moments)
ROLL_CALL_S = 30.0
ROLL_CALL_POLL_S = 0.2
_timeout = {"seconds": DEFAULT_TIMEOUT_S}


def init_from_env(timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1); collectives
    wait at most ``timeout_s`` seconds for the other ranks."""
    if is_dist() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_dist()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=float(timeout_s)))
    _timeout["seconds"] = float(timeout_s)
    return True


class RankLostError(RuntimeError):
    """A rank of a multi-process run stopped answering; ``lost``: those ranks, ``report``: whether
    this process prints the line (the lowest surviving rank does)."""

    def __init__(self, message: str, lost: list[int], report: bool):
        super().__init__(message)
        self.lost, self.report = lost, report


#: what torch's gloo/NCCL errors say when a peer did not answer or went away
LOST_PEER_MARKS = ("Timed out", "timed out", "Timeout", "Connection closed by peer", "Connection reset by peer",
                   "Broken pipe")


def is_lost_peer(err: BaseException) -> bool:
    """Whether ``err`` (raised by a collective) means another rank stopped answering."""
    if not is_dist() or not isinstance(err, RuntimeError) or isinstance(err, RankLostError):
        return False
    dist_error = getattr(tdist, "DistError", None)
    return (dist_error is not None and isinstance(err, dist_error)) or any(m in str(err) for m in LOST_PEER_MARKS)


def roll_call(grace_s: float) -> list[int]:
    """After a timed-out collective: every surviving rank signs in at the process group's store;
    the ranks that have not signed in within ``grace_s`` seconds are returned (the lost ones)."""
    store = tdist.distributed_c10d._get_default_store()  # the rendezvous store (torchrun's agent hosts it)
    key = "workbench_roll_call/{}".format
    store.set(key(rank()), "here")
    deadline = time.monotonic() + grace_s
    while True:
        absent = [r for r in range(world_size()) if not store.check([key(r)])]
        if not absent or time.monotonic() >= deadline:
            return absent
        time.sleep(ROLL_CALL_POLL_S)


def lost_rank_error(err: BaseException) -> RankLostError:
    """The one-line error for ``err`` (:func:`is_lost_peer`), naming the ranks that stopped answering."""
    seconds = _timeout["seconds"]
    try:
        lost = roll_call(min(seconds, ROLL_CALL_S))
    except Exception:  # noqa: BLE001 -- the store itself is gone with its host
        lost = []
    me, world = rank(), world_size()
    alive = [r for r in range(world) if r not in lost]
    who = (f"rank {lost[0]}" if len(lost) == 1 else f"ranks {', '.join(map(str, lost))}") if lost \
        else "another rank (or the launcher's store)"
    return RankLostError(f"{who} of {world} stopped answering: no reply for {seconds:g} s (dist_timeout={seconds:g}); "
                         f"the run stopped on every rank. Check that process (frozen, killed, out of memory, or much "
                         f"slower than the others), then rerun the same command to resume from the last checkpoint",
                         lost, report=bool(alive) and me == alive[0])


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
