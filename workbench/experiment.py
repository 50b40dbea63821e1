"""From a validated config to a finished run: data, models, static teacher (loaded, or trained
and cached), method, probes, trainer. The CLI, the notebooks and the tests all call
:func:`run` (or :func:`prepare` to check everything cheap first).

Order matters: everything that can fail cheaply (names, dataset files, teacher and checkpoint
files and their compatibility with an existing run, output folder writable) is checked in
:func:`prepare` before any training, without creating anything. :func:`run` then holds the run
folder's lock (:mod:`workbench.engine.lock`) from before the teacher phase to the end.

Provenance: every checkpoint records what the run is made of (:func:`provenance`: the data as
resolved -- source, folder, fingerprint -- and the sha256 of the teacher file); a resume compares
it with what it finds now and refuses a run whose data or teacher file changed since it started.
``data_source=auto`` is pinned: a resumed run keeps the source it started with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from . import data, models, paths, references, student_init
from .data import train_data
from .config import ConfigError, RunConfig, check_teacher
from .digest import file_sha256
from .keys import snapshot_epoch
from .references import ARCH, NONE, SNAPSHOT, TeacherRef, check_model, infer_arch
from .engine import Trainer, preempt
from .engine.callbacks import Callback
from .engine.trainer import seed_everything
from .engine.checkpoint import LAST, STUDENT, CheckpointError, verify_archive
from .engine.lock import LOCK_FILE, RunLockedError, holder_pid, run_lock
from .engine.metrics import read_metrics
from .engine.resume import describe_diff, effective_diff, resume_checkpoint
from .methods import METHODS, build_method, build_checks
from .data.device import DEVICE_DATASETS

TEACHERS_DIR = "teachers"
TEACHER_SEED = 0  # one cached teacher per training protocol serves every student seed and method
# What a cached teacher inherits from the student's config (its data and training protocol);
# every other key keeps its default (gradient clipping too: GPD clips at 5 by default, a CE
# teacher does not), so students that differ only in method settings share it.
# The validation split (val_per_class, val_seed, eval_on) too: the teacher never trains on the
# student's validation images, and with eval_on=val it never builds the test set either.
# Not train_data (DM-KD): the teacher is trained on the real training split, as DM-KD's teachers are
# (pre-trained on real data); students distilled on different image sets share it.
TEACHER_INHERITS = ("dataset", "data_root", "data_source", "download", "image_size", "train_per_class", "split_seed",
                    "val_per_class", "val_seed", "eval_on", "augment", "source_classes", "batch_size",
                    "optimizer", "lr", "momentum", "weight_decay", "schedule", "milestones", "lr_decay", "warmup_epochs",
                    "device", "amp", "channels_last", "compile", "device_data", "sync_bn", "workers",
                    "progress", "eval_batch_size")


@dataclass
class Prepared:
    cfg: RunConfig
    info: data.DatasetInfo
    teacher: TeacherRef  # what teacher= refers to (kind none when the run loads no teacher)
    run_dir: Path
    init: student_init.InitSpec = field(default_factory=lambda: student_init.InitSpec(student_init.RANDOM))
    init_arch: Optional[str] = None  # the architecture inheritance takes the weights from
    #: options of every data.build/info of this run: cfg.dataset_options(), data_source=auto pinned on resume
    data_options: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  # recorded in every checkpoint (:func:`provenance`)
    resumed: Optional[dict] = None  # the provenance recorded by the run this one continues

    @property
    def teacher_arch(self) -> Optional[str]:
        return self.teacher.arch


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    records: list = field(default_factory=list)

    def top1(self, role: str = "student", which: str = "last") -> float:
        return self.summary[role][f"{which}_top1"]


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
    return cfg.student_options()


def new_student(cfg: RunConfig, info) -> nn.Module:
    """A freshly initialised student with :func:`student_options`."""
    return models.build(cfg.student, info.num_classes, info.in_channels, image_size=info.image_size,
                        **student_options(cfg))


def _check_student(cfg: RunConfig, info) -> nn.Module:
    """The student can be built with these options (patch size, heads) for this dataset."""
    if cfg.patch_size and models.family(cfg.student) != "vit":
        raise ConfigError(f"patch_size: applies to ViT students only (student={cfg.student!r})")
    try:
        return new_student(cfg, info)
    except ValueError as e:
        raise ConfigError(f"student: {cfg.student} on {cfg.dataset}: {e}") from None


def _check_build(prep: "Prepared", student: nn.Module) -> None:
    """The method's own checks on the built student and the data size, before any folder exists
    (GPD: the student can be widened by ``ratio``; CTC: its memory banks fit in memory)."""
    cfg = prep.cfg
    checks = build_checks(cfg)
    sizes: list[int] = []

    def train_size() -> int:  # built only when a check asks
        if not sizes:
            sizes.append(len(data.build(cfg.dataset, "train", **prep.data_options)))
        return sizes[0]

    info = prep.info
    example = torch.randn(2, info.in_channels, info.image_size, info.image_size)
    for check in checks:
        try:
            check(cfg, student, example, train_size)
        except ValueError as e:
            raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from None


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


def _check_tracker(cfg: RunConfig) -> None:
    from .engine.trackers import TrackerMissingError, check_available

    try:
        check_available(cfg.log)
    except TrackerMissingError as e:
        raise ConfigError(str(e)) from None


def prepare(cfg: RunConfig) -> Prepared:
    """Every cheap check, before any expensive work: models, dataset, teacher/init files, tracker."""
    METHODS.check(cfg.method)
    _check_tracker(cfg)
    check_model("student", cfg.student)
    _check_device(cfg)
    if cfg.device_data == "on" and cfg.dataset not in DEVICE_DATASETS:
        raise ConfigError(f"device_data: 'on' needs a dataset that fits on the device "
                          f"({', '.join(DEVICE_DATASETS)}); dataset={cfg.dataset!r}: use device_data=auto or off")
    run_dir = cfg.run_dir()
    saved = resume_checkpoint(run_dir, cfg)  # a run this config may not continue: refused now
    resumed = saved.get("provenance") if saved is not None else None
    opts = data_options(cfg, resumed)
    try:
        data.check_available(cfg.dataset, **opts)
        info = data.info(cfg.dataset, **opts)
    except ValueError as e:
        raise ConfigError(f"dataset: {e}") from None
    try:
        train_data.check(train_data.parse(cfg.train_data), info)  # its classes against the evaluated dataset's
    except ValueError as e:
        raise ConfigError(str(e)) from None
    student = _check_student(cfg, info)
    ref = references.teacher_ref(cfg.teacher, cfg.teacher_arch, cfg.student) if cfg.loads_teacher else TeacherRef(NONE)
    if ref.kind == SNAPSHOT and not cfg.uses_teacher:  # a frozen copy of the student, made in training
        raise ConfigError(f"init: init=inherit takes the student's weights from the static teacher, but "
                          f"teacher={cfg.teacher} does not exist before training; use "
                          f"init=inherit:<checkpoint> or a teacher checkpoint/architecture")
    check_teacher(cfg, ref)
    if ref.kind == ARCH and cfg.val_per_class and cfg.teacher_data == "all":
        raise ConfigError(f"teacher_data: 'all' would train the teacher {ref.arch} on every training image, the "
                          f"student's validation images (val_per_class={cfg.val_per_class}) included; use "
                          f"teacher_data=student (the teacher trains on the student's training images minus "
                          f"the validation split) or a teacher checkpoint")
    init = student_init.parse(cfg.init)
    init_arch = _init_arch(init, ref.arch)
    prep = Prepared(cfg, info, ref, run_dir, init, init_arch, opts, resumed=resumed)
    if init.kind == student_init.CHECKPOINT:  # a file that is no student checkpoint: one line now
        try:
            models.load(cfg.student, init.path, info.num_classes, info.in_channels, image_size=info.image_size,
                        **student_options(cfg))
        except ValueError as e:
            raise ConfigError(f"init: {e}") from None
    _check_build(prep, student)
    teacher_file = _teacher_file(prep)
    # wrong classes/architecture/damaged: one line now
    teacher_model = _teacher_model(prep, teacher_file) if teacher_file is not None else None
    if init.kind == student_init.INHERIT:
        # the file fits its architecture: one line now; the pair is checked on the source as saved
        # (a ViT file's patch size), on a fresh build of the architecture when nothing is saved yet
        source_model = _inherit_source(prep) if init.path else teacher_model
        student_init.check_compatible(cfg.student, init_arch, info, student_options(cfg), source_model)
    if _builds_early(cfg):
        _build_early(prep, teacher_model)
    _check_writable(prep.run_dir)
    _check_space(prep.run_dir, estimate_checkpoint_bytes(cfg, info))
    prep.provenance = provenance(prep, teacher_file)
    check_provenance(prep)
    return prep


def _builds_early(cfg: RunConfig) -> bool:
    """The method or its base loss asks to be built in :func:`prepare` (``MethodSpec.early_build``)."""
    return any(n in METHODS and METHODS.get(n).early_build for n in (cfg.method, cfg.resolved_base))


def _build_early(prep: Prepared, teacher_model: Optional[nn.Module]) -> None:
    """Build the method once on a fresh student, the teacher (loaded, or a fresh one of its
    architecture while it is not trained yet) and a blank batch, leaving the global RNG as it was:
    what depends on the pair (stages, widths, feature shapes) is one line now, before any teacher
    or student training."""
    cfg, info = prep.cfg, prep.info
    with torch.random.fork_rng(devices=[]):
        student, teacher = new_student(cfg, info), teacher_model
        if teacher is None and prep.teacher.kind == ARCH and cfg.uses_teacher:
            teacher = models.build(prep.teacher_arch, info.num_classes, info.in_channels, image_size=info.image_size)
        example = torch.zeros(2, info.in_channels, info.image_size, info.image_size)
        try:
            build_method(cfg, student, teacher if cfg.uses_teacher else None, example_input=example)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def data_options(cfg: RunConfig, resumed: Optional[dict] = None) -> dict:
    """``cfg.dataset_options()``, with ``data_source=auto`` pinned to the source recorded by the run
    being resumed (``resumed``: its provenance): a run started on the embedded subset continues on it
    when the full files have appeared since, instead of switching data mid-run."""
    opts = cfg.dataset_options()
    recorded = ((resumed or {}).get("data") or {}).get("source")
    if opts.get("source") == "auto" and recorded:
        opts["source"] = recorded
    return opts


def provenance(prep: "Prepared", teacher_file: Optional[Path]) -> dict:
    """What the run is made of, recorded in its checkpoints and compared on resume: the data as
    resolved (:func:`workbench.data.identity`) and the sha256 of the static teacher's file."""
    where = data.identity(prep.cfg.dataset, **prep.data_options)
    out = {"data": {"dataset": prep.cfg.dataset, "source": where.source, "folder": where.folder,
                    "fingerprint": where.fingerprint}}
    if prep.cfg.train_data.strip():  # DM-KD: trained on another image set (train_data.fingerprint)
        out["train_data"] = {"spec": prep.cfg.train_data,
                             "fingerprint": train_data.fingerprint(train_data.parse(prep.cfg.train_data))}
    if teacher_file is not None:
        out["teacher_sha256"] = file_sha256(teacher_file)
    return out


