"""Run folder names: a readable prefix plus a short hash of everything that changes what is
trained, so two different settings never share a folder (and refuse or, worse, mix each other),
while rerunning the same command finds its folder again (resume).

``<dataset>_<teacher arch>-<student>_<method>[+ctkd][+ctc][+dot]_s<seed>-<hash>``, e.g.
``digits_resnet8x4-resnet8_gpd-dkd_s0-1f2e3d4c``. The teacher part is the *resolved*
architecture (a checkpoint file is named by the architecture it holds, not by its file name).
The hash covers the config minus the runtime keys (:data:`workbench.config.RUNTIME_KEYS`) and
minus every key left at its default, with ``base`` resolved, the data resolved the same way for
every dataset (:func:`workbench.data.identity`: the folder it is read from -- ``data_root=`` /
``$WORKBENCH_DATA`` / default, fashion_mnist's full files where they are found, none for data
that is not read from a folder -- and imagefolder's file-list fingerprint; ``train_data``'s class
folders and file names, :func:`workbench.data.train_data.fingerprint`), and the teacher keys
dropped when no teacher is used. Leaving defaults out means a later version that adds keys (a new method's options) names
the same command's run folder, and its cached teacher, as before, so an upgrade resumes instead
of silently starting over; a default whose value changed is caught by the resume check, which
compares every recorded value (:func:`workbench.engine.resume.config_diff`).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from . import data, references
from .data import train_data
from .keys import RUNTIME_KEYS, ConfigError
from .methods import EXTENSIONS

HASH_CHARS = 8  # 32 bits: collisions need ~65k runs in one out_dir, and resume re-checks the config
TEACHER_KEYS = ("teacher", "teacher_arch", "teacher_epochs")
# A run name is one folder under out_dir: no separators, no leading dot (hidden, '.', '..').
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$")


def check_name(name: str) -> None:
    if not PLAIN_NAME.match(name):
        raise ConfigError(f"name: {name!r} is not a plain folder name; use letters, digits and . _ - + "
                          f"(no '/', no leading '.'): the run is written to out_dir/<name>")


def teacher_arch(cfg) -> str:
    """The static teacher's architecture (what a checkpoint file holds), or ``snapshot<E>``."""
    try:
        return references.teacher_ref(cfg.teacher, cfg.teacher_arch, cfg.student, check=False).name_part()
    except ConfigError:  # unreadable/unknown: prepare() reports it; the name falls back to the file
        return Path(cfg.teacher).stem


def identity(cfg) -> dict:
    """The settings that change what is trained, normalised (what the name's hash covers)."""
    defaults = _defaults(type(cfg))
    d = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_KEYS and not (k in defaults and defaults[k] == v)}
    d["base"] = cfg.resolved_base
    where = data.identity(cfg.dataset, **cfg.dataset_options())
    d["data_root"] = where.folder
    if where.fingerprint:
        d["data_fingerprint"] = where.fingerprint
    if cfg.train_data.strip():  # DM-KD: what the other training set holds, not only its path
        try:
            d["train_data_fingerprint"] = train_data.fingerprint(train_data.parse(cfg.train_data))
        except ValueError:  # malformed: the config check reports it
            pass
    if cfg.loads_teacher:
        try:
            d.update(references.teacher_ref(cfg.teacher, cfg.teacher_arch, cfg.student, check=False).identity())
        except ConfigError:
            d["teacher_arch"] = teacher_arch(cfg)
    else:
        for k in TEACHER_KEYS:
            d.pop(k, None)
    return d


def _defaults(config_type) -> dict:
    """Every key's default value, as ``to_dict`` writes it."""
    return config_type().to_dict()


def config_hash(cfg) -> str:
    blob = json.dumps(identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_CHARS]


def default_name(cfg) -> str:
    method = cfg.method if cfg.resolved_base in ("none", cfg.method) else f"{cfg.method}-{cfg.resolved_base}"
    on = [name for name in EXTENSIONS if EXTENSIONS.get(name).active(cfg)] + (["dot"] if cfg.dot else [])
    extras = "".join(f"+{name}" for name in on)  # +ctkd, +ctc, +dot
    pair = f"{teacher_arch(cfg)}-{cfg.student}" if cfg.loads_teacher else cfg.student
    return f"{cfg.dataset}_{pair}_{method}{extras}_s{cfg.seed}-{config_hash(cfg)}"

