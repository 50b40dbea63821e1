"""One run-configuration type, shared by the CLI, the notebooks and the trainer.

``RunConfig`` holds every knob with its default, help text and valid choices: the core keys
declared here (what is trained, data, optimisation, probes, runtime) plus the keys each method
declares in its own file (``methods/<name>.py``, see :class:`workbench.methods.MethodSpec`).
The class is assembled from both on first use, so this module knows no method's internals: the
``method`` and ``base`` choices, the method defaults of keys left at None/auto (``grad_clip``,
``amp``, ``ema_decay``), which methods need a static teacher and the method-specific checks all
come from the method registry.

``parse_overrides(["method=kd", "epochs=3"])`` and ``RunConfig.from_dict({...})`` convert and
validate values (CLI strings and notebook/papermill values alike) and fail with a
:class:`ConfigError` naming the key, the bad value and what is allowed, before any work starts.
Defaults are the CIFAR-100 KD protocol (RepDistiller/mdistiller); named presets
(:mod:`workbench.presets`) layer on top of the defaults, user overrides on top of presets.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from . import data, methods, models, naming, paths, references, student_init
from .engine.batch import BATCH_TRANSFORMS
from .presets import get_preset
from .keys import (AUTO, NO_BASE, NO_TEACHER, RUNTIME_KEYS, TRACKERS, ConfigError, convert_value, opt,  # noqa: F401
                   parse_bool, parse_int_list, snapshot_epoch, unknown_key)
from .registry import unknown_choice
from .data import train_data as train_data_spec

#: an EMA decay must stay below 1 (1 would freeze the average at the initial weights)
MAX_EMA_DECAY = 1.0 - 1e-9
#: the fewest probe features the probes can use: the kNN probe's k (probes.transfer.DEFAULT_KNN_K = 5) + 1
MIN_PROBE_SAMPLES = 6
#: ``transfer`` values that are not dataset names
TRANSFER_MODES = ("auto", "none")
#: core keys whose default means "the method (or the epochs) decides" (see ``RunConfig.effective``)
RESOLVED_CORE_KEYS = ("base", "grad_clip", "amp", "ema_decay", "teacher_epochs")


@dataclass
class CoreConfig:
    """The keys every run has (method keys come from the method files)."""

    # --- what is trained -------------------------------------------------------------------
    method: str = opt("kd", "training method (see `python -m workbench methods`)")
    base: str = opt(AUTO, "the distillation loss a wrapping method ({wrappers}) puts on its views: auto (the "
                    "method's default), none (where the method allows it: no static teacher) or a method with a loss")
    teacher: str = opt("resnet32x4", "static teacher: a zoo architecture name (trained and cached "
                       "on the fly if no checkpoint is cached), a checkpoint path (ours or a "
                       "RepDistiller-style file), 'snapshot@E' (a frozen copy of the student taken at "
                       "the end of epoch E; CE only before it), or 'none'")
    teacher_arch: str = opt("", "architecture of a teacher checkpoint file when it cannot be "
                            "inferred (RepDistiller files: inferred from a '<arch>_vanilla' folder)")
    teacher_epochs: int = opt(0, "epochs when the teacher is trained on the fly (0 = same as epochs)", low=0)
    teacher_data: str = opt("student", "training images of a teacher trained on the fly: 'student' = the "
                            "student's split; 'all' = every training image of the student's classes "
                            "(train_per_class not applied: a teacher that has seen more than a low-label "
                            "student)", ("student", "all"))
    student: str = opt("resnet8x4", "student architecture (zoo name)")
    patch_size: int = opt(0, "ViT student: patch size in pixels (0 = the model's default: the smallest of 2, 4, 8, "
                          "16, 32 with at most 14 patches per side; 32 px -> 4, fashion_mnist 28 px -> 2)", low=0)
    init: str = opt("", "how the student starts: empty = random init; a student checkpoint (fine-tuning); "
                    "'inherit' = weight inheritance from the static teacher (blocks picked uniformly, tensors "
                    "sliced from the front, BN re-estimated on training images); 'inherit:<checkpoint>' = "
                    "inheritance from that file")
    init_bn_batches: int = opt(200, "weight inheritance: unaugmented training batches used to re-estimate the "
                               "BatchNorm statistics (0 = keep the inherited ones; fvcore's precise-BN default 200)",
                               low=0)
    # --- data --------------------------------------------------------------------------------
    dataset: str = opt("cifar100", "dataset name")
    data_root: str = opt("", "dataset root (empty = datasets/ of the checkout or $WORKBENCH_DATA)")
    download: bool = opt(True, "cifar, fashion_mnist (data_source=full): download into data_root when missing")
    data_source: str = opt("auto", "fashion_mnist: 'embedded' = the subset in the repo, 'full' = the IDX files "
                           "(data_root, $WORKBENCH_DATA, FashionMNIST/raw, Debian dataset-fashion-mnist), "
                           "'auto' = full if found, else embedded", ("auto", "embedded", "full"))
    image_size: int = opt(0, "input size (0 = dataset default; digits: 8 native or upsampled; "
                          "fashion_mnist: 28 native or resampled)", low=0)
    train_per_class: Optional[int] = opt(None, "digits, fashion_mnist: training images per class (None = "
                                         "digits: 70/30 split; fashion_mnist: all)", low=1,
                                         kind="Optional[int]")
    split_seed: int = opt(0, "digits, fashion_mnist: seed of the train_per_class pick", low=0)
    val_per_class: int = opt(0, "images per class held out of the training split (after train_per_class) as a "
                             "validation split, class-balanced, picked with val_seed; the run trains on the rest "
                             "(0 = none)", low=0)
    val_seed: int = opt(0, "seed of the val_per_class pick", low=0)
    eval_on: str = opt("test", "what the per-epoch evaluation, the probes and best.pt read: the test split, or val "
                       "(the validation split: needs val_per_class; the test set is then never built)",
                       ("test", "val"))
    augment: bool = opt(True, "standard training augmentation (false: none, e.g. for exact comparisons)")
    train_data: str = opt("", "train on another image set than the evaluated one (DM-KD): a folder of class "
                          "sub-folders named by label (0..K-1) or class name, or <dataset>[:<option>=<value>,...]; "
                          "images resized to the evaluation resolution and normalised as the evaluation dataset "
                          "(workbench/data/train_data.py). Empty = the dataset's own training split")
    mix: str = opt("none", "batch transform mixing inputs and targets (soft targets for every method; the "
                   "choices are the registered transforms, workbench/engine/batch.py)")
    mix_alpha: float = opt(1.0, "mixup/cutmix: Beta(alpha, alpha) of the mixing weight", low=1e-6)
    # --- optimisation ------------------------------------------------------------------------
    epochs: int = opt(240, "training epochs", low=1)
    batch_size: int = opt(64, "training batch size (global, across all GPUs)", low=1)
    eval_batch_size: int = opt(256, "evaluation batch size", low=1)
    optimizer: str = opt("sgd", "optimizer", ("sgd", "adamw"))
    lr: float = opt(0.05, "base learning rate", low=0.0)
    momentum: float = opt(0.9, "SGD momentum", low=0.0, high=1.0)
    weight_decay: float = opt(5e-4, "weight decay", low=0.0)
    wd_exempt: bool = opt(False, "no weight decay on norm weights, biases, tokens and position embeddings "
                          "(ViT recipes)")
    schedule: str = opt("multistep", "learning-rate schedule", ("multistep", "cosine", "constant"))
    milestones: tuple = opt((150, 180, 210), "multistep: epochs at which lr is multiplied by lr_decay")
    lr_decay: float = opt(0.1, "multistep: lr factor at each milestone", low=0.0, high=1.0)
    warmup_epochs: float = opt(0.0, "linear lr warm-up length in epochs (per iteration)", low=0.0)
    grad_clip: Optional[float] = opt(None, "clip the gradient norm to this value (None = the method's default: "
                                     "{defaults}; others 0 = off)", low=0.0, kind="Optional[float]")
    ce_weight: Optional[float] = opt(None, "cross-entropy weight (None = the loss's default: {defaults}; "
                                     "others 1.0)", low=0.0, kind="Optional[float]")
    dot: bool = opt(False, "DOT optimizer: separate momentum for task (CE) and distillation gradients")
    dot_delta: float = opt(0.075, "DOT: task momentum = m - delta, distillation momentum = m + delta", low=0.0, high=1.0)
    ema_decay: Optional[float] = opt(None, "model EMA decay per optimizer step (None = the method's default: "
                                     "{defaults}; others 0 = off); raw and EMA models "
                                     "are both evaluated and max(raw, EMA) is reported", low=0.0,
                                     high=MAX_EMA_DECAY, kind="Optional[float]")
    ema_eval_every: int = opt(1, "with EMA: evaluate the EMA model every N epochs and at the last (1 = every "
                              "epoch, as the GPD reference); between, an epoch's top1_reported is the raw "
                              "model's", low=1)
    # --- probes ---------------------------------------------------------------------------------
    probe_every: int = opt(1, "gap/discriminability probes every N epochs (0 = off)", low=0)
    probe_samples: int = opt(2000, "examples whose features are kept for CKA / kNN probes", low=0)
    transfer: str = opt("auto", "transferability probe target: 'auto' (digits, fashion_mnist: the other "
                        "classes; cifar100: cifar10), 'none', or a dataset name")
    source_classes: str = opt("", "digits, fashion_mnist: comma list of source classes (e.g. 0,1,2,3,4); "
                              "empty = all", list_value=True)
    # --- runtime --------------------------------------------------------------------------------
    seed: int = opt(0, "training seed", low=0)
    device: str = opt("auto", "device: auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    amp: str = opt("auto", "mixed precision: auto (the method's default: {defaults}; others: bf16 on CUDA "
                   "if supported, else fp16), off, bf16, fp16",
                   ("auto", "off", "bf16", "fp16"))
    channels_last: str = opt("auto", "channels_last memory format (auto = on for CUDA, and on CPU for inputs "
                             "of 28x28 pixels or more, where it measured faster)", ("auto", "on", "off"))
    compile: bool = opt(False, "torch.compile the trained model (CUDA)")
    device_data: str = opt("auto", "keep the whole dataset on the device and augment there (cifar10/100, "
                           "digits, fashion_mnist; auto = on for CUDA)", ("auto", "on", "off"))
    cache_teacher: bool = opt(False, "compute the static teacher's train-set logits once and reuse them "
                              "(needs augment=false)")
    sync_bn: bool = opt(False, "multi-GPU: synchronise BatchNorm statistics across processes (CUDA only)")
    workers: int = opt(-1, "DataLoader workers (-1 = auto: 0 on CPU, min(8, cores) on CUDA; resumes are "
                       "bit-identical with 0: workers' augmentation draws are not checkpointed)", low=-1)
    dist_timeout: float = opt(600.0, "multi-process runs: seconds a collective waits for the other processes "
                              "before the run stops with one line naming the rank that stopped answering "
                              "(torch's default is 30 min; raise it when rank 0's probes or checkpoint writes "
                              "take longer)", low=1.0)
    log: str = opt("none", "also send the records of metrics.jsonl (the source of truth) to a tracker: "
                   "tensorboard (event files in <run folder>/tensorboard) or wandb (offline unless an account is "
                   "configured); needs pip install -e '.[track]'", TRACKERS)
    out_dir: str = opt("", "where runs are written (empty = runs/ of the checkout or $WORKBENCH_RUNS)")
    name: str = opt("", "run name (folder under out_dir; empty = derived from the config)")
    resume: bool = opt(True, "continue from the run folder's last checkpoint if there is one")
    progress: bool = opt(True, "show tqdm progress bars")
    preset: str = opt("", "named preset applied under the explicit keys (see `workbench presets`)")


class RunConfigBase:
    """Behaviour of the assembled ``RunConfig`` (core keys + every method's keys)."""

    def __post_init__(self) -> None:
        """Keys the chosen method always sets (``MethodSpec.implies``: ``method=ctkd`` is ``ctkd=true``)."""
        spec = methods.METHODS.find(self.method)
        for key, value in (spec.implies if spec is not None else {}).items():
            object.__setattr__(self, key, value)

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def default(cls, key: str) -> Any:
        return _default(_fields()[key])

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a mapping of (possibly string) values; presets first, then the values."""
        values = dict(values)
        known = _fields()
        for k in values:
            if k not in known:
                raise ConfigError(unknown_key(k, cls.keys()))
        merged: dict[str, Any] = {}
        if values.get("preset"):
            try:
                merged.update(get_preset(str(values["preset"])))
            except ValueError as e:
                raise ConfigError(f"preset: {e}") from None
        merged.update(values)
        cfg = cls(**{k: convert(k, v) for k, v in merged.items()})
        cfg.validate()
        return cfg

    def replace(self, **changes) -> "RunConfig":
        cfg = dataclasses.replace(self, **{k: convert(k, v) for k, v in changes.items()})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    # --- what the method registry says -----------------------------------------------------------
    @property
    def spec(self):
        """The chosen method's :class:`workbench.methods.MethodSpec`."""
        return methods.METHODS.get(self.method)

    @property
    def resolved_base(self) -> str:
        return self.spec.valid_bases()[0] if self.base == AUTO else self.base

    @property
    def uses_teacher(self) -> bool:
        return self.spec.needs_teacher(self.resolved_base)

    @property
    def loads_teacher(self) -> bool:
        """Whether the run loads the static teacher: its method uses one, or ``init=inherit``
        takes the student's weights from it."""
        return self.uses_teacher or self.init.strip() == "inherit"

    def method_default(self, key: str, fallback):
        """The chosen method's default for a core key left at None/auto (``fallback`` if none)."""
        return self.spec.defaults.get(key, fallback)

    @property
    def resolved_grad_clip(self) -> float:
        """The gradient-norm clip in effect (0 = off)."""
        return self.grad_clip if self.grad_clip is not None else float(self.method_default("grad_clip", 0.0))

    @property
    def resolved_amp(self) -> str:
        """``amp`` with ``auto`` resolved to the method's default where it has one (gpd: off)."""
        return self.method_default("amp", self.amp) if self.amp == "auto" else self.amp

    @property
    def resolved_ema_decay(self) -> float:
        """The EMA decay in effect (0 = no EMA)."""
        return self.ema_decay if self.ema_decay is not None else float(self.method_default("ema_decay", 0.0))

    def student_options(self) -> dict[str, Any]:
        """Keyword options for building the student, wherever it is built or loaded (also
        ``student.pt`` by the notebooks): ``patch_size`` (ViTs) and the method's own (a
        distillation-token ViT's inference heads)."""
        opts: dict[str, Any] = {"patch_size": self.patch_size} if self.patch_size else {}
        if self.spec.student_options is not None:
            opts.update(self.spec.student_options(self))
        return opts

    def effective(self) -> dict[str, Any]:
        """Every key's value as the run uses it: :meth:`to_dict` with the keys that leave the choice
        to the method resolved (``base``, ``grad_clip``, ``amp``, ``ema_decay``, the method's own
        through ``MethodSpec.resolve``, e.g. gpd's ``scale_init``, ``noise``, ``branches``) and
        ``teacher_epochs=0`` as the epochs it means. What is left to the device (``amp=auto`` of a
        method without an amp default, ``channels_last``, ``device_data``, ``workers``) or to the
        built method (``ce_weight=None``) stays as asked here: a run records what they became in
        ``config.json``'s ``effective`` block. The run name hashes these values
        (:mod:`workbench.naming`), so a recipe names one folder however its values were spelled."""
        d = self.to_dict()
        d.update(base=self.resolved_base, grad_clip=float(self.resolved_grad_clip), amp=self.resolved_amp,
                 ema_decay=float(self.resolved_ema_decay), teacher_epochs=self.teacher_epochs or self.epochs)
        if self.spec.resolve is not None:
            d.update(self.spec.resolve(self))
        return d

    def effective_defaults(self) -> dict[str, Any]:
        """Each key's effective value had it been left at its default (the other keys as they are):
        what :mod:`workbench.naming` compares with to leave defaults out of the hash."""
        defaults = type(self)().to_dict()
        resolved = list(RESOLVED_CORE_KEYS) + list(self.spec.resolve(self) if self.spec.resolve is not None else ())
        probe = dataclasses.replace(self, **{k: self.default(k) for k in resolved})
        at_default = probe.effective()
        return {**defaults, **{k: at_default[k] for k in resolved}}

    # --- data and paths ---------------------------------------------------------------------------
    def dataset_options(self) -> dict[str, Any]:
        """Options for :func:`workbench.data.build` from the flat config keys."""
        takes = dataset_takes(self.dataset)
        opts: dict[str, Any] = {} if self.augment else {"augment": False}
        if "train_per_class" in takes:
            opts.update(train_per_class=self.train_per_class, seed=self.split_seed)
        if "classes" in takes and self.source_classes:
            opts["classes"] = parse_int_list("source_classes", self.source_classes)
        if "source" in takes:
            opts["source"] = self.data_source
        if "download" in takes:
            opts["download"] = self.download
        if "root" in takes and self.data_root:
            opts["root"] = self.data_root
        if "image_size" in takes and self.image_size:
            opts["image_size"] = self.image_size
        return opts

    def run_dir(self) -> Path:
        root = Path(self.out_dir) if self.out_dir else paths.runs_root()
        if self.name:
            return root / self.name
        own = root / self.default_name()
        return own if own.exists() else (naming.earlier_folder(root, self) or own)

    def default_name(self) -> str:
        """Readable prefix (dataset, resolved teacher architecture, student, method, seed) plus a
        short hash of every setting that changes what is trained (:mod:`workbench.naming`)."""
        return naming.default_name(self)

    # --- validation -------------------------------------------------------------------------------
    def _check_base_is_a_loss(self) -> None:
        """``base=<a method without a base loss>`` (ce, deit, cskd, ...): one line saying why."""
        if self.base in methods.METHODS and self.base not in methods.base_methods():
            reason = methods.METHODS.get(self.base).not_a_base or "it declares no loss usable as a base"
            raise ConfigError(f"base: method {self.base!r} cannot be the base loss of method={self.method}: "
                              f"{reason}; valid choices: {AUTO}, {NO_BASE}, {', '.join(methods.base_methods())}")

    def validate(self) -> None:
        self._check_base_is_a_loss()
        for f in fields(self):
            meta, value = f.metadata, getattr(self, f.name)
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{f.name}: " + unknown_choice(f.name, value, list(meta["choices"])))
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}: value {value!r} is not a finite number")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                low, high = meta.get("low"), meta.get("high")
                if (low is not None and value < low) or (high is not None and value > high):
                    rng = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
                    raise ConfigError(f"{f.name}: value {value!r} is outside the allowed range {rng}")
        spec = self.spec
        bases = spec.valid_bases()
        if self.resolved_base not in bases:
            raise ConfigError(f"base: {self.base!r} does not apply to method {self.method!r}; "
                              f"valid choices: {AUTO}, {', '.join(bases)}")
        if self.uses_teacher and self.teacher.lower() in ("", NO_TEACHER):
            hint = (f"; for {self.method} without a teacher use base={NO_BASE}"
                    if NO_BASE in bases and not spec.needs_teacher(NO_BASE) else "")
            raise ConfigError(f"teacher: method {self.method!r} with base {self.resolved_base!r} "
                              f"needs a static teacher (an architecture name or a checkpoint path){hint}")
        if self.init.strip() == "inherit" and self.teacher.lower() in ("", NO_TEACHER):
            raise ConfigError("init: 'inherit' takes the student's weights from the static teacher, but "
                              "teacher=none; set teacher=<architecture or checkpoint> or use init=inherit:<checkpoint>")
        if self.init.strip():
            student_init.parse(self.init)
        if self.dot and not spec.distills(self.resolved_base):
            raise ConfigError(f"dot: DOT needs a distillation loss; method={self.method} base={self.resolved_base} "
                              f"has none")
        if self.dot and self.optimizer != "sgd":
            raise ConfigError(f"dot: DOT is an SGD-with-momentum optimizer; optimizer={self.optimizer!r} "
                              "is not supported with dot=true (use optimizer=sgd)")
        if self.cache_teacher and (self.augment or not self.uses_teacher or self.mix != "none"):
            raise ConfigError("cache_teacher: cached teacher logits are only valid for unaugmented, unmixed "
                              "inputs and need a static teacher; use it with augment=false, mix=none and a "
                              f"teacher (got augment={self.augment}, mix={self.mix}, method={self.method}, "
                              f"base={self.resolved_base})")
        snapshot_at = snapshot_epoch(self.teacher) if self.uses_teacher else None
        if snapshot_at is not None and not 1 <= snapshot_at < self.epochs:
            raise ConfigError(f"teacher: snapshot@{snapshot_at} must name an epoch in [1, {self.epochs - 1}] "
                              f"(epochs={self.epochs}): the snapshot taken at its end teaches the epochs after it")
        if snapshot_at is not None and self.cache_teacher:
            raise ConfigError("cache_teacher: a snapshot teacher does not exist before its epoch, so its logits "
                              "cannot be cached up front; use cache_teacher=false with teacher=snapshot@E")
        try:
            train_data_spec.parse(self.train_data)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.transfer not in TRANSFER_MODES and self.transfer not in datasets():
            raise ConfigError("transfer: " + unknown_choice("transfer target", self.transfer,
                                                           list(TRANSFER_MODES) + datasets()))
        if self.probe_every > 0 and self.probe_samples < MIN_PROBE_SAMPLES:
            raise ConfigError(f"probe_samples: {self.probe_samples} is too few for the probes (kNN and CKA need at "
                              f"least {MIN_PROBE_SAMPLES} examples' features); use probe_samples >= "
                              f"{MIN_PROBE_SAMPLES}, or probe_every=0 to switch the probes off")
        if self.schedule == "multistep" and any(m <= 0 for m in self.milestones):
            raise ConfigError(f"milestones: epochs must be positive, got {list(self.milestones)}")
        for key, option, unset in (("train_per_class", "train_per_class", None), ("source_classes", "classes", ""),
                                   ("data_source", "source", "auto"), ("data_root", "root", "")):
            if getattr(self, key) != unset and option not in dataset_takes(self.dataset):
                raise ConfigError(f"{key}: applies to dataset {' and '.join(datasets_taking(option))} only "
                                  f"(dataset={self.dataset!r})")
        if self.eval_on == "val" and self.val_per_class < 1:
            raise ConfigError("eval_on: 'val' evaluates on a validation split carved from the training data; set "
                              "val_per_class to a positive number of images per class (e.g. val_per_class=10)")
        if self.val_per_class and self.train_per_class is not None and self.val_per_class >= self.train_per_class:
            raise ConfigError(f"val_per_class: {self.val_per_class} validation images per class are carved from the "
                              f"train_per_class={self.train_per_class} training images, leaving none to train on; "
                              f"valid: 0..{self.train_per_class - 1}")
        for check in methods.config_checks(self):
            try:
                check(self)
            except ValueError as e:
                raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from None
        if not references.is_path(self.teacher):  # a file's architecture is checked when prepare() reads it
            check_teacher(self, references.teacher_ref(self.teacher, self.teacher_arch, self.student, check=False))
        if self.name:
            naming.check_name(self.name)


