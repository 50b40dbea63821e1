"""Divergence checks: a non-finite training loss, evaluation loss/accuracy, logit or probe feature,
or a non-finite weight or buffer stops the run *before* that state reaches a checkpoint or a probe,
so every checkpoint on disk is one a rerun can continue from. The error names what went
non-finite and the checkpoint a rerun continues from."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .callbacks import RoleOutputs
from .checkpoint import LAST
from .evaluation import TOPK

SHOWN_PROBLEMS = 4  # non-finite quantities listed in a divergence message
EVAL_METRICS = ("loss", "top1", f"top{TOPK}")  # the eval record's numbers that must be finite


class NonFiniteLossError(RuntimeError):
    """Training diverged (NaN/inf); the message names what and the last good checkpoint."""


def diverged(run_dir: Path, epoch: int, what: str) -> NonFiniteLossError:
    """The divergence error at ``epoch`` (every checkpoint written passed these checks, so the
    last one, from epoch - 1, is good)."""
    last = (f"the last good checkpoint is {run_dir / LAST} (epoch {epoch - 1})" if epoch > 1
            else "no checkpoint was written yet")
    return NonFiniteLossError(f"{what}. The run stopped before saving this state; {last}. "
                              f"Try a lower lr, grad_clip=5, or amp=off.")


def check_loss(loss: torch.Tensor, losses: dict, run_dir: Path, epoch: int, step: int, steps: int) -> None:
    """Raise if this step's total loss is non-finite (naming every term's value)."""
    if not torch.isfinite(loss.detach()).item():
        terms = {k: float(v.detach()) for k, v in losses.items()}
        raise diverged(run_dir, epoch, f"non-finite loss at epoch {epoch}, step {step + 1}/{steps}: {terms}")


def check_evaluation(run_dir: Path, epoch: int, records: list[dict], outputs: dict[str, RoleOutputs],
                     state: dict, split: str) -> None:
    """Raise if the evaluation (records, logits, features) or the trained ``state`` holds NaN/inf."""
    bad = [f"{r['role']} {split} {k}" for r in records for k in EVAL_METRICS if not math.isfinite(r[k])]
    for role, out in outputs.items():
        for name, t in (("logits", out.logits), ("features", out.features)):
            if t is not None and not torch.isfinite(t).all():
                bad.append(f"{role} {name}")
    bad += [f"weight {k}" for k, v in state.items()
            if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        more = f" (+{len(bad) - SHOWN_PROBLEMS} more)" if len(bad) > SHOWN_PROBLEMS else ""
        raise diverged(run_dir, epoch, f"training diverged: after epoch {epoch} non-finite "
                                       f"{', '.join(bad[:SHOWN_PROBLEMS])}{more}")