def check_provenance(prep: "Prepared") -> None:
    """Refuse to resume a run whose data or teacher file changed since it started (one line naming
    what changed). The data folder may move: its files are checked against their published
    checksums (cifar, fashion_mnist) or fingerprinted (imagefolder)."""
    saved, now = prep.resumed, prep.provenance
    if not saved:
        return
    changed = []
    was, is_ = saved.get("data") or {}, now["data"]
    if was.get("source", "") != is_["source"]:
        changed.append(f"it started on {prep.cfg.dataset}'s {was.get('source')} data, now it would read "
                       f"{is_['source']} ({is_['folder'] or 'the embedded subset'})")
    if was.get("fingerprint", "") != is_["fingerprint"]:
        changed.append(f"the class folders or image files under {is_['folder']} changed since it started "
                       f"(it started on {was.get('folder')})")
    if (saved.get("train_data") or {}).get("fingerprint", "") != (now.get("train_data") or {}).get("fingerprint", ""):
        changed.append(f"the training images train_data={prep.cfg.train_data} changed since it started")
    if "teacher_sha256" in saved and "teacher_sha256" in now and saved["teacher_sha256"] != now["teacher_sha256"]:
        changed.append(f"the teacher file {_teacher_label(prep)} changed since it started (sha256 "
                       f"{saved['teacher_sha256'][:12]}... then, {now['teacher_sha256'][:12]}... now)")
    if changed:
        raise CheckpointError(f"cannot resume {prep.run_dir / LAST}: {'; '.join(changed)}. A run continues on "
                              f"what it started with: restore it, or start a new run (another name= or out_dir=)")