def check_teacher(cfg, ref) -> None:
    """The method's check of its static teacher's architecture (``MethodSpec.check_teacher``),
    once ``teacher=`` is resolved: from the config for names, from the file in ``prepare``."""
    if not cfg.uses_teacher or cfg.spec.check_teacher is None or ref.arch not in models.MODELS:
        return
    try:
        cfg.spec.check_teacher(cfg, ref.arch)
    except ValueError as e:
        raise e if isinstance(e, ConfigError) else ConfigError(str(e)) from None


# ----------------------------------------------------------------------------- assembly
_ASSEMBLED: dict[str, Any] = {}


def _assemble():
    """``RunConfig``: the core fields plus every registered method's keys, with the ``method`` and
    ``base`` choices taken from the method registry."""
    entries, owner = [], {}
    for f in fields(CoreConfig):
        meta = dict(f.metadata)
        if f.name == "method":
            meta["choices"] = tuple(methods.METHODS.names())
        elif f.name == "base":
            meta["choices"] = (AUTO, NO_BASE) + tuple(methods.base_methods())
        elif f.name == "mix":
            meta["choices"] = tuple(BATCH_TRANSFORMS.names())
        if "{defaults}" in meta["help"]:  # the methods' own defaults for this key, as they declare them
            meta["help"] = meta["help"].format(defaults=method_defaults(f.name))
        if "{wrappers}" in meta["help"]:  # the methods that take a base loss
            meta["help"] = meta["help"].format(wrappers=", ".join(n for n in methods.METHODS.names()
                                                                  if methods.METHODS.get(n).bases))
        entries.append((f.name, f.type, _refield(f, meta)))
        owner[f.name] = "core"
    for name, key, fld in methods.declared_keys():
        if key in owner:
            raise TypeError(f"config key {key!r} of {name!r} is already declared by {owner[key]!r}")
        owner[key] = name
        entries.append((key, fld.metadata["kind"], fld))
    cls = dataclasses.make_dataclass("RunConfig", entries, bases=(RunConfigBase,), namespace={"__module__": __name__})
    _ASSEMBLED.update(cls=cls, fields={f.name: f for f in fields(cls)}, owner=owner)
    cls.__doc__ = ("Every key of a run, with its type, default and help: the core keys, then each method's "
                   "(editors and type checkers read the same from config.pyi).\n\n" +
                   "\n".join(f"{f.name}: {f.metadata['kind']} = {_default(f)!r}\n    {f.metadata['help']}"
                             for f in fields(cls)))
    return cls


