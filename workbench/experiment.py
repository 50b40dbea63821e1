"""From a validated config to a finished run: data, models, static teacher (loaded, or trained
and cached), method, probes, trainer. The CLI, the notebooks and the tests all call
:func:`run` (or :func:`prepare` to check everything cheap first).

Order matters: everything that can fail cheaply (names, dataset files, teacher and checkpoint
files and their compatibility with an existing run, output folder writable) is checked in
:func:`prepare` before any training, without creating anything. :func:`run` then holds the run
folder's lock (:mod:`workbench.engine.lock`) from before the teacher phase to the end.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from . import data, models, paths, student_init, teacher_refs
from .config import ConfigError, RunConfig, snapshot_epoch
from .engine import Trainer
from .engine.callbacks import Callback
from .engine.trainer import seed_everything
from .engine.checkpoint import STUDENT, verify_archive
from .engine.lock import run_lock
from .engine.metrics import read_metrics
from .engine.resume import describe_diff, effective_diff, resume_checkpoint
from .methods import METHODS, build_method
from .data.device import DEVICE_DATASETS
from .registry import unknown_choice

TEACHERS_DIR = "teachers"
TEACHER_SEED = 0  # one cached teacher per training protocol serves every student seed and method
# What a cached teacher inherits from the student's config (its data and training protocol);
# every other key keeps its default (gradient clipping too: GPD clips at 5 by default, a CE
# teacher does not), so students that differ only in method settings share it.
TEACHER_INHERITS = ("dataset", "data_root", "data_source", "download", "image_size", "train_per_class", "split_seed",
                    "augment", "source_classes", "batch_size", "optimizer", "lr", "momentum",
                    "weight_decay", "schedule", "milestones", "lr_decay", "warmup_epochs",
                    "device", "amp", "channels_last", "compile", "device_data", "sync_bn", "workers",
                    "progress", "eval_batch_size")


@dataclass
class Prepared:
    cfg: RunConfig
    info: data.DatasetInfo
    teacher_source: Optional[str]  # None | "arch" | "file" | "snapshot"
    teacher_arch: Optional[str]
    run_dir: Path
    init: student_init.InitSpec = field(default_factory=lambda: student_init.InitSpec(student_init.RANDOM))
    init_arch: Optional[str] = None  # the architecture inheritance takes the weights from


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
        amp_dtype(device, cfg.resolved_amp)
    except ValueError as e:
        raise ConfigError(f"amp: {e}") from None


def _check_model(key: str, name: str) -> None:
    if name not in models.MODELS:
        raise ConfigError(f"{key}: " + unknown_choice("model", name, models.available()))


def _check_space(run_dir: Path, needed: int) -> None:
    import shutil

    free = shutil.disk_usage(_existing_ancestor(run_dir)).free
    if free < needed:
        raise ConfigError(f"out_dir: only {free / 2**20:.1f} MiB free space at {run_dir}, a run needs about "
                          f"{needed / 2**20:.1f} MiB for its checkpoints; free some space or choose another out_dir=...")


def student_options(cfg: RunConfig) -> dict:
    """Keyword options for building the student, wherever it is built or loaded (also
    ``student.pt`` by the notebooks): ``patch_size`` (ViTs) and the method's own (a distillation-token
    ViT's inference heads)."""
    opts = {"patch_size": cfg.patch_size} if cfg.patch_size else {}
    if cfg.spec.student_options is not None:
        opts.update(cfg.spec.student_options(cfg))
    return opts


def new_student(cfg: RunConfig, info) -> nn.Module:
    """A freshly initialised student with :func:`student_options`."""
    return models.build(cfg.student, info.num_classes, info.in_channels, image_size=info.image_size,
                        **student_options(cfg))


def _check_student(cfg: RunConfig, info) -> None:
    """The student can be built with these options (patch size, heads) for this dataset."""
    if cfg.patch_size and models.family(cfg.student) != "vit":
        raise ConfigError(f"patch_size: applies to ViT students only (student={cfg.student!r})")
    try:
        new_student(cfg, info)
    except ValueError as e:
        raise ConfigError(f"student: {cfg.student} on {cfg.dataset}: {e}") from None