def _teacher_label(prep: "Prepared") -> str:
    if prep.teacher.kind == ARCH:
        return str(cached_teacher(teacher_config(prep.cfg, prep.teacher_arch, prep.data_options)))
    return str(prep.cfg.teacher)


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
    check_model("init", arch)
    return arch


def _inherit_source(prep: Prepared) -> nn.Module:
    """The model ``init=inherit:<file>`` takes the student's weights from."""
    info = prep.info
    try:
        return models.load(prep.init_arch, prep.init.path, info.num_classes, info.in_channels,
                           image_size=info.image_size)
    except ValueError as e:
        raise ConfigError(f"init: {e}") from None


def teacher_config(cfg: RunConfig, arch: str, options: Optional[dict] = None) -> RunConfig:
    """The CE run that trains (and caches) a teacher of ``arch`` under the student's data and
    training protocol (:data:`TEACHER_INHERITS`; with ``teacher_data=all`` on every training image
    of the student's classes). The data is the student's, resolved (:func:`workbench.data.identity`
    on ``options``, default ``cfg.dataset_options()``): the folder it is read from as ``data_root``
    and the source, never "auto". Its folder is named by the hash of that config (with the data's
    fingerprint, :mod:`workbench.naming`), so any change trains (and caches) another teacher."""
    inherited = {k: getattr(cfg, k) for k in TEACHER_INHERITS}
    if cfg.teacher_data == "all":  # every training image of the student's classes
        inherited["train_per_class"] = None
    where = data.identity(cfg.dataset, **(cfg.dataset_options() if options is None else options))
    if "source" in data.option_names(cfg.dataset):  # the resolved source (embedded | full), never "auto"
        inherited["data_source"] = where.source
    return RunConfig(**inherited).replace(
        method="ce", student=arch, teacher="none", epochs=cfg.teacher_epochs or cfg.epochs, seed=TEACHER_SEED,
        probe_every=0, data_root=where.folder,
        out_dir=str(Path(cfg.out_dir or paths.runs_root()) / TEACHERS_DIR), resume=True)


