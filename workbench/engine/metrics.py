"""Tidy metric records: one JSON object per line in ``runs/<name>/metrics.jsonl``.

This module docstring is the one place the record schema is documented. Every record has
``kind`` and ``epoch`` (1-based; 0 = before training). Kinds and their other keys:

``train``   one per epoch: ``split="train"``, ``role="student"`` (``top1`` is the student's
            training accuracy, in %), ``loss`` (total) and one key per named loss term
            (``loss_ce``, ``loss_kd``, ...; GPD adds ``loss_ce_dt``, ``loss_kd_dt``, ``loss_sce``),
            ``lr``, ``time`` (seconds for the epoch), ``images_per_s``, ``temperature``.
``eval``    one per epoch and evaluated model: ``split="test"``, ``role`` in
            {``student``, ``teacher`` (static), ``dynamic_teacher``}, ``top1``, ``top5`` (in %), ``loss``
            (cross-entropy), ``n`` (examples), ``time``.
``gap``     long format, one per (epoch, pair, metric): ``pair`` in {``T_s-S``, ``T_d-S``,
            ``T_s-T_d``}, ``metric`` (``acc_gap``, ``agreement``, ``kl``, ``cka``, ...), ``value``.
``probe``   long format for other probes: ``probe`` (e.g. ``discriminability``,
            ``transferability``), ``role``, ``metric``, ``value`` plus probe-specific keys.
``summary`` written once at the end: ``role``, ``best_top1``, ``best_epoch``, ``last_top1``.

Readers (notebooks, figures, tests) use :func:`read_metrics` and filter on ``kind``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

METRICS_FILE = "metrics.jsonl"


def _clean(value):
    """JSON-safe scalars: tensors/numpy -> python numbers, NaN/inf -> None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Append-only JSON-lines writer. ``enabled=False`` (non-zero DDP ranks) writes nothing."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled

    def append(self, records: Iterable[dict]) -> None:
        if not self.enabled:
            return
        lines = [json.dumps({k: _clean(v) for k, v in r.items()}) for r in records]
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs > ``epoch`` (used on resume so a re-run epoch is not logged twice)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("epoch", 0) <= epoch and r.get("kind") != "summary"]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Read a run's records (``path`` is the run directory or the ``metrics.jsonl`` file)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}")
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                if kind is None or r.get("kind") == kind:
                    out.append(r)
    return out