def estimate_checkpoint_bytes(cfg: RunConfig, info) -> int:
    """Rough size of the files one run writes: last + best (+ optimizer state) + student.pt."""
    n = sum(p.numel() for p in new_student(cfg, info).parameters())
    factor = cfg.spec.size_factor(cfg) if cfg.spec.size_factor is not None else 1.0
    return int(4 * n * (3 * factor * 2 + 1) + MIN_FREE_BYTES)


MIN_FREE_BYTES = 16 * 2**20


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent (checks must not create folders)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _check_writable(run_dir: Path) -> None:
    base = _existing_ancestor(run_dir)
    try:
        if not base.is_dir():
            raise NotADirectoryError(f"{base} is a file")
        probe = base / f".write_test{os.getpid()}"
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
    _check_student(cfg, info)
    source, arch = None, None
    if cfg.loads_teacher:
        if snapshot_epoch(cfg.teacher) is not None:  # a frozen copy of the student, made in training
            if not cfg.uses_teacher:
                raise ConfigError(f"init: init=inherit takes the student's weights from the static teacher, but "
                                  f"teacher={cfg.teacher} does not exist before training; use "
                                  f"init=inherit:<checkpoint> or a teacher checkpoint/architecture")
            source, arch = "snapshot", cfg.student
        elif teacher_refs.is_named(cfg.teacher):  # embedded:<name>, torchvision:<arch>
            source, arch = "file", teacher_refs.arch(cfg.teacher)
            teacher_refs.path(cfg.teacher)  # present and checksum verified now: a missing or damaged file is one line
        elif _is_path(cfg.teacher):
            path = Path(cfg.teacher)
            if not path.is_file():
                raise ConfigError(f"teacher: checkpoint file {path} does not exist")
            source, arch = "file", infer_arch(path, cfg.teacher_arch)
            _check_model("teacher_arch", arch)
        else:
            _check_model("teacher", cfg.teacher)
            source, arch = "arch", cfg.teacher
    init = student_init.parse(cfg.init)
    init_arch = _init_arch(init, arch)
    prep = Prepared(cfg, info, source, arch, cfg.run_dir(), init, init_arch)
    teacher_file = _teacher_file(prep)
    # wrong classes/architecture/damaged: one line now
    teacher_model = _teacher_model(prep, teacher_file) if teacher_file is not None else None
    if init.kind == student_init.INHERIT:
        # the file fits its architecture: one line now; the pair is checked on the source as saved
        # (a ViT file's patch size), on a fresh build of the architecture when nothing is saved yet
        source_model = _inherit_source(prep) if init.path else teacher_model
        student_init.check_compatible(cfg.student, init_arch, info, student_options(cfg), source_model)
    _check_writable(prep.run_dir)
    _check_space(prep.run_dir, estimate_checkpoint_bytes(cfg, info))
    resume_checkpoint(prep.run_dir, cfg)  # a run this config may not continue: refused now
    return prep


def _init_arch(init: student_init.InitSpec, teacher_arch: Optional[str]) -> Optional[str]:
    """Check ``init``'s file exists; the architecture inheritance reads (None when not inheriting)."""
    if init.kind == student_init.RANDOM:
        return None
    if init.from_teacher:
        return teacher_arch
    path = Path(init.path)
    if not path.is_file():
        what = "inheritance source" if init.kind == student_init.INHERIT else "student checkpoint"
        raise ConfigError(f"init: {what} {path} does not exist")
    if init.kind == student_init.CHECKPOINT:
        return None
    try:
        arch = infer_arch(path)
    except ConfigError:
        raise ConfigError(f"init: cannot tell the architecture of {path} (our checkpoints name it; RepDistiller "
                          f"files by their '<arch>_vanilla' folder)") from None
    _check_model("init", arch)
    return arch


def _inherit_source(prep: Prepared) -> nn.Module:
    """The model ``init=inherit:<file>`` takes the student's weights from."""
    info = prep.info
    try:
        return models.load(prep.init_arch, prep.init.path, info.num_classes, info.in_channels,
                           image_size=info.image_size)
    except ValueError as e:
        raise ConfigError(f"init: {e}") from None


