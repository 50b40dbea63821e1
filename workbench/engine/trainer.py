"""The one training loop. Methods plug in (``methods.Distiller``); probes plug in as callbacks.

Read ``fit`` top to bottom: set-up, resume, then per epoch: train, evaluate every model
(student, static teacher, dynamic teacher) in one pass, divergence check, callbacks, atomic
checkpoint.

Divergence (a non-finite loss during training; a non-finite evaluation loss, accuracy, logit or
probe feature; a non-finite weight or buffer) stops the run *before* the diverged state reaches
a checkpoint or a probe, so every checkpoint on disk is one a rerun can continue from.

Determinism: every epoch re-seeds torch/numpy/python from (seed, epoch) and shuffles with a
generator seeded the same way, so a run resumed from an epoch checkpoint continues exactly as
the uninterrupted run would (bit-identical on CPU).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.device import DEVICE_DATASETS, DeviceLoader, Indexed, device_tensors
from ..methods import TASK_PREFIX, Distiller, hard_labels
from ..models import readout as model_readout
from ..models.hooks import FeatureTap
from . import distributed as dist
from .callbacks import EMA_SUFFIX, Callback, FitState, RoleOutputs, role_label
from .checkpoint import BEST, LAST, STUDENT, CheckpointError, atomic_save, rng_state, set_rng_state
from .device import amp_dtype, autocast, select_device, to_device, use_channels_last
from .batch import BATCH_TRANSFORMS
from .ema import ModelEMA
from .memory import release_freed_memory
from .metrics import MetricsLog
from .optim import DOT, build_optimizer
from .progress import Progress, TerminalProgress
from .resume import resume_checkpoint
from .schedule import lr_factor

TOPK = 5
#: config.json's effective ``amp``: the autocast dtype that runs (None: none, float32)
AMP_NAMES = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}
SEED_STRIDE = 1_000_003  # epoch seeds: seed * SEED_STRIDE + epoch
SHOWN_PROBLEMS = 4  # non-finite quantities listed in a divergence message


class NonFiniteLossError(RuntimeError):
    """Training diverged (NaN/inf loss, evaluation or weights); the run stops before the diverged
    state is saved, so the last checkpoint stays good."""


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * SEED_STRIDE + epoch

POSTFIX_EVERY = 10  # steps between updates of the running loss shown next to the bar

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg, method: Distiller, train_set, test_set, run_dir: str | Path | None = None,
                 callbacks: list[Callback] = (), device: torch.device | None = None, log=print,
                 num_classes: int | None = None, progress: Progress | None = None, title: str = ""):
        self.cfg, self.method, self.note = cfg, method, log
        self.num_classes = num_classes  # needed by mixing batch transforms (soft targets)
        self.mix = BATCH_TRANSFORMS.get(cfg.mix)
        if cfg.mix != "none" and num_classes is None:
            raise ValueError(f"mix={cfg.mix}: the Trainer needs num_classes= for soft targets")
        self.train_set, self.test_set = train_set, test_set
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
        self.log = MetricsLog(self.run_dir, enabled=self.is_main)
        self.best = {"top1": -1.0, "epoch": 0}
        self.show = cfg.progress and self.is_main
        self.progress = (progress or TerminalProgress()) if self.show else Progress()
        self.title = title or f"{cfg.method} {cfg.student}"

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
            for module in method.sync_bn_modules():
                nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces BN children in place
        decay = cfg.resolved_ema_decay
        self.ema = ModelEMA(method.trained_module(), decay) if decay > 0 else None
        # DDP around the method when world > 1
        self.model = dist.wrap(method, self.device, find_unused=method.find_unused_parameters)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.teacher_cache = self._teacher_cache() if cfg.cache_teacher else None
        self.train_loader = self._loader(train_set, train=True)
        self.test_loader = self._loader(test_set, train=False)

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
        with_index = train and (cfg.cache_teacher or self.method.needs_index)
        tensors = self._device_tensors(dataset)
        if tensors is not None:
            return DeviceLoader(tensors, sampler, per_rank, self.device, self.channels_last, with_index)
        workers = cfg.workers if cfg.workers >= 0 else (min(8, dist.cpu_count()) if self.device.type == "cuda" else 0)
        return DataLoader(Indexed(dataset) if with_index else dataset, batch_size=per_rank, sampler=sampler,
                          num_workers=workers, pin_memory=self.device.type == "cuda",
                          drop_last=False, persistent_workers=workers > 0,
                          generator=torch.Generator())

    @torch.no_grad()
    def _teacher_cache(self):
        """Static-teacher logits of every training example, in dataset order (``cache_teacher``)."""
        teacher = self.method.teacher
        loader = DataLoader(self.train_set, batch_size=self.cfg.eval_batch_size, shuffle=False)
        out = []
        for batch in self.progress.bar(loader, desc="teacher logits"):
            x, _ = to_device(batch, self.device, self.channels_last)
            with autocast(self.device, self.amp):
                out.append(teacher(x).float())
        return torch.cat(out)

    def _start_epoch(self, epoch: int) -> None:
        seed = epoch_seed(self.cfg.seed, epoch) + self.rank
        seed_everything(seed)
        self.train_loader.generator.manual_seed(seed)  # worker seeds
        dist.set_sampler_epoch(self.train_loader, epoch_seed(self.cfg.seed, epoch))
        self.method.on_epoch_start(epoch, self.epochs)
        schedule = self.method.schedule
        wd = schedule.weight_decay_factor(epoch) if schedule is not None else 1.0
        for g in self.optimizer.param_groups:  # a method may rescale weight decay per epoch (CTC)
            g["weight_decay"] = g.get("base_weight_decay", g["weight_decay"]) * wd

    # ------------------------------------------------------------------ one epoch of training
    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        correct, seen, steps = torch.zeros((), device=self.device), 0, len(self.train_loader)
        t0 = time.perf_counter()
        bar = self.progress.bar(self.train_loader, desc=f"epoch {epoch}/{self.epochs}", total=steps, epoch=epoch)
        for step, batch in enumerate(bar):
            x, y, *index = to_device(batch, self.device, self.channels_last)
            index = index[0] if index else None
            if self.teacher_cache is not None:
                self.method.use_cached_teacher_logits(self.teacher_cache[index])
            x, y = self.mix(x, y, self.num_classes, self.cfg.mix_alpha)
            self._set_lr((epoch - 1) + step / steps, steps)
            with autocast(self.device, self.amp):
                logits, losses = self.model(x, y, index) if self.method.needs_index else self.model(x, y)
            loss = sum(losses.values())
            if not torch.isfinite(loss.detach()).item():
                terms = {k: float(v.detach()) for k, v in losses.items()}
                raise self._diverged(epoch, f"non-finite loss at epoch {epoch}, step {step + 1}/{steps}: {terms}")
            self._backward_step(loss, losses)
            if self.ema is not None:
                self.ema.update(self.method.trained_module())
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach() * len(y)
            correct += (logits.detach().argmax(1) == hard_labels(y)).sum()
            seen += len(y)
            if step % POSTFIX_EVERY == 0:
                self.progress.postfix(loss=f"{float(loss.detach()):.3f}")
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

        schedule = self.method.schedule  # a method may restart / rescale the run's schedule (CTC)
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
    def _data_pass(self, epoch: int) -> None:
        """One pass over the training data (this rank's share, the epoch's order and augmentation
        draws) without gradients, for the method's own terms (CTC's memory refresh from the
        snapshot at its stage boundary)."""
        for batch in self.progress.bar(self.train_loader, desc="data pass"):
            x, y, *index = to_device(batch, self.device, self.channels_last)
            with autocast(self.device, self.amp):
                self.method.observe_batch(x, y, index[0] if index else None, epoch)

    # ------------------------------------------------------------------ evaluation
    def eval_models(self, ema: bool = True) -> dict[str, nn.Module]:
        """The method's plain models by role (for probes); with EMA (and ``ema``) also ``<role>_ema``."""
        models = self.method.eval_models()
        if ema and self.ema is not None:
            models.update({r + EMA_SUFFIX: m for r, m in self.method.eval_models(self.ema.module).items()})
        return models

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
        """One pass over the test set for every model that changes; returns eval records and
        outputs (logits of all examples, features of the first ``probe_samples`` when a due
        callback needs them) for callbacks. The static teacher never changes: its outputs are
        computed once and reused (recomputed only when features are needed and not cached).
        With EMA, each raw role's record also carries ``top1_reported`` = max(raw, EMA) top-1
        (what the GPD reference code reports)."""
        models = self.eval_models(ema=self._ema_due(epoch))
        order = list(models)  # records keep the roles' order whatever was cached
        readouts = {role: model_readout(m) for role, m in models.items()}  # which heads/tokens are read
        budget = self._features_due(epoch)
        cached = self._static_outputs if "teacher" in models else None
        if cached is not None and (budget == 0 or cached.features is not None):
            models.pop("teacher")
        else:
            cached = None
        was_training = {r: m.training for r, m in models.items()}
        for m in models.values():
            m.eval()
            if self.channels_last:
                m.to(memory_format=torch.channels_last)
        logits = {r: [] for r in models}
        feats = {r: [] for r in models}
        targets, kept, t0 = [], 0, time.perf_counter()
        from ..gpd.branches import fold_once  # multi-branch convs (T_d) fold their kernels once per pass

        with fold_once(*models.values()):
            self._eval_batches(models, budget, logits, feats, targets)
        for role, m in models.items():
            m.train(was_training[role])
        y = dist.gather_cat(torch.cat(targets))
        elapsed = time.perf_counter() - t0
        outputs = {}
        for role in models:
            z = dist.gather_cat(torch.cat(logits[role]))
            f = dist.gather_cat(torch.cat(feats[role])) if feats[role] else None
            outputs[role] = RoleOutputs(z, y, f[:budget] if f is not None else None, readouts[role])
        if cached is not None:
            outputs["teacher"] = cached
        elif "teacher" in outputs:
            self._static_outputs = outputs["teacher"]
        outputs = {role: outputs[role] for role in order}
        records = [self._eval_record(epoch, role, out, elapsed) for role, out in outputs.items()]
        _add_reported(records)
        return records, outputs

    def _eval_batches(self, models, budget, logits, feats, targets) -> None:
        kept = 0
        for batch in self.progress.bar(self.test_loader, desc="eval"):
            x, y, *_ = to_device(batch, self.device, self.channels_last)
            take = min(len(y), max(0, budget - kept))
            for role, m in models.items():
                with autocast(self.device, self.amp):
                    if take and not role.endswith(EMA_SUFFIX):
                        with FeatureTap(m, ["penultimate"]) as tap:
                            z = m(x)
                        feats[role].append(tap["penultimate"][:take].float().cpu())
                    else:
                        z = m(x)
                logits[role].append(z.float().cpu())
            targets.append(y.cpu())
            kept += take

    @staticmethod
    def _eval_record(epoch: int, role: str, out: RoleOutputs, elapsed: float) -> dict:
        z, y = out.logits, out.targets
        k = min(TOPK, z.shape[1])
        topk = z.topk(k, dim=1).indices
        return {"kind": "eval", "epoch": epoch, "split": "test", "role": role,
                "top1": 100.0 * (topk[:, 0] == y).float().mean().item(),
                f"top{TOPK}": 100.0 * (topk == y[:, None]).any(1).float().mean().item(),
                "loss": F.cross_entropy(z, y).item(), "n": len(y), "time": elapsed, **out.readout}

    # ------------------------------------------------------------------ divergence
    def _diverged(self, epoch: int, what: str) -> NonFiniteLossError:
        """The divergence error: what went non-finite and the checkpoint a rerun continues from
        (every checkpoint written passed these checks, so the last one is good)."""
        last = (f"the last good checkpoint is {self.run_dir / LAST} (epoch {epoch - 1})" if epoch > 1
                else "no checkpoint was written yet")
        return NonFiniteLossError(f"{what}. The run stopped before saving this state; {last}. "
                                  f"Try a lower lr, grad_clip=5, or amp=off.")

    def _check_finite(self, epoch: int, records: list[dict], outputs: dict[str, RoleOutputs]) -> None:
        """Raise if the evaluation or the trained state holds NaN/inf (before any save or probe)."""
        bad = [f"{r['role']} test {k}" for r in records for k in ("loss", "top1", f"top{TOPK}")
               if not math.isfinite(r[k])]
        for role, out in outputs.items():
            for name, t in (("logits", out.logits), ("features", out.features)):
                if t is not None and not torch.isfinite(t).all():
                    bad.append(f"{role} {name}")
        bad += [f"weight {k}" for k, v in self.method.state().items()
                if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            shown = ", ".join(bad[:SHOWN_PROBLEMS]) + (f" (+{len(bad) - SHOWN_PROBLEMS} more)" if len(bad) > SHOWN_PROBLEMS else "")
            raise self._diverged(epoch, f"training diverged: after epoch {epoch} non-finite {shown}")

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch: int) -> dict:
        student = self.method.deployable_student()
        return {"format": "gpd-workbench-checkpoint", "version": 1, "epoch": epoch,
                "config": self.cfg.to_dict(), "effective": self.cfg.effective(), "arch": self.cfg.student,
                "model": {k: v.detach().cpu() for k, v in student.state_dict().items()},
                "method": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in self.method.state().items()},
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": _cpu(self.ema.state_dict()) if self.ema is not None else None,
                "rng": rng_state(), "best": dict(self.best), "memory_format": self.memory_format}

    def save(self, epoch: int, student_top1: float | None) -> None:
        if not self.is_main:
            return
        ckpt = self._checkpoint(epoch)
        atomic_save(ckpt, self.run_dir / LAST)
        if student_top1 is not None and student_top1 > self.best["top1"]:
            self.best = {"top1": student_top1, "epoch": epoch}
            ckpt["best"] = dict(self.best)
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
        if self.is_main:
            done = ckpt["epoch"]
            self.note(f"[workbench] {self.title}: already complete ({done} of {self.epochs} epochs) in {self.run_dir}"
                      if done >= self.epochs else
                      f"[workbench] {self.title}: resuming from epoch {done + 1} of {self.epochs} ({path})")
        return ckpt["epoch"] + 1

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
                         workers=getattr(self.train_loader, "num_workers", 0))
        if getattr(self.method, "ce_weight", None) is not None:
            effective["ce_weight"] = float(self.method.ce_weight)
        return {**self.cfg.to_dict(), "effective": effective}

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        start = self.resume()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.recorded_config(), indent=2, sort_keys=True))
        state = self.state()
        for cb in self.callbacks:
            cb.on_fit_start(state)
        self.progress.phase(self.title, self.epochs, start)
        try:
            self._loop(start, state)
        finally:
            self.progress.close()
        for cb in self.callbacks:
            cb.on_fit_end(state)
        return self.finish()

    def _loop(self, start: int, state: FitState) -> None:
        # between phases (set-up, training, evaluation) the heap memory one phase freed goes
        # back to the OS, so it does not add to the next phase's peak (engine.memory)
        release_freed_memory()
        if start == 1:
            self._eval_and_callbacks(0)
            release_freed_memory()
        for epoch in range(start, self.epochs + 1):
            self.epoch = epoch
            self._start_epoch(epoch)
            train_record = self.train_epoch(epoch)
            if self.method.end_epoch(epoch, self.epochs):  # snapshot taken; a term wants a data pass
                self._data_pass(epoch)
            self.log.append([train_record])
            release_freed_memory()
            student_top1 = self._eval_and_callbacks(epoch)
            self.log.append(r for cb in self.callbacks for r in _stamp(cb.on_epoch_end(state, epoch), epoch))
            self.save(epoch, student_top1)
            release_freed_memory()
            self._print_epoch(train_record, student_top1)

    def state(self) -> FitState:
        """What callbacks may know of this run."""
        return FitState(self.epochs, self.run_dir, self.log.path, self.device, self.eval_models)

    def _eval_and_callbacks(self, epoch: int) -> float | None:
        records, outputs = self.evaluate(epoch)
        self._check_finite(epoch, records, outputs)
        self.log.append(records)
        self._last_eval = {r["role"]: r["top1"] for r in records}
        state = self.state()
        for cb in self.callbacks:
            self.log.append(_stamp(cb.on_eval_end(state, epoch, outputs), epoch))
        student = next((r for r in records if r["role"] == "student"), None)
        return None if student is None else _reported(student)

    def _print_epoch(self, train: dict, student_top1) -> None:
        if not self.is_main or not self.cfg.progress:
            return
        tops = "  ".join(f"{role_label(r)} {v:.2f}" for r, v in self._last_eval.items())
        msg = (f"epoch {train['epoch']}/{self.epochs}  loss {train['loss']:.4f}  train top1 "
               f"{train['top1']:.2f}  | test top1 {tops}  | {train['time']:.1f}s")
        self.progress.line(msg)

    def finish(self) -> dict:
        """Summary records, the final deployable student (``student.pt``), and the summary."""
        from .metrics import read_metrics

        summary = {}
        if self.is_main:
            evals = read_metrics(self.run_dir, kind="eval")
            for role in sorted({r["role"] for r in evals}):
                rs = [r for r in evals if r["role"] == role and r["epoch"] > 0] or [r for r in evals if r["role"] == role]
                best = max(rs, key=lambda r: r["top1"])
                summary[role] = {"kind": "summary", "epoch": rs[-1]["epoch"], "role": role,
                                 "best_top1": best["top1"], "best_epoch": best["epoch"], "last_top1": rs[-1]["top1"]}
                if "top1_reported" in rs[-1]:
                    best_rep = max(rs, key=_reported)
                    summary[role].update(best_top1_reported=_reported(best_rep),
                                         best_epoch_reported=best_rep["epoch"],
                                         last_top1_reported=rs[-1]["top1_reported"])
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
        from ..experiment import student_options  # (experiment imports the engine)
        from ..models import student_file_entries

        entries = student_file_entries(student, _input_shape(self.test_set, self.train_set), student_options(self.cfg))
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


def _reported(record: dict) -> float:
    """An eval record's reported top-1: max(raw, EMA) where its EMA twin was evaluated, else raw."""
    return record.get("top1_reported", record["top1"])


def _add_reported(records: list[dict]) -> None:
    """``top1_reported`` = max(raw, EMA) top-1 on each raw role that has an EMA twin."""
    by_role = {r["role"]: r for r in records}
    for role, rec in by_role.items():
        twin = by_role.get(role + EMA_SUFFIX)
        if twin is not None:
            rec["top1_reported"] = max(rec["top1"], twin["top1"])


def _stamp(records, epoch: int):
    for r in records or []:
        r.setdefault("epoch", epoch)
        yield r
