"""From a validated config to a finished run: data, models, static teacher (loaded, or trained
and cached), method, probes, trainer. The CLI, the notebooks and the tests all call
:func:`run` (or :func:`prepare` to check everything cheap first).

Order matters: everything that can fail cheaply (names, dataset files, checkpoint files and
their compatibility, output folder writable) is checked in :func:`prepare` before any training.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from . import data, models, paths
from .config import ConfigError, RunConfig
from .engine import Trainer
from .engine.trainer import seed_everything
from .engine.checkpoint import STUDENT
from .engine.metrics import read_metrics
from .methods import METHODS, build_method
from .data.device import DEVICE_DATASETS
from .registry import unknown_choice

TEACHERS_DIR = "teachers"
TEACHER_SEED = 0  # one cached teacher per (dataset, split, arch, epochs) serves every student seed


@dataclass
class Prepared:
    cfg: RunConfig
    info: data.DatasetInfo
    teacher_source: Optional[str]  # None | "arch" | "file"
    teacher_arch: Optional[str]
    run_dir: Path


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    records: list = field(default_factory=list)

    def top1(self, role: str = "student", which: str = "last") -> float:
        return self.summary[role][f"{which}_top1"]


def _is_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".pth.tar", ".ckpt")) or Path(value).is_file()


def infer_arch(path: Path, given: str = "") -> str:
    """Architecture of a teacher file: ``teacher_arch``, our checkpoints' ``arch`` entry, or a
    RepDistiller-style folder name (``save/models/resnet32x4_vanilla/ckpt_epoch_240.pth``)."""
    if given:
        return given
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("arch"), str):
            return ckpt["arch"]
    except Exception:
        pass  # unreadable files get their clear error from models.load
    for part in (path.parent.name, path.stem):
        for name in sorted(models.available(include_aliases=True), key=len, reverse=True):
            if re.match(rf"^{re.escape(name)}(_|$)", part):
                return name
    raise ConfigError(f"teacher: cannot tell the architecture of {path}; pass teacher_arch=<name> "
                      f"(one of: {', '.join(models.available())})")


def _check_device(cfg: RunConfig) -> None:
    from .engine.device import amp_dtype, select_device

    try:
        device = select_device(cfg.device)
    except ValueError as e:
        raise ConfigError(f"device: {e}") from None
    try:
        amp_dtype(device, cfg.amp)
    except ValueError as e:
        raise ConfigError(f"amp: {e}") from None


def _check_model(key: str, name: str) -> None:
    if name not in models.MODELS:
        raise ConfigError(f"{key}: " + unknown_choice("model", name, models.available()))


def _check_space(run_dir: Path, needed: int) -> None:
    import shutil

    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise ConfigError(f"out_dir: only {free / 2**20:.1f} MiB free space at {run_dir}, a run needs about "
                          f"{needed / 2**20:.1f} MiB for its checkpoints; free some space or choose another out_dir=...")


def estimate_checkpoint_bytes(cfg: RunConfig, info) -> int:
    """Rough size of the files one run writes: last + best (+ optimizer state) + student.pt."""
    n = sum(p.numel() for p in models.build(cfg.student, info.num_classes, info.in_channels,
                                            image_size=info.image_size).parameters())
    factor = cfg.ratio**2 * (1 + len(cfg.gpd_branches())) if cfg.method == "gpd" else 1.0
    return int(4 * n * (3 * factor * 2 + 1) + MIN_FREE_BYTES)


MIN_FREE_BYTES = 16 * 2**20


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test{os.getpid()}"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"out_dir: cannot write to {run_dir} ({e.strerror or e}); choose a writable "
                          f"out_dir=... with free space") from None


def prepare(cfg: RunConfig) -> Prepared:
    """Every cheap check, before any expensive work: models, dataset, teacher/init files."""
    METHODS.check(cfg.method)
    _check_model("student", cfg.student)
    _check_device(cfg)
    if cfg.device_data == "on" and cfg.dataset not in DEVICE_DATASETS:
        raise ConfigError(f"device_data: 'on' needs a dataset that fits on the device "
                          f"({', '.join(DEVICE_DATASETS)}); dataset={cfg.dataset!r}: use device_data=auto or off")
    opts = cfg.dataset_options()
    try:
        data.check_available(cfg.dataset, **opts)
        info = data.info(cfg.dataset, **opts)
    except ValueError as e:
        raise ConfigError(f"dataset: {e}") from None
    source, arch = None, None
    if cfg.uses_teacher:
        if _is_path(cfg.teacher):
            path = Path(cfg.teacher)
            if not path.is_file():
                raise ConfigError(f"teacher: checkpoint file {path} does not exist")
            source, arch = "file", infer_arch(path, cfg.teacher_arch)
            _check_model("teacher_arch", arch)
        else:
            _check_model("teacher", cfg.teacher)
            source, arch = "arch", cfg.teacher
    if cfg.init and not Path(cfg.init).is_file():
        raise ConfigError(f"init: student checkpoint {cfg.init} does not exist")
    run_dir = cfg.run_dir()
    _check_writable(run_dir)
    _check_space(run_dir, estimate_checkpoint_bytes(cfg, info))
    return Prepared(cfg, info, source, arch, run_dir)


def teacher_config(cfg: RunConfig, arch: str, info: Optional[data.DatasetInfo] = None) -> RunConfig:
    """The CE run that trains (and caches) a teacher of ``arch`` under the student's protocol
    (on the student's split, or with ``teacher_data=all`` on every training image of its classes)."""
    epochs = cfg.teacher_epochs or cfg.epochs
    aug = "" if cfg.augment else "_noaug"  # the teacher trains under the student's augmentation setting
    data_cfg = cfg.replace(train_per_class=None) if cfg.teacher_data == "all" else cfg
    name = f"{cfg.dataset}{_data_key(data_cfg, info)}_{arch}_ce_s{TEACHER_SEED}_e{epochs}{aug}"
    return data_cfg.replace(method="ce", base="auto", student=arch, teacher="none", init="", epochs=epochs,
                            seed=TEACHER_SEED, dot=False, ctkd=False, ce_weight=None, name=name, probe_every=0,
                            cache_teacher=False,
                            out_dir=str(Path(cfg.out_dir or paths.runs_root()) / TEACHERS_DIR), resume=True)


def _data_key(cfg: RunConfig, info: Optional[data.DatasetInfo] = None) -> str:
    """What identifies the training data in a cached teacher's name. A dataset with a choice of
    source (fashion_mnist: embedded | full) adds the resolved one, so the two never share a teacher."""
    takes_split = "train_per_class" in data.option_names(cfg.dataset)
    source = (info or data.info(cfg.dataset, **cfg.dataset_options())).source or None
    named = (("n", cfg.train_per_class), ("split", cfg.split_seed if takes_split else None),
             ("px", cfg.image_size or None), ("cls", cfg.source_classes.replace(",", "") or None), ("", source))
    parts = [f"{k}{v}" for k, v in named if v is not None]
    return ("_" + "_".join(parts)) if parts else ""


def build_student(prep: Prepared) -> nn.Module:
    cfg, info = prep.cfg, prep.info
    if cfg.init:
        return models.load(cfg.student, cfg.init, info.num_classes, info.in_channels, image_size=info.image_size).train()
    return models.build(cfg.student, info.num_classes, info.in_channels, image_size=info.image_size)


def load_teacher(prep: Prepared, log=print) -> Optional[nn.Module]:
    cfg, info = prep.cfg, prep.info
    if prep.teacher_source is None:
        return None
    if prep.teacher_source == "file":
        path = cfg.teacher
    else:
        tcfg = teacher_config(cfg, prep.teacher_arch, info)
        path = tcfg.run_dir() / STUDENT
        if not path.exists():
            log(f"[workbench] training teacher {prep.teacher_arch} on {cfg.dataset} for {tcfg.epochs} epochs "
                f"(cached in {tcfg.run_dir()})")
            run(tcfg)
        else:
            log(f"[workbench] using cached teacher {path}")
    try:
        return models.load(prep.teacher_arch, path, info.num_classes, info.in_channels, image_size=info.image_size)
    except ValueError as e:
        raise ConfigError(f"teacher: {e}") from None


def default_callbacks(cfg: RunConfig, info: data.DatasetInfo) -> list:
    """Gap, discriminability and transferability probes as configured."""
    from . import probes

    if cfg.probe_every <= 0:
        return []
    cbs = [probes.GapProbe(every=cfg.probe_every), probes.DiscriminabilityProbe(every=cfg.probe_every)]
    target = transfer_target(cfg)
    if target is not None:
        name, options = target
        try:
            train, test = probes.target_datasets(name, **options)
        except data.DatasetNotFoundError:
            return cbs  # the transfer target is optional: skip it quietly when absent offline
        label = probes.target_label(name, options.get("classes"))
        cbs.append(probes.TransferabilityProbe(train, test, target=label, roles=("student",),
                                               every=cfg.probe_every, seed=cfg.seed))
    return cbs


def transfer_target(cfg: RunConfig) -> Optional[tuple[str, dict]]:
    """(dataset, options) of the transferability probe's target, or None."""
    if cfg.transfer == "none":
        return None
    if cfg.transfer != "auto":
        return cfg.transfer, {}
    if cfg.source_classes and "classes" in data.option_names(cfg.dataset):  # digits, fashion_mnist
        opts = {k: v for k, v in cfg.dataset_options().items() if k != "classes"}
        full = data.info(cfg.dataset, **opts)
        source = set(int(c) for c in cfg.source_classes.split(","))
        rest = tuple(c for c in range(full.num_classes) if c not in source)
        if "source" in opts:  # the target comes from the same files as the source classes
            opts["source"] = full.source
        return (cfg.dataset, dict(opts, classes=rest, augment=False)) if rest else None
    if cfg.dataset == "cifar100":
        return "cifar10", {"download": False, **({"root": cfg.data_root} if cfg.data_root else {})}
    return None


def run(cfg: RunConfig | dict, callbacks: Optional[list] = None, log=print,
        extra_callbacks: Optional[list] = None) -> RunResult:
    """Train one configured run (resuming it if its folder holds a checkpoint).
    ``callbacks`` replaces the default probes (:func:`default_callbacks`); ``extra_callbacks``
    are added to them (e.g. a notebook's live-plot callback)."""
    if isinstance(cfg, dict):
        cfg = RunConfig.from_dict(cfg)
    from .engine import distributed as dist

    dist.init_from_env()
    prep = prepare(cfg)
    teacher = load_teacher(prep, log)
    opts = cfg.dataset_options()
    train_set, test_set = data.build(cfg.dataset, "train", **opts), data.build(cfg.dataset, "test", **opts)
    seed_everything(cfg.seed)  # initial weights (and GPD's IR noise) depend on the seed only
    student = build_student(prep)
    example = torch.stack([train_set[i][0] for i in range(min(2, len(train_set)))])
    method = build_method(cfg, student, teacher, example_input=example)
    if callbacks is None:
        callbacks = default_callbacks(cfg, prep.info)
    callbacks = list(callbacks) + list(extra_callbacks or [])
    trainer = Trainer(cfg, method, train_set, test_set, prep.run_dir, callbacks)
    summary = trainer.fit()
    records = read_metrics(prep.run_dir) if (prep.run_dir / "metrics.jsonl").exists() else []
    return RunResult(prep.run_dir, summary, records)
