"""Can this config continue the run already in a folder? One function answers it, used twice:
up front (:func:`workbench.experiment.prepare`, before any teacher is trained) and by
``Trainer.resume`` itself. Each refusal is one line naming the file and what to do.
"""
from __future__ import annotations

from pathlib import Path

from ..keys import RUNTIME_KEYS, ConfigError
from .checkpoint import BEST, LAST, CheckpointError, load_checkpoint
from .metrics import METRICS_FILE, MetricsError, read_metrics

SHOWN_DIFFS = 6  # config differences listed in a refusal


def config_diff(saved: dict, now: dict) -> dict[str, tuple]:
    """``{key: (saved, now)}`` of the keys that change what is trained (runtime keys excluded)."""
    return {k: (saved.get(k), v) for k, v in now.items()
            if k not in RUNTIME_KEYS and k in saved and saved.get(k) != v}


def recorded_effective(saved: dict, config_class) -> dict | None:
    """The effective config (:meth:`workbench.config.RunConfigBase.effective`) of recorded asked
    values, or None when they no longer form a valid config (keys or choices of another version)."""
    keys = set(config_class.keys()) - {"preset"}  # the recorded values already hold the preset's
    try:
        return config_class.from_dict({k: v for k, v in saved.items() if k in keys}).effective()
    except (ConfigError, ValueError, TypeError):
        return None


def effective_diff(saved: dict, cfg, saved_effective: dict | None = None) -> dict[str, tuple]:
    """:func:`config_diff` on effective values: a recorded run and ``cfg`` agree when every key
    that changes what is trained has the same effective value (``grad_clip=None`` under gpd equals
    ``grad_clip=5``). ``saved_effective``: the effective values recorded with the run (checkpoints
    since they exist; they also catch a method default changed in between), else recomputed from
    the asked ``saved`` values; the asked values are compared when neither is possible."""
    before = saved_effective if saved_effective is not None else recorded_effective(saved, type(cfg))
    if before is None:
        return config_diff(saved, cfg.to_dict())
    return config_diff(before, cfg.effective())


def describe_diff(diff: dict[str, tuple]) -> str:
    return ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in list(diff.items())[:SHOWN_DIFFS])


def load_last(run_dir: Path, map_location="cpu") -> dict:
    """``last.pt`` of a run folder; if it is unreadable the error says whether ``best.pt`` is a
    usable fallback."""
    last, best = run_dir / LAST, run_dir / BEST
    try:
        return load_checkpoint(last, map_location=map_location)
    except CheckpointError as e:
        advice = ""
        try:
            epoch = load_checkpoint(best)["epoch"]
            advice = f" {best} is intact (epoch {epoch}): copy it over {LAST} to resume from epoch {epoch}."
        except CheckpointError:
            pass
        raise CheckpointError(f"{e}{advice}") from None


def resume_checkpoint(run_dir: Path, cfg, map_location="cpu") -> dict | None:
    """The checkpoint ``cfg`` continues from, or None for a fresh folder. Raises CheckpointError
    if the folder holds a run that ``cfg`` may not continue: ``resume=false``, an unreadable
    ``last.pt``, a different config, or a missing/damaged ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    last = run_dir / LAST
    if not last.exists():
        return None
    if not cfg.resume:
        raise CheckpointError(f"{run_dir} already holds a run (checkpoint {last}); pass resume=true "
                              f"to continue it, or choose another name=/out_dir=")
    ckpt = load_last(run_dir, map_location)
    diff = effective_diff(ckpt.get("config", {}), cfg, ckpt.get("effective"))
    if diff:
        raise CheckpointError(f"cannot resume {last}: it was written with a different config ({describe_diff(diff)}). "
                              f"Use the same settings, another name=..., or delete the run folder.")
    metrics = run_dir / METRICS_FILE
    if not metrics.exists():
        raise MetricsError(f"{metrics} is missing although {last} exists (epoch {ckpt['epoch']}); restore it, "
                           f"or delete the run folder to start afresh")
    read_metrics(metrics)  # a damaged line stops here, naming the file and line
    return ckpt