def teacher_config(cfg: RunConfig, arch: str) -> RunConfig:
    """The CE run that trains (and caches) a teacher of ``arch`` under the student's data and
    training protocol (:data:`TEACHER_INHERITS`; with ``teacher_data=all`` on every training image
    of the student's classes, and with the dataset source resolved). Its folder is named by the hash of that
    config, with the dataset root resolved, so any change trains (and caches) another teacher."""
    inherited = {k: getattr(cfg, k) for k in TEACHER_INHERITS}
    if cfg.teacher_data == "all":  # every training image of the student's classes
        inherited["train_per_class"] = None
    if "source" in data.option_names(cfg.dataset):  # the resolved source (embedded | full), never "auto"
        inherited["data_source"] = data.info(cfg.dataset, **cfg.dataset_options()).source
    root = data.resolved_root(cfg.dataset, cfg.data_root or None)
    return RunConfig(**inherited).replace(
        method="ce", student=arch, teacher="none", epochs=cfg.teacher_epochs or cfg.epochs, seed=TEACHER_SEED,
        probe_every=0, data_root=str(root.resolve()) if root is not None else "",
        out_dir=str(Path(cfg.out_dir or paths.runs_root()) / TEACHERS_DIR), resume=True)


def _teacher_file(prep: Prepared) -> Optional[Path]:
    """The static teacher's weights file: the given checkpoint, the cached teacher (checked
    against the config it was trained with), or None while no teacher is cached yet."""
    if prep.teacher_source == "file":
        if teacher_refs.is_named(prep.cfg.teacher):
            return teacher_refs.path(prep.cfg.teacher)
        return Path(prep.cfg.teacher)
    if prep.teacher_source == "arch":
        return cached_teacher(teacher_config(prep.cfg, prep.teacher_arch))
    return None


def cached_teacher(tcfg: RunConfig) -> Optional[Path]:
    """The finished teacher of ``tcfg`` in the cache, or None if it is not cached yet. Refuses a
    cached teacher whose recorded config differs from ``tcfg`` or whose file is unreadable."""
    run_dir = tcfg.run_dir()
    path, recorded = run_dir / STUDENT, run_dir / "config.json"
    if not path.exists():
        return None
    redo = f"delete {run_dir} to train it again"
    try:
        saved = json.loads(recorded.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"teacher: the cached teacher {path} has no readable {recorded.name}, so the settings "
                          f"it was trained with cannot be checked; {redo}") from None
    diff = effective_diff(saved, tcfg)
    if diff:
        raise ConfigError(f"teacher: the cached teacher {path} was trained with other settings "
                          f"({describe_diff(diff)}); {redo} under this run's settings")
    try:
        verify_archive(path)
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise ConfigError(f"teacher: the cached teacher {path} is corrupt or truncated "
                          f"({type(e).__name__}); {redo}") from None
    return path


def _teacher_model(prep: Prepared, path: Path) -> nn.Module:
    info = prep.info
    try:
        return models.load(prep.teacher_arch, path, info.num_classes, info.in_channels, image_size=info.image_size)
    except ValueError as e:
        raise ConfigError(f"teacher: {e}") from None


def build_student(prep: Prepared, teacher: Optional[nn.Module] = None, device=None) -> tuple[nn.Module, list[dict]]:
    """The student as ``init`` says (:mod:`workbench.student_init`) and the records to log about
    it (inheritance: one ``init`` record). ``teacher``: the loaded static teacher (the source of
    ``init=inherit``); ``device``: where BatchNorm recalibration runs."""
    cfg, info = prep.cfg, prep.info
    if prep.init.kind == student_init.CHECKPOINT:
        student = models.load(cfg.student, cfg.init, info.num_classes, info.in_channels,
                              image_size=info.image_size, **student_options(cfg)).train()
        return student, []
    student = new_student(cfg, info)
    if prep.init.kind == student_init.RANDOM:
        return student, []
    source = teacher if prep.init.from_teacher else _inherit_source(prep)
    label = f"teacher {cfg.teacher}" if prep.init.from_teacher else prep.init.path
    plain = data.build(cfg.dataset, "train", **{**cfg.dataset_options(), "augment": False})
    record = student_init.inherit_student(student, source, plain, cfg, device or torch.device("cpu"),
                                          label, prep.init_arch)
    return student.train(), [record]