def method_defaults(key: str) -> str:
    """``gpd: 5.0``: every method's declared default for a core key (``MethodSpec.defaults``)."""
    return ", ".join(f"{name}: {spec.defaults[key]}" for name in methods.METHODS.names()
                     if key in (spec := methods.METHODS.get(name)).defaults)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _refield(f: dataclasses.Field, meta: dict) -> dataclasses.Field:
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=meta)
    return field(default=f.default, metadata=meta)


RunConfig = _assemble()


def run_config_class():
    return RunConfig


def _fields() -> dict[str, dataclasses.Field]:
    return _ASSEMBLED["fields"]


def key_owner(key: str) -> str:
    """``"core"`` or the name of the method that declares ``key``."""
    return _ASSEMBLED["owner"][key]


def fields_by_name() -> dict[str, dataclasses.Field]:
    """Every config key's dataclass field (type, help text, choices), in declaration order."""
    return dict(_fields())


def is_list_valued(key: str) -> bool:
    """Whether one value of ``key`` is itself a comma list (``milestones``, ``source_classes``)."""
    return bool(_fields()[key].metadata.get("list_value"))


def convert(key: str, value: Any) -> Any:
    """Convert ``value`` (a CLI string or a Python value from a notebook) to ``key``'s type."""
    return convert_value(key, _fields()[key].metadata, value)


