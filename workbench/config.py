"""One run-configuration type, shared by the CLI, the notebooks and the trainer.

``RunConfig`` holds every knob with its default, help text and valid choices.
``parse_overrides(["method=kd", "epochs=3"])`` and ``RunConfig.from_dict({...})`` convert and
validate values (CLI strings and notebook/papermill values alike) and fail with a
:class:`ConfigError` naming the key, the bad value and what is allowed, before any work starts.
Defaults are the CIFAR-100 KD protocol (RepDistiller/mdistiller); named presets
(:mod:`workbench.presets`) layer on top of the defaults, user overrides on top of presets.
"""
from __future__ import annotations

import dataclasses
import math
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .registry import unknown_choice

METHODS = ("ce", "kd", "dkd", "ctkd", "gpd")
BASES = ("auto", "none", "kd", "dkd")
METHOD_BASES = {  # valid `base` per method; the first is what `auto` means
    "ce": ("none",), "kd": ("kd",), "dkd": ("dkd",), "ctkd": ("kd", "dkd"), "gpd": ("dkd", "kd", "none"),
}
NEEDS_NO_TEACHER = "none"


class ConfigError(ValueError):
    """A bad configuration key or value (raised before any expensive work)."""


def opt(default, help: str, choices=None, low=None, high=None):
    """A config field with its help text, valid choices and numeric bounds."""
    meta = {"help": help, "choices": choices, "low": low, "high": high}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    # --- what is trained -------------------------------------------------------------------
    method: str = opt("kd", "training method", METHODS)
    base: str = opt("auto", "distillation loss under ctkd/gpd (gpd: none = from scratch, no teacher)", BASES)
    teacher: str = opt("resnet32x4", "static teacher: a zoo architecture name (trained and cached "
                       "on the fly if no checkpoint is cached), a checkpoint path (ours or a "
                       "RepDistiller-style file), or 'none'")
    teacher_arch: str = opt("", "architecture of a teacher checkpoint file when it cannot be "
                            "inferred (RepDistiller files: inferred from a '<arch>_vanilla' folder)")
    teacher_epochs: int = opt(0, "epochs when the teacher is trained on the fly (0 = same as epochs)", low=0)
    teacher_data: str = opt("student", "training images of a teacher trained on the fly: 'student' = the "
                            "student's split; 'all' = every training image of the student's classes "
                            "(train_per_class not applied: a teacher that has seen more than a low-label "
                            "student)", ("student", "all"))
    student: str = opt("resnet8x4", "student architecture (zoo name)")
    init: str = opt("", "student checkpoint to start from (fine-tuning); empty = random init")
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
                                         "digits: 70/30 split; fashion_mnist: all)", low=1)
    split_seed: int = opt(0, "digits, fashion_mnist: seed of the train_per_class pick", low=0)
    augment: bool = opt(True, "standard training augmentation (false: none, e.g. for exact comparisons)")
    # --- optimisation ------------------------------------------------------------------------
    epochs: int = opt(240, "training epochs", low=1)
    batch_size: int = opt(64, "training batch size (global, across all GPUs)", low=1)
    eval_batch_size: int = opt(256, "evaluation batch size", low=1)
    optimizer: str = opt("sgd", "optimizer", ("sgd", "adamw"))
    lr: float = opt(0.05, "base learning rate", low=0.0)
    momentum: float = opt(0.9, "SGD momentum", low=0.0, high=1.0)
    weight_decay: float = opt(5e-4, "weight decay", low=0.0)
    schedule: str = opt("multistep", "learning-rate schedule", ("multistep", "cosine", "constant"))
    milestones: tuple = opt((150, 180, 210), "multistep: epochs at which lr is multiplied by lr_decay")
    lr_decay: float = opt(0.1, "multistep: lr factor at each milestone", low=0.0, high=1.0)
    warmup_epochs: float = opt(0.0, "linear lr warm-up length in epochs (per iteration)", low=0.0)
    grad_clip: float = opt(0.0, "clip the gradient norm to this value (0 = off; GPD default 5)", low=0.0)
    # --- loss weights --------------------------------------------------------------------------
    ce_weight: Optional[float] = opt(None, "cross-entropy weight (None = method default: kd 0.1, else 1.0)", low=0.0)
    kd_weight: Optional[float] = opt(None, "KD term weight (None = method default: kd 0.9)", low=0.0)
    kd_T: float = opt(4.0, "KD temperature", low=1e-6)
    dkd_alpha: float = opt(1.0, "DKD: TCKD weight", low=0.0)
    dkd_beta: float = opt(8.0, "DKD: NCKD weight", low=0.0)
    dkd_T: float = opt(4.0, "DKD temperature", low=1e-6)
    dkd_warmup: float = opt(20.0, "DKD: epochs of linear warm-up of the distillation weight", low=0.0)
    # --- CTKD (learnable temperature), DOT (optimizer) -----------------------------------------
    ctkd: bool = opt(False, "CTKD: learn the temperature adversarially (wraps the base loss)")
    ctkd_t_start: float = opt(1.0, "CTKD: T = t_start + t_end * sigmoid(theta)", low=0.0)
    ctkd_t_end: float = opt(20.0, "CTKD: see ctkd_t_start", low=0.0)
    ctkd_lambda_min: float = opt(0.0, "CTKD: gradient-reversal strength at the start", low=0.0)
    ctkd_lambda_max: float = opt(1.0, "CTKD: gradient-reversal strength after ctkd_loops epochs", low=0.0)
    ctkd_loops: int = opt(10, "CTKD: epochs of the cosine easy-to-hard curriculum", low=1)
    ctkd_lr: float = opt(0.0, "CTKD: temperature learning rate (0 = same as lr)", low=0.0)
    dot: bool = opt(False, "DOT: separate momentum for task (CE) and distillation gradients")
    dot_delta: float = opt(0.075, "DOT: task momentum = m - delta, distillation momentum = m + delta", low=0.0, high=1.0)
    # --- GPD ------------------------------------------------------------------------------------
    ratio: float = opt(2.0, "GPD: channel expansion ratio r of the dynamic teacher", low=1.0)
    branches: str = opt("default", "GPD: extra conv branches: 'default', a count (0 = channel-only), "
                        "or a comma list of branch kinds")
    noise: float = opt(-1.0, "GPD: std of the symmetry-breaking noise on copied weights (-1 = default)")
    scale_init: str = opt("one_zero", "GPD: branch scale init", ("one_zero", "reference"))
    student_grad: str = opt("faithful", "GPD: gradient of the student loss into shared slices",
                            ("faithful", "compensated"))
    gpd_lambda: float = opt(3.0, "GPD: weight of SCE(student, sg(dynamic teacher))", low=0.0)
    sce_eps: float = opt(0.1, "GPD: label-smoothing eps of the SCE term", low=0.0, high=1.0)
    dt_base_weight: float = opt(1.0, "GPD: weight of L_base(T_d, T_s) in the dynamic teacher's loss "
                                "(gap-control knob; 1 = paper)", low=0.0)
    # --- probes ---------------------------------------------------------------------------------
    probe_every: int = opt(1, "gap/discriminability probes every N epochs (0 = off)", low=0)
    probe_samples: int = opt(2000, "examples whose features are kept for CKA / kNN probes", low=0)
    transfer: str = opt("auto", "transferability probe target: 'auto' (digits, fashion_mnist: the other "
                        "classes; cifar100: cifar10), 'none', or a dataset name")
    source_classes: str = opt("", "digits, fashion_mnist: comma list of source classes (e.g. 0,1,2,3,4); "
                              "empty = all")
    # --- runtime --------------------------------------------------------------------------------
    seed: int = opt(0, "training seed", low=0)
    device: str = opt("auto", "device: auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    amp: str = opt("auto", "mixed precision: auto (bf16 on CUDA if supported, else fp16), off, bf16, fp16",
                   ("auto", "off", "bf16", "fp16"))
    channels_last: str = opt("auto", "channels_last memory format (auto = on for CUDA)", ("auto", "on", "off"))
    compile: bool = opt(False, "torch.compile the trained model (CUDA)")
    device_data: str = opt("auto", "keep the whole dataset on the device and augment there (cifar10/100, "
                           "digits, fashion_mnist; auto = on for CUDA)", ("auto", "on", "off"))
    cache_teacher: bool = opt(False, "compute the static teacher's train-set logits once and reuse them "
                              "(needs augment=false)")
    sync_bn: bool = opt(False, "multi-GPU: synchronise BatchNorm statistics across processes (CUDA only)")
    workers: int = opt(-1, "DataLoader workers (-1 = auto: 0 on CPU, min(8, cores) on CUDA)", low=-1)
    out_dir: str = opt("", "where runs are written (empty = runs/ of the checkout or $WORKBENCH_RUNS)")
    name: str = opt("", "run name (folder under out_dir; empty = derived from the config)")
    resume: bool = opt(True, "continue from the run folder's last checkpoint if there is one")
    progress: bool = opt(True, "show tqdm progress bars")
    preset: str = opt("", "named preset applied under the explicit keys (see `workbench presets`)")

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a mapping of (possibly string) values; presets first, then the values."""
        values = dict(values)
        for k in values:
            if k not in _FIELDS:
                raise ConfigError(unknown_choice("config key", k, cls.keys()))
        merged: dict[str, Any] = {}
        if values.get("preset"):
            from .presets import get_preset

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

    # --- derived values ---------------------------------------------------------------------------
    @property
    def resolved_base(self) -> str:
        return METHOD_BASES[self.method][0] if self.base == "auto" else self.base

    @property
    def uses_teacher(self) -> bool:
        return self.method != "ce" and self.resolved_base != "none"

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
        from . import paths

        root = Path(self.out_dir) if self.out_dir else paths.runs_root()
        return root / (self.name or self.default_name())

    def default_name(self) -> str:
        method = self.method if self.resolved_base in ("none",) + (self.method,) else f"{self.method}-{self.resolved_base}"
        extras = "".join(s for s, on in (("+ctkd", self.ctkd), ("+dot", self.dot)) if on)
        teacher = Path(self.teacher).stem if os.sep in self.teacher else self.teacher
        pair = f"{teacher}-{self.student}" if self.uses_teacher else self.student
        return f"{self.dataset}_{pair}_{method}{extras}_s{self.seed}"

    # --- validation -------------------------------------------------------------------------------
    def validate(self) -> None:
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
        if self.resolved_base not in METHOD_BASES[self.method]:
            raise ConfigError(f"base: {self.base!r} does not apply to method {self.method!r}; "
                              f"valid choices: auto, {', '.join(METHOD_BASES[self.method])}")
        if self.uses_teacher and self.teacher.lower() in ("", NEEDS_NO_TEACHER):
            raise ConfigError(f"teacher: method {self.method!r} with base {self.resolved_base!r} "
                              f"needs a static teacher (an architecture name or a checkpoint path); "
                              f"for GPD without a teacher use base=none")
        if self.ctkd and (self.method == "ce" or self.resolved_base == "none"):
            raise ConfigError("ctkd: CTKD learns the temperature of a KD/DKD loss; "
                              f"method={self.method} base={self.resolved_base} has none")
        if self.dot and self.method == "ce":
            raise ConfigError("dot: DOT needs a distillation loss; method=ce has none (use kd, dkd, ctkd or gpd)")
        if self.dot and self.optimizer != "sgd":
            raise ConfigError(f"dot: DOT is an SGD-with-momentum optimizer; optimizer={self.optimizer!r} "
                              "is not supported with dot=true (use optimizer=sgd)")
        if self.cache_teacher and (self.augment or not self.uses_teacher):
            raise ConfigError("cache_teacher: cached teacher logits are only valid for unaugmented inputs "
                              "and need a static teacher; use it with augment=false and a teacher "
                              f"(got augment={self.augment}, method={self.method}, base={self.resolved_base})")
        if self.method == "ctkd" and not self.ctkd:
            object.__setattr__(self, "ctkd", True)
        if self.schedule == "multistep" and any(m <= 0 for m in self.milestones):
            raise ConfigError(f"milestones: epochs must be positive, got {list(self.milestones)}")
        for key, option, unset in (("train_per_class", "train_per_class", None), ("source_classes", "classes", ""),
                                   ("data_source", "source", "auto")):
            if getattr(self, key) != unset and option not in dataset_takes(self.dataset):
                raise ConfigError(f"{key}: applies to dataset {' and '.join(datasets_taking(option))} only "
                                  f"(dataset={self.dataset!r})")
        if self.method == "gpd":
            try:
                self.gpd_branches()
            except ValueError as e:
                raise ConfigError(f"branches: {e}") from None

    def gpd_branches(self) -> tuple[str, ...]:
        """``branches`` as the tuple of kinds :func:`workbench.gpd.expand` takes."""
        from .gpd.branches import DEFAULT_BRANCHES, resolve_branches

        text = self.branches.strip()
        if text == "default":
            return tuple(DEFAULT_BRANCHES)
        if text.isdigit():
            return resolve_branches(int(text))
        return resolve_branches(tuple(k.strip() for k in text.split(",") if k.strip()))

    def gpd_noise(self) -> float:
        from .gpd import DEFAULT_NOISE

        return DEFAULT_NOISE if self.noise < 0 else self.noise


_FIELDS = {f.name: f for f in fields(RunConfig)}


def dataset_takes(dataset: str) -> tuple[str, ...]:
    """The options dataset ``dataset`` takes (every option for an unknown name: the dataset
    check in :func:`workbench.experiment.prepare` reports that, naming the valid ones)."""
    from . import data

    if dataset not in data.DATASETS:
        return ("train_per_class", "classes", "source", "download", "root", "image_size")
    return tuple(data.option_names(dataset))


def datasets_taking(option: str) -> list[str]:
    from . import data

    return [d for d in data.available() if option in data.option_names(d)]


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_int_list(key: str, value) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [s for s in str(value).replace("[", "").replace("]", "").split(",") if s.strip()]
    try:
        return tuple(int(str(s).strip()) for s in items)
    except ValueError:
        raise ConfigError(f"{key}: expected a comma-separated list of integers, got {value!r}") from None


def convert(key: str, value: Any) -> Any:
    """Convert ``value`` (a CLI string or a Python value from a notebook) to ``key``'s type."""
    f = _FIELDS[key]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    want = type(default) if default is not None else int if "Optional[int]" in str(f.type) else float
    if f.type in ("Optional[int]", "Optional[float]"):
        want = int if "int" in f.type else float
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int,)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")
    if want is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if want is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if want is tuple:
        return parse_int_list(key, value)
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and key in ("branches",):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")
    return value


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``["method=kd", "epochs=3"]`` -> ``{"method": "kd", "epochs": "3"}`` (keys checked)."""
    out = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"expected key=value, got {a!r} (see `python -m workbench train --help`)")
        k, v = a.split("=", 1)
        k = k.strip().lstrip("-").replace("-", "_")
        if k not in _FIELDS:
            raise ConfigError(unknown_choice("config key", k, RunConfig.keys()))
        out[k] = v
    return out


def help_text() -> str:
    """Every key with its default, choices and help (the CLI's --help)."""
    lines = []
    for f in fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices = f.metadata.get("choices")
        extra = f" {{{'|'.join(choices)}}}" if choices else ""
        lines.append(f"  {f.name}={_fmt(default)}{extra}\n      {f.metadata['help']}")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return str(v)
