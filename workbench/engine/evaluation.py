"""Evaluation of the roles a run trains: one pass over the evaluation set for several models at
once, the eval records (top-1, top-5, loss per role), the reported top-1 (max of raw and EMA, as
the GPD reference code reports), and the run's summary (best and last epoch per role).

The trainer decides *which* models are evaluated on an epoch (the EMA twins every
``ema_eval_every`` epochs, the static teacher once); this module evaluates them and turns the
outputs into records."""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..models import readout as model_readout
from ..models.hooks import FeatureTap
from . import distributed as dist
from .callbacks import EMA_SUFFIX, RoleOutputs
from .device import autocast, to_device

TOPK = 5
PENULTIMATE = "penultimate"  # the feature tap the probes read


@torch.no_grad()
def evaluate_models(models: dict[str, nn.Module], loader, device: torch.device, channels_last: bool, amp,
                    feature_budget: int = 0, eval_context=None, bar=lambda loader, desc: loader
                    ) -> tuple[dict[str, RoleOutputs], float]:
    """Every model of ``models`` (role -> module) on every batch of ``loader`` in eval mode (each
    model's train/eval mode restored after); penultimate features of the first ``feature_budget``
    examples for the raw roles; under DDP the outputs of all ranks gathered. ``eval_context``
    wraps the pass (e.g. GPD folds its multi-branch convolutions once). Returns the outputs by
    role, in ``models``' order, and the seconds the pass took."""
    was_training = {r: m.training for r, m in models.items()}
    for m in models.values():
        m.eval()
        if channels_last:
            m.to(memory_format=torch.channels_last)
    logits: dict[str, list] = {r: [] for r in models}
    feats: dict[str, list] = {r: [] for r in models}
    targets, kept, t0 = [], 0, time.perf_counter()
    readouts = {role: model_readout(m) for role, m in models.items()}  # which heads/tokens are read
    context = eval_context(*models.values()) if eval_context is not None else contextlib.nullcontext()
    with context:
        for batch in bar(loader, desc="eval"):
            x, y, *_ = to_device(batch, device, channels_last)
            take = min(len(y), max(0, feature_budget - kept))
            for role, m in models.items():
                with autocast(device, amp):
                    if take and not role.endswith(EMA_SUFFIX):
                        with FeatureTap(m, [PENULTIMATE]) as tap:
                            z = m(x)
                        feats[role].append(tap[PENULTIMATE][:take].float().cpu())
                    else:
                        z = m(x)
                logits[role].append(z.float().cpu())
            targets.append(y.cpu())
            kept += take
    for role, m in models.items():
        m.train(was_training[role])
    y = dist.gather_cat(torch.cat(targets))
    elapsed = time.perf_counter() - t0
    outputs = {}
    for role in models:
        z = dist.gather_cat(torch.cat(logits[role]))
        f = dist.gather_cat(torch.cat(feats[role])) if feats[role] else None
        outputs[role] = RoleOutputs(z, y, f[:feature_budget] if f is not None else None, readouts[role])
    return outputs, elapsed


def eval_record(epoch: int, role: str, out: RoleOutputs, elapsed: float, split: str = "test") -> dict:
    """One role's eval record: top-1 and top-5 (%), cross-entropy, the number of examples."""
    z, y = out.logits, out.targets
    k = min(TOPK, z.shape[1])
    topk = z.topk(k, dim=1).indices
    return {"kind": "eval", "epoch": epoch, "split": split, "role": role,
            "top1": 100.0 * (topk[:, 0] == y).float().mean().item(),
            f"top{TOPK}": 100.0 * (topk == y[:, None]).any(1).float().mean().item(),
            "loss": F.cross_entropy(z, y).item(), "n": len(y), "time": elapsed, **out.readout}


def reported(record: dict) -> float:
    """An eval record's reported top-1: max(raw, EMA) where its EMA twin was evaluated, else raw."""
    return record.get("top1_reported", record["top1"])


def add_reported(records: list[dict], twin_roles) -> None:
    """``top1_reported`` on each raw role of ``twin_roles`` (those with an EMA twin): max(raw, EMA)
    top-1 where the twin was evaluated, the raw top-1 where it was not."""
    by_role = {r["role"]: r for r in records}
    for role, rec in by_role.items():
        twin = by_role.get(role + EMA_SUFFIX)
        if twin is not None:
            rec["top1_reported"] = max(rec["top1"], twin["top1"])
        elif role in twin_roles:
            rec["top1_reported"] = rec["top1"]


def summarize(evals: list[dict]) -> dict[str, dict]:
    """The summary record of each role from its eval records: best top-1 and its epoch over the
    trained epochs (epoch 0, before training, only where there is nothing else), the last epoch's
    top-1, and the same for the reported top-1 where the role has one."""
    summary = {}
    for role in sorted({r["role"] for r in evals}):
        rs = [r for r in evals if r["role"] == role and r["epoch"] > 0] or [r for r in evals if r["role"] == role]
        best = max(rs, key=lambda r: r["top1"])
        summary[role] = {"kind": "summary", "epoch": rs[-1]["epoch"], "role": role, "split": rs[-1].get("split"),
                         "best_top1": best["top1"], "best_epoch": best["epoch"], "last_top1": rs[-1]["top1"]}
        if "top1_reported" in rs[-1]:
            best_rep = max(rs, key=reported)
            summary[role].update(best_top1_reported=reported(best_rep), best_epoch_reported=best_rep["epoch"],
                                 last_top1_reported=rs[-1]["top1_reported"])
    return summary