# ----------------------------------------------------------------------------- parsing
def dataset_takes(dataset: str) -> tuple[str, ...]:
    """The options dataset ``dataset`` takes (every option for an unknown name: the dataset
    check in :func:`workbench.experiment.prepare` reports that, naming the valid ones)."""
    if dataset not in data.DATASETS:
        return ("train_per_class", "classes", "source", "download", "root", "image_size")
    return tuple(data.option_names(dataset))


def datasets() -> list[str]:
    from . import data

    return data.available()


def datasets_taking(option: str) -> list[str]:
    return [d for d in data.available() if option in data.option_names(d)]


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``["method=kd", "epochs=3"]`` -> ``{"method": "kd", "epochs": "3"}`` (keys checked)."""
    out = {}
    known = _fields()
    for a in args:
        if "=" not in a:
            raise ConfigError(f"expected key=value, got {a!r} (see `python -m workbench train --help`)")
        k, v = a.split("=", 1)
        k = k.strip().lstrip("-").replace("-", "_")
        if k not in known:
            raise ConfigError(unknown_key(k, list(known)))
        if k in out:
            raise ConfigError(f"{k}: given twice ({k}={out[k]} and {k}={v}); give each key once")
        out[k] = v
    return out


def help_text() -> str:
    """Every key with its default, choices and help (the CLI's --help), method keys grouped
    under their method."""
    lines, section = [], None
    cls = run_config_class()
    for f in fields(cls):
        owner = key_owner(f.name)
        if owner != section:
            section = owner
            lines.append("" if owner == "core" else f"\n  -- method {owner} --")
        default = cls.default(f.name)
        choices = f.metadata.get("choices")
        extra = f" {{{'|'.join(map(str, choices))}}}" if choices else ""
        lines.append(f"  {f.name}={_fmt(default)}{extra}\n      {f.metadata['help']}")
    return "\n".join(lines).lstrip("\n")


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return str(v)