def _teacher_file(prep: Prepared) -> Optional[Path]:
    """The static teacher's weights file: the given checkpoint, the cached teacher (checked
    against the config it was trained with), or None while no teacher is cached yet."""
    if prep.teacher.is_file:
        return prep.teacher.path
    if prep.teacher.kind == ARCH:
        return cached_teacher(teacher_config(prep.cfg, prep.teacher_arch, prep.data_options))
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
    plain = data.training_split(cfg.dataset, {**(prep.data_options or cfg.dataset_options()), "augment": False},
                                cfg.val_per_class, cfg.val_seed)  # the images the run trains on (never the validation split)
    record = student_init.inherit_student(student, source, plain, cfg, device or torch.device("cpu"),
                                          label, prep.init_arch)
    return student.train(), [record]


def run_datasets(cfg: RunConfig, options: Optional[dict] = None):
    """``(train, evaluation)``: the training split minus the validation split (``val_per_class``)
    and what the run evaluates on (``eval_on``: the test split, or the validation split -- the
    test set is then not built). ``options``: the dataset options (default ``cfg.dataset_options()``;
    a resumed run passes its pinned ones, :func:`data_options`). With ``train_data`` the run trains
    on that image set instead (:mod:`workbench.data.train_data`, brought to the evaluated dataset's
    format) and evaluates as configured."""
    options = options if options is not None else cfg.dataset_options()
    train, evaluation = data.splits(cfg.dataset, options, cfg.val_per_class, cfg.val_seed, cfg.eval_on)
    other = train_data.parse(cfg.train_data)
    if other is not None:
        train = train_data.build(other, data.info(cfg.dataset, **options), cfg.augment)
    return train, evaluation


def load_teacher(prep: Prepared, log=print, progress=None) -> Optional[nn.Module]:
    cfg = prep.cfg
    if prep.teacher.kind in (NONE, SNAPSHOT):  # a snapshot teacher is made by build_method
        return None
    path = _teacher_file(prep)
    if prep.teacher.kind == ARCH:
        tcfg = teacher_config(cfg, prep.teacher_arch, prep.data_options)
        if path is None:
            log(f"[workbench] training teacher {prep.teacher_arch} on {cfg.dataset} for {tcfg.epochs} epochs "
                f"(cached in {tcfg.run_dir()})")
            try:
                run(tcfg, log=log, progress=progress, title=f"teacher {prep.teacher_arch}")
            except RunLockedError:
                raise RunLockedError(_teacher_in_training(tcfg)) from None
            path = cached_teacher(tcfg)
            prep.provenance = provenance(prep, path)  # the teacher exists now: its hash is recorded, checked
            check_provenance(prep)
        else:
            log(f"[workbench] using cached teacher {path}")
    return _teacher_model(prep, path)


