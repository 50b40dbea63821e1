"""A trial's score, read from its run's own records (``metrics.jsonl``), per epoch.

    score(epoch) = w_top1 * top1 / 100 - w_loss * loss - w_gap * (1 - CKA(T_s, S))

- ``top1``, ``loss``: the student's ``eval`` record of the epoch on the validation split
  (``split: "val"``: a search runs every trial with ``eval_on=val``; a record of another split is
  refused, so a score can never come from the test set);
- ``gap``: the representation gap, 1 - linear CKA between the static teacher's and the student's
  penultimate features, from the probes' ``gap`` record (``pair: "T_s-S"``, ``metric: "cka"``) of
  the epoch, on the same validation images. Auto-KD rewards a candidate by its student's loss and
  its representation gap to the teacher; the default weights (top1 1, loss 0, gap 0.1) keep
  validation accuracy the main term and let the gap break near-ties (0.1 x a CKA difference of 0.1
  is worth 1 point of top-1). Higher is better (the study maximises).

The same score of every finished epoch is what the pruner sees (``trial.report(score, epoch)``);
a trial's value is its last epoch's score.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

METRICS_FILE = "metrics.jsonl"
VAL_SPLIT = "val"
GAP_PAIR, GAP_METRIC = "T_s-S", "cka"


class TestSetRecord(ValueError):
    """A trial's records come from a split other than the validation split."""


def read_records(run_dir: Path) -> list[dict]:
    """The run's records (a line being written is skipped)."""
    out = []
    try:
        text = (Path(run_dir) / METRICS_FILE).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def epoch_scores(records: list[dict], weights: dict) -> dict[int, float]:
    """epoch (>= 1) -> score, for every epoch whose records are all there."""
    evals, gaps = {}, {}
    for r in records:
        epoch = r.get("epoch")
        if not isinstance(epoch, int) or epoch < 1:
            continue
        if r.get("kind") == "eval" and r.get("role") == "student":
            if r.get("split") != VAL_SPLIT:
                raise TestSetRecord(f"epoch {epoch}: an evaluation on split {r.get('split')!r}; a search scores "
                                    f"on the validation split only (eval_on=val)")
            evals[epoch] = r
        elif r.get("kind") == "gap" and r.get("pair") == GAP_PAIR and r.get("metric") == GAP_METRIC:
            gaps[epoch] = float(r["value"])
    out = {}
    for epoch, r in sorted(evals.items()):
        s = score(r, gaps.get(epoch), weights)
        if s is not None:
            out[epoch] = s
    return out


def score(eval_record: dict, cka: Optional[float], weights: dict) -> Optional[float]:
    """The score of one epoch (None while a record it needs is missing)."""
    w_top1, w_loss, w_gap = (float(weights.get(k, 0.0)) for k in ("top1", "loss", "gap"))
    total = w_top1 * float(eval_record["top1"]) / 100.0 - w_loss * float(eval_record.get("loss", math.nan))
    if w_gap:
        if cka is None:
            return None
        total -= w_gap * (1.0 - cka)
    return total if math.isfinite(total) else None


def components(records: list[dict], epoch: int) -> dict:
    """The raw numbers of one epoch (for the study's table): val top-1, val loss, CKA gap."""
    out = {}
    for r in records:
        if r.get("epoch") != epoch:
            continue
        if r.get("kind") == "eval" and r.get("role") == "student":
            out.update(val_top1=r.get("top1"), val_loss=r.get("loss"))
        elif r.get("kind") == "gap" and r.get("pair") == GAP_PAIR and r.get("metric") == GAP_METRIC:
            out["cka_gap"] = 1.0 - float(r["value"])
    return out
