"""The one training loop. Methods plug in (``methods.Distiller``); probes plug in as callbacks.

Read ``fit`` top to bottom: set-up, resume, then per epoch: train, evaluate every model
(student, static teacher, dynamic teacher) in one pass, divergence check, callbacks, atomic
checkpoint.

Its sub-jobs live beside it: evaluation of the roles and the summary (:mod:`.evaluation`), the
divergence checks that stop a run before a diverged state reaches a checkpoint or a probe
(:mod:`.divergence`), the static teacher's cached logits (:mod:`.teacher_cache`), checkpoints
(:mod:`.checkpoint`, :mod:`.resume`), preemption (:mod:`.preempt`).

Determinism: every epoch re-seeds torch/numpy/python from (seed, epoch) and shuffles with a
generator seeded the same way, so a run resumed from an epoch checkpoint continues exactly as
the uninterrupted run would (bit-identical on CPU).

Preemption (:mod:`workbench.engine.preempt`): SIGTERM/SIGUSR1/SIGUSR2 set a flag; after the
current optimizer step the trainer writes a mid-epoch checkpoint -- the weights after that step,
plus a ``position``: epoch, step, each rank's RNG states at that step and its partial loss/accuracy
sums -- and raises ``Preempted``; a signal during evaluation, probes, a data pass or a checkpoint
write stops after that epoch's checkpoint instead. A resume restores the position and the sampler
skips the consumed batches without loading them (no augmentation is drawn for them), so the run
continues bit-identically: exact with ``workers=0`` (the CPU default) and the device-resident loader
(its generator state is saved). Limit: DataLoader workers (``workers>0``) draw augmentations from
their own RNG streams, which are not checkpointed (nor, with persistent workers, re-seeded per
epoch): a run resumed from any checkpoint, mid-epoch or not, then draws other crops/flips than
an uninterrupted run would (data order, weights and optimizer state stay exact; with
``augment=false`` it is exact).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.device import DEVICE_DATASETS, DeviceLoader, Indexed, device_tensors
from ..losses import hard_labels
from . import distributed as dist
from .callbacks import EMA_SUFFIX, Callback, FitState, RoleOutputs, role_label
from .checkpoint import (BEST, FORMAT, LAST, STUDENT, VERSION, CheckpointError, atomic_save, rng_state,
                         set_rng_state)
from .divergence import check_evaluation, check_loss
from .evaluation import add_reported, eval_record, evaluate_models, reported, summarize
from .device import amp_dtype, autocast, select_device, to_device, use_channels_last
from .batch import StatefulTransform, make_transform
from .ema import ModelEMA
from .memory import release_freed_memory
from .method import TASK_PREFIX
from . import trackers
from .metrics import MetricsLog, read_metrics
from .optim import DOT, build_optimizer
from . import preempt
from .preempt import Preempted
from .progress import Progress, TerminalProgress
from .resume import resume_checkpoint
from .schedule import lr_factor
from .teacher_cache import teacher_logits

#: config.json's effective ``amp``: the autocast dtype that runs (None: none, float32)
AMP_NAMES = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}
SEED_STRIDE = 1_000_003  # epoch seeds: seed * SEED_STRIDE + epoch
POSTFIX_EVERY = 10  # steps between updates of the running loss shown next to the bar


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * SEED_STRIDE + epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg, method, train_set, test_set, run_dir: str | Path | None = None,
                 callbacks: list[Callback] = (), device: torch.device | None = None, log=print,
                 num_classes: int | None = None, progress: Progress | None = None, title: str = "",
                 provenance: dict | None = None):
        self.cfg, self.method, self.note = cfg, method, log
        self.provenance = provenance  # what the run is made of, recorded in every checkpoint (experiment.provenance)
        self.num_classes = num_classes  # needed by mixing batch transforms (soft targets)
        self.mix = make_transform(cfg.mix)
        if cfg.mix != "none" and num_classes is None:
            raise ValueError(f"mix={cfg.mix}: the Trainer needs num_classes= for soft targets")
        # test_set: what every epoch evaluates on -- the test split, or the validation split carved
        # from the training data under eval_on=val (its records then say split="val")
        self.train_set, self.test_set = train_set, test_set
        self.eval_split = getattr(cfg, "eval_on", "test")
        self.run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir()
        self.callbacks = list(callbacks)
        self._static_outputs: RoleOutputs | None = None  # the static teacher's, computed once
        self.epochs = cfg.epochs
        self.epoch = 0
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        self.device = device or dist.local_device(select_device(cfg.device))
        self.amp = amp_dtype(self.device, cfg.resolved_amp)
        self.channels_last = self._resolve_channels_last(test_set, train_set)
        self.log = MetricsLog(self.run_dir, enabled=self.is_main, note=log,
                              trackers=trackers.build(getattr(cfg, "log", "none"), self.run_dir, cfg.to_dict())
                              if self.is_main else [])
        self.best = {"top1": -1.0, "epoch": 0}
        self.show = cfg.progress and self.is_main
        self.progress = (progress or TerminalProgress()) if self.show else Progress()
        self.title = title or f"{cfg.method} {cfg.student}"

        self.needs = method.needs()  # what the method asks of the engine (fixed once it is built)
        if self.needs.batch_transform is not None:  # a stateful transform shared with the method's terms
            self.mix = self.needs.batch_transform
        self.stateful_mix = isinstance(self.mix, StatefulTransform)
        method.to(self.device)
        if self.channels_last:
            method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg.optimizer, method.param_groups(cfg.lr, cfg.weight_decay, cfg.wd_exempt),
                                         cfg.lr, cfg.momentum, cfg.weight_decay, cfg.dot, cfg.dot_delta)
        for g in self.optimizer.param_groups:
            g["base_lr"], g["base_weight_decay"] = g["lr"], g["weight_decay"]
        self.dot = isinstance(self.optimizer, DOT)
        if self.dot and self.amp == torch.float16:
            raise ValueError("dot=true with fp16 autocast is not supported (no loss scaling for two "
                             "gradient sets); use amp=bf16 or amp=off")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        if cfg.sync_bn and self.world > 1:
            if self.device.type != "cuda":
                raise ValueError("sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel)")
            for module in self.needs.sync_bn_modules:
                nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces BN children in place
        decay = cfg.resolved_ema_decay
        self.ema = ModelEMA(method.trained_module(), decay) if decay > 0 else None
        self._twin_roles: set[str] | None = None  # roles with an EMA twin, once known (top1_reported)
        # DDP around the method when world > 1
        self.model = dist.wrap(method, self.device, find_unused=self.needs.find_unused_parameters)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.teacher_cache = (teacher_logits(self.needs.static_teacher, train_set, cfg.eval_batch_size, self.device,
                                              self.channels_last, self.amp, self.progress.bar)
                              if cfg.cache_teacher else None)
        self.train_loader = self._loader(train_set, train=True)
        self.test_loader = self._loader(test_set, train=False)
        self.steps_per_epoch = len(self.train_loader)
        self._position: dict | None = None  # where a mid-epoch checkpoint stopped (resume)
        self._partial: tuple | None = None  # (step, sums, correct, seen) to continue an epoch from

    def _resolve_channels_last(self, *datasets) -> bool:
        """``channels_last``: the device's and input shape's rule (``engine.device``); under
        ``auto`` a run that resumes keeps the layout it started in (the rule may have changed
        since), so its float summation order stays that of its start."""
        if self.cfg.channels_last == "auto" and self.cfg.resume:
            started = _saved_memory_format(self.run_dir / LAST)
            if started is not None:
                return started == "channels_last"
        return use_channels_last(self.device, self.cfg.channels_last, _input_shape(*datasets))

    @property
    def memory_format(self) -> str:
        """``channels_last`` or ``contiguous``: the layout this run trains in (train records)."""
        return "channels_last" if self.channels_last else "contiguous"

    # ------------------------------------------------------------------ data
    def _device_tensors(self, dataset):
        """The dataset as tensors for the device-resident path, or None (``device_data``)."""
        mode = self.cfg.device_data
        if mode == "off" or (mode == "auto" and self.device.type != "cuda"):
            return None
        tensors = device_tensors(dataset)
        if tensors is None and mode == "on":
            raise ValueError(f"device_data=on: dataset {self.cfg.dataset!r} cannot be held on the device "
                             f"(supported: {', '.join(DEVICE_DATASETS)}); use device_data=auto or off")
        return tensors

    def _loader(self, dataset, train: bool):
        cfg = self.cfg
        batch = cfg.batch_size if train else cfg.eval_batch_size
        sampler = dist.sampler(dataset, train, cfg.seed, batch)
        if train and batch % self.world:
            raise ValueError(f"batch_size={batch} is not divisible by the {self.world} processes")
        per_rank = batch // self.world if train else batch
        with_index = train and (cfg.cache_teacher or self.needs.index)
        tensors = self._device_tensors(dataset)
        if tensors is not None:
            return DeviceLoader(tensors, sampler, per_rank, self.device, self.channels_last, with_index)
        workers = cfg.workers if cfg.workers >= 0 else (min(8, dist.cpu_count()) if self.device.type == "cuda" else 0)
        return DataLoader(Indexed(dataset) if with_index else dataset, batch_size=per_rank, sampler=sampler,
                          num_workers=workers, pin_memory=self.device.type == "cuda",
                          drop_last=False, persistent_workers=workers > 0,
                          generator=torch.Generator())

    @torch.no_grad()
    def _start_epoch(self, epoch: int) -> None:
        seed = epoch_seed(self.cfg.seed, epoch) + self.rank
        seed_everything(seed)
        self.train_loader.generator.manual_seed(seed)  # worker seeds
        position = self._position if self._position is not None and self._position["epoch"] == epoch else None
        self._position = None
        dist.set_sampler_epoch(self.train_loader, epoch_seed(self.cfg.seed, epoch), position["step"] if position else 0)
        self.method.on_epoch_start(epoch, self.epochs)
        if self.stateful_mix:
            self.mix.start_epoch(epoch)
        schedule = self.needs.schedule
        wd = schedule.weight_decay_factor(epoch) if schedule is not None else 1.0
        for g in self.optimizer.param_groups:  # a method may rescale weight decay per epoch (CTC)
            g["weight_decay"] = g.get("base_weight_decay", g["weight_decay"]) * wd
        if position is not None:
            self._restore_position(position)

    # ------------------------------------------------------------------ stopping mid-epoch (preemption)
    def _stop_requested(self) -> bool:
        """Whether a stop signal came (on any rank: every rank calls this at the same points)."""
        return dist.any_true(preempt.requested() is not None)

    def _signal_name(self) -> str:
        names = [n for n in dist.all_gather_object(preempt.requested()) if n]
        return names[0] if names else "a stop signal"

    def _stop_in_epoch(self, epoch: int, step: int, sums: dict, correct: torch.Tensor, seen: int) -> None:
        """Write the mid-epoch checkpoint (weights after ``step`` of ``epoch``, each rank's RNG
        states and partial sums; rank 0 writes) and raise :class:`Preempted`."""
        loader_rng = self.train_loader.rng_state() if hasattr(self.train_loader, "rng_state") else None
        mine = {"rng": rng_state(), "loader_rng": loader_rng, "sums": _cpu(sums), "correct": correct.detach().cpu(),
                "seen": seen, "transform": self.mix.state() if self.stateful_mix else None}
        ranks, name = dist.all_gather_object(mine), self._signal_name()
        path = self.run_dir / LAST
        if self.is_main:
            ckpt = self._checkpoint(epoch - 1)
            ckpt["position"] = {"epoch": epoch, "step": step, "steps": self.steps_per_epoch, "world": self.world,
                                "ranks": ranks}
            atomic_save(ckpt, path)
        dist.barrier()  # nobody exits (torchrun would then stop the others) before rank 0 has written
        raise Preempted(name, epoch, step, self.steps_per_epoch, path, self.epochs)

    def _restore_position(self, position: dict) -> None:
        """Continue an epoch where a mid-epoch checkpoint stopped: this rank's RNG states at that
        step, the device loader's generator, the partial sums (the sampler skips the batches done)."""
        ranks = position["ranks"]
        same_world = position.get("world", 1) == self.world and len(ranks) == self.world
        if same_world:
            mine = ranks[self.rank]
            set_rng_state(mine["rng"])
            if mine.get("loader_rng") is not None and hasattr(self.train_loader, "set_rng_state"):
                self.train_loader.set_rng_state(mine["loader_rng"])
            if self.stateful_mix and mine.get("transform") is not None:
                self.mix.load_state(mine["transform"])  # e.g. RecursiveMix's history at that step
            parts = [mine]
        else:  # another process count: the epoch's seeding stays; its record needs the totals (on rank 0)
            parts = ranks if self.is_main else []
            if self.is_main:
                self.note(f"[workbench] note: the mid-epoch checkpoint was written by {len(ranks)} processes, "
                          f"this run has {self.world}: the rest of epoch {position['epoch']} draws other augmentations")
        sums: dict[str, torch.Tensor] = {}
        correct, seen = torch.zeros((), device=self.device), 0
        for part in parts:
            for k, v in part["sums"].items():
                sums[k] = sums[k] + v.to(self.device) if k in sums else v.to(self.device)
            correct = correct + part["correct"].to(self.device)
            seen += int(part["seen"])
        self._partial = (int(position["step"]), sums, correct, seen)

    # ------------------------------------------------------------------ one epoch of training
    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        first, sums, correct, seen = self._partial or (0, {}, torch.zeros((), device=self.device), 0)
        self._partial = None
        steps = self.steps_per_epoch
        t0 = time.perf_counter()
        bar = self.progress.bar(self.train_loader, desc=f"epoch {epoch}/{self.epochs}", total=steps - first, epoch=epoch)
        for step, batch in enumerate(bar, start=first):
            x, y, *index = to_device(batch, self.device, self.channels_last)
            index = index[0] if index else None
            extras = {}  # only what this method asked for (a plain forward(x, y) keeps working)
            if self.needs.index:
                extras["index"] = index
            if self.teacher_cache is not None:
                extras["teacher_logits"] = self.teacher_cache[index]
            x, y = self.mix(x, y, self.num_classes, self.cfg.mix_alpha)
            self._set_lr((epoch - 1) + step / steps, steps)
            with autocast(self.device, self.amp):
                logits, losses = self.model(x, y, **extras)
            if self.stateful_mix:
                self.mix.observe(x, y, logits)
            loss = sum(losses.values())
            check_loss(loss, losses, self.run_dir, epoch, step, steps)
            self._backward_step(loss, losses)
            if self.ema is not None:
                self.ema.update(self.method.trained_module())
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach() * len(y)
            correct += (logits.detach().argmax(1) == hard_labels(y)).sum()
            seen += len(y)
            if step % POSTFIX_EVERY == 0:
                self.progress.postfix(loss=f"{float(loss.detach()):.3f}")
            if self._stop_requested():
                self._stop_in_epoch(epoch, step + 1, sums, correct, seen)
        dist.set_sampler_epoch(self.train_loader, epoch_seed(self.cfg.seed, epoch))  # a data pass sees the whole epoch
        stats = dist.all_reduce_sum({**sums, "_correct": correct, "_seen": torch.tensor(float(seen), device=self.device)})
        n = float(stats.pop("_seen"))
        elapsed = time.perf_counter() - t0
        record = {"kind": "train", "epoch": epoch, "split": "train", "role": "student",
                  "top1": 100.0 * float(stats.pop("_correct")) / n,
                  "loss": sum(float(v) for v in stats.values()) / n,
                  **{k: float(v) / n for k, v in stats.items()},
                  "lr": self.optimizer.param_groups[0]["lr"], "time": elapsed, "images_per_s": n / elapsed,
                  "memory_format": self.memory_format}
        record.update(self.method.scalars())
        return record

    def _set_lr(self, progress: float, steps: int) -> None:
        c = self.cfg

        def run_factor(p: float, epochs: int) -> float:
            return lr_factor(c.schedule, p, epochs, c.milestones, c.lr_decay, c.warmup_epochs, steps)

        schedule = self.needs.schedule  # a method may restart / rescale the run's schedule (CTC)
        f = schedule.lr_factor(progress, c.epochs, run_factor) if schedule is not None else run_factor(progress, c.epochs)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _backward_step(self, loss: torch.Tensor, losses: dict) -> None:
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        if self.dot:
            task = sum(v for k, v in losses.items() if k.startswith(TASK_PREFIX))
            distill = sum(v for k, v in losses.items() if not k.startswith(TASK_PREFIX))
            params = self._params()
            with dist.no_sync(self.model):  # two gradient sets: reduced by hand below
                opt.set_distill_grads(torch.autograd.grad(distill, params, retain_graph=True, allow_unused=True))
                task.backward()
            dist.all_reduce_grads(params, opt.distill_grads())
            if self.cfg.resolved_grad_clip > 0:
                self._clip_dot(params)
            opt.step()
            return
        self.scaler.scale(loss).backward()
        if self.cfg.resolved_grad_clip > 0:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self._params(), self.cfg.resolved_grad_clip)
        self.scaler.step(opt)
        self.scaler.update()

    def _clip_dot(self, params) -> None:
        """Clip DOT's two gradient sets by the norm of their sum (one shared factor)."""
        kd = self.optimizer.distill_grads()
        total = [(p.grad if p.grad is not None else 0) + kd.get(p, 0) for p in params]
        norm = torch.norm(torch.stack([torch.norm(t) for t in total if torch.is_tensor(t)]))
        factor = torch.clamp(self.cfg.resolved_grad_clip / (norm + 1e-6), max=1.0)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(factor)
            if p in kd:
                kd[p].mul_(factor)

    @torch.no_grad()
    def _data_pass(self, observe) -> None:
        """One pass over the training data (this rank's share, the epoch's order and augmentation
        draws) without gradients, each batch handed to ``observe`` (what the method's
        ``end_epoch`` returned: CTC's memory refresh from the snapshot at its stage boundary)."""
        for batch in self.progress.bar(self.train_loader, desc="data pass"):
            x, y, *index = to_device(batch, self.device, self.channels_last)
            with autocast(self.device, self.amp):
                observe(x, y, index[0] if index else None)

    # ------------------------------------------------------------------ evaluation
    def eval_models(self, ema: bool = True) -> dict[str, nn.Module]:
        """The method's plain models by role (for probes); with EMA (and ``ema``) also ``<role>_ema``."""
        models = self.method.eval_models()
        if ema and self.ema is not None:
            twins = self.method.eval_models(self.ema.module)
            self._twin_roles = set(twins)
            models.update({r + EMA_SUFFIX: m for r, m in twins.items()})
        return models

    def _ema_twin_roles(self) -> set[str]:
        """The roles that have an EMA twin (none without EMA), known without building the twins
        once they have been built."""
        if self.ema is None:
            return set()
        if self._twin_roles is None:
            self._twin_roles = set(self.method.eval_models(self.ema.module))
        return self._twin_roles

    def _ema_due(self, epoch: int) -> bool:
        """Whether this epoch evaluates the EMA twins (``ema_eval_every``; the last epoch always)."""
        every = self.cfg.ema_eval_every
        return every <= 1 or epoch % every == 0 or epoch == self.epochs

    def _features_due(self, epoch: int) -> int:
        """How many examples' penultimate features this epoch's due callbacks need (0 = none)."""
        if self.cfg.probe_every <= 0 or not any(cb.needs_features and cb.due(epoch, self.epochs)
                                                 for cb in self.callbacks):
            return 0
        return self.cfg.probe_samples

    @torch.no_grad()
    def evaluate(self, epoch: int) -> tuple[list[dict], dict[str, RoleOutputs]]:
        """One pass over the evaluation set (``eval_split``: the test split, or the validation split)
        for every model that changes; returns eval records and outputs (logits of all examples,
        features of the first ``probe_samples`` when a due callback needs them) for callbacks. The static teacher never changes: its outputs are
        computed once and reused (recomputed only when features are needed and not cached).
        With EMA, each raw role's record that has an EMA twin also carries ``top1_reported`` =
        max(raw, EMA) top-1 (what the GPD reference code reports); on epochs that skip the twins
        (``ema_eval_every``) it is the raw top-1, so every epoch has it."""
        models = self.eval_models(ema=self._ema_due(epoch))
        order = list(models)  # records keep the roles' order whatever was cached
        budget = self._features_due(epoch)
        cached = self._static_outputs if "teacher" in models else None
        if cached is not None and (budget == 0 or cached.features is not None):
            models.pop("teacher")
        else:
            cached = None
        outputs, elapsed = evaluate_models(models, self.test_loader, self.device, self.channels_last, self.amp,
                                           budget, self.needs.eval_context, self.progress.bar)
        if cached is not None:
            outputs["teacher"] = cached
        elif "teacher" in outputs:
            self._static_outputs = outputs["teacher"]
        outputs = {role: outputs[role] for role in order}
        records = [eval_record(epoch, role, out, elapsed, self.eval_split) for role, out in outputs.items()]
        add_reported(records, self._ema_twin_roles())
        return records, outputs

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int) -> dict:
        student = self.method.deployable_student()
        return {"format": FORMAT, "version": VERSION, "epoch": epoch,
                "config": self.cfg.to_dict(), "effective": self.cfg.effective(), "arch": self.cfg.student,
                "model": {k: v.detach().cpu() for k, v in student.state_dict().items()},
                "method": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in self.method.state().items()},
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": _cpu(self.ema.state_dict()) if self.ema is not None else None,
                "rng": rng_state(), "best": dict(self.best), "memory_format": self.memory_format,
                **({"provenance": self.provenance} if self.provenance is not None else {})}

    def save(self, epoch: int, student_top1: float | None) -> None:
        if not self.is_main:
            return
        improved = student_top1 is not None and student_top1 > self.best["top1"]
        if improved:  # before last.pt is written: a run resumed from it knows this epoch was the best
            self.best = {"top1": student_top1, "epoch": epoch}
        ckpt = self._checkpoint(epoch)
        atomic_save(ckpt, self.run_dir / LAST)
        if improved:
            atomic_save(ckpt, self.run_dir / BEST)

    def resume(self) -> int:
        """Restore the last checkpoint of this run folder; returns the epoch to start from."""
        path = self.run_dir / LAST
        ckpt = resume_checkpoint(self.run_dir, self.cfg, map_location=self.device)
        if ckpt is None:
            self.log.truncate_after(-1, note=self.note)  # records of a start killed before its first checkpoint
            return 1
        try:
            self.method.load_state(ckpt["method"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, RuntimeError, KeyError) as e:
            raise CheckpointError(f"checkpoint {path} does not match this model/method: {str(e)[:300]}") from None
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise CheckpointError(f"cannot resume {path}: it has no EMA state but ema_decay="
                                      f"{self.cfg.resolved_ema_decay} (it was written without EMA)")
            self.ema.load_state_dict(ckpt["ema"])
        set_rng_state({k: v for k, v in ckpt["rng"].items()})
        self.best = dict(ckpt["best"])
        self.log.truncate_after(ckpt["epoch"], note=self.note)
        self._position = ckpt.get("position")
        if self._position is not None and self._position.get("steps", self.steps_per_epoch) != self.steps_per_epoch:
            raise CheckpointError(f"cannot resume {path} mid-epoch: it stopped at step {self._position['step']} of "
                                  f"{self._position['steps']} steps per epoch, this run has {self.steps_per_epoch} "
                                  f"(another dataset size or batch_size)")
        if self.is_main:
            done = ckpt["epoch"]
            at = f" at step {self._position['step'] + 1}/{self.steps_per_epoch}" if self._position else ""
            self.note(f"[workbench] {self.title}: already complete ({done} of {self.epochs} epochs) in {self.run_dir}"
                      if done >= self.epochs else
                      f"[workbench] {self.title}: resuming from epoch {done + 1} of {self.epochs}{at} ({path})")
            if self._position and self._loader_workers() > 0:
                self.note(f"[workbench] note: resuming mid-epoch with workers={self._loader_workers()}: DataLoader "
                          f"workers' augmentation draws are not checkpointed, so the rest of epoch {done + 1} draws "
                          f"other crops/flips than an uninterrupted run (exact with workers=0 or device_data)")
        return ckpt["epoch"] + 1

    def _loader_workers(self) -> int:
        return getattr(self.train_loader, "num_workers", 0)

    def recorded_config(self) -> dict:
        """What ``config.json`` holds: every key as asked (the top level, what a rerun passes
        again) and, under ``effective``, every key as this run uses it: the config's own
        resolution (``RunConfig.effective``: what the run name hashes) and what this device and
        the built method made of the rest (``device``, ``amp`` as the precision that runs,
        ``channels_last``, ``device_data`` and ``workers`` as on/off and a count, ``ce_weight``)."""
        effective = self.cfg.effective()
        effective.update(device=str(self.device), amp=AMP_NAMES.get(self.amp, str(self.amp)),
                         channels_last="on" if self.channels_last else "off",
                         device_data="on" if isinstance(self.train_loader, DeviceLoader) else "off",
                         workers=self._loader_workers())
        effective.update(self.needs.settled)  # what the built method made of keys left to it (ce_weight)
        return {**self.cfg.to_dict(), "effective": effective}

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        with preempt.watch():  # SIGTERM/SIGUSR1/SIGUSR2: checkpoint at the next safe point, then Preempted
            start = self.resume()
            if self.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                (self.run_dir / "config.json").write_text(json.dumps(self.recorded_config(), indent=2, sort_keys=True))
            state = self.state()
            for cb in self.callbacks:
                cb.on_fit_start(state)
            self.progress.phase(self.title, self.epochs, start)
            try:
                try:
                    self._loop(start, state)
                finally:
                    self.progress.close()
                for cb in self.callbacks:
                    cb.on_fit_end(state)
                return self.finish()
            finally:
                self.log.close()  # trackers: event files flushed, W&B run finished

    def _loop(self, start: int, state: FitState) -> None:
        # between phases (set-up, training, evaluation) the heap memory one phase freed goes
        # back to the OS, so it does not add to the next phase's peak (engine.memory)
        release_freed_memory()
        if self._stop_requested():  # a signal during set-up (or the teacher phase): nothing new to save
            last = self.run_dir / LAST
            where = self._position or {}
            raise Preempted(self._signal_name(), where.get("epoch", start - 1), where.get("step"), where.get("steps"),
                            last if last.exists() else None, self.epochs)
        if start == 1 and self._position is None:
            self._eval_and_callbacks(0)
            release_freed_memory()
        for epoch in range(start, self.epochs + 1):
            self.epoch = epoch
            self._start_epoch(epoch)
            train_record = self.train_epoch(epoch)
            data_pass = self.method.end_epoch(epoch, self.epochs)  # a snapshot taken; a term's data pass
            if data_pass is not None:
                self._data_pass(data_pass)
            self.log.append([train_record])
            release_freed_memory()
            student_top1 = self._eval_and_callbacks(epoch)
            self.log.append(r for cb in self.callbacks for r in _stamp(cb.on_epoch_end(state, epoch), epoch))
            self.save(epoch, student_top1)
            release_freed_memory()
            self._print_epoch(train_record, student_top1)
            if self._stop_requested():  # it came during evaluation, probes or the checkpoint write
                raise Preempted(self._signal_name(), epoch, None, None, self.run_dir / LAST, self.epochs)

    def state(self) -> FitState:
        """What callbacks may know of this run."""
        return FitState(self.epochs, self.run_dir, self.log.path, self.device, self.eval_models)

    def _eval_and_callbacks(self, epoch: int) -> float | None:
        records, outputs = self.evaluate(epoch)
        check_evaluation(self.run_dir, epoch, records, outputs, self.method.state(), self.eval_split)
        self.log.append(records)
        self._last_eval = {r["role"]: r["top1"] for r in records}
        state = self.state()
        for cb in self.callbacks:
            self.log.append(_stamp(cb.on_eval_end(state, epoch, outputs), epoch))
        student = next((r for r in records if r["role"] == "student"), None)
        return None if student is None else reported(student)

    def _print_epoch(self, train: dict, student_top1) -> None:
        if not self.is_main or not self.cfg.progress:
            return
        tops = "  ".join(f"{role_label(r)} {v:.2f}" for r, v in self._last_eval.items())
        msg = (f"epoch {train['epoch']}/{self.epochs}  loss {train['loss']:.4f}  train top1 "
               f"{train['top1']:.2f}  | {self.eval_split} top1 {tops}  | {train['time']:.1f}s")
        self.progress.line(msg)

    def finish(self) -> dict:
        """Summary records, the final deployable student (``student.pt``), and the summary."""
        summary = {}
        if self.is_main:
            summary = summarize(read_metrics(self.run_dir, kind="eval"))
            self.log.append(summary.values())
            self._save_student(self.method.deployable_student(), self.run_dir / STUDENT)
            if self.ema is not None:
                self._save_student(self.method.deployable_student(self.ema.module), self.run_dir / STUDENT_EMA)
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        dist.barrier()
        return summary

    def _save_student(self, student: nn.Module, path: Path) -> None:
        """The plain student with what ``models.load_student`` needs to rebuild it alone (classes,
        input channels, the training inputs' shape, the build options)."""
        from ..models import student_file_entries

        entries = student_file_entries(student, _input_shape(self.test_set, self.train_set), self.cfg.student_options())
        atomic_save({"model": _cpu(student.state_dict()), "arch": self.cfg.student, "epoch": self.epochs, **entries},
                    path)


STUDENT_EMA = "student_ema.pt"


def _saved_memory_format(path: Path) -> str | None:
    """The layout recorded in a checkpoint (memory-mapped: nothing big is read), or None when
    there is none or it cannot be read (``resume`` then reports the problem)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("memory_format")
    except Exception:  # noqa: BLE001 -- an unreadable checkpoint gets its one-line error in resume()
        return None


def _input_shape(*datasets) -> tuple[int, ...] | None:
    """One example's input shape (the first non-empty dataset's first item), for the layout rule."""
    for ds in datasets:
        if ds is not None and len(ds):
            x = ds[0][0]
            return tuple(x.shape) if torch.is_tensor(x) else None
    return None


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}



def _stamp(records, epoch: int):
    for r in records or []:
        r.setdefault("epoch", epoch)
        yield r