def _teacher_in_training(tcfg: RunConfig) -> str:
    """Two runs need the same uncached teacher: the second one is told who trains it and what to do."""
    tdir = tcfg.run_dir()
    pid = holder_pid(tdir / LOCK_FILE)
    who = f"process {pid}" if pid else "another process"
    return (f"teacher: the cached teacher {tdir} is in use by {who}, which is training it for this data and "
            f"protocol. Wait for it to finish and rerun this command (it will then use the cached teacher), or "
            f"point teacher= at a teacher checkpoint file")


def default_callbacks(cfg: RunConfig, info: data.DatasetInfo) -> list:
    """Gap, discriminability and transferability probes as configured."""
    from . import probes

    if cfg.probe_every <= 0:
        return []
    cbs = [probes.GapProbe(every=cfg.probe_every), probes.DiscriminabilityProbe(every=cfg.probe_every)]
    target = transfer_target(cfg, info)
    if target is not None:
        name, options = target
        try:
            train, test = probes.target_datasets(name, **options, **_target_holdout(cfg))
        except data.DatasetNotFoundError:
            return cbs  # the transfer target is optional: skip it quietly when absent offline
        label = probes.target_label(name, options.get("classes"))
        cbs.append(probes.TransferabilityProbe(train, test, target=label, roles=("student",),
                                               every=cfg.probe_every, seed=cfg.seed))
    return cbs


def _target_holdout(cfg: RunConfig) -> dict:
    """With ``eval_on=val`` the transfer probe's target is split like the source (its training
    images minus their validation split -> its validation split): no test images anywhere."""
    if cfg.eval_on != "val":
        return {}
    return dict(holdout=(cfg.val_per_class, cfg.val_seed))


def transfer_target(cfg: RunConfig, info: Optional[data.DatasetInfo] = None) -> Optional[tuple[str, dict]]:
    """(dataset, options) of the transferability probe's target, or None. ``info``: the run's
    dataset info (its resolved, possibly pinned, source is the target's too)."""
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
            opts["source"] = info.source if info is not None and info.source else full.source
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
    """``gpd (base dkd): resnet20 -> resnet8`` -- what a training phase is doing (the base is
    named for methods that wrap one)."""
    method = cfg.method + (f" (base {cfg.resolved_base})" if cfg.spec.bases else "")
    if not cfg.uses_teacher:
        teacher = ""
    elif snapshot_epoch(cfg.teacher) is not None:
        teacher = f"{cfg.teacher} -> "
    else:
        teacher = f"{teacher_arch or cfg.teacher} -> "
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

    dist.init_from_env(cfg.dist_timeout)
    with preempt.watch():  # a stop signal from here on: the trainer checkpoints and raises Preempted
        try:
            return _run(cfg, callbacks, log, extra_callbacks, progress, title)
        except RuntimeError as e:
            if dist.is_lost_peer(e):  # a rank stopped answering: name it, in one line
                raise dist.lost_rank_error(e) from None
            raise


def _run(cfg: RunConfig, callbacks, log, extra_callbacks, progress, title) -> RunResult:
    prep = prepare(cfg)
    with run_lock(prep.run_dir):  # held from before the teacher phase to the end
        resume_checkpoint(prep.run_dir, cfg)  # again, now that nobody else can change the folder
        teacher = load_teacher(prep, log, progress)
        train_set, eval_set = run_datasets(cfg, prep.data_options)
        seed_everything(cfg.seed)  # initial weights (and GPD's IR noise) depend on the seed only
        student, init_records = build_student(prep, teacher, _run_device(cfg))
        example = torch.stack([train_set[i][0] for i in range(min(2, len(train_set)))])
        method = build_method(cfg, student, teacher if cfg.uses_teacher else None, example_input=example,
                              train_labels=data.labels(train_set))
        if callbacks is None:
            callbacks = default_callbacks(cfg, prep.info)
        callbacks = list(callbacks) + list(extra_callbacks or []) + [InitRecords(init_records)]
        trainer = Trainer(cfg, method, train_set, eval_set, prep.run_dir, callbacks, log=log,
                          num_classes=prep.info.num_classes, progress=progress,
                          title=title or phase_title(cfg, prep.teacher_arch), provenance=prep.provenance)
        summary = trainer.fit()
        records = read_metrics(prep.run_dir) if (prep.run_dir / "metrics.jsonl").exists() else []
    return RunResult(prep.run_dir, summary, records)
