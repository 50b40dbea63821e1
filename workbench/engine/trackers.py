"""Experiment trackers (``log=tensorboard`` / ``log=wandb``): the same records as ``metrics.jsonl``,
sent on as scalars. ``metrics.jsonl`` stays the source of truth (tables, notebooks, tests and
resume read it); a tracker is a view that can be deleted and rebuilt, and one that fails (a full
disk under the event files, a W&B service error) is switched off with one printed line instead
of stopping the training.

:class:`workbench.engine.metrics.MetricsLog` calls every tracker from its one ``append`` after
the records are on disk, and ``truncate_after(epoch)`` when a resumed run drops the records of
the epochs it re-runs, so a tracker never shows an epoch twice:

- TensorBoard: ``<run folder>/tensorboard/``; after a resume the writer starts with
  ``purge_step`` = the first re-run epoch, which hides the events the killed run wrote past its
  checkpoint (TensorBoard's own mechanism for restarts).
- W&B: one W&B run per run folder (its id derived from the folder, ``resume="allow"``), files in
  ``<run folder>/wandb/``; every scalar is plotted against the ``epoch`` value logged with it
  (``define_metric``), so re-logged epochs after a resume replace nothing and need no step order.
  Offline (``WANDB_MODE=offline``, sync later with ``wandb sync``) unless the user set
  ``WANDB_MODE``, ``WANDB_API_KEY`` or logged in (``~/.netrc`` holds the W&B host).

Scalar names: ``train/<key>`` (loss terms, lr, top1, images_per_s, ...), ``eval/<role>/<key>``
(top1, top5, loss, top1_reported), ``gap/<pair>/<metric>``, ``probe/<probe>/<role>/<metric>``,
``summary/<role>/<key>``. Records of other kinds and non-numeric fields are left out.
"""
from __future__ import annotations

import hashlib
import importlib
import math
import os
from pathlib import Path
from typing import Iterable, Optional

#: what a missing tracker package prints (one line, naming the pip extra)
INSTALL_HINT = "pip install -e '.[track]'"
#: the modules each tracker needs (imported by :func:`check_available` before any work)
MODULES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}
TENSORBOARD_DIR = "tensorboard"
SKIP_KEYS = frozenset({"kind", "epoch", "split", "role", "n", "pair", "metric", "probe", "value"})


class TrackerMissingError(ImportError):
    """The package of a requested tracker is not installed."""


def check_available(kind: str) -> None:
    """Import what ``log=<kind>`` needs; a missing package is one line naming the pip extra."""
    if kind == "none":
        return
    try:
        importlib.import_module(MODULES[kind])
    except ImportError as e:
        raise TrackerMissingError(f"log={kind}: the {kind} package is not installed ({e}); "
                                  f"install the tracker extra: {INSTALL_HINT}") from None


def scalars(record: dict) -> dict[str, float]:
    """The tracker scalars of one record (see the module docstring for the names)."""
    kind = record.get("kind")
    if kind == "train":
        prefix = "train"
    elif kind in ("eval", "summary"):
        prefix = f"{kind}/{record.get('role')}"
    elif kind == "gap":
        return _finite({f"gap/{record.get('pair')}/{record.get('metric')}": record.get("value")})
    elif kind == "probe":
        return _finite({f"probe/{record.get('probe')}/{record.get('role')}/{record.get('metric')}": record.get("value")})
    else:
        return {}
    return _finite({f"{prefix}/{k}": v for k, v in record.items() if k not in SKIP_KEYS})


def _finite(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Tracker:
    """The interface: ``log`` a batch of records (already on disk), ``truncate_after`` on resume."""

    name = "none"

    def log(self, records: list[dict]) -> None:
        pass

    def truncate_after(self, epoch: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = None
        self.purge_step: Optional[int] = None

    def truncate_after(self, epoch: int) -> None:
        if self.writer is None:  # resume: hide events of the epochs about to be re-run
            self.purge_step = max(0, epoch + 1)

    def log(self, records: list[dict]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.dir), purge_step=self.purge_step)
        for r in records:
            for tag, value in scalars(r).items():
                self.writer.add_scalar(tag, value, global_step=int(r.get("epoch", 0)))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def wandb_mode() -> str:
    """``WANDB_MODE`` if the user set it; online with an API key or a login; else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    logged_in = netrc.is_file() and "wandb" in netrc.read_text(errors="replace")
    return "online" if os.environ.get("WANDB_API_KEY") or logged_in else "offline"


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run_dir: Path, config: dict, project: str = "gpd-workbench"):
        self.run_dir, self.config, self.project = Path(run_dir), config, project
        self.run = None

    def log(self, records: list[dict]) -> None:
        if self.run is None:
            import wandb

            run_id = hashlib.sha256(str(self.run_dir.resolve()).encode()).hexdigest()[:16]
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", self.project), id=run_id,
                                  name=self.run_dir.name, resume="allow", dir=str(self.run_dir),
                                  mode=wandb_mode(), config=self.config, reinit="create_new")
            self.run.define_metric("epoch")
            self.run.define_metric("*", step_metric="epoch")
        by_epoch: dict[int, dict] = {}
        for r in records:
            by_epoch.setdefault(int(r.get("epoch", 0)), {}).update(scalars(r))
        for epoch, values in sorted(by_epoch.items()):
            if values:
                self.run.log({"epoch": epoch, **values})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def build(kind: str, run_dir: Path, config: Optional[dict] = None) -> list[Tracker]:
    """The trackers of ``log=<kind>`` (an empty list for ``none``)."""
    if kind == "none":
        return []
    check_available(kind)
    if kind == "tensorboard":
        return [TensorBoardTracker(run_dir)]
    return [WandbTracker(run_dir, dict(config or {}))]


def send(trackers: list[Tracker], records: Iterable[dict], note=print) -> None:
    """``records`` to every tracker; one that fails is dropped with one line (the records are
    safe in ``metrics.jsonl``)."""
    records = list(records)
    for t in list(trackers):
        try:
            t.log(records)
        except Exception as e:  # noqa: BLE001 -- a tracker is a view; training goes on without it
            trackers.remove(t)
            note(f"[workbench] note: log={t.name} switched off after an error ({type(e).__name__}: {e}); "
                 f"metrics.jsonl has every record")
