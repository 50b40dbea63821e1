"""Tidy metric records: one JSON object per line in ``runs/<name>/metrics.jsonl``.

This module docstring is the one place the record schema is documented. Every record has
``kind`` and ``epoch`` (1-based; 0 = before training). Kinds and their other keys:

``train``   one per epoch: ``split="train"``, ``role="student"`` (``top1`` is the student's
            training accuracy, in %), ``loss`` (total) and one key per named loss term
            (``loss_ce``, ``loss_kd``, ...; GPD adds ``loss_ce_dt``, ``loss_kd_dt``, ``loss_sce``),
            ``lr``, ``time`` (seconds for the epoch), ``images_per_s``, ``temperature`` (CTKD),
            ``dense_weight`` (CSKD: the dense share d_e of the fused target), ``memory_format``
            (``channels_last`` | ``contiguous``: the layout the run trains in); DeiT/CSKD's terms are
            ``loss_ce`` (cls head), ``loss_deit`` (distillation token), ``loss_cskd`` (patches).
``eval``    one per epoch and evaluated model: ``split`` (``"test"``, or ``"val"`` under ``eval_on=val``:
            the validation split carved from the training data, ``val_per_class``), ``role`` in
            {``student``, ``teacher`` (static), ``dynamic_teacher``}, ``top1``, ``top5`` (in %), ``loss``
            (cross-entropy), ``n`` (examples), ``time``; with EMA, ``role_ema`` twins and, on every
            epoch of a role that has a twin, ``top1_reported`` (max(raw, EMA) top-1; the raw top-1 on
            epochs ``ema_eval_every`` skips the twin); for models that say which outputs they
            give (the ViTs, ``models.readout``) also ``logits_from`` (the heads the logits average,
            e.g. ``cls+dist+dense``) and ``features_from`` (what penultimate-feature probes read:
            ``cls_token``), copied into the role's ``probe`` records.
``gap``     long format, one per (epoch, pair, metric): ``pair`` in {``T_s-S``, ``T_d-S``,
            ``T_s-T_d``}, ``metric`` (``acc_gap``, ``agreement``, ``kl``, ``cka``, ...), ``value``.
``probe``   long format for other probes: ``probe`` (e.g. ``discriminability``,
            ``transferability``), ``role``, ``metric``, ``value`` plus probe-specific keys.
``init``    once, at epoch 0, when the student starts from weight inheritance (``init=inherit``):
            ``source``, ``source_arch``, ``student``, ``blocks`` (per container, the source's
            block taken for each student block), ``bn_images`` (used to re-estimate BN).
``summary`` written once at the end: ``role``, ``split`` (of the eval records it summarises), ``best_top1``,
            ``best_epoch``, ``last_top1``.
``gap`` and ``probe`` records are computed on the eval records' split (the transferability probe on its
target's test split, or under ``eval_on=val`` on the target's validation split).

Readers (notebooks, figures, tests) use :func:`read_metrics` and filter on ``kind``. Trackers
(``log=tensorboard|wandb``, :mod:`workbench.engine.trackers`) receive the same records from
:meth:`MetricsLog.append`, after they are written here.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable

from .checkpoint import CheckpointError, temp_path, write_failed

METRICS_FILE = "metrics.jsonl"


class MetricsError(CheckpointError):
    """A metrics log that is missing, damaged, or could not be written."""


def _clean(value):
    """JSON-safe scalars: tensors/numpy -> python numbers, NaN/inf -> None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class MetricsLog:
    """Append-only JSON-lines writer. ``enabled=False`` (non-zero DDP ranks) writes nothing.

    Each :meth:`append` is all-or-nothing: if the write fails (disk full ...) the file is cut
    back to its previous length and a :class:`MetricsError` says to free space and rerun. A
    record counts only once its newline is on disk, so a crash mid-write leaves at most an
    unterminated tail, which readers skip and :meth:`truncate_after` (resume) removes."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, trackers: list | None = None,
                 note: Callable[[str], None] = print):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        #: :mod:`workbench.engine.trackers` fed every appended record (``log=tensorboard|wandb``)
        self.trackers = list(trackers or []) if enabled else []
        self.note = note

    def append(self, records: Iterable[dict]) -> None:
        if not self.enabled:
            return
        records = [{k: _clean(v) for k, v in r.items()} for r in records]
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        if not data:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_failed(self.path, e, kept=self.path.exists()) from None
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except OSError as e:
                with contextlib.suppress(OSError):  # shrinking frees space: works on a full disk
                    os.ftruncate(fd, size)
                raise write_failed(self.path, e, kept=True) from None
        finally:
            os.close(fd)
        if self.trackers:  # the one place records leave for trackers: after they are safe on disk
            from .trackers import send

            send(self.trackers, records, note=self.note)

    def close(self) -> None:
        """Close the trackers (event files flushed, W&B run finished)."""
        for t in self.trackers:
            t.close()

    def truncate_after(self, epoch: int, note: Callable[[str], None] = print) -> None:
        """Drop records of epochs > ``epoch`` and summaries (used on resume so a re-run epoch is
        not logged twice); a torn last line left by a crash is dropped with a ``note``."""
        if not self.enabled:
            return
        for t in self.trackers:
            t.truncate_after(epoch)
        if not self.path.exists():
            return
        records, torn = _parse(self.path)
        if torn:
            note(f"[workbench] note: dropped an incomplete last line of {self.path} (a write cut short by a crash)")
        kept = [r for r in records if r.get("epoch", 0) <= epoch and r.get("kind") != "summary"]
        tmp = temp_path(self.path)
        try:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        except OSError as e:
            raise write_failed(self.path, e, kept=True) from None
        finally:
            if tmp.exists():
                tmp.unlink()


def _parse(path: Path) -> tuple[list[dict], bool]:
    """Records of a metrics file and whether it ended in an unterminated (torn) line. A damaged
    complete line raises :class:`MetricsError` naming the file and the line number."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise MetricsError(f"no metrics file at {path}") from None
    lines = text.split("\n")
    torn = lines.pop() != ""  # text after the last newline: a record whose write never completed
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise MetricsError(f"{path} line {number} is damaged (not a JSON record: {line[:60]!r}); "
                               f"restore the file, or delete the run folder to start afresh")
        out.append(record)
    return out, torn


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Read a run's records (``path`` is the run directory or the ``metrics.jsonl`` file);
    an unterminated last line (a record still being written, or cut by a crash) is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records, _ = _parse(path)
    return [r for r in records if kind is None or r.get("kind") == kind]