def load_teacher(prep: Prepared, log=print, progress=None) -> Optional[nn.Module]:
    cfg = prep.cfg
    if prep.teacher_source in (None, "snapshot"):  # a snapshot teacher is made by build_method
        return None
    path = _teacher_file(prep)
    if prep.teacher_source == "arch":
        tcfg = teacher_config(cfg, prep.teacher_arch)
        if path is None:
            log(f"[workbench] training teacher {prep.teacher_arch} on {cfg.dataset} for {tcfg.epochs} epochs "
                f"(cached in {tcfg.run_dir()})")
            run(tcfg, log=log, progress=progress, title=f"teacher {prep.teacher_arch}")
            path = cached_teacher(tcfg)
        else:
            log(f"[workbench] using cached teacher {path}")
    return _teacher_model(prep, path)


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


class InitRecords(Callback):
    """Writes the records about the student's initialisation (``init`` records) with epoch 0's
    evaluation, once."""

    def __init__(self, records: list[dict]):
        self.records = list(records)

    def on_eval_end(self, state, epoch: int, outputs) -> list[dict]:
        return self.records if epoch == 0 else []


def _run_device(cfg: RunConfig) -> torch.device:
    from .engine import distributed as dist
    from .engine.device import select_device

    return dist.local_device(select_device(cfg.device))


def phase_title(cfg: RunConfig, teacher_arch: Optional[str] = None) -> str:
    """``gpd (base dkd): resnet20 -> resnet8`` -- what a training phase is doing."""
    method = cfg.method + (f" (base {cfg.resolved_base})" if cfg.method == "gpd" else "")
    uses_teacher = cfg.spec.needs_teacher(cfg.resolved_base) and cfg.teacher != "none"
    if snapshot_epoch(cfg.teacher) is not None:
        teacher_arch = cfg.teacher
    teacher = f"{teacher_arch or cfg.teacher} -> " if uses_teacher else ""
    return f"{method}: {teacher}{cfg.student}"


def run(cfg: RunConfig | dict, callbacks: Optional[list] = None, log=print,
        extra_callbacks: Optional[list] = None, progress=None, title: str = "") -> RunResult:
    """Train one configured run (resuming it if its folder holds a checkpoint).
    ``callbacks`` replaces the default probes (:func:`default_callbacks`); ``extra_callbacks``
    are added to them (e.g. a notebook's live-plot callback). ``progress`` is how the phases
    show progress (:mod:`workbench.engine.progress`; default: tqdm bars and a line per epoch),
    ``title`` names this run's phase (default: method and student)."""
    if isinstance(cfg, dict):
        cfg = RunConfig.from_dict(cfg)
    from .engine import distributed as dist

    dist.init_from_env()
    prep = prepare(cfg)
    with run_lock(prep.run_dir):  # held from before the teacher phase to the end
        resume_checkpoint(prep.run_dir, cfg)  # again, now that nobody else can change the folder
        teacher = load_teacher(prep, log, progress)
        opts = cfg.dataset_options()
        train_set, test_set = data.build(cfg.dataset, "train", **opts), data.build(cfg.dataset, "test", **opts)
        seed_everything(cfg.seed)  # initial weights (and GPD's IR noise) depend on the seed only
        student, init_records = build_student(prep, teacher, _run_device(cfg))
        example = torch.stack([train_set[i][0] for i in range(min(2, len(train_set)))])
        method = build_method(cfg, student, teacher if cfg.uses_teacher else None, example_input=example,
                              train_labels=data.labels(train_set))
        if callbacks is None:
            callbacks = default_callbacks(cfg, prep.info)
        callbacks = list(callbacks) + list(extra_callbacks or []) + [InitRecords(init_records)]
        trainer = Trainer(cfg, method, train_set, test_set, prep.run_dir, callbacks, log=log,
                          num_classes=prep.info.num_classes, progress=progress, title=title or phase_title(cfg, prep.teacher_arch))
        summary = trainer.fit()
        records = read_metrics(prep.run_dir) if (prep.run_dir / "metrics.jsonl").exists() else []
    return RunResult(prep.run_dir, summary, records)
